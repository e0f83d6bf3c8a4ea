// Nano Banana studio: the local demo and the reference client for the builder's front end.
// Vanilla JS, no build step, no dependencies. Everything it does goes through the public HTTP API.
"use strict";

const API = "/api/nano-banana";
const TERMINAL = new Set(["succeeded", "failed", "canceled"]);
const state = {
  token: null, userId: null, projectId: null, config: null,
  jobs: new Map(),      // id -> Job, as last seen
  streams: new Map(),   // id -> EventSource while the job is active (null while its ticket is fetched)
  file: null,           // the checked File about to be uploaded
  open: null,           // {jobId, variantId, threadId} of the variant in the detail view
  layout: "slider",
  cursor: null,
  seen: new Map(),      // id -> Date.now() of the last update, for the safety-net poll
  deleted: new Set(),   // ids deleted here: a stream event or poll answer still on its way must not bring them back
};
const $ = (id) => document.getElementById(id);

// The first bytes of each accepted format; the server checks again (and decodes), this only saves a round trip.
const MAGIC = [
  { type: "image/jpeg", test: (b) => b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff },
  { type: "image/png", test: (b) => [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a].every((v, i) => b[i] === v) },
  { type: "image/webp", test: (b) => ascii(b, 0, 4) === "RIFF" && ascii(b, 8, 12) === "WEBP" },
];
function ascii(bytes, from, to) { return String.fromCharCode(...bytes.slice(from, to)); }

function size(bytes) {
  if (bytes < 1024) return `${bytes} bytes`;
  if (bytes < 1048576) return `${Math.round(bytes / 1024)} KB`;
  return `${Math.round((bytes / 1048576) * 10) / 10} MB`;
}

