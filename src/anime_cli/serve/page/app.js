// The page talks to the same API as curl: POST /v1/convert with the picture as the body.
"use strict";
const $ = (id) => document.getElementById(id);
let picked = null;
let resultUrl = null;

function say(text, error) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
}

function pick(file) {
  if (!file) return;
  picked = file;
  $("before").src = URL.createObjectURL(file);
  $("drop-text").textContent = file.name + " (" + (file.size / 1e6).toFixed(1) + " MB)";
  $("go").disabled = false;
  say("");
}

async function loadInfo() {
  const r = await fetch("/v1/info");
  const info = await r.json();
  for (const s of info.styles) {
    const o = document.createElement("option");
    o.value = o.textContent = s;
    if (s === info.style) o.selected = true;
    $("style").appendChild(o);
  }
  $("max_side").value = info.max_side;
  $("faces").checked = info.faces;
  if (info.token) $("token-box").hidden = false;
  $("token").value = sessionStorage.getItem("anime-cli-token") || "";
}

function line(rec) {
  // the figures of the server's log line for this picture
  const t = Object.entries(rec.timings || {}).map(([k, v]) => k + " " + v.toFixed(2) + "s").join(" ");
  const size = (rec.input_size || []).join("x") + " -> " + (rec.output_size || []).join("x");
  return [rec.input, size, rec.faces ? "faces " + rec.faces : "", t, "total " + (rec.seconds || 0).toFixed(2) + "s",
          rec.peak_rss_mb != null ? "peak " + Math.round(rec.peak_rss_mb) + " MB" : "",
          rec.queue_wait >= 0.005 ? "waited " + rec.queue_wait.toFixed(2) + "s" : ""].filter(Boolean).join("  ");
}

async function convert(ev) {
  ev.preventDefault();
  if (!picked) return;
  const q = new URLSearchParams({style: $("style").value, max_side: $("max_side").value,
                                 faces: $("faces").checked ? "true" : "false", name: picked.name});
  const headers = {};
  const token = $("token").value;
  if (token) { headers["Authorization"] = "Bearer " + token; sessionStorage.setItem("anime-cli-token", token); }
  $("go").disabled = true;
  say("converting...");
  try {
    const r = await fetch("/v1/convert?" + q, {method: "POST", body: picked, headers});
    if (!r.ok) {
      let msg = r.status + " " + r.statusText;
      try { msg = r.status + ": " + (await r.json()).error; } catch (e) { /* not JSON */ }
      if (r.status === 401) $("token-box").hidden = false;
      say(msg, true);
      return;
    }
    const rec = JSON.parse(r.headers.get("X-Anime-Cli-Record") || "{}");
    const blob = await r.blob();
    if (resultUrl) URL.revokeObjectURL(resultUrl);
    resultUrl = URL.createObjectURL(blob);
    $("after").src = resultUrl;
    $("line").textContent = line(rec);
    const d = $("download");
    d.href = resultUrl;
    const m = /filename="([^"]+)"/.exec(r.headers.get("Content-Disposition") || "");
    d.download = m ? m[1] : "anime";
    d.hidden = false;
    say("done");
  } catch (e) {
    say("the server did not answer (" + e + ")", true);
  } finally {
    $("go").disabled = false;
  }
}

$("file").addEventListener("change", (e) => pick(e.target.files[0]));
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); pick(e.dataTransfer.files[0]); });
$("form").addEventListener("submit", convert);
loadInfo().catch((e) => say("cannot reach the server (" + e + ")", true));
