// The tasks page: submit a task, follow tasks live (a Server-Sent Events stream of
// GET /api/v1/tasks/events through EventSource, or the long poll of the same route,
// ?after=SEQ&wait=25s, where there is no EventSource or the server refuses a stream),
// filter them, cancel / pause / resume / retry / delete, and the periodic schedules.
//   #tasks
//
// EventSource cannot send headers: the stream is authenticated by the session cookie
// (same origin), and as a GET it needs no CSRF token.

import { $, api, cell, el, formData, has, makeButton, pretty, row, showError } from "./common.js";

const ui = {
  refresh: async () => {},
  seq: 0, // the last event seen (long poll)
  polling: false, // a stream or a long poll follows the feed
  streams: typeof EventSource === "function", // false once the server refused a stream
  visible: () => false,
};

const FINISHED = ["succeeded", "failed", "canceled"];
const statusClass = (s) => (s === "succeeded" ? "ok" : s === "failed" || s === "canceled" ? "bad" : "");
const time = (ms) => (ms ? new Date(ms).toLocaleString() : "");

// What the kind field suggests as a payload.
const EXAMPLES = {
  "system.sleep": { ms: 2000 },
  "system.selftest": {},
  "store.backup": {},
  "store.compact": {},
  "tasks.purge": {},
  "model.validate": { model: "digits", version: 1 },
  "model.benchmark": { model: "digits", version: 1, runs: 100, device: "cpu" },
};

export function initTasks({ refresh, visible }) {
  ui.refresh = refresh;
  ui.visible = visible;
  const form = $("task-form");
  form.elements.kind.addEventListener("change", () => {
    form.elements.payload.value = JSON.stringify(EXAMPLES[form.elements.kind.value] || {});
  });
  form.elements.payload.value = JSON.stringify(EXAMPLES[form.elements.kind.value]);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    $("task-status").textContent = "";
    try {
      const data = formData(form);
      let payload;
      try { payload = data.payload ? JSON.parse(data.payload) : {}; } catch { throw new Error("The payload is not valid JSON."); }
      const body = { kind: data.kind, payload, priority: Number(data.priority) };
      if (data.delay_s) body.delay_ms = Math.round(Number(data.delay_s) * 1000);
      const task = await api("POST", "/api/v1/tasks", body);
      $("task-status").textContent = `Task ${task.id} submitted.`;
      await refresh();
    } catch (e) { showError(e); }
  });
  $("task-filter").addEventListener("change", () => refresh());
  $("schedule-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const data = formData(event.target);
      let payload;
      try { payload = data.payload ? JSON.parse(data.payload) : {}; } catch { throw new Error("The payload is not valid JSON."); }
      await api("POST", "/api/v1/schedules", { name: data.name, cron: data.cron, kind: data.kind, payload, missed: data.missed });
      event.target.reset();
      await refresh();
    } catch (e) { showError(e); }
  });
}

/** Follows the event feed while the page shows, refreshing when tasks change. */
function follow() {
  if (ui.polling || !ui.visible()) return;
  if (ui.streams) stream(); else poll();
}

/** The refresh after a change; failures show with the next periodic refresh. */
function changed() {
  if (ui.visible()) Promise.resolve(ui.refresh()).catch(() => {});
}

/** A change of a task in the table: its progress in place, anything else by a refresh. */
function apply(change) {
  const tr = document.querySelector(`#tasks tr[data-task="${change.id}"]`);
  if (!tr || tr.dataset.status !== change.status || change.status !== "running") {
    changed();
    return;
  }
  const bar = tr.querySelector("progress");
  if (bar) {
    bar.value = change.progress;
    bar.nextSibling.textContent = ` ${change.progress}%`;
    bar.parentElement.title = change.message || "";
  }
}

/** The Server-Sent Events stream; EventSource reconnects by itself with Last-Event-ID. */
function stream() {
  ui.polling = true;
  const source = new EventSource("/api/v1/tasks/events");
  let opened = false;
  const stop = () => {
    source.close();
    clearInterval(watch);
    ui.polling = false;
  };
  // The page can be left without an event: look every few seconds.
  const watch = setInterval(() => { if (!ui.visible()) stop(); }, 2000);
  source.addEventListener("ready", () => {
    // Changes between the last refresh and the stream's start: one refresh covers them.
    if (!opened) changed();
    opened = true;
  });
  source.addEventListener("task", (event) => {
    if (!ui.visible()) { stop(); return; }
    try { apply(JSON.parse(event.data)); } catch { changed(); }
  });
  // Too far behind (or the server restarted): what was missed is not in the stream.
  source.addEventListener("reset", () => changed());
  source.addEventListener("error", () => {
    // While connecting again by itself, EventSource stays CONNECTING; CLOSED means the
    // server refused the stream (an error status: 401 after a log out, 503 when too many
    // are open). Refused at once: use the long poll on this page from now on.
    if (source.readyState !== EventSource.CLOSED) return;
    stop();
    if (!opened) ui.streams = false;
    follow();
  });
}