function duration(seconds) {
  const s = Math.max(0, Math.round(seconds)), m = Math.floor(s / 60), h = Math.floor(m / 60);
  if (h) return m % 60 ? `${h} h ${m % 60} min` : `${h} h`;
  if (m) return s % 60 ? `${m} min ${s % 60} s` : `${m} min`;
  return `${s} s`;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

// ------------------------------------------------------------ API

class ApiError extends Error {
  constructor(status, body, retryAfter) {
    const e = (body && body.error) || { code: status ? "unavailable" : "network", message: "The service did not answer." };
    super(e.message || "");
    this.status = status; this.code = e.code; this.details = e.details || {};
    this.retryAfter = retryAfter || Number(this.details.retryAfterSeconds || 0);
  }
}

async function api(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  let response;
  try {
    response = await fetch(`${API}${path}`, { ...options, headers });
  } catch {
    throw new ApiError(0, null, 0);
  }
  let body = null;
  try { body = await response.json(); } catch { body = null; }  // a proxy's HTML error page is not JSON
  if (!response.ok) throw new ApiError(response.status, body, Number(response.headers.get("Retry-After") || 0));
  return body;
}

// What went wrong, in the words a person would use.
function explain(err) {
  const c = state.config || {};
  switch (err.code) {
    case "rate_limited":
      return `You have reached the limit of ${c.ratePerHour} ${c.ratePerHour === 1 ? "job" : "jobs"} per hour. ` +
        `The next slot opens in ${duration(err.retryAfter)}.`;
    case "concurrency_limited":
      return `This project already has ${c.maxActivePerProject} ${c.maxActivePerProject === 1 ? "job" : "jobs"} in progress, ` +
        `the most it can run at once. A slot frees the moment one finishes: wait for it or cancel one, then try again.`;
    case "budget_exceeded": {
      const d = err.details, held = d.reserved ? ` and ${d.reserved} more on the way` : "";
      const reopens = new Date(Date.now() + err.retryAfter * 1000)
        .toLocaleDateString(undefined, { month: "long", day: "numeric", timeZone: "UTC" });
      return `This project has used its ${d.limit} images for this month (${d.used} made${held}), so it cannot ` +
        `make this job's images. It can make more from ${reopens}; ask your admin if you need more before then.`;
    }
    case "file_too_large": return `That file is too large: the limit is ${size(c.maxFileBytes || 0)}.`;
    case "unsupported_media_type": return "That file is not a JPEG, PNG or WebP image.";
    case "invalid_request": return `Please check the form: ${err.message}`;
    case "unauthenticated": return "Your session has expired. Reload the page to sign in again.";
    case "forbidden": return "You are not a member of this project.";
    case "not_found": return "That job no longer exists.";
    case "invalid_transition": return "That job has already finished.";
    case "unavailable": return "The service is busy or one of its dependencies is down. Try again in a moment.";
    case "network": return "The studio could not reach the server. Is `make dev` still running?";
    default: return err.message || "Something went wrong.";
  }
}

function jobProblem(job) {
  if (job.status === "canceled") return "Canceled.";
  if (job.status !== "failed") return null;
  const detail = job.errorMessage ? ` (${job.errorMessage})` : "";
  switch (job.errorCode) {
    case "timeout": {
      const allowed = (Date.parse(job.deadlineAt) - Date.parse(job.createdAt)) / 1000 || (state.config || {}).timeoutSeconds;
      return `Timed out: it took longer than ${duration(allowed)}, so the job was stopped. Try again, perhaps with fewer variants.`;
    }
    case "content_blocked": return `Blocked: the model declined this photo or prompt${detail}. Try different wording or another photo.`;
    case "generation_failed": return `The model could not make the images${detail}. Try again.`;
    case "processor_unavailable": return "The image processor could not be reached. Try again in a moment.";
    case "canceled": return "Canceled.";
    default: return `The job failed${detail}.`;
  }
}

// crypto.randomUUID exists only in secure contexts (loopback counts; a LAN address over http does not).
function newKey() {
  if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
}

function showError(node, message) { node.textContent = message || ""; node.hidden = !message; }

// ------------------------------------------------------------ upload with guardrails

async function checkFile(file) {
  const c = state.config;
  if (!c) return "The studio is still loading its settings; try again in a second.";
  if (file.size > c.maxFileBytes) {
    return `That file is ${size(file.size)}; the limit is ${size(c.maxFileBytes)}. Choose a smaller photo or export it at a lower quality.`;
  }
  if (file.size === 0) return "That file is empty.";
  const head = await new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(new Uint8Array(reader.result));
    reader.onerror = () => reject(reader.error);
    reader.readAsArrayBuffer(file.slice(0, 12));
  });
  const sniffed = MAGIC.find((m) => m.test(head));
  if (!sniffed || !c.acceptedTypes.includes(sniffed.type)) {
    return `“${file.name}” is not a JPEG, PNG or WebP image, whatever its name says. Choose a photo in one of those formats.`;
  }
  if (file.type && !c.acceptedTypes.includes(file.type)) {
    return `“${file.name}” says it is ${file.type}; only JPEG, PNG and WebP are accepted.`;
  }
  return null;
}

async function pickFile(file) {
  let problem = null;
  if (!file) problem = "Choose a photo first.";
  else {
    try { problem = await checkFile(file); } catch { problem = "That file could not be read."; }
  }
  showError($("form-error"), problem);
  state.file = problem ? null : file;
  const preview = $("preview");
  if (preview.src) URL.revokeObjectURL(preview.src);
  if (state.file) {
    preview.src = URL.createObjectURL(file); preview.alt = `Chosen photo: ${file.name}`;
    preview.hidden = false; $("drop-text").hidden = true; $("choose").textContent = "Choose another photo";
  } else {
    preview.removeAttribute("src"); preview.alt = "No photo chosen yet";
    preview.hidden = true; $("drop-text").hidden = false; $("choose").textContent = "choose a file";
  }
}

