// The profile page: choose a picture → its original uploads at once (signed URL) while you crop →
// Save sends the crop → a progress state until ProfileImageCompleted arrives on the WebSocket →
// the new 128 and 512 pictures replace the old ones (cache-busted with ?v=). Other tabs of the
// same user listen to the same events and update too. Plain JavaScript, no build step.
// Requests use paths relative to the page, so the service may sit under a path prefix.
"use strict";

const TRY_LATER = "Try again later";
const NAME_KEY = "avatar-proxy-demo-name";
const $ = (id) => document.getElementById(id);

const state = {
  token: null, userId: null, eventsUrl: null, avatarUrl: null, refresh: null,
  limits: { max_bytes: 5 * 1024 * 1024, accepted_types: ["image/jpeg", "image/png", "image/webp"] },
  file: null,        // the chosen file
  upload: null,      // Promise of its upload id (rejects with a message)
  uploadFailed: false,
  image: null,       // {width, height} of the preview, in source pixels; null when not shown
  crop: null,        // {x, y, size} in source pixels
  saving: null,      // job id being waited for, or "" before the server answered
  finished: new Map(), // job id → event, for events that beat the POST's answer
  socket: null,
};

// ---- messages -----------------------------------------------------------------------------
function say(text, kind) {
  const m = $("message");
  m.textContent = text || "";
  m.className = kind || "";
}
function progress(text) {
  $("progress").hidden = !text;
  if (text) $("progress-text").textContent = text;
}
async function userMessage(response) {
  try {
    const body = await response.json();
    if (body && typeof body.user_message === "string") return body.user_message;
  } catch (_) { /* not JSON */ }
  return TRY_LATER;
}
function megabytes(bytes) {
  if (bytes < 1024 * 1024) return Math.ceil(bytes / 1024) + " KB";
  return (bytes / (1024 * 1024)).toFixed(1).replace(/\.0$/, "") + " MB";
}

// ---- signing in (demo tokens) -------------------------------------------------------------
async function signIn(name) {
  const response = await fetch("token", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(name ? { name } : {}),
  });
  if (!response.ok) throw new Error(await userMessage(response));
  const body = await response.json();
  const changed = body.user_id !== state.userId;
  state.token = body.access_token;
  state.userId = body.user_id;
  state.eventsUrl = body.events_url;
  state.avatarUrl = body.avatar_url;
  localStorage.setItem(NAME_KEY, body.user_id.replace(/^demo-/, ""));
  $("user-id").textContent = body.user_id;
  $("name").value = body.user_id.replace(/^demo-/, "");
  clearTimeout(state.refresh);
  // A fresh token a minute before this one expires (the socket reconnects with it when needed).
  state.refresh = setTimeout(() => signIn(localStorage.getItem(NAME_KEY)).catch(() => {}),
    Math.max(30, body.expires_in - 60) * 1000);
  if (changed) {
    showPictures(body.avatar_url);
    connect();
  }
  // Signed upload URLs point at the public base URL: from another origin they would be refused.
  const base = new URL(body.avatar_url, location.href);
  const note = $("origin-note");
  note.hidden = base.origin === location.origin;
  note.textContent = note.hidden ? "" : "Uploads go to " + base.origin + ": open this page at " +
    base.origin + location.pathname + " for them to work.";
}

function withSize(url, size, version) {
  const u = new URL(url, location.href);
  u.searchParams.set("s", String(size));
  if (version) u.searchParams.set("v", version);
  return u.toString();
}
function showPictures(avatarUrl) {
  $("avatar-128").src = withSize(avatarUrl, 128);
  $("avatar-512").src = withSize(avatarUrl, 512);
}