/** The long poll: the fallback when there is no stream. */
async function poll() {
  ui.polling = true;
  try {
    while (ui.visible()) {
      const feed = await api("GET", `/api/v1/tasks/events?after=${ui.seq}&wait=25s&limit=1000`);
      const changes = feed.events.length > 0;
      ui.seq = Math.max(ui.seq, feed.last);
      if (changes && ui.visible()) await ui.refresh();
    }
  } catch {
    // A dropped poll (log out, restart): the next refresh starts it again.
  } finally {
    ui.polling = false;
  }
}

function actions(task) {
  const td = document.createElement("td");
  td.className = "actions";
  if (!has("tasks:write")) return td;
  const act = (label, path) => makeButton(label, async () => {
    await api("POST", `/api/v1/tasks/${task.id}/${path}`);
    await ui.refresh();
  }, path);
  if (!FINISHED.includes(task.status) && !task.cancel_requested) td.append(act("Cancel", "cancel"));
  if (["queued", "scheduled", "waiting"].includes(task.status)) td.append(act("Pause", "pause"));
  if (task.status === "paused") td.append(act("Resume", "resume"));
  if (task.status === "failed" || task.status === "canceled") td.append(act("Retry", "retry"));
  if (FINISHED.includes(task.status)) {
    td.append(makeButton("Delete", async () => {
      await api("DELETE", `/api/v1/tasks/${task.id}`);
      await ui.refresh();
    }, "delete"));
  }
  return td;
}

function progressCell(task) {
  const td = cell(null, "nowrap");
  const bar = document.createElement("progress");
  bar.max = 100;
  bar.value = task.progress;
  td.append(bar, el("span", ` ${task.progress}%`));
  if (task.progress_message && !FINISHED.includes(task.status)) td.title = task.progress_message;
  return td;
}

function outcome(task) {
  const td = cell(null);
  if (task.result !== null && task.result !== undefined) {
    const details = document.createElement("details");
    details.append(el("summary", "result"), el("pre", pretty(task.result)));
    td.append(details);
  }
  const reason = task.reason || (task.errors.length ? task.errors[task.errors.length - 1].error : null);
  if (reason && task.status !== "succeeded") td.append(el("div", reason, task.status === "failed" ? "bad" : "muted"));
  return td;
}

export async function refreshTasks() {
  $("task-form").hidden = !has("tasks:write");
  $("schedule-form").hidden = !has("tasks:write");
  const status = $("task-filter").value;
  const query = status ? `?status=${encodeURIComponent(status)}&limit=100` : "?limit=100";
  const { tasks } = await api("GET", `/api/v1/tasks${query}`);
  const tbody = document.querySelector("#tasks tbody");
  tbody.replaceChildren();
  for (const t of tasks) {
    const tr = row(tbody, [t.id, cell(t.kind, "mono"), t.priority, cell(t.cancel_requested && !FINISHED.includes(t.status) ? `${t.status} (canceling)` : t.status, statusClass(t.status)),
      progressCell(t), `${t.attempts}/${t.max_attempts}`, time(t.created_ms), outcome(t), actions(t)]);
    tr.dataset.task = String(t.id);
    tr.dataset.status = t.status;
  }
  if (!tasks.length) {
    const td = cell("No tasks.", "muted");
    td.colSpan = 9;
    row(tbody, [td]);
  }
  const { schedules } = await api("GET", "/api/v1/schedules");
  const sbody = document.querySelector("#schedules tbody");
  sbody.replaceChildren();
  for (const s of schedules) {
    const del = document.createElement("td");
    if (has("tasks:write") && !s.name.endsWith("(built in)")) {
      del.append(makeButton("Delete", async () => {
        await api("DELETE", `/api/v1/schedules/${s.id}`);
        await ui.refresh();
      }, "delete"));
    }
    row(sbody, [s.name, cell(s.cron, "mono"), cell(s.kind, "mono"), s.missed, time(s.next_fire_ms), s.last_task ?? "", s.skipped, del]);
  }
  follow();
}