async function createJob(event) {
  event.preventDefault();
  const prompt = $("prompt").value.trim();
  if (!state.file) return showError($("form-error"), $("form-error").hidden ? "Choose a JPEG, PNG or WebP photo first." : $("form-error").textContent);
  if (!prompt) { $("prompt").focus(); return showError($("form-error"), "Write a prompt first: say what should change."); }
  const max = (state.config || {}).maxPromptChars;
  if (max && prompt.length > max) return showError($("form-error"), `The prompt is ${prompt.length} characters; the limit is ${max}.`);
  const form = new FormData();
  form.append("image", state.file);
  form.append("projectId", state.projectId);
  form.append("prompt", prompt);
  form.append("variantCount", $("variants").value);
  if ($("aspect").value) form.append("aspectRatio", $("aspect").value);
  const refs = Array.from($("refs").files), model = chosenModel();
  if (model && refs.length > model.maxReferences) {
    return showError($("form-error"), `${model.name} takes at most ${model.maxReferences} reference ${model.maxReferences === 1 ? "image" : "images"}; ${refs.length} are chosen.`);
  }
  if (model) form.append("model", model.name);
  if ($("resolution").value) form.append("resolution", $("resolution").value);
  for (const ref of refs) form.append("reference", ref);
  $("submit").disabled = true;
  try {
    // One key per press: a retried request (flaky network) cannot create the job twice.
    const created = await api("/jobs", { method: "POST", body: form, headers: { "Idempotency-Key": newKey() } });
    showError($("form-error"), null);
    await track(created.jobId);
    refreshBudget();
  } catch (err) {
    showError($("form-error"), explain(err));
    if (err.code === "budget_exceeded") refreshBudget();
  } finally {
    $("submit").disabled = false;
  }
}

// ------------------------------------------------------------ jobs, live

async function track(jobId) {
  const job = await api(`/jobs/${jobId}`);
  upsert(job);
  if (!TERMINAL.has(job.status)) subscribe(jobId);
  return job;
}

// Browsers allow ~6 HTTP/1.1 connections per host and each stream holds one: past this many, the poll below covers.
const MAX_STREAMS = 4;

function subscribe(jobId, attempt = 0) {
  if (state.streams.has(jobId) || state.streams.size >= MAX_STREAMS) return;
  state.streams.set(jobId, null);  // the slot is taken while the ticket is fetched
  const retry = () => {
    state.streams.get(jobId)?.close(); state.streams.delete(jobId);
    const job = state.jobs.get(jobId);
    if ((job && TERMINAL.has(job.status)) || attempt >= 8) return;
    setTimeout(() => api(`/jobs/${jobId}`).then((latest) => {
      upsert(latest);
      if (!TERMINAL.has(latest.status)) subscribe(jobId, attempt + 1);
    }).catch(() => subscribe(jobId, attempt + 1)), Math.min(30000, 500 * 2 ** attempt));
  };
  // EventSource cannot send headers, and URLs end up in logs: the stream URL carries a ticket good for this
  // one job for a few minutes, never the access token.
  api(`/jobs/${jobId}/events-ticket`, { method: "POST" }).then(({ url }) => {
    if (!state.streams.has(jobId)) return;  // the job ended while the ticket was on its way
    const source = new EventSource(url);
    state.streams.set(jobId, source);
    source.addEventListener("job", (e) => {
      attempt = 0;
      const job = JSON.parse(e.data);
      upsert(job, "event");
      if (TERMINAL.has(job.status)) { source.close(); state.streams.delete(jobId); }
    });
    // The server ends the stream after a terminal state; anything else is a dropped connection: re-read and
    // resubscribe (with a fresh ticket).
    source.onerror = retry;
  }).catch(retry);
}