// ---- live events --------------------------------------------------------------------------
function connect() {
  if (state.socket) { state.socket.onclose = null; state.socket.close(); }
  const url = new URL(state.eventsUrl, location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : url.protocol.replace("http", "ws");
  url.searchParams.set("access_token", state.token);
  const socket = new WebSocket(url);
  state.socket = socket;
  socket.onopen = () => {
    $("live").textContent = "Live updates on.";
    if (state.saving) checkJob(state.saving); // in case its event went by while disconnected
  };
  socket.onmessage = (message) => {
    let event;
    try { event = JSON.parse(message.data); } catch (_) { return; }
    onEvent(event);
  };
  socket.onclose = () => {
    if (state.socket !== socket) return;
    $("live").textContent = "Live updates paused; reconnecting…";
    setTimeout(reconnect, 2000);
  };
}

// A fresh token (the old one may have expired), then the socket again; retried until it works.
function reconnect() {
  signIn(localStorage.getItem(NAME_KEY))
    .then(() => { if (state.socket.readyState > WebSocket.OPEN) connect(); })
    .catch(() => setTimeout(reconnect, 5000));
}

function onEvent(event) {
  const data = event.data || {};
  if (event.type === "ProfileImageUpdated") {
    if (state.saving === null) $("live").textContent = "A new picture is being processed…";
  } else if (event.type === "ProfileImageCompleted") {
    // The event's URLs when the service makes these sizes (AVATAR_VARIANT_SIZES), else the
    // avatar URL at that size and the new version (derived from the largest variant).
    const urls = data.urls || {};
    for (const size of [128, 512]) {
      const url = urls[String(size)] || (data.version && withSize(state.avatarUrl, size, data.version));
      if (url) $("avatar-" + size).src = url;
    }
    $("live").textContent = "Live updates on. Picture updated.";
    settle(data.job_id, event);
  } else if (event.type === "Lagged") {
    // Events were dropped for this connection: ask for the job we wait for directly.
    if (state.saving) checkJob(state.saving);
  } else if (event.type === "ProfileImageFailed") {
    $("live").textContent = "Live updates on.";
    settle(data.job_id, event);
  }
}

// The end of a job: ours (the one Save started) ends the progress state.
function settle(jobId, event) {
  if (!jobId) return;
  if (state.saving === "") { state.finished.set(jobId, event); return; }
  if (state.saving !== jobId) return;
  state.saving = null;
  progress(null);
  // The upload is used up either way: the next change starts with a new file.
  resetEditor();
  $("file").value = "";
  if (event.type === "ProfileImageCompleted") {
    say("Saved. Your new picture is live.", "good");
  } else {
    say((event.data && event.data.user_message) || TRY_LATER, "bad");
  }
}

async function checkJob(jobId) {
  const response = await fetch("../v1/jobs/" + encodeURIComponent(jobId), {
    headers: { Authorization: "Bearer " + state.token },
  }).catch(() => null);
  if (!response || !response.ok) return;
  const job = await response.json();
  if (job.status === "completed") {
    const urls = {};
    for (const v of (job.result && job.result.variants) || []) urls[String(v.size)] = v.url;
    onEvent({ type: "ProfileImageCompleted", data: { job_id: jobId, urls } });
  } else if (job.status === "failed") {
    onEvent({ type: "ProfileImageFailed", data: { job_id: jobId, ...(job.error || {}) } });
  }
}

// ---- choosing a file ----------------------------------------------------------------------
// Magic bytes, so a renamed file is caught here rather than by the server.
async function sniff(file) {
  const b = new Uint8Array(await file.slice(0, 12).arrayBuffer());
  if (b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff) return "image/jpeg";
  if (b[0] === 0x89 && b[1] === 0x50 && b[2] === 0x4e && b[3] === 0x47) return "image/png";
  const text = String.fromCharCode(...b);
  if (text.startsWith("RIFF") && text.slice(8, 12) === "WEBP") return "image/webp";
  return null;
}

async function check(file) {
  const accepted = state.limits.accepted_types;
  if (!accepted.includes(file.type) || (await sniff(file)) !== file.type) {
    return "“" + file.name + "” is not a JPEG, PNG or WebP picture. Choose one of those.";
  }
  if (file.size > state.limits.max_bytes) {
    return "“" + file.name + "” is " + megabytes(file.size) + "; pictures may be at most " +
      megabytes(state.limits.max_bytes) + ". Choose a smaller one.";
  }
  return null;
}

async function onFileChosen() {
  const file = $("file").files[0];
  resetEditor();
  if (!file) return;
  const problem = await check(file);
  if (problem) { say(problem, "bad"); return; }
  // The original goes up at once, while the user crops.
  state.file = file;
  startUpload();
  showPreview(file);
}

function startUpload() {
  state.uploadFailed = false;
  state.upload = upload(state.file);
  // Reported in the status line at once, and on Save, which tries the upload again.
  state.upload.catch(() => { state.uploadFailed = true; });
}

async function upload(file) {
  const status = $("upload-status");
  status.textContent = "Uploading your picture…";
  try {
    const grant = await fetch("../v1/uploads", {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: "Bearer " + state.token },
      body: JSON.stringify({ content_type: file.type, content_length: file.size }),
    });
    if (!grant.ok) throw new Error(await userMessage(grant));
    const g = await grant.json();
    const put = await fetch(g.url, { method: g.method, headers: g.headers, body: file });
    if (!put.ok) throw new Error(await userMessage(put));
    status.textContent = "Uploaded. Crop it, then Save.";
    return g.upload_id;
  } catch (e) {
    const text = e instanceof TypeError ? TRY_LATER : e.message; // TypeError: network failure
    status.textContent = "The upload failed. " + text + ".";
    throw new Error(text);
  }
}

