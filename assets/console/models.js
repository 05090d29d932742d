// The models page: the registry (models and their versions), uploads, deployments and a
// "Try it" form that sends a KServe V2 inference request.
//   #models         the list and the create form
//   #models/{name}  the same, plus that model's deployment, versions and Try it

import { $, api, apiError, bytes, cell, el, formData, has, makeButton, pretty, row, showError, state, when } from "./common.js";

const ui = {
  refresh: async () => {},
  model: null, // the model shown in the detail panel, as last fetched
  busy: null, // what the detail panel is waiting for, or null
  deployKey: null, // the deployment the deploy form was last filled from
  prefill: { key: null, text: null }, // the Try it request last written into the textarea
};

const modelPath = (name) => `/api/v1/models/${encodeURIComponent(name)}`;

export function initModels({ refresh }) { ui.refresh = refresh; }

/** Forgets what the last session saw (on log out). */
export function resetModels() {
  ui.model = null;
  ui.deployKey = null;
  ui.prefill = { key: null, text: null };
  $("try-form").reset();
  $("try-output").hidden = true;
  status("model-status", "");
  status("upload-status", "");
}

export async function refreshModels(selected) {
  const { models } = await api("GET", "/api/v1/models");
  $("model-form").hidden = !has("models:write");
  renderList(models, selected);
  const model = selected === null ? undefined : models.find((m) => m.name === selected);
  if (selected !== null && !model) showError(new Error(`There is no model named ${selected}.`), "refresh");
  if (!model || (ui.model && ui.model.name !== model.name)) {
    ui.deployKey = null;
    $("try-output").hidden = true;
    status("model-status", "");
    status("upload-status", "");
  }
  ui.model = model || null;
  $("model-detail").hidden = !model;
  if (model) renderDetail(model);
}

function status(id, text, bad = false) {
  const p = $(id);
  p.textContent = text;
  p.className = bad ? "bad" : "";
}

// ---- the list ---------------------------------------------------------------------

// serving: green; loading: plain; failed (or anything else): red.
const stateClass = (s) => (s === "serving" ? "ok" : s === "loading" ? "" : "bad");

function deploymentCell(d) {
  if (!d) return cell("not deployed", "muted");
  return cell(`v${d.version} ${d.state}`, stateClass(d.state));
}

function renderList(models, selected) {
  const tbody = document.querySelector("#models tbody");
  tbody.replaceChildren();
  for (const m of models) {
    const href = `#models/${encodeURIComponent(m.name)}`;
    const link = el("a", m.name);
    link.href = href;
    const name = document.createElement("td");
    name.append(link);
    const tr = row(tbody, [name, m.description, m.tags.join(", "), deploymentCell(m.deployment), m.versions.length]);
    tr.dataset.model = m.name;
    tr.className = m.name === selected ? "clickable selected" : "clickable";
    tr.addEventListener("click", () => { location.hash = href; });
  }
  if (!models.length) {
    const td = cell("No models yet.", "muted");
    td.colSpan = 5;
    row(tbody, [td]);
  }
}

// ---- the detail panel -------------------------------------------------------------

function renderDetail(model) {
  const canWrite = has("models:write");
  $("model-name").textContent = model.name;
  const meta = [model.description || "No description.",
    model.tags.length ? `tags: ${model.tags.join(", ")}` : "no tags",
    `created ${when(model.created_at)}`];
  $("model-meta").textContent = meta.join(" · ");
  $("model-delete").hidden = !canWrite;
  $("model-delete").disabled = Boolean(ui.busy) || Boolean(model.deployment);
  $("model-delete").title = model.deployment ? "Undeploy it first" : "";
  renderDeployment(model, canWrite);
  renderVersions(model, canWrite);
  $("upload-form").hidden = !canWrite;
  $("upload-form").querySelector("button").disabled = Boolean(ui.busy);
  renderTryIt(model);
}

function tensors(specs) {
  return specs.map((t) => `${t.name} ${t.datatype} [${t.shape.map((d) => (d < 0 ? "?" : d)).join(", ")}]`).join("; ");
}