function upsert(job, via = "fetch") {
  if (state.deleted.has(job.id)) return;
  const before = state.jobs.get(job.id);
  state.seen.set(job.id, Date.now());
  if (before && $(`job-${job.id}`) && JSON.stringify(before) === JSON.stringify(job)) return;
  state.jobs.set(job.id, job);
  if (TERMINAL.has(job.status) && state.streams.has(job.id)) { state.streams.get(job.id)?.close(); state.streams.delete(job.id); }
  let li = $(`job-${job.id}`);
  if (!li) {
    li = el("li", { id: `job-${job.id}`, class: "job", "data-testid": "job" });
    li.dataset.id = job.id;
    const list = $("jobs"), older = [...list.children].find((n) => state.jobs.get(n.dataset.id)?.createdAt < job.createdAt);
    list.insertBefore(li, older || null);  // newest first, whatever order they arrive in
    $("empty").hidden = true;
  }
  const focused = li.contains(document.activeElement) ? document.activeElement.dataset.testid : null;
  li.dataset.status = job.status;
  li.dataset.via = via;  // how the latest state arrived: "event" (the stream), "fetch" or "poll"
  li.replaceChildren(...renderJob(job));
  if (focused) li.querySelector(`[data-testid="${focused}"]`)?.focus();
  if (!before || before.status !== job.status) {
    $("live").textContent = `Job “${short(job.prompt)}” is ${job.status}.`;
    if (before && TERMINAL.has(job.status)) refreshBudget();  // its images settled
    if (state.open && job.threadId === state.open.threadId) refreshThread();
  }
}

function short(text) { return text.length > 60 ? `${text.slice(0, 57)}…` : text; }

function renderJob(job) {
  const nodes = [
    el("header", {},
      el("span", { class: "prompt", text: job.prompt }),
      el("span", { class: `status ${job.status}`, "data-testid": "status", text: job.status })),
    el("p", { class: "meta muted small" },
      job.parentJobId ? "Refinement · " : "",
      `${job.variantCount} ${job.variantCount === 1 ? "variant" : "variants"}`,
      job.aspectRatio ? ` · ${job.aspectRatio}` : "",
      job.model ? ` · ${job.model}` : "",
      job.resolution ? ` ${job.resolution}` : "",
      (job.references || []).length ? ` · ${job.references.length} ${job.references.length === 1 ? "reference" : "references"}` : "",
      ` · ${new Date(job.createdAt).toLocaleTimeString()}`),
  ];
  if (!TERMINAL.has(job.status)) {
    nodes.push(
      el("div", { class: "progress", role: "progressbar", "aria-label": "Time used of the deadline", "aria-valuemin": "0", "aria-valuemax": "100", "data-testid": "progress" }, el("div")),
      el("div", { class: "job-actions" },
        el("p", { class: "muted small", "data-testid": "elapsed" }),
        el("button", { type: "button", class: "secondary small-button", "data-testid": "cancel", onclick: (e) => cancelJob(job.id, e.currentTarget) }, "Cancel")),
    );
  } else if (job.finishedAt) {
    nodes.push(el("p", { class: "muted small", "data-testid": "took" }, `${job.status === "succeeded" ? "Done" : "Stopped"} after ${duration((Date.parse(job.finishedAt) - Date.parse(job.createdAt)) / 1000)}.`));
  }
  const problem = jobProblem(job);
  if (problem) nodes.push(el("p", { class: "error", "data-testid": "job-error", text: problem }));
  if (job.variants.length) {
    nodes.push(el("div", { class: "thumbs" }, ...job.variants.map((v) => thumb(job, v))));
  }
  const remove = deleteButton(job, "delete", "Delete");
  if (remove) nodes.push(el("div", { class: "job-actions end" }, remove));
  window.requestAnimationFrame(() => tick(job));
  return nodes;
}

function thumb(job, v, testid = "variant") {
  const current = state.open && state.open.variantId === v.id;
  return el("button", {
    type: "button", "data-testid": testid, "data-variant-id": v.id, "aria-current": current ? "true" : null,
    "aria-label": `Open variant ${v.index + 1} of “${short(job.prompt)}”`, onclick: () => openVariant(job.id, v.id),
  }, el("img", { src: v.url, alt: `Variant ${v.index + 1}: ${job.prompt}`, width: v.width, height: v.height }));
}