function resetEditor() {
  say("");
  $("upload-status").textContent = "";
  $("cropper").hidden = true;
  $("save").disabled = true;
  state.file = null;
  state.upload = null;
  state.uploadFailed = false;
  state.image = null;
  state.crop = null;
  const preview = $("preview");
  if (preview.src.startsWith("blob:")) URL.revokeObjectURL(preview.src);
  preview.removeAttribute("src");
}

function showPreview(file) {
  const preview = $("preview");
  preview.onload = () => {
    // naturalWidth/Height are after EXIF orientation, like the server's crop coordinates.
    state.image = { width: preview.naturalWidth, height: preview.naturalHeight };
    const side = Math.min(state.image.width, state.image.height);
    state.crop = { x: Math.floor((state.image.width - side) / 2), y: Math.floor((state.image.height - side) / 2), size: side };
    $("crop-size").value = "100";
    $("cropper").hidden = false;
    $("save").disabled = !!state.saving;
    drawCrop();
  };
  preview.onerror = () => {
    // Nothing to crop on: the server uses the centred square.
    say("This picture cannot be previewed here; Save uses its centred square.", "");
    state.crop = null;
    $("save").disabled = !!state.saving;
  };
  preview.src = URL.createObjectURL(file);
}

// ---- the crop box -------------------------------------------------------------------------
function scale() { return state.image.width / $("preview").clientWidth; } // source px per CSS px
function minSide() { return Math.max(1, Math.round(Math.min(state.image.width, state.image.height) * 0.1)); }

function clampCrop(c) {
  const maxSide = Math.min(state.image.width, state.image.height);
  const size = Math.round(Math.min(maxSide, Math.max(minSide(), c.size)));
  const x = Math.round(Math.min(state.image.width - size, Math.max(0, c.x)));
  const y = Math.round(Math.min(state.image.height - size, Math.max(0, c.y)));
  return { x, y, size };
}

function drawCrop() {
  const c = state.crop;
  const s = scale();
  const box = $("crop-box");
  box.style.left = c.x / s + "px";
  box.style.top = c.y / s + "px";
  box.style.width = box.style.height = c.size / s + "px";
  $("crop-info").textContent = c.size + " × " + c.size + " px from (" + c.x + ", " + c.y + ")";
}

function setCrop(c) { state.crop = clampCrop(c); drawCrop(); }

function resizeAroundCentre(size) {
  const c = state.crop;
  const cx = c.x + c.size / 2, cy = c.y + c.size / 2;
  setCrop({ x: cx - size / 2, y: cy - size / 2, size });
}