function mean(total, count) {
  return count ? `${Math.round(total / count)} µs` : "–";
}

function renderDeployment(model, canWrite) {
  const d = model.deployment;
  $("no-deployment").hidden = Boolean(d);
  const dl = $("deployment");
  dl.hidden = !d;
  dl.replaceChildren();
  if (d) {
    const s = d.stats || { success: 0, failure: 0, queue_us_total: 0, compute_us_total: 0 };
    const count = s.success + s.failure;
    const fields = [
      ["version", d.version, ""],
      ["state", d.state, stateClass(d.state)],
      ["error", d.error, "bad"],
      ["device", d.device_kind ? `${d.device} (${d.device_kind})` : d.device, ""],
      ["precision", d.precision_running && d.precision_running !== d.precision
        ? `${d.precision} (computing in ${d.precision_running})` : d.precision, ""],
      ["instances", d.instances, ""],
      ["max batch size", d.max_batch_size, ""],
      ["max batch delay", `${d.max_batch_delay_us} µs`, ""],
      ["queue capacity", d.queue_capacity, ""],
      ["weights", bytes(d.weight_bytes), ""],
      ["deployed", when(d.deployed_at), ""],
      ["previous version", d.previous_version ?? "none", ""],
      ["requests", `${s.success} ok, ${s.failure} failed`, s.failure ? "bad" : ""],
      ["mean queue time", mean(s.queue_us_total, count), ""],
      ["mean compute time", mean(s.compute_us_total, count), ""],
    ];
    for (const [name, value, cls] of fields) {
      if (value === null || value === undefined) continue;
      const dd = el("dd", value, cls);
      dd.dataset.field = name;
      dl.append(el("dt", name), dd);
    }
  }

  const form = $("deploy-form");
  form.hidden = !canWrite;
  const ready = model.versions.filter((v) => v.state === "ready").map((v) => v.version).sort((a, b) => b - a);
  const select = form.elements.version;
  const chosen = select.value;
  const options = ready.map((v) => String(v));
  if ([...select.options].map((o) => o.value).join() !== options.join()) {
    select.replaceChildren(...options.map((v) => el("option", v)));
    if (options.includes(chosen)) select.value = chosen;
  }
  // Fill the settings from the deployment when it changes, not while someone edits them.
  const key = `${model.name} ${JSON.stringify(d && { ...d, stats: null, deployed_at: null, state: null, error: null })}`;
  if (key !== ui.deployKey) {
    ui.deployKey = key;
    if (d && options.includes(String(d.version))) select.value = String(d.version);
    form.elements.device.value = d ? d.device : "auto";
    form.elements.precision.value = d ? d.precision : "f32";
    for (const name of ["instances", "max_batch_size", "max_batch_delay_us", "queue_capacity"]) {
      form.elements[name].value = d ? d[name] : "";
    }
  }
  form.querySelector("button[type=submit]").disabled = Boolean(ui.busy) || !ready.length;
  $("undeploy").disabled = Boolean(ui.busy) || !d;
  const rollback = $("rollback");
  rollback.disabled = Boolean(ui.busy) || !d || d.previous_version === null || d.previous_version === undefined;
  rollback.textContent = d && d.previous_version ? `Roll back to v${d.previous_version}` : "Roll back";
}

function signature(v) {
  if (v.signature === "verified") return cell(v.signed_by ? `verified (${v.signed_by})` : "verified", "ok");
  if (v.signature === "untrusted") return cell("untrusted", "bad");
  return cell(v.signature, "muted");
}

