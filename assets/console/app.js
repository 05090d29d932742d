"use strict";
// The console talks to the same REST API as every other client: a session cookie
// (HttpOnly) plus the CSRF token from login, sent back on every change.

const state = { csrf: sessionStorage.getItem("cairn.csrf"), session: null };
const $ = (id) => document.getElementById(id);

async function api(method, path, body) {
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && state.csrf) headers["X-CSRF-Token"] = state.csrf;
  const response = await fetch(path, {
    method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (!response.ok) {
    const error = new Error((data && data.error) || response.statusText);
    error.status = response.status;
    throw error;
  }
  return data;
}

function showError(e) { $("error").textContent = e ? e.message : ""; }

function show(view) {
  for (const id of ["setup-view", "login-view", "app-view"]) $(id).hidden = id !== view;
  $("nav").hidden = view !== "app-view";
}

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "" : String(text);
  if (cls) td.className = cls;
  return td;
}

function row(tbody, cells) {
  const tr = document.createElement("tr");
  for (const c of cells) tr.append(c instanceof Node ? c : cell(c));
  tbody.append(tr);
  return tr;
}

function button(label, onClick) {
  const td = document.createElement("td");
  const b = document.createElement("button");
  b.type = "button"; b.textContent = label;
  b.addEventListener("click", () => onClick().catch(showError));
  td.append(b);
  return td;
}

const when = (secs) => (secs ? new Date(secs * 1000).toLocaleString() : "never");

async function refresh() {
  showError(null);
  const info = await api("GET", "/api/v1/system/info");
  $("version").textContent = `v${info.version} (${info.commit})`;
  const dl = $("device");
  dl.replaceChildren();
  for (const [k, v] of Object.entries({
    "device id": info.device_id,
    "uptime": `${info.uptime_seconds} s`,
    "store": `${info.store_bytes} bytes, schema ${info.schema_version}`,
  })) {
    const dt = document.createElement("dt"); dt.textContent = k;
    const dd = document.createElement("dd"); dd.textContent = v;
    dl.append(dt, dd);
  }
  const ready = await (await fetch("/readyz")).json();
  const checks = document.querySelector("#checks tbody");
  checks.replaceChildren();
  for (const c of ready.checks) row(checks, [c.name, cell(c.ok ? "ok" : "failing", c.ok ? "ok" : "bad"), c.detail]);

  const scopes = state.session.scopes;
  const isAdmin = scopes.includes("users:manage");
  if (scopes.includes("keys:manage")) {
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

async function start() {
  try {
    state.session = await api("GET", "/api/v1/auth/session");
    if (state.session.csrf_token) {
      state.csrf = state.session.csrf_token;
      sessionStorage.setItem("cairn.csrf", state.csrf);
    }
    $("whoami").textContent = `${state.session.username} (${state.session.role})`;
    show("app-view");
    await refresh();
  } catch (e) {
    if (e.status !== 401) { showError(e); return; }
    const setup = await api("GET", "/api/v1/setup");
    show(setup.required ? "setup-view" : "login-view");
  }
}

function formData(form) { return Object.fromEntries(new FormData(form).entries()); }

$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    const result = await api("POST", "/api/v1/auth/login", formData(event.target));
    state.csrf = result.csrf_token;
    sessionStorage.setItem("cairn.csrf", state.csrf);
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
    state.csrf = result.csrf_token;
    sessionStorage.setItem("cairn.csrf", state.csrf);
    await start();
  } catch (e) { showError(e); }
});

$("logout").addEventListener("click", async () => {
  try { await api("POST", "/api/v1/auth/logout"); } catch (e) { /* already gone */ }
  sessionStorage.removeItem("cairn.csrf");
  state.csrf = null;
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

start();
setInterval(() => { if (!$("app-view").hidden) refresh().catch(showError); }, 10000);