function setUpCropper() {
  const box = $("crop-box");
  let drag = null;
  box.addEventListener("pointerdown", (e) => {
    if (!state.crop) return;
    e.preventDefault();
    box.setPointerCapture(e.pointerId);
    box.focus();
    drag = { resize: e.target.id === "crop-handle", startX: e.clientX, startY: e.clientY, from: { ...state.crop } };
  });
  box.addEventListener("pointermove", (e) => {
    if (!drag) return;
    const s = scale();
    const dx = (e.clientX - drag.startX) * s, dy = (e.clientY - drag.startY) * s;
    if (drag.resize) {
      setCrop({ x: drag.from.x, y: drag.from.y, size: Math.min(
        drag.from.size + Math.max(dx, dy),
        state.image.width - drag.from.x, state.image.height - drag.from.y) });
    } else {
      setCrop({ x: drag.from.x + dx, y: drag.from.y + dy, size: drag.from.size });
    }
    syncSlider();
  });
  const end = () => { drag = null; };
  box.addEventListener("pointerup", end);
  box.addEventListener("pointercancel", end);
  box.addEventListener("keydown", (e) => {
    if (!state.crop) return;
    const c = state.crop;
    const step = Math.max(1, Math.round(Math.min(state.image.width, state.image.height) * (e.shiftKey ? 0.1 : 0.02)));
    const moves = {
      ArrowLeft: { x: c.x - step }, ArrowRight: { x: c.x + step },
      ArrowUp: { y: c.y - step }, ArrowDown: { y: c.y + step },
      Home: { x: 0 }, End: { x: state.image.width }, PageUp: { y: 0 }, PageDown: { y: state.image.height },
    };
    if (moves[e.key]) {
      setCrop({ ...c, ...moves[e.key] });
    } else if (e.key === "+" || e.key === "=") {
      resizeAroundCentre(c.size + step); syncSlider();
    } else if (e.key === "-" || e.key === "_") {
      resizeAroundCentre(c.size - step); syncSlider();
    } else {
      return;
    }
    e.preventDefault();
  });
  $("crop-size").addEventListener("input", (e) => {
    if (!state.crop) return;
    const maxSide = Math.min(state.image.width, state.image.height);
    resizeAroundCentre(maxSide * Number(e.target.value) / 100);
  });
  window.addEventListener("resize", () => { if (state.crop) drawCrop(); });
}

function syncSlider() {
  const maxSide = Math.min(state.image.width, state.image.height);
  $("crop-size").value = String(Math.round((state.crop.size / maxSide) * 100));
}

// ---- saving -------------------------------------------------------------------------------
async function save() {
  if (!state.upload || state.saving !== null) return;
  $("save").disabled = true;
  say("");
  progress("Uploading…");
  state.saving = "";
  state.finished.clear();
  if (state.uploadFailed) startUpload();
  try {
    const uploadId = await state.upload;
    progress("Saving…");
    const crop = state.crop && { x: state.crop.x, y: state.crop.y, width: state.crop.size, height: state.crop.size };
    const response = await fetch("../v1/avatar", {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: "Bearer " + state.token },
      body: JSON.stringify(crop ? { upload_id: uploadId, crop } : { upload_id: uploadId }),
    });
    if (!response.ok) throw new Error(await userMessage(response));
    const job = await response.json();
    state.saving = job.job_id;
    progress("Processing your picture…");
    const early = state.finished.get(job.job_id);
    if (early) settle(job.job_id, early);
  } catch (e) {
    state.saving = null;
    progress(null);
    say(e instanceof TypeError ? TRY_LATER : e.message, "bad");
    $("save").disabled = !state.upload;
  }
}

// ---- start --------------------------------------------------------------------------------
async function start() {
  setUpCropper();
  $("file").addEventListener("change", onFileChosen);
  $("save").addEventListener("click", save);
  $("switch-form").addEventListener("submit", (e) => {
    e.preventDefault();
    signIn($("name").value.trim()).then(() => say("")).catch((err) => say(err.message, "bad"));
  });
  try {
    const response = await fetch("../v1/limits");
    if (response.ok) {
      const limits = await response.json();
      state.limits = limits.uploads;
      $("file-rules").textContent = "JPEG, PNG or WebP, at most " + megabytes(state.limits.max_bytes) + ".";
    }
  } catch (_) { /* keep the defaults; the server checks again */ }
  try {
    await signIn(localStorage.getItem(NAME_KEY));
  } catch (e) {
    say(e.message || TRY_LATER, "bad");
  }
}

start();