function renderVersions(model, canWrite) {
  const tbody = document.querySelector("#versions tbody");
  tbody.replaceChildren();
  const deployed = model.deployment ? model.deployment.version : null;
  for (const v of [...model.versions].sort((a, b) => b.version - a.version)) {
    const stateCell = cell(v.state === "ready" ? "ready" : `invalid: ${v.error || "unknown error"}`, v.state === "ready" ? "ok" : "bad");
    const sha = cell(v.sha256.slice(0, 12), "mono");
    sha.title = v.sha256;
    const io = cell(null, "nowrap");
    io.append(el("div", `in: ${tensors(v.inputs)}`), el("div", `out: ${tensors(v.outputs)}`));
    const actions = document.createElement("td");
    actions.className = "actions";
    if (canWrite) {
      const deployButton = makeButton("Deploy", () => deploy({ ...settings(), version: v.version }), "deploy");
      deployButton.disabled = Boolean(ui.busy) || v.state !== "ready" || v.version === deployed;
      const deleteButton = makeButton("Delete", () => deleteVersion(model.name, v.version), "delete");
      deleteButton.disabled = Boolean(ui.busy) || v.version === deployed;
      actions.append(deployButton, deleteButton);
    }
    const version = cell(v.version === deployed ? `${v.version} (deployed)` : v.version, "nowrap");
    const tr = row(tbody, [version, stateCell, sha, cell(bytes(v.size), "nowrap"), signature(v), io,
      `${when(v.created_at)}${v.created_by ? ` by ${v.created_by}` : ""}`, actions]);
    tr.dataset.version = String(v.version);
  }
  if (!model.versions.length) {
    const td = cell("No versions yet: upload an .onnx file.", "muted");
    td.colSpan = 8;
    row(tbody, [td]);
  }
}

// ---- Try it -------------------------------------------------------------------------

/** A V2 inference request of zeros for every input of `version` (dynamic sizes as 1). */
function sampleRequest(version) {
  const inputs = version.inputs.map((t) => {
    const shape = t.shape.map((d) => (d < 0 ? 1 : d));
    const count = shape.reduce((a, b) => a * b, 1);
    const zero = t.datatype === "BOOL" ? false : t.datatype === "BYTES" ? "" : 0;
    return { name: t.name, shape, datatype: t.datatype, data: new Array(count).fill(zero) };
  });
  return pretty({ inputs });
}

function renderTryIt(model) {
  const d = model.deployment;
  $("try-section").hidden = !has("infer") || !d;
  if (!d) return;
  const version = model.versions.find((v) => v.version === d.version);
  const key = `${model.name} ${d.version}`;
  const textarea = $("try-form").elements.request;
  // Replace the request when the deployed version changes, unless someone wrote their own.
  if (version && key !== ui.prefill.key && (textarea.value === "" || textarea.value === ui.prefill.text || !ui.prefill.key?.startsWith(`${model.name} `))) {
    ui.prefill = { key, text: sampleRequest(version) };
    textarea.value = ui.prefill.text;
  }
  $("try-form").querySelector("button").disabled = d.state !== "serving";
}

async function tryIt(event) {
  event.preventDefault();
  const output = $("try-output");
  const meta = $("try-meta");
  let body;
  try {
    body = JSON.parse(event.target.elements.request.value);
  } catch (e) {
    meta.textContent = `The request is not valid JSON: ${e.message}`;
    meta.className = "bad";
    output.hidden = true;
    return;
  }
  const name = ui.model.name;
  meta.textContent = "Sending…";
  meta.className = "";
  const started = performance.now();
  try {
    const answer = await api("POST", `/v2/models/${encodeURIComponent(name)}/infer`, body);
    meta.textContent = `Answer from ${answer.model_name} v${answer.model_version} in ${Math.round(performance.now() - started)} ms`;
    output.textContent = pretty(answer);
    output.className = "";
  } catch (e) {
    meta.textContent = `Failed (${e.status || "network"})`;
    meta.className = "bad";
    output.textContent = e.message;
    output.className = "bad";
  }
  output.hidden = false;
}

// ---- actions -------------------------------------------------------------------------

/** Runs `action` with the detail panel's buttons off and its progress in `statusId`. */
async function busy(label, statusId, action) {
  ui.busy = label;
  status(statusId, label);
  if (ui.model) renderDetail(ui.model);
  try {
    status(statusId, await action());
  } catch (e) {
    status(statusId, e.message, true);
  } finally {
    ui.busy = null;
    await ui.refresh().catch(showError);
  }
}

