// Nano Banana studio: the reference client for the builder's front end. Vanilla JS, no build step.
"use strict";
const API = "/api/nano-banana";
const state = { token: null, projectId: null, config: null, jobs: new Map(), streams: new Map(), file: null, open: null, layout: "slider" };
const $ = (id) => document.getElementById(id);
const MAGIC = [
  { type: "image/jpeg", test: (b) => b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff },
  { type: "image/png", test: (b) => [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a].every((v, i) => b[i] === v) },
  { type: "image/webp", test: (b) => String.fromCharCode(...b.slice(0, 4)) === "RIFF" && String.fromCharCode(...b.slice(8, 12)) === "WEBP" },
];

function mb(bytes) { return bytes < 1048576 ? `${Math.round(bytes / 1024)} KB` : `${Math.round((bytes / 1048576) * 10) / 10} MB`; }
function duration(s) {
  s = Math.max(0, Math.round(s)); const m = Math.floor(s / 60);
  return m ? (s % 60 ? `${m} min ${s % 60} s` : `${m} min`) : `${s} s`;
}

class ApiError extends Error {
  constructor(status, body, retryAfter) {
    const e = (body && body.error) || { code: "unavailable", message: "The service did not answer." };
    super(e.message); this.status = status; this.code = e.code; this.details = e.details || {}; this.retryAfter = retryAfter;
  }
}

async function api(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  const response = await fetch(`${API}${path}`, { ...options, headers });
  const text = await response.text();
  const body = text ? JSON.parse(text) : null;
  if (!response.ok) throw new ApiError(response.status, body, Number(response.headers.get("Retry-After") || 0));
  return body;
}

// Errors in plain words, as a person would want to read them.
function explain(err) {
  const c = state.config || {};
  switch (err.code) {
    case "rate_limited": return `You have reached the limit of ${c.ratePerHour} jobs per hour. The next slot opens in ${duration(err.retryAfter)}.`;
    case "concurrency_limited": return `This project already has ${c.maxActivePerProject} jobs in progress. Wait for one to finish (about ${duration(err.retryAfter)}) or cancel one.`;
    case "file_too_large": return `That file is too large: the limit is ${mb(c.maxFileBytes || 0)}.`;
    case "unsupported_media_type": return "That file is not a JPEG, PNG or WebP image.";
    case "invalid_request": return `Please check the form: ${err.message}`;
    case "unauthenticated": return "Your session has expired. Reload the page to sign in again.";
    case "unavailable": return "The service is busy or a dependency is down. Try again in a moment.";
    default: return err.message || "Something went wrong.";
  }
}

function jobProblem(job) {
  if (job.status === "canceled") return "Canceled.";
  if (job.status !== "failed") return null;
  switch (job.errorCode) {
    case "timeout": return `It took longer than ${duration(state.config.timeoutSeconds)}, so the job was stopped.`;
    case "content_blocked": return `The model declined this request: ${job.errorMessage}`;
    case "generation_failed": return `Generation failed: ${job.errorMessage}`;
    case "processor_unavailable": return "The image processor could not be reached.";
    default: return job.errorMessage || "The job failed.";
  }
}

function showError(el, message) { el.textContent = message || ""; el.hidden = !message; }

// ------------------------------------------------------------ upload with guardrails

async function checkFile(file) {
  const c = state.config;
  if (file.size > c.maxFileBytes) return `That file is ${mb(file.size)}; the limit is ${mb(c.maxFileBytes)}.`;
  const head = new Uint8Array(await file.slice(0, 12).arrayBuffer());
  const sniffed = MAGIC.find((m) => m.test(head));
  if (!sniffed || !c.acceptedTypes.includes(sniffed.type)) return "That file is not a JPEG, PNG or WebP image (whatever its name says).";
  return null;
}

async function pickFile(file) {
  const problem = file ? await checkFile(file) : "Choose a photo first.";
  showError($("form-error"), problem);
  state.file = problem ? null : file;
  const preview = $("preview");
  if (state.file) {
    preview.src = URL.createObjectURL(file); preview.alt = `Selected photo: ${file.name}`; preview.hidden = false; $("drop-text").hidden = true;
  } else {
    preview.hidden = true; $("drop-text").hidden = false;
  }
}

