// End-to-end test of the embedded console in headless Chromium against a real cairn:
// first-boot setup with the token, the device page, creating and revoking an API key,
// creating a user, logging out and in again (as a viewer, who sees models read-only),
// then the models page as the administrator: the demo model `digits` deployed on first
// start, uploading a second version, deploying it, "Try it", and rolling back; then the
// tasks page: a self-test submitted and seen to finish live, a long sleep's progress
// followed live (through the Server-Sent Events stream, not the long poll) and canceled.
// A full-page screenshot of each step goes to $CAIRN_SCREENSHOTS.
//
//   CAIRN_BIN=target/debug/cairn node tests/console/e2e.mjs   (from the repository root)

import { spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const bin = process.env.CAIRN_BIN ?? "target/debug/cairn";
const browserPath = process.env.CHROMIUM ?? "/usr/bin/chromium";
const dataDir = mkdtempSync(join(tmpdir(), "cairn-console-"));
const shots = process.env.CAIRN_SCREENSHOTS || "target/console-screenshots";
mkdirSync(shots, { recursive: true });
const demoModel = "assets/models/digits.onnx";
const demoExample = "assets/models/digits-example.json";
if (!existsSync(demoModel)) throw new Error(`${demoModel} is missing: run the test from the repository root`);

function fail(message) {
  console.error(`console e2e: FAIL: ${message}`);
  process.exitCode = 1;
  throw new Error(message);
}

const env = { ...process.env };
delete env.CAIRN_ADMIN_PASSWORD;
delete env.CAIRN_ADMIN_PASSWORD_FILE;
const server = spawn(bin, ["serve", "--data-dir", dataDir, "--http-listen", "127.0.0.1:0",
  "--https-listen", "off", "--log-format", "json"], { stdio: ["ignore", "ignore", "pipe"], env });

const base = await new Promise((resolve, reject) => {
  let buffer = "";
  const timer = setTimeout(() => reject(new Error("cairn did not start")), 30000);
  server.stderr.on("data", (chunk) => {
    buffer += chunk;
    for (const line of buffer.split("\n")) {
      try {
        const event = JSON.parse(line);
        if (event.message === "listening" && event.listener === "http") {
          clearTimeout(timer);
          resolve(`http://${event.addr}`);
        }
      } catch { /* partial line */ }
    }
  });
  server.on("exit", (code) => reject(new Error(`cairn exited with ${code}:\n${buffer}`)));
});

const browser = await chromium.launch({
  executablePath: browserPath,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
let page = null;
let ok = false;
try {
  page = await browser.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  // A refusal the test asks for on purpose logs its status too: `refusal` names it meanwhile.
  let refusal = null;
  page.on("console", (m) => {
    if (m.type() !== "error" || m.text().includes("401")) return;
    if (refusal && m.text().includes(refusal)) return;
    errors.push(m.text());
  });
  // How the tasks page follows changes: EventSource streams, or long polls.
  const feed = { streams: 0, polls: 0 };
  page.on("request", (r) => {
    if (!r.url().includes("/api/v1/tasks/events")) return;
    if (r.resourceType() === "eventsource") feed.streams += 1; else feed.polls += 1;
  });
  const snap = (name) => page.screenshot({ path: join(shots, `${name}.png`), fullPage: true });
  // Waits until the element `selector` exists and its text contains `text`.
  const waitText = (selector, text, timeout = 30000) => page.waitForFunction(
    ([s, t]) => document.querySelector(s)?.textContent.includes(t), [selector, text], { timeout })
    .catch(async (e) => fail(`${selector} never showed "${text}" (it shows "${await page.textContent(selector).catch(() => "nothing")}"; `
      + `the error banner says "${await page.textContent("#error").catch(() => "")}"): ${e.message}`));

  await page.goto(base + "/");
  await page.waitForSelector("#setup-view:not([hidden])");
  // A new visitor sees the setup form only: no session, so no "Log out".
  if (await page.isVisible("#nav")) fail("the header shows the session menu before anyone logged in");
  if (await page.isVisible("#logout")) fail("the setup page shows a Log out button");
  if (await page.isVisible("#app-view")) fail("the setup page shows the app");
  await snap("01-setup");
  const token = readFileSync(join(dataDir, "setup-token"), "utf8").trim();
  await page.fill("#setup-form [name=token]", token);
  await page.fill("#setup-form [name=username]", "chief");
  await page.fill("#setup-form [name=password]", "chief-password-1");
  await page.click("#setup-form button[type=submit]");
  await page.waitForSelector("#app-view:not([hidden])");
  const who = await page.textContent("#whoami");
  if (!who.includes("chief") || !who.includes("admin")) fail(`whoami shows ${who}`);
  await page.waitForSelector("#device dd");
  const deviceText = await page.textContent("#device");
  if (!/device id/.test(deviceText)) fail(`device panel: ${deviceText}`);
  await page.waitForSelector("#checks tbody tr");
  if (!(await page.isVisible("#logout"))) fail("no Log out button once logged in");
  await snap("02-overview");

  // An API key: shown once, listed, then revoked.
  await page.fill("#key-form [name=name]", "e2e-key");
  await page.fill("#key-form [name=scopes]", "infer, metrics:read");
  await page.click("#key-form button[type=submit]");
  await page.waitForSelector("#new-key:not([hidden])");
  const shown = await page.textContent("#new-key");
  const key = shown.match(/cairn_[0-9a-f]{16}_[A-Za-z0-9_-]{43}/)?.[0];
  if (!key) fail(`no key shown: ${shown}`);
  const metrics = await fetch(base + "/metrics", { headers: { authorization: `Bearer ${key}` } });
  if (metrics.status !== 200) fail(`the console's key does not work: ${metrics.status}`);
  await page.waitForSelector("#keys tbody tr");
  await page.click("#keys tbody tr button");
  await page.waitForFunction(() => document.querySelector("#keys tbody").textContent.includes("revoked"));
  const after = await fetch(base + "/metrics", { headers: { authorization: `Bearer ${key}` } });
  if (after.status !== 401) fail(`revoked key still works: ${after.status}`);

  // A user, then the audit log lists it.
  await page.fill("#user-form [name=username]", "watcher");
  await page.fill("#user-form [name=password]", "watcher-password");
  await page.selectOption("#user-form [name=role]", "viewer");
  await page.click("#user-form button[type=submit]");
  await page.waitForFunction(() => document.querySelector("#users tbody").textContent.includes("watcher"));
  await page.waitForFunction(() => document.querySelector("#audit tbody").textContent.includes("user_created"));
  await snap("03-keys-users");

  // Log out, then log in as the viewer: no users or audit panels.
  await page.click("#logout");
  await page.waitForSelector("#login-view:not([hidden])");
  await page.fill("#login-form [name=username]", "watcher");
  await page.fill("#login-form [name=password]", "wrong-password!");
  await page.click("#login-form button[type=submit]");
  await page.waitForFunction(() => document.querySelector("#error").textContent.length > 0);
  await page.fill("#login-form [name=password]", "watcher-password");
  await page.click("#login-form button[type=submit]");
  await page.waitForSelector("#app-view:not([hidden])");
  if (!(await page.isHidden("#users-section"))) fail("a viewer sees the users panel");

  // The viewer (models:read) sees the models and a deployment, but no way to change them.
  await page.click("#models-tab");
  await page.waitForSelector("#models-page:not([hidden])");
  await page.waitForSelector('#models tbody tr[data-model="digits"]');
  await page.click('#models tbody tr[data-model="digits"] a');
  await page.waitForSelector("#model-detail:not([hidden])");
  await waitText("#model-name", "digits");
  for (const selector of ["#model-form", "#upload-form", "#deploy-form", "#model-delete", "#try-section"]) {
    if (await page.isVisible(selector)) fail(`a viewer sees ${selector}`);
  }
  if (await page.locator("#versions button").count()) fail("a viewer sees buttons on the versions");
  await snap("04-viewer-models");

  // The administrator again: the demo model, deployed on first start.
  await page.click("#logout");
  await page.waitForSelector("#login-view:not([hidden])");
  await page.fill("#login-form [name=username]", "chief");
  await page.fill("#login-form [name=password]", "chief-password-1");
  await page.click("#login-form button[type=submit]");
  await page.waitForSelector("#app-view:not([hidden])");
  await page.click("#overview-tab");
  await page.waitForSelector("#overview-page:not([hidden])");
  await page.click("#models-tab");
  await page.waitForSelector("#models-page:not([hidden])");
  await page.waitForSelector("#model-form:not([hidden])");
  await page.waitForSelector('#models tbody tr[data-model="digits"]');
  await page.click('#models tbody tr[data-model="digits"]');
  await page.waitForSelector("#model-detail:not([hidden])");
  await waitText("#deployment [data-field=state]", "serving", 60000);
  await waitText("#deployment [data-field=version]", "1");
  await waitText('#versions tr[data-version="1"]', "ready");
  await waitText('#models tbody tr[data-model="digits"]', "v1 serving");
  await snap("05-models");

  // Upload the same file as version 2, with the progress bar.
  await page.setInputFiles("#upload-form input[type=file]", demoModel);
  await page.click("#upload-form button[type=submit]");
  await waitText('#versions tr[data-version="2"]', "ready");
  await waitText("#upload-status", "ready");
  if (await page.isVisible("#upload-progress")) fail("the progress bar stays after the upload");
  await snap("06-upload");

  // f16 on the CPU is refused with the reason, and nothing changes.
  await page.selectOption("#deploy-form select[name=device]", "cpu");
  await page.selectOption("#deploy-form select[name=precision]", "f16");
  refusal = "status of 400";
  await page.click('#versions tr[data-version="2"] button.deploy');
  await waitText("#model-status", "f16 runs on a GPU");
  await waitText("#deployment [data-field=version]", "1");
  await snap("07-f16-refused-on-cpu");
  refusal = null;

  // Deploy version 2 from its row, asking for f16 on `auto`: without a real GPU it
  // serves from the CPU in f32, and the page says so.
  await page.selectOption("#deploy-form select[name=device]", "auto");
  await page.click('#versions tr[data-version="2"] button.deploy');
  await waitText("#deployment [data-field=version]", "2", 60000);
  await waitText("#deployment [data-field=state]", "serving", 60000);
  await waitText("#deployment [data-field='previous version']", "1");
  await waitText("#deployment [data-field=precision]", "f16 (computing in f32)");
  await waitText("#model-status", "serving");
  await snap("07-deployed-v2");

  // Try it: prefilled from the input's spec, then a real image of a digit.
  await page.waitForSelector("#try-section:not([hidden])");
  const prefilled = await page.inputValue("#try-form textarea");
  const request = JSON.parse(prefilled);
  if (request.inputs?.[0]?.name !== "input" || request.inputs[0].data.length !== 64) {
    fail(`Try it is prefilled with ${prefilled}`);
  }
  let digit = null;
  if (existsSync(demoExample)) {
    const example = readFileSync(demoExample, "utf8");
    digit = JSON.parse(example).id?.match(/^digit-(\d)$/)?.[1] ?? null;
    await page.fill("#try-form textarea", example);
  }
  await page.click("#try-form button[type=submit]");
  await waitText("#try-output", "probabilities");
  const answer = JSON.parse(await page.textContent("#try-output"));
  if (String(answer.model_version) !== "2") fail(`Try it answered from version ${answer.model_version}`);
  const probabilities = answer.outputs.find((o) => o.name === "probabilities").data;
  if (probabilities.length !== 10) fail(`probabilities: ${probabilities}`);
  if (digit !== null) {
    const best = probabilities.indexOf(Math.max(...probabilities));
    if (String(best) !== digit) fail(`the example is a ${digit}, the model says ${best}`);
  }
  await snap("08-try-it");

  // Roll back to version 1.
  await page.click("#rollback");
  await waitText("#deployment [data-field=version]", "1", 60000);
  await waitText("#deployment [data-field=state]", "serving", 60000);
  await waitText("#model-status", "Rolled back to version 1");
  await waitText('#versions tr[data-version="1"]', "deployed");
  await waitText("#deployment [data-field=precision]", "f32");
  await snap("09-rolled-back");

  // Tasks: submit a self-test, see it finish live, then a sleep that is canceled.
  await page.click("#tasks-tab");
  await page.waitForSelector("#tasks-page:not([hidden])");
  await page.selectOption("#task-form select[name=kind]", "system.selftest");
  await page.click("#task-form button[type=submit]");
  await waitText("#task-status", "submitted");
  const submitted = (await page.textContent("#task-status")).match(/Task (\d+)/)[1];
  await waitText(`#tasks tr[data-task="${submitted}"]`, "succeeded", 60000);
  await page.click(`#tasks tr[data-task="${submitted}"] summary`);
  await waitText(`#tasks tr[data-task="${submitted}"]`, "engine_ms");
  await page.selectOption("#task-form select[name=kind]", "system.sleep");
  await page.fill("#task-form input[name=payload]", '{"ms": 60000}');
  await page.click("#task-form button[type=submit]");
  await waitText("#task-status", "submitted");
  const sleeper = (await page.textContent("#task-status")).match(/Task (\d+)/)[1];
  await waitText(`#tasks tr[data-task="${sleeper}"]`, "running", 30000);
  // The sleep reports progress every 3 s: the bar moves while the task runs.
  await page.waitForFunction((id) => Number(document.querySelector(`#tasks tr[data-task="${id}"] progress`)?.value) > 0,
    sleeper, { timeout: 15000 }).catch((e) => fail(`the sleep's progress never moved: ${e.message}`));
  if (!feed.streams || feed.polls) fail(`the tasks page should follow an event stream: ${JSON.stringify(feed)}`);
  await page.click(`#tasks tr[data-task="${sleeper}"] button.cancel`);
  await waitText(`#tasks tr[data-task="${sleeper}"]`, "canceled", 30000);
  await waitText("#schedules", "tasks.purge");
  await snap("10-tasks");

  const banner = await page.textContent("#error");
  if (banner) fail(`the page shows an error: ${banner}`);
  if (errors.length) fail(`page errors: ${errors.join("; ")}`);
  ok = true;
  console.log("console e2e: ok (setup, device, keys, users, audit, logout, login, models: "
    + `list, upload, deploy, try it, rollback; tasks: submit, live finish, live progress, cancel); screenshots in ${shots}`);
} finally {
  if (!ok && page) {
    await page.screenshot({ path: join(shots, "failed.png"), fullPage: true }).catch(() => {});
    console.error(`console e2e: the page at the failure is in ${join(shots, "failed.png")}`);
  }
  await browser.close();
  server.kill("SIGTERM");
  await new Promise((resolve) => server.on("exit", resolve));
  rmSync(dataDir, { recursive: true, force: true });
}
