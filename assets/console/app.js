// The console talks to the same REST API as every other client: a session cookie
// (HttpOnly) plus the CSRF token from login, sent back on every change.
// Pages: #overview (device, readiness, keys, users, audit), #models[/name] (models.js) and
// #tasks (tasks.js).

import { $, api, button, cell, clearRefreshError, el, formData, has, row, setCsrf, showError, state, when } from "./common.js";
import { initModels, refreshModels, resetModels } from "./models.js";
import { initTasks, refreshTasks } from "./tasks.js";

const PAGES = ["overview", "models", "tasks"];

function show(view) {
  for (const id of ["setup-view", "login-view", "app-view"]) $(id).hidden = id !== view;
  $("nav").hidden = view !== "app-view";
}

/** The page the address names, falling back to the overview when the session may not see it. */
function route() {
  const [page, ...rest] = location.hash.slice(1).split("/");
  if (page === "models" && has("models:read")) {
    return { page, model: rest.length && rest[0] ? decodeURIComponent(rest.join("/")) : null };
  }
  if (page === "tasks" && has("tasks:read")) return { page, model: null };
  return { page: "overview", model: null };
}

async function refreshOverview(info) {
  const dl = $("device");
  dl.replaceChildren();
  for (const [k, v] of Object.entries({
    "device id": info.device_id,
    "uptime": `${info.uptime_seconds} s`,
    "store": `${info.store_bytes} bytes, schema ${info.schema_version}`,
  })) {
    dl.append(el("dt", k), el("dd", v));
  }
  const ready = await (await fetch("/readyz")).json();
  const checks = document.querySelector("#checks tbody");
  checks.replaceChildren();
  for (const c of ready.checks) row(checks, [c.name, cell(c.ok ? "ok" : "failing", c.ok ? "ok" : "bad"), c.detail]);

  const isAdmin = has("users:manage");
  $("keys-section").hidden = !has("keys:manage");
  if (has("keys:manage")) {
    const { keys } = await api("GET", `/api/v1/keys${isAdmin ? "?all=true" : ""}`);
    const tbody = document.querySelector("#keys tbody");
    tbody.replaceChildren();
    for (const k of keys) {
      row(tbody, [k.id, k.name, k.username, k.scopes.join(" "), cell(k.state, k.state === "active" ? "ok" : "bad"),
        when(k.usage.last_used_at),
        k.state === "active" ? button("Revoke", async () => { await api("DELETE", `/api/v1/keys/${k.id}`); await refresh(); }) : cell("")]);
    }
  }
  $("users-section").hidden = !isAdmin;
  $("audit-section").hidden = !isAdmin;
  if (isAdmin) {
    const { users } = await api("GET", "/api/v1/users");
    const tbody = document.querySelector("#users tbody");
    tbody.replaceChildren();
    for (const u of users) {
      row(tbody, [u.id, u.username, u.role, cell(u.disabled ? "disabled" : "active", u.disabled ? "bad" : "ok"),
        button(u.disabled ? "Enable" : "Disable", async () => {
          await api("PATCH", `/api/v1/users/${u.id}`, { disabled: !u.disabled }); await refresh();
        })]);
    }
    const { entries } = await api("GET", "/api/v1/audit?limit=50");
    const audit = document.querySelector("#audit tbody");
    audit.replaceChildren();
    for (const e of entries) {
      row(audit, [new Date(e.at_ms).toLocaleString(), cell(e.kind, e.ok ? "" : "bad"), e.actor, e.addr, e.target, e.detail]);
    }
  }
}

async function refreshOnce() {
  clearRefreshError();
  const info = await api("GET", "/api/v1/system/info");
  $("version").textContent = `v${info.version} (${info.commit})`;
  const { page, model } = route();
  $("models-tab").hidden = !has("models:read");
  $("tasks-tab").hidden = !has("tasks:read");
  for (const p of PAGES) {
    $(`${p}-page`).hidden = p !== page;
    const tab = $(`${p}-tab`);
    if (p === page) tab.setAttribute("aria-current", "page"); else tab.removeAttribute("aria-current");
  }
  if (page === "models") await refreshModels(model);
  else if (page === "tasks") await refreshTasks();
  else await refreshOverview(info);
}

// One refresh at a time; a request for another while one runs makes it run once more,
// so the page always ends on the latest state.
let inflight = null;
let again = false;
function refresh() {
  if (inflight) { again = true; return inflight; }
  inflight = (async () => {
    try {
      do { again = false; await refreshOnce(); } while (again);
    } finally { inflight = null; }
  })();
  return inflight;
}

async function start() {
  try {
    state.session = await api("GET", "/api/v1/auth/session");
    if (state.session.csrf_token) setCsrf(state.session.csrf_token);
    $("whoami").textContent = `${state.session.username} (${state.session.role})`;
  } catch (e) {
    if (e.status !== 401) { showError(e); return; }
    const setup = await api("GET", "/api/v1/setup");
    show(setup.required ? "setup-view" : "login-view");
    return;
  }
  // Fill the pages for this session before showing them, so nothing of the last one shows.
  await refresh().catch(refreshError);
  show("app-view");
}

$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    const result = await api("POST", "/api/v1/auth/login", formData(event.target));
    setCsrf(result.csrf_token);
    event.target.reset();
    await start();
  } catch (e) { showError(e); }
});

$("setup-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    const data = formData(event.target);
    await api("POST", "/api/v1/setup", data);
    const result = await api("POST", "/api/v1/auth/login", { username: data.username, password: data.password });
    setCsrf(result.csrf_token);
    await start();
  } catch (e) { showError(e); }
});

$("logout").addEventListener("click", async () => {
  try { await api("POST", "/api/v1/auth/logout"); } catch { /* already gone */ }
  setCsrf(null);
  state.session = null;
  resetModels();
  $("new-key").hidden = true;
  show("login-view");
});

$("key-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    const data = formData(event.target);
    const body = { name: data.name, scopes: data.scopes.split(",").map((s) => s.trim()).filter(Boolean) };
    if (data.expires_at) body.expires_at = `${data.expires_at}T00:00:00Z`;
    const created = await api("POST", "/api/v1/keys", body);
    const shown = $("new-key");
    shown.textContent = `New key (copy it now, it is not shown again): ${created.key}`;
    shown.hidden = false;
    event.target.reset();
    await refresh();
  } catch (e) { showError(e); }
});

$("user-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    await api("POST", "/api/v1/users", formData(event.target));
    event.target.reset();
    await refresh();
  } catch (e) { showError(e); }
});

initModels({ refresh });
initTasks({ refresh, visible: () => !$("app-view").hidden && route().page === "tasks" });
// Whatever the user does next replaces the last error.
document.addEventListener("submit", () => showError(null), true);
const refreshError = (e) => showError(e, "refresh");
window.addEventListener("hashchange", () => {
  showError(null);
  if (!$("app-view").hidden) refresh().catch(refreshError);
});

start();
// The models page follows deployments as they load, so it looks more often.
let ticks = 0;
setInterval(() => {
  ticks += 1;
  if ($("app-view").hidden) return;
  if (ticks % 2 === 0 || route().page === "models") refresh().catch(refreshError);
}, 5000);