// ------------------------------------------------------------ delete (with a confirmation)

// Only the job's creator may delete it (the API answers 403 to anyone else), so others get no button.
function deleteButton(job, testid, label) {
  if (job.userId !== state.userId) return null;
  return el("button", {
    type: "button", class: "secondary small-button danger", "data-testid": testid,
    "aria-label": `${label} the job “${short(job.prompt)}” and its refinements`,
    onclick: (e) => confirmDelete(job.id, e.currentTarget),
  }, label);
}

let pendingDelete = null;  // {jobId, opener} while the confirmation is open
function confirmDelete(jobId, opener) {
  const job = state.jobs.get(jobId);
  if (!job) return;
  pendingDelete = { jobId, opener };
  $("delete-what").textContent = `“${short(job.prompt)}”`;
  showError($("delete-error"), null);
  $("confirm-delete").disabled = false;
  $("delete-dialog").showModal();  // a modal dialog: focus stays inside, Escape closes it
  $("keep-job").focus();            // the safe choice has the focus
}

async function deleteConfirmed() {
  if (!pendingDelete) return;
  const { jobId } = pendingDelete;
  $("confirm-delete").disabled = true;
  try {
    const { deleted } = await api(`/jobs/${jobId}`, { method: "DELETE" });
    pendingDelete = null;
    $("delete-dialog").close();
    forget(deleted);
  } catch (err) {
    if (err.code === "not_found") { pendingDelete = null; $("delete-dialog").close(); forget([jobId]); return; }
    showError($("delete-error"), err.code === "forbidden" ? "Only the person who created this job can delete it." : explain(err));
    $("confirm-delete").disabled = false;
  }
}

// Take deleted jobs off the page: their cards, streams, and the detail view if it showed one of them.
function forget(ids) {
  const gone = new Set(ids);
  for (const id of gone) {
    state.deleted.add(id);
    state.streams.get(id)?.close(); state.streams.delete(id);
    state.jobs.delete(id); state.seen.delete(id);
    $(`job-${id}`)?.remove();
  }
  $("empty").hidden = $("jobs").children.length > 0;
  $("live").textContent = `Deleted ${gone.size} ${gone.size === 1 ? "job" : "jobs"}.`;
  if (state.open && gone.has(state.open.jobId)) {
    state.open = null;
    $("detail").hidden = true;
    $("gallery-title").focus();
  } else if (state.open) {
    refreshThread();
  }
}

function deleteDialogClosed() {
  const opener = pendingDelete && pendingDelete.opener;
  pendingDelete = null;
  if (opener && opener.isConnected) opener.focus();  // back where the person was
  else if (!$("detail").hidden) $("detail-title").focus();
  else $("gallery-title").focus();
}

async function cancelJob(jobId, button) {
  button.disabled = true;
  const li = $(`job-${jobId}`);
  try {
    upsert(await api(`/jobs/${jobId}/cancel`, { method: "POST" }));
  } catch (err) {
    if (err.code === "invalid_transition") track(jobId).catch(() => {});
    else li.append(el("p", { class: "error", role: "alert", text: explain(err) }));
    button.disabled = false;
  }
}

function tick(job) {
  const li = $(`job-${job.id}`);
  const bar = li && li.querySelector(".progress");
  if (!bar) return;
  const created = Date.parse(job.createdAt), deadline = Date.parse(job.deadlineAt), now = Date.now();
  const pct = Math.max(0, Math.min(100, ((now - created) / (deadline - created)) * 100));
  bar.firstChild.style.width = `${pct}%`;
  bar.setAttribute("aria-valuenow", String(Math.round(pct)));
  li.querySelector("[data-testid=elapsed]").textContent =
    `${job.status === "queued" ? "Queued" : "Generating"} · ${duration((now - created) / 1000)} of ${duration((deadline - created) / 1000)}`;
}

