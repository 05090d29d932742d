// End-to-end test of the embedded console in headless Chromium against a real cairn:
// first-boot setup with the token, the device page, creating and revoking an API key,
// creating a user, logging out and in again.
//
//   CAIRN_BIN=target/debug/cairn node tests/console/e2e.mjs

import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const bin = process.env.CAIRN_BIN ?? "target/debug/cairn";
const browserPath = process.env.CHROMIUM ?? "/usr/bin/chromium";
const dataDir = mkdtempSync(join(tmpdir(), "cairn-console-"));

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
try {
  const page = await browser.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  page.on("console", (m) => { if (m.type() === "error" && !m.text().includes("401")) errors.push(m.text()); });

  await page.goto(base + "/");
  await page.waitForSelector("#setup-view:not([hidden])");
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
  if (errors.length) fail(`page errors: ${errors.join("; ")}`);
  console.log("console e2e: ok (setup, device, keys, users, audit, logout, login)");
} finally {
  await browser.close();
  server.kill("SIGTERM");
  await new Promise((resolve) => server.on("exit", resolve));
  rmSync(dataDir, { recursive: true, force: true });
}
