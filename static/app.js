// Backdrop demo page: camera -> server (WebRTC) -> processed video back, with live controls.
"use strict";

const $ = (id) => document.getElementById(id);
const controls = Array.from(document.querySelectorAll("[data-key]"));
let pc = null;
let channel = null;
let sessionResource = null;
let sessionId = null;
let localStream = null;
let statsTimer = null;
let defaults = {}; // the server's config for new sessions (GET /config/defaults)
const touched = new Set(); // controls the user changed: the defaults, arriving later, leave them alone
const myUploads = []; // upload ids are known only to their uploader: the server lists presets alone
let subject = "all"; // who stays: "all", "main" or the {x, y} a click picked

function showMessage(text, kind = "error") {
  const box = $("message");
  box.textContent = text;
  box.className = kind === "info" ? "info" : "";
  box.hidden = !text;
}

function controlValue(el) {
  if (el.type === "checkbox") return el.checked;
  if (el.type === "range") return parseFloat(el.value);
  return el.value;
}

// Only what the user changed from the server's defaults: the server decides the rest.
function changedConfig() {
  const config = {};
  for (const el of controls) {
    const key = el.dataset.key;
    const value = controlValue(el);
    if (value !== "" && value !== defaults[key]) config[key] = value;
  }
  if (touched.has("subject")) config.subject = subject;
  return config;
}

// Creating, changing or ending a session needs the server's bearer token when it has one (WHIP's rule).
function authHeaders(headers = {}) {
  const token = $("token").value.trim();
  return token ? { ...headers, Authorization: `Bearer ${token}` } : headers;
}

async function loadDefaults() {
  const response = await fetch("/config/defaults");
  const body = await response.json();
  defaults = body.config;
  $("token-row").hidden = !body.token_required;
  applyConfig(Object.fromEntries(Object.entries(defaults).filter(([key]) => !touched.has(key))));
  $("start").disabled = false;
}

function applyConfig(config) {
  for (const el of controls) {
    const value = config[el.dataset.key];
    if (value === undefined) continue;
    if (el.type === "checkbox") el.checked = Boolean(value);
    else el.value = String(value);
  }
  for (const img of document.querySelectorAll("#thumbs img")) img.classList.toggle("selected", img.dataset.id === config.image);
  if (config.subject !== undefined) showSubject(config.subject);
}

// Who stays in the picture: "all", "main", or {x, y}, the person picked by a click.
function showSubject(choice) {
  subject = choice;
  const picked = typeof subject === "object" && subject !== null;
  $("subject").textContent = picked ? "the person you picked" : subject === "main" ? "the main person" : "everyone";
  $("everyone").hidden = subject === "all";
  $("main").hidden = subject === "main";
}

// A click on the processed video, as a point on the frame (0..1 from its top left), the letterbox left out.
function pointOnVideo(video, event) {
  const box = video.getBoundingClientRect();
  if (!video.videoWidth || !box.width) return null;
  const scale = Math.min(box.width / video.videoWidth, box.height / video.videoHeight);
  const width = video.videoWidth * scale, height = video.videoHeight * scale;
  const x = (event.clientX - box.left - (box.width - width) / 2) / width;
  const y = (event.clientY - box.top - (box.height - height) / 2) / height;
  if (x < 0 || x > 1 || y < 0 || y > 1) return null;
  return { x: Math.round(x * 1000) / 1000, y: Math.round(y * 1000) / 1000 };
}

function sendConfig(changes) {
  if (channel && channel.readyState === "open") channel.send(JSON.stringify({ type: "config", config: changes }));
}

async function loadBackgrounds(select) {
  const response = await fetch("/backgrounds");
  const backgrounds = [...(await response.json()).backgrounds, ...myUploads];
  const image = $("image");
  const keep = select || image.value;
  image.innerHTML = "";
  $("thumbs").innerHTML = "";
  for (const id of backgrounds) {
    image.add(new Option(id, id));
    const thumb = document.createElement("img");
    thumb.src = `/backgrounds/${encodeURIComponent(id)}`;
    thumb.alt = id;
    thumb.title = id;
    thumb.dataset.id = id;
    thumb.addEventListener("click", () => choose({ mode: "image", image: id }));
    $("thumbs").append(thumb);
  }
  if (keep && backgrounds.includes(keep)) image.value = keep;
  applyConfig({ image: image.value });
}

async function loadModels() {
  const response = await fetch("/models");
  const { models, default: preferred } = await response.json();
  const select = $("model");
  select.innerHTML = "";
  for (const model of models) {
    select.add(new Option(`${model.name} (${model.input_size[0]}x${model.input_size[1]})`, model.name));
  }
  select.value = preferred;
}

function choose(changes) {
  for (const key of Object.keys(changes)) touched.add(key);
  applyConfig(changes);
  sendConfig(changes);
}

async function describeError(response) {
  try {
    const body = await response.json();
    return body.error || response.statusText;
  } catch {
    return response.statusText;
  }
}