async function createJob(event) {
  event.preventDefault();
  const prompt = $("prompt").value.trim();
  if (!state.file) return showError($("form-error"), "Choose a JPEG, PNG or WebP photo first.");
  if (!prompt) return showError($("form-error"), "Write a prompt first.");
  const form = new FormData();
  form.append("image", state.file); form.append("projectId", state.projectId); form.append("prompt", prompt);
  form.append("variantCount", $("variants").value);
  if ($("aspect").value) form.append("aspectRatio", $("aspect").value);
  $("submit").disabled = true;
  try {
    const created = await api("/jobs", { method: "POST", body: form });
    showError($("form-error"), null);
    await track(created.jobId);
  } catch (err) {
    showError($("form-error"), explain(err));
  } finally {
    $("submit").disabled = false;
  }
}

// ------------------------------------------------------------ jobs, live

async function track(jobId) {
  const job = await api(`/jobs/${jobId}`);
  upsert(job);
  if (!["succeeded", "failed", "canceled"].includes(job.status)) subscribe(jobId);
  return job;
}

function subscribe(jobId) {
  if (state.streams.has(jobId)) return;
  const source = new EventSource(`${API}/jobs/${jobId}/events?access_token=${encodeURIComponent(state.token)}`);
  state.streams.set(jobId, source);
  source.addEventListener("job", (e) => {
    const job = JSON.parse(e.data);
    upsert(job);
    if (["succeeded", "failed", "canceled"].includes(job.status)) { source.close(); state.streams.delete(jobId); refreshThread(); }
  });
  source.onerror = () => { source.close(); state.streams.delete(jobId); setTimeout(() => track(jobId).catch(() => {}), 1000); };
}

function upsert(job) {
  state.jobs.set(job.id, job);
  const list = $("jobs");
  let li = document.getElementById(`job-${job.id}`);
  if (!li) {
    li = document.createElement("li"); li.id = `job-${job.id}`; li.className = "job"; li.dataset.testid = "job";
    li.setAttribute("data-testid", "job");
    list.prepend(li);
  }
  li.dataset.status = job.status;
  li.innerHTML = "";
  const header = document.createElement("header");
  const title = document.createElement("span"); title.className = "prompt"; title.textContent = job.prompt;
  const status = document.createElement("span"); status.className = `status ${job.status}`; status.textContent = job.status; status.setAttribute("data-testid", "status");
  header.append(title, status); li.append(header);
  if (job.parentJobId) { const p = document.createElement("p"); p.className = "muted small"; p.textContent = "Refinement"; li.append(p); }
  if (job.status === "queued" || job.status === "running") {
    const bar = document.createElement("div"); bar.className = "progress"; bar.setAttribute("role", "progressbar"); bar.setAttribute("aria-label", "Time used of the deadline");
    bar.append(document.createElement("div")); li.append(bar);
    const clock = document.createElement("p"); clock.className = "muted small"; clock.setAttribute("data-testid", "elapsed"); li.append(clock);
    const cancel = document.createElement("button"); cancel.type = "button"; cancel.className = "secondary"; cancel.textContent = "Cancel"; cancel.setAttribute("data-testid", "cancel");
    cancel.addEventListener("click", async () => {
      cancel.disabled = true;
      try { upsert(await api(`/jobs/${job.id}/cancel`, { method: "POST" })); } catch (err) { alertIn(li, explain(err)); }
    });
    li.append(cancel);
    tick(li, job);
  }
  const problem = jobProblem(job);
  if (problem) { const p = document.createElement("p"); p.className = "error"; p.setAttribute("data-testid", "job-error"); p.textContent = problem; li.append(p); }
  if (job.note) { const p = document.createElement("p"); p.className = "note muted small"; p.textContent = job.note; li.append(p); }
  if (job.variants.length) {
    const thumbs = document.createElement("div"); thumbs.className = "thumbs";
    for (const v of job.variants) {
      const b = document.createElement("button"); b.type = "button"; b.setAttribute("data-testid", "variant");
      b.setAttribute("aria-label", `Open variant ${v.index + 1} of “${job.prompt}”`);
      const img = document.createElement("img"); img.src = v.url; img.alt = `Variant ${v.index + 1}: ${job.prompt}`; img.loading = "lazy";
      b.append(img); b.addEventListener("click", () => openVariant(job.id, v.id)); thumbs.append(b);
    }
    li.append(thumbs);
  }
}

function alertIn(li, message) { const p = document.createElement("p"); p.className = "error"; p.setAttribute("role", "alert"); p.textContent = message; li.append(p); }

function tick(li, job) {
  const created = Date.parse(job.createdAt), deadline = Date.parse(job.deadlineAt);
  const bar = li.querySelector(".progress > div"), clock = li.querySelector("[data-testid=elapsed]");
  if (!bar) return;
  const now = Date.now();
  bar.style.width = `${Math.min(100, ((now - created) / (deadline - created)) * 100)}%`;
  clock.textContent = `${job.status === "queued" ? "Queued" : "Generating"} · ${duration((now - created) / 1000)} of ${duration((deadline - created) / 1000)}`;
}
setInterval(() => { for (const job of state.jobs.values()) { const li = document.getElementById(`job-${job.id}`); if (li) tick(li, job); } }, 1000);

