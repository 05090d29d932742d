// Helpers every console page shares: the API client (session cookie + CSRF token) and
// small DOM builders. Data only ever reaches the page through textContent.

export const state = { csrf: sessionStorage.getItem("cairn.csrf"), session: null };
export const $ = (id) => document.getElementById(id);

/** Whether the logged-in session carries `scope`. */
export const has = (scope) => Boolean(state.session && state.session.scopes.includes(scope));

export function setCsrf(token) {
  state.csrf = token;
  if (token) sessionStorage.setItem("cairn.csrf", token);
  else sessionStorage.removeItem("cairn.csrf");
}

/** Turns a failed response into an Error carrying the server's message and status. */
export function apiError(status, statusText, text) {
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { /* not JSON */ }
  const message = (data && data.error) || (status === 413 ? "the request is too large" : statusText || `HTTP ${status}`);
  const error = new Error(message);
  error.status = status;
  error.code = data && data.code;
  return error;
}

export async function api(method, path, body) {
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && state.csrf) headers["X-CSRF-Token"] = state.csrf;
  const response = await fetch(path, {
    method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  if (!response.ok) throw apiError(response.status, response.statusText, text);
  return text ? JSON.parse(text) : null;
}

// The banner at the top of the page. An error from a background refresh goes away with
// the next refresh; one from something the user did stays until they do something else.
let errorSource = null;
export function showError(e, source = "action") {
  $("error").textContent = e ? e.message : "";
  errorSource = e ? source : null;
}
export function clearRefreshError() { if (errorSource === "refresh") showError(null); }

export function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== null && text !== undefined) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

export const cell = (text, cls) => el("td", text, cls);

export function row(tbody, cells) {
  const tr = document.createElement("tr");
  for (const c of cells) tr.append(c instanceof Node ? c : cell(c));
  tbody.append(tr);
  return tr;
}

/** A button whose async handler reports its errors on the page. */
export function makeButton(label, onClick, cls) {
  const b = el("button", label, cls);
  b.type = "button";
  b.addEventListener("click", (event) => {
    event.stopPropagation();
    showError(null);
    Promise.resolve().then(onClick).catch(showError);
  });
  return b;
}

/** A table cell holding `makeButton`s. */
export function button(label, onClick) {
  const td = document.createElement("td");
  td.append(makeButton(label, onClick));
  return td;
}

export function formData(form) { return Object.fromEntries(new FormData(form).entries()); }

export const when = (secs) => (secs ? new Date(secs * 1000).toLocaleString() : "never");

export function bytes(n) {
  if (n === null || n === undefined) return "";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
  return unit === 0 ? `${n} B` : `${value.toFixed(1)} ${units[unit]}`;
}

/** JSON with two-space indents, except that arrays of plain values stay on one line. */
export function pretty(value, indent = "") {
  if (Array.isArray(value)) {
    if (value.every((v) => v === null || typeof v !== "object")) {
      return `[${value.map((v) => JSON.stringify(v)).join(", ")}]`;
    }
    const inner = indent + "  ";
    return `[\n${value.map((v) => inner + pretty(v, inner)).join(",\n")}\n${indent}]`;
  }
  if (value && typeof value === "object") {
    const entries = Object.entries(value);
    if (!entries.length) return "{}";
    const inner = indent + "  ";
    return `{\n${entries.map(([k, v]) => `${inner}${JSON.stringify(k)}: ${pretty(v, inner)}`).join(",\n")}\n${indent}}`;
  }
  return JSON.stringify(value);
}