async function start() {
  $("start").disabled = true;
  showMessage("");
  try {
    localStream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
  } catch (err) {
    const denied = err && (err.name === "NotAllowedError" || err.name === "SecurityError");
    showMessage(denied
      ? "Camera access was denied. Allow the camera for this page (browsers only offer it on https:// or localhost) and press Start again."
      : `Could not open the camera: ${err && err.message ? err.message : err}`);
    $("start").disabled = false;
    return;
  }
  $("local").srcObject = localStream;
  pc = new RTCPeerConnection();
  for (const track of localStream.getTracks()) pc.addTrack(track, localStream);
  pc.addEventListener("track", (event) => {
    if (event.track.kind === "video") $("remote").srcObject = new MediaStream([event.track]);
  });
  pc.addEventListener("connectionstatechange", () => {
    if (pc && (pc.connectionState === "failed" || pc.connectionState === "disconnected")) {
      showMessage(`The connection to the server ${pc.connectionState}. Press Start to try again.`);
      stop(false);
    }
  });
  channel = pc.createDataChannel("control");
  channel.addEventListener("message", (event) => {
    const message = JSON.parse(event.data);
    if (message.type === "stats") showStats(message);
    else if (message.type === "config") applyConfig(message.config);
    else if (message.type === "error") showMessage(`Setting refused: ${message.error}`);
  });
  try {
    await pc.setLocalDescription(await pc.createOffer());
    await iceGatheringComplete(pc);
    const response = await fetch("/offer", {
      method: "POST",
      headers: authHeaders({ "Content-Type": "application/json" }),
      body: JSON.stringify({ sdp: pc.localDescription.sdp, type: "offer", config: changedConfig() }),
    });
    if (!response.ok) {
      const reason = await describeError(response);
      if (response.status === 401) throw new Error("The server needs a token: enter it beside Start.");
      throw new Error(response.status === 503 ? `The server is busy: ${reason}. Try again later.` : `The server refused the session: ${reason}`);
    }
    const answer = await response.json();
    sessionId = answer.session_id;
    sessionResource = answer.resource;  // behind a proxy, it names the process holding the session
    $("session").textContent = `session ${sessionId}`;
    const viewer = new URL(answer.view, location.href).href;
    $("viewer").href = viewer;
    $("viewer").textContent = viewer;
    $("whip").textContent = new URL("/whip", location.href).href;
    $("links").hidden = false;
    await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
    $("stop").disabled = false;
    statsTimer = setInterval(updateRoundTrip, 1000);
  } catch (err) {
    showMessage(err.message || String(err));
    await stop(false);
  }
}

function iceGatheringComplete(peer) {
  if (peer.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => { if (peer.iceGatheringState === "complete") { peer.removeEventListener("icegatheringstatechange", done); resolve(); } };
    peer.addEventListener("icegatheringstatechange", done);
    setTimeout(resolve, 3000); // host candidates are enough on a LAN; do not hang on slow STUN
  });
}

async function stop(hangUp = true) {
  clearInterval(statsTimer);
  if (hangUp && sessionResource) {
    try { await fetch(sessionResource, { method: "DELETE", headers: authHeaders() }); } catch { /* the server may be gone */ }
  }
  if (pc) pc.close();
  if (localStream) localStream.getTracks().forEach((t) => t.stop());
  pc = channel = localStream = sessionId = sessionResource = null;
  $("local").srcObject = null;
  $("remote").srcObject = null;
  $("session").textContent = "";
  $("links").hidden = true;
  $("start").disabled = false;
  $("stop").disabled = true;
}

function showStats(stats) {
  const set = (name, text) => { document.querySelector(`[data-stat="${name}"]`).textContent = text; };
  set("fps", stats.fps.toFixed(1));
  set("processing", stats.processing_ms_p50 == null ? "–" : `${stats.processing_ms_p50} / ${stats.processing_ms_p95}`);
  set("frames", `${stats.frames_in} / ${stats.frames_out} / ${stats.frames_dropped}`);
}

async function updateRoundTrip() {
  if (!pc) return;
  const report = await pc.getStats();
  report.forEach((entry) => {
    if (entry.type === "candidate-pair" && entry.nominated && entry.currentRoundTripTime !== undefined) {
      document.querySelector('[data-stat="rtt"]').textContent = (entry.currentRoundTripTime * 1000).toFixed(0);
    }
  });
}

async function upload(file) {
  const response = await fetch("/backgrounds", { method: "POST", headers: { "Content-Type": file.type || "application/octet-stream" }, body: file });
  if (!response.ok) {
    showMessage(`Upload refused: ${await describeError(response)}`);
    return;
  }
  const { id } = await response.json();
  myUploads.push(id);
  await loadBackgrounds(id);
  choose({ mode: "image", image: id });
  showMessage(`Background ${file.name} uploaded.`, "info");
}

for (const el of controls) {
  const event = el.type === "range" || el.type === "color" ? "input" : "change";
  el.addEventListener(event, () => {
    touched.add(el.dataset.key);
    sendConfig({ [el.dataset.key]: controlValue(el) });
  });
}
$("remote").addEventListener("click", (event) => {
  const point = pointOnVideo($("remote"), event);
  if (point) choose({ subject: point });
});
$("everyone").addEventListener("click", () => choose({ subject: "all" }));
$("main").addEventListener("click", () => choose({ subject: "main" }));
$("start").addEventListener("click", start);
$("stop").addEventListener("click", () => stop(true));
$("upload").addEventListener("change", (event) => { if (event.target.files[0]) upload(event.target.files[0]); });
window.addEventListener("beforeunload", () => { if (sessionResource) navigator.sendBeacon && fetch(sessionResource, { method: "DELETE", headers: authHeaders(), keepalive: true }); });
Promise.all([loadBackgrounds(), loadModels()])
  .then(loadDefaults)
  .catch(() => showMessage("Cannot reach the server."));