function settings() {
  const data = formData($("deploy-form"));
  const body = { device: data.device, precision: data.precision };
  for (const name of ["instances", "max_batch_size", "max_batch_delay_us", "queue_capacity"]) {
    if (data[name] !== "") body[name] = Number(data[name]);
  }
  return body;
}

function deploy(body) {
  const name = ui.model.name;
  return busy(`Deploying version ${body.version}: loading and warming up…`, "model-status", async () => {
    const model = await api("POST", `${modelPath(name)}/deploy`, body);
    const d = model.deployment;
    return d ? `Version ${d.version} is ${d.state}${d.error ? `: ${d.error}` : ""}.` : "Deployed.";
  });
}

function deleteVersion(name, version) {
  if (!window.confirm(`Delete version ${version} of ${name}? Its file is removed.`)) return Promise.resolve();
  return busy(`Deleting version ${version}…`, "model-status", async () => {
    await api("DELETE", `${modelPath(name)}/versions/${version}`);
    return `Version ${version} deleted.`;
  });
}

/** Sends the file as the raw request body; XMLHttpRequest, for its upload progress. */
function upload(name, file) {
  const bar = $("upload-progress");
  bar.max = file.size || 1;
  bar.value = 0;
  bar.hidden = false;
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", `${modelPath(name)}/versions`);
    xhr.setRequestHeader("Content-Type", "application/octet-stream");
    if (state.csrf) xhr.setRequestHeader("X-CSRF-Token", state.csrf);
    xhr.upload.onprogress = (e) => {
      if (e.lengthComputable) { bar.max = e.total; bar.value = e.loaded; }
    };
    xhr.onload = () => {
      if (xhr.status >= 200 && xhr.status < 300) resolve(JSON.parse(xhr.responseText));
      else reject(apiError(xhr.status, xhr.statusText, xhr.responseText));
    };
    xhr.onerror = () => reject(new Error("The upload failed: the connection was lost."));
    xhr.onabort = () => reject(new Error("The upload was cancelled."));
    xhr.send(file);
  });
}

$("upload-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const form = event.target;
  const file = form.elements.file.files[0];
  if (!file || !ui.model) return;
  busy(`Uploading ${file.name} (${bytes(file.size)})…`, "upload-status", async () => {
    try {
      const v = await upload(ui.model.name, file);
      form.reset();
      if (v.state !== "ready") throw new Error(`Version ${v.version} is invalid: ${v.error}`);
      return `Version ${v.version} uploaded and ready.`;
    } finally {
      $("upload-progress").hidden = true;
    }
  });
});

$("deploy-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const body = settings();
  body.version = Number(event.target.elements.version.value);
  deploy(body);
});

$("undeploy").addEventListener("click", () => {
  const name = ui.model.name;
  busy("Undeploying…", "model-status", async () => {
    await api("POST", `${modelPath(name)}/undeploy`);
    return `${name} is no longer deployed.`;
  });
});

$("rollback").addEventListener("click", () => {
  const name = ui.model.name;
  busy("Rolling back…", "model-status", async () => {
    const model = await api("POST", `${modelPath(name)}/rollback`);
    return model.deployment ? `Rolled back to version ${model.deployment.version}.` : "Rolled back.";
  });
});

$("model-delete").addEventListener("click", () => {
  const name = ui.model.name;
  if (!window.confirm(`Delete the model ${name} and all its versions?`)) return;
  busy(`Deleting ${name}…`, "model-status", async () => {
    await api("DELETE", modelPath(name));
    location.hash = "#models";
    return "";
  });
});

$("model-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    const data = formData(event.target);
    const tags = data.tags.split(",").map((s) => s.trim()).filter(Boolean);
    const model = await api("POST", "/api/v1/models", { name: data.name, description: data.description, tags });
    event.target.reset();
    location.hash = `#models/${encodeURIComponent(model.name)}`;
    await ui.refresh();
  } catch (e) { showError(e); }
});

$("try-form").addEventListener("submit", (event) => { tryIt(event).catch(showError); });