// A safety net under the event stream: an active job not heard of for a while is re-read.
const POLL_AFTER_MS = 5000;
const polling = new Set();
function poll(job) {
  if (polling.has(job.id) || Date.now() - (state.seen.get(job.id) || 0) < POLL_AFTER_MS) return;
  polling.add(job.id);
  api(`/jobs/${job.id}`).then((latest) => upsert(latest, "poll")).catch(() => state.seen.set(job.id, Date.now()))
    .finally(() => polling.delete(job.id));
}
setInterval(() => { for (const job of state.jobs.values()) if (!TERMINAL.has(job.status)) { tick(job); poll(job); } }, 1000);

async function loadJobs() {
  const query = new URLSearchParams({ projectId: state.projectId, limit: "12" });
  if (state.cursor) query.set("cursor", state.cursor);
  const page = await api(`/jobs?${query}`);
  for (const job of page.jobs) { upsert(job); if (!TERMINAL.has(job.status)) subscribe(job.id); }
  state.cursor = page.nextCursor;
  $("more").hidden = !page.nextCursor;
}

// ------------------------------------------------------------ variant detail: compare, blocks, thread

function openVariant(jobId, variantId) {
  const job = state.jobs.get(jobId), variant = job && job.variants.find((v) => v.id === variantId);
  if (!variant) return;
  state.open = { jobId, variantId, threadId: job.threadId };
  $("detail").hidden = false;
  $("detail-title").textContent = `Variant ${variant.index + 1} · ${short(job.prompt)}`;
  $("before").src = job.inputUrl ?? "";  // null only if the stored object is missing
  $("before").alt = job.parentJobId ? "Before: the variant this refinement started from" : "Before: the original photo";
  $("after").src = variant.url ?? "";
  $("after").alt = `After: variant ${variant.index + 1} of “${job.prompt}”`;
  setRatio(variant.width / variant.height);
  $("block-json").hidden = true; $("block-json").textContent = ""; $("copied").textContent = "";
  showError($("refine-error"), null);
  for (const b of document.querySelectorAll("[data-variant-id]")) {
    if (b.dataset.variantId === variantId) b.setAttribute("aria-current", "true"); else b.removeAttribute("aria-current");
  }
  setSlider($("slider").value);
  refreshThread();
  $("detail").scrollIntoView({ behavior: "smooth", block: "start" });
  $("detail-title").focus({ preventScroll: true });
}

function closeVariant() {
  const opened = state.open;
  state.open = null;
  $("detail").hidden = true;
  for (const b of document.querySelectorAll("[data-variant-id][aria-current]")) b.removeAttribute("aria-current");
  if (opened) document.querySelector(`[data-variant-id="${opened.variantId}"]`)?.focus();
}

// The compare frame takes the output's aspect ratio; both images cover it, centred (studio.css).
function setRatio(output) {
  if (output > 0) $("compare").style.setProperty("--out-ratio", String(output));
}

function setSlider(value) {
  $("compare").style.setProperty("--pos", `${value}%`);
  $("slider").setAttribute("aria-valuetext", `${value}% before, ${100 - value}% after`);
}

function setLayout(layout) {
  state.layout = layout;
  $("compare").classList.toggle("slider", layout === "slider");
  $("compare").classList.toggle("side", layout === "side");
  const toggle = $("toggle-layout");
  toggle.setAttribute("aria-pressed", String(layout === "side"));
  toggle.textContent = layout === "side" ? "Slider" : "Side by side";
  $("slider").hidden = layout === "side";
  document.querySelector(".slider-label").hidden = layout === "side";
}

