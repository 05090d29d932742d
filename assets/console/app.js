"use strict";
// The console talks to the same REST API as every other client.
async function load() {
  const info = await (await fetch("/api/v1/system/info")).json();
  document.getElementById("version").textContent = `v${info.version} (${info.commit})`;
  const dl = document.getElementById("device");
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
  const body = document.querySelector("#checks tbody");
  body.replaceChildren();
  for (const check of ready.checks) {
    const tr = document.createElement("tr");
    for (const [text, cls] of [[check.name, ""], [check.ok ? "ok" : "failing", check.ok ? "ok" : "bad"], [check.detail, ""]]) {
      const td = document.createElement("td"); td.textContent = text; if (cls) td.className = cls; tr.append(td);
    }
    body.append(tr);
  }
}
load().catch((e) => console.error(e));
setInterval(() => load().catch(() => {}), 5000);