// ------------------------------------------------------------ variant detail: compare, blocks, thread

function openVariant(jobId, variantId) {
  const job = state.jobs.get(jobId), variant = job.variants.find((v) => v.id === variantId);
  state.open = { jobId, variantId };
  $("detail").hidden = false;
  $("detail-title").textContent = `Variant ${variant.index + 1} · ${job.prompt}`;
  $("before").src = job.inputUrl;
  $("after").src = variant.url; $("after").alt = `After: ${job.prompt}`;
  $("block-json").textContent = "";
  for (const b of document.querySelectorAll(".thumbs button")) b.removeAttribute("aria-current");
  setSlider($("slider").value);
  refreshThread();
  $("detail").scrollIntoView({ behavior: "smooth", block: "start" });
  $("refine-prompt").focus({ preventScroll: true });
}

function setSlider(value) { $("after-wrap").style.clipPath = `inset(0 0 0 ${value}%)`; }

async function copyBlock(type) {
  if (!state.open) return;
  const { jobId, variantId } = state.open;
  const layout = state.layout === "side" ? "side_by_side" : "slider";
  const block = await api(`/jobs/${jobId}/blocks?variantId=${variantId}&type=${type}&layout=${layout}`);
  const text = JSON.stringify(block, null, 2);
  $("block-json").textContent = text;
  try { await navigator.clipboard.writeText(text); $("block-json").dataset.copied = type; } catch { $("block-json").dataset.copied = "manual"; }
}

async function refreshThread() {
  if (!state.open) return;
  const thread = await api(`/jobs/${state.open.jobId}/messages`);
  const list = $("thread"); list.innerHTML = "";
  for (const m of thread.messages) {
    const li = document.createElement("li"); li.setAttribute("data-testid", "message"); li.dataset.role = m.role;
    const role = document.createElement("span"); role.className = "role"; role.textContent = m.role === "user" ? "You:" : "Nano Banana:";
    li.append(role, document.createTextNode(m.content));
    if (m.role === "assistant" || m.job.status === "queued" || m.job.status === "running") {
      const s = document.createElement("span"); s.className = `status ${m.job.status}`; s.textContent = m.job.status; li.append(" ", s);
    }
    list.append(li);
  }
}

async function refine(event) {
  event.preventDefault();
  const prompt = $("refine-prompt").value.trim();
  if (!prompt || !state.open) return;
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

// ------------------------------------------------------------ start

async function start() {
  const session = await api("/dev/session", { method: "POST" });
  state.token = session.token; state.projectId = session.projectId;
  $("who").textContent = `Dev user ${session.userId.slice(0, 8)} · project ${session.projectId.slice(0, 8)}`;
  state.config = await api("/config");
  $("guard").textContent = `JPEG, PNG or WebP, up to ${mb(state.config.maxFileBytes)}. ${state.config.ratePerHour} jobs per hour, ${state.config.maxActivePerProject} at a time, ${duration(state.config.timeoutSeconds)} each at most.`;
  for (const ratio of state.config.aspectRatios) { const o = document.createElement("option"); o.value = ratio; o.textContent = ratio; $("aspect").append(o); }
  const page = await api(`/jobs?projectId=${state.projectId}&limit=20`);
  for (const job of page.jobs.reverse()) { upsert(job); if (job.status === "queued" || job.status === "running") subscribe(job.id); }
}

function wire() {
  const drop = $("drop"), file = $("file");
  drop.addEventListener("click", () => file.click());
  drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); file.click(); } });
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); pickFile(e.dataTransfer.files[0]); });
  file.addEventListener("change", () => pickFile(file.files[0]));
  $("create").addEventListener("submit", createJob);
  $("refine").addEventListener("submit", refine);
  $("slider").addEventListener("input", (e) => setSlider(e.target.value));
  $("toggle-layout").addEventListener("click", (e) => {
    state.layout = state.layout === "slider" ? "side" : "slider";
    $("compare").className = `compare ${state.layout}`;
    e.target.setAttribute("aria-pressed", String(state.layout === "side"));
    e.target.textContent = state.layout === "side" ? "Slider" : "Side by side";
  });
  $("copy-image").addEventListener("click", () => copyBlock("image"));
  $("copy-compare").addEventListener("click", () => copyBlock("image_compare"));
}

wire();
start().catch((err) => { $("who").textContent = `Could not sign in: ${explain(err)}`; });