async function copyBlock(type) {
  if (!state.open) return;
  const { jobId, variantId } = state.open;
  const query = new URLSearchParams({ variantId, type, layout: state.layout === "side" ? "side_by_side" : "slider" });
  let block;
  try { block = await api(`/jobs/${jobId}/blocks?${query}`); } catch (err) { $("copied").textContent = explain(err); return; }
  const text = JSON.stringify(block, null, 2);
  const pre = $("block-json");
  pre.textContent = text; pre.hidden = false; pre.dataset.type = type;
  const name = type === "image" ? "Image block" : "Compare block";
  try {
    await navigator.clipboard.writeText(text);
    pre.dataset.copied = "true";
    $("copied").textContent = `${name} JSON copied to the clipboard.`;
  } catch {
    pre.dataset.copied = "false";
    $("copied").textContent = `${name} JSON is below; the browser did not allow copying, so select it and copy it by hand.`;
  }
}

let threadRequest = 0;
async function refreshThread() {
  if (!state.open) return;
  const mine = ++threadRequest;
  let thread;
  try { thread = await api(`/jobs/${state.open.jobId}/messages`); } catch (err) { showError($("refine-error"), explain(err)); return; }
  if (mine !== threadRequest) return;  // a newer refresh is on its way
  const items = thread.messages.map((m) => {
    const job = m.job || state.jobs.get(m.jobId);
    if (job && !state.jobs.has(job.id)) state.jobs.set(job.id, job);  // an older thread's turn, for openVariant
    const li = el("li", { class: `turn ${m.role}`, "data-testid": "message", "data-role": m.role },
      el("span", { class: "role", text: m.role === "user" ? "You" : "Nano Banana" }),
      el("span", { class: "content", text: m.content }));
    if (m.role === "assistant" || (job && !TERMINAL.has(job.status))) {
      li.append(el("span", { class: `status ${job ? job.status : ""}`, text: job ? job.status : "" }));
    }
    if (m.role === "assistant" && job && job.variants.length) {
      li.append(el("div", { class: "thumbs small-thumbs" }, ...job.variants.map((v) => thumb(job, v, "thread-variant"))));
    }
    if (m.role === "assistant" && job && jobProblem(job)) li.append(el("p", { class: "error small", text: jobProblem(job) }));
    if (m.role === "user" && job) {
      const remove = deleteButton(job, "thread-delete", "Delete this turn");
      if (remove) li.append(remove);
    }
    return li;
  });
  $("thread").replaceChildren(...items);
}

async function refine(event) {
  event.preventDefault();
  const prompt = $("refine-prompt").value.trim();
  if (!state.open) return;
  if (!prompt) return showError($("refine-error"), "Write what should change first.");
  try {
    const created = await api("/messages", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ jobId: state.open.jobId, variantId: state.open.variantId, prompt }),
    });
    $("refine-prompt").value = ""; showError($("refine-error"), null);
    await track(created.jobId);
    await refreshThread();
  } catch (err) {
    showError($("refine-error"), explain(err));
  }
}

// ------------------------------------------------------------ models, sizes, references

function chosenModel() {
  return ((state.config || {}).models || []).find((m) => m.name === $("model").value) || null;
}

// The sizes and the reference limit follow the chosen model (GET /config lists what each takes).
function modelChanged() {
  const model = chosenModel();
  const asked = $("resolution").value;
  $("resolution").replaceChildren(el("option", { value: "" }, "Model default"),
    ...(model ? model.resolutions : []).map((r) => el("option", { value: r, selected: r === asked }, r)));
  $("refs-hint").textContent = model
    ? `Up to ${model.maxReferences} for ${model.name}, sent to the model after the photo, in this order.`
    : "";
}

// ------------------------------------------------------------ the month's images

// The project's images this month against its budget, under the form (GET /usage, this month so far).
async function refreshBudget() {
  let b;
  try { b = (await api(`/usage?projectId=${encodeURIComponent(state.projectId)}`)).budget; } catch { return; }
  const made = `${b.used} ${b.used === 1 ? "image" : "images"}`, held = b.reserved ? `, ${b.reserved} on the way` : "";
  $("budget").textContent = b.limit === null
    ? `This month: ${made}${held}. This project has no monthly limit.`
    : `This month: ${made}${held} of ${b.limit} (${b.remaining} left until ${new Date(b.resetsAt)
      .toLocaleDateString(undefined, { month: "long", day: "numeric", timeZone: "UTC" })}).`;
  $("budget").dataset.used = String(b.used + b.reserved);
  $("budget").hidden = false;
}

// ------------------------------------------------------------ start

async function start() {
  const session = await api("/dev/session", { method: "POST" });
  state.token = session.token; state.userId = session.userId; state.projectId = session.projectId;
  $("who").textContent = `Dev user ${session.userId.slice(0, 8)} · project ${session.projectId.slice(0, 8)}`;
  $("who").title = `user ${session.userId}, project ${session.projectId}`;
  const c = state.config = await api("/config");
  $("guard").textContent = `JPEG, PNG or WebP, up to ${size(c.maxFileBytes)}. ` +
    `${c.ratePerHour} ${c.ratePerHour === 1 ? "job" : "jobs"} per hour, ${c.maxActivePerProject} at a time, ` +
    `${duration(c.timeoutSeconds)} each at most.`;
  $("variants").replaceChildren(...Array.from({ length: c.maxVariants || 4 }, (_, i) =>
    el("option", { value: String(i + 1), selected: i + 1 === (c.defaultVariants || 2) }, String(i + 1))));
  for (const ratio of c.aspectRatios) $("aspect").append(el("option", { value: ratio }, ratio));
  $("model").replaceChildren(...(c.models || []).map((m, i) =>
    el("option", { value: m.name, selected: i === 0 }, i === 0 ? `${m.name} (default)` : m.name)));
  modelChanged();
  if (c.maxPromptChars) { $("prompt").maxLength = c.maxPromptChars; $("refine-prompt").maxLength = c.maxPromptChars; }
  await Promise.all([loadJobs(), refreshBudget()]);
  document.body.dataset.ready = "true";
}

function wire() {
  document.body.append(el("p", { id: "live", class: "visually-hidden", "aria-live": "polite" }));
  const drop = $("drop"), file = $("file");
  // A real button opens the picker (keyboard and screen readers); a click anywhere on the zone does too.
  drop.addEventListener("click", (e) => { if (e.target.id !== "choose") file.click(); });
  $("choose").addEventListener("click", () => file.click());
  drop.addEventListener("dragenter", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); pickFile(e.dataTransfer.files[0]); });
  file.addEventListener("change", () => { pickFile(file.files[0]); file.value = ""; });
  $("create").addEventListener("submit", createJob);
  $("model").addEventListener("change", modelChanged);
  $("refine").addEventListener("submit", refine);
  $("more").addEventListener("click", () => loadJobs().catch((err) => showError($("form-error"), explain(err))));
  $("slider").addEventListener("input", (e) => setSlider(e.target.value));
  $("toggle-layout").addEventListener("click", () => setLayout(state.layout === "slider" ? "side" : "slider"));
  $("copy-image").addEventListener("click", () => copyBlock("image"));
  $("copy-compare").addEventListener("click", () => copyBlock("image_compare"));
  // What the browser decoded decides (the stored sizes are the same unless an image was replaced).
  $("after").addEventListener("load", (e) => setRatio(e.target.naturalWidth / e.target.naturalHeight));
  $("close-detail").addEventListener("click", closeVariant);
  $("confirm-delete").addEventListener("click", deleteConfirmed);
  $("keep-job").addEventListener("click", () => $("delete-dialog").close());
  $("delete-dialog").addEventListener("close", deleteDialogClosed);
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && state.open && !$("delete-dialog").open) closeVariant();
  });
}

wire();
start().catch((err) => { $("who").textContent = `Could not sign in: ${explain(err)}`; });
