// mlservice web UI: small helpers the pages share. No framework, no network beyond this server.
// Pages opt into behaviour with data- attributes (the CSP allows no inline script); each section
// below starts from the attribute it looks for.
"use strict";
window.mlservice = (() => {
  const csrf = () => document.querySelector('meta[name="csrf-token"]')?.content || "";

  // Calls the JSON API with the session cookie; unsafe methods carry the CSRF token.
  async function api(path, options = {}) {
    const init = { credentials: "same-origin", ...options, headers: { Accept: "application/json", ...(options.headers || {}) } };
    if (init.method && !["GET", "HEAD"].includes(init.method.toUpperCase())) init.headers["X-CSRF-Token"] = csrf();
    const response = await fetch(path, init);
    const body = response.headers.get("content-type")?.includes("application/json") ? await response.json() : null;
    if (!response.ok) {
      const error = new Error(body?.error?.message || `Request failed (${response.status})`);
      error.status = response.status;
      error.code = body?.error?.code;
      throw error;
    }
    return body;
  }

  // -- shared helpers ------------------------------------------------------------------------------

  const FINISHED = ["succeeded", "failed", "canceled", "aborted"];

  // A fresh Idempotency-Key. getRandomValues works on plain http too (randomUUID needs a secure context).
  function newKey() {
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    return "web-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function formatDuration(ms) {
    if (ms === null || ms === undefined) return "";
    return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(1)} s`;
  }

  function formatBytes(count) {
    if (count < 1024) return `${count} bytes`;
    if (count < 1024 * 1024) return `${(count / 1024).toFixed(1)} KB`;
    return `${(count / 1024 / 1024).toFixed(1)} MB`;
  }

  function link(href, text) {
    const a = document.createElement("a");
    a.href = href;
    a.textContent = text;
    return a;
  }

  // Shows an API error in `box` (a role="alert" element), with the way out where there is one.
  function showError(box, error) {
    const text = document.createElement("p");
    if (!error.status) text.textContent = "Could not reach the server. Check your connection and try again.";
    else if (error.status === 413 && !error.code) text.textContent = "The file is too large.";
    else text.textContent = error.message;
    box.replaceChildren(text);
    if (error.status === 402 || error.code === "insufficient_credits") {
      const more = document.createElement("p");
      more.append(link("/wallet#top-up", "Top up your wallet"), ", then submit again.");
      box.append(more);
    } else if (error.status === 401) {
      const more = document.createElement("p");
      const here = location.pathname + location.search;
      more.append("Your session has ended. ", link(`/login?next=${encodeURIComponent(here)}`, "Log in again"), ".");
      box.append(more);
    }
    box.hidden = false;
    box.scrollIntoView({ block: "nearest" });
  }

  function setStatusBadge(badge, status) {
    if (!badge) return;
    badge.textContent = status;
    badge.className = `badge ${status}`;
  }

  // -- local times: <time data-local-time> rendered in UTC by the server, shown in the viewer's zone -

  function localTimes(root) {
    for (const el of root.querySelectorAll("time[data-local-time]")) {
      const when = new Date(el.getAttribute("datetime"));
      if (Number.isNaN(when.getTime())) continue;
      el.title = el.textContent;
      el.textContent = when.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
    }
  }

  // -- forms that must not be sent twice by a double click (they also carry an idempotency key) ----

  function submitOnce(root) {
    for (const button of root.querySelectorAll("button[data-once]")) {
      button.form?.addEventListener("submit", () => setTimeout(() => { button.disabled = true; }, 0));
    }
    // Coming back with the browser's back button shows the page as it was left: enable them again.
    window.addEventListener("pageshow", (event) => {
      if (event.persisted) for (const button of root.querySelectorAll("button[data-once]")) button.disabled = false;
    });
  }

  // -- /models/{slug}: the submit form -------------------------------------------------------------

  function collectParams(form) {
    const params = {};
    for (const el of form.querySelectorAll("[data-param]")) {
      const name = el.dataset.param;
      const type = el.dataset.paramType;
      if (type === "boolean") {
        params[name] = el.checked;
        continue;
      }
      const raw = el.value.trim();
      if (raw === "") continue; // left empty: the model's default applies
      if (type === "integer") params[name] = Number.parseInt(raw, 10);
      else if (type === "number") params[name] = Number(raw);
      else if (type === "choice") params[name] = JSON.parse(raw);
      else params[name] = raw;
    }
    return params;
  }

  function jobForm(form) {
    const errorBox = form.querySelector("[data-form-error]");
    const submit = form.querySelector("[data-submit]");
    const submitLabel = submit.textContent;
    const fileInput = form.querySelector("[data-job-file]");
    const textInput = form.querySelector("[data-job-text]");
    const maxBytes = Number(form.dataset.maxBytes || 0);
    // One key per form load: a double click or a resend after a lost answer pays once. A new one
    // after the server refused the request (nothing was kept) or after a success.
    let key = newKey();
    let previewUrl = null;

    const clearError = () => { errorBox.hidden = true; errorBox.replaceChildren(); };
    const tooLarge = (file) => file && maxBytes && file.size > maxBytes;

    function describeFile() {
      const file = fileInput.files[0];
      const figure = form.querySelector("[data-preview]");
      const info = form.querySelector("[data-file-info]");
      if (info) {
        info.textContent = file ? `${file.name} · ${formatBytes(file.size)}` : "";
        info.hidden = !file;
      }
      if (!figure) return;
      const img = figure.querySelector("[data-preview-image]");
      const caption = figure.querySelector("[data-preview-caption]");
      if (previewUrl) URL.revokeObjectURL(previewUrl);
      previewUrl = null;
      if (!file) {
        figure.hidden = true;
        img.removeAttribute("src");
        return;
      }
      previewUrl = URL.createObjectURL(file);
      img.onerror = () => { caption.textContent = `${file.name} · this browser cannot preview it, but it can still be sent.`; };
      img.src = previewUrl;
      caption.textContent = `${file.name} · ${formatBytes(file.size)}`;
      figure.hidden = false;
    }

    fileInput?.addEventListener("change", () => {
      clearError();
      describeFile();
      if (tooLarge(fileInput.files[0])) {
        showError(errorBox, { status: 413, code: "file_too_large", message: `The file is larger than the limit of ${formatBytes(maxBytes)}.` });
      }
    });

    window.addEventListener("pageshow", (event) => {
      if (!event.persisted) return;
      key = newKey();
      submit.disabled = false;
      submit.textContent = submitLabel;
    });

    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      clearError();
      const file = fileInput?.files[0];
      if (tooLarge(file)) {
        showError(errorBox, { status: 413, code: "file_too_large", message: `The file is larger than the limit of ${formatBytes(maxBytes)}.` });
        return;
      }
      const body = new FormData();
      body.append("model", form.dataset.model);
      if (file) body.append("file", file, file.name);
      if (textInput) body.append("text", textInput.value);
      body.append("params", JSON.stringify(collectParams(form)));

      submit.disabled = true;
      submit.setAttribute("aria-busy", "true");
      submit.textContent = "Submitting…";
      try {
        const job = await api("/api/jobs", { method: "POST", body, headers: { "Idempotency-Key": key } });
        key = newKey();
        window.location.assign(`/jobs/${encodeURIComponent(job.id)}`);
      } catch (error) {
        if (error.status) key = newKey();
        showError(errorBox, error);
        submit.disabled = false;
        submit.removeAttribute("aria-busy");
        submit.textContent = submitLabel;
      }
    });
  }

  // -- live jobs: each job's event stream (GET /api/jobs/{id}/events), polling where it cannot be --

  // Streams a page keeps open at most: a browser opens only six connections to one server over
  // HTTP/1.1, and the page's own requests need some of them. Beyond this, the page polls.
  const MAX_STREAMS = 3;

  // Follows job `id`'s stream, calling `onJob(job)` with each state it sends (the last one final).
  // Calls `onLost()` when the stream cannot go on (refused, no EventSource, closed by the server
  // without a final state); a dropped connection is resumed by the browser with Last-Event-ID.
  function followJob(id, onJob, onLost) {
    if (!window.EventSource) { onLost(); return { close() {} }; }
    const source = new EventSource(`/api/jobs/${encodeURIComponent(id)}/events`);
    let ended = false;
    source.addEventListener("job", (event) => {
      let job;
      try { job = JSON.parse(event.data); } catch { return; }
      if (FINISHED.includes(job.status)) { ended = true; source.close(); }
      onJob(job);
    });
    source.addEventListener("error", () => {
      if (!ended && source.readyState === EventSource.CLOSED) { ended = true; onLost(); }
    });
    return { close() { ended = true; source.close(); } };
  }

  // A <progress> element showing `job.progress` (indeterminate while the model reported none).
  function showProgress(bar, job) {
    if (!bar) return;
    const fraction = job.progress?.fraction;
    if (typeof fraction === "number") {
      bar.max = 1;
      bar.value = fraction;
      bar.setAttribute("aria-valuetext", `${Math.round(fraction * 100)} %`);
    } else {
      bar.removeAttribute("value");
      bar.removeAttribute("aria-valuetext");
    }
  }

  function progressText(job) {
    if (job.status === "queued") return "Waiting for a worker…";
    const fraction = job.progress?.fraction;
    if (typeof fraction !== "number") return "Running…";
    const percent = `${Math.round(fraction * 100)} %`;
    return job.progress.message ? `${job.progress.message} · ${percent}` : `Running… ${percent}`;
  }

  // -- /jobs: rows follow their jobs while any on the page is unfinished ---------------------------

  function jobsTable(table) {
    const live = document.querySelector("[data-jobs-live]");
    const unfinished = () => table.querySelectorAll('[data-job-row][data-status="queued"], [data-job-row][data-status="running"]');
    if (!unfinished().length) return;
    if (live) live.hidden = false;
    const base = 2000;
    let delay = base;
    let polling = false;

    function update(row, job) {
      row.dataset.status = job.status;
      setStatusBadge(row.querySelector("[data-status-badge]"), job.status);
      const bar = row.querySelector("[data-running-bar]");
      if (bar) {
        bar.hidden = job.status !== "running";
        showProgress(bar, job);
        bar.title = job.status === "running" ? progressText(job) : "";
      }
      const duration = row.querySelector("[data-duration]");
      if (duration) duration.textContent = formatDuration(job.processing_ms);
      const cost = row.querySelector("[data-cost]");
      if (cost) cost.textContent = job.status === "succeeded" ? String(job.cost) : FINISHED.includes(job.status) ? "0" : `${job.cost} held`;
      if (!unfinished().length && live) live.hidden = true;
    }

    async function tick() {
      if (!document.hidden) {
        try {
          const listing = await api(table.dataset.pollUrl);
          for (const job of listing.items) {
            const row = table.querySelector(`[data-job-row][data-job-id="${CSS.escape(String(job.id))}"]`);
            if (row) update(row, job);
          }
          delay = base;
        } catch (error) {
          if (error.status === 401) { location.reload(); return; }
          delay = Math.min(delay * 2, 30000);
        }
      }
      if (unfinished().length) setTimeout(tick, delay);
      else polling = false;
    }
    function poll() {
      if (polling) return;
      polling = true;
      setTimeout(tick, delay);
    }

    const rows = Array.from(unfinished());
    if (!window.EventSource || rows.length > MAX_STREAMS) { poll(); return; }
    const streams = rows.map((row) => followJob(row.dataset.jobId, (job) => update(row, job), poll));
    window.addEventListener("pagehide", () => { for (const stream of streams) stream.close(); });
  }

  // -- /jobs/{id}: the job's stream (or long polling) until it finishes, then the page renders its result

  function jobLive(section) {
    const id = section.dataset.jobId;
    const message = section.querySelector("[data-live-message]");
    const bar = section.querySelector("[data-job-progress]");
    let failures = 0;
    let stream = null;
    // Leaving the page (the cancel form, a link): an answer still under way must not reload it, or
    // the reload would replace the navigation under way and lose its notice.
    let leaving = false;
    const pending = new AbortController();
    const leave = () => { leaving = true; pending.abort(); stream?.close(); };
    document.addEventListener("submit", (event) => { if (!event.defaultPrevented) leave(); });
    window.addEventListener("pagehide", leave);
    window.addEventListener("pageshow", (event) => { if (event.persisted) location.reload(); });

    // True once the job is final (the page then reloads to render it).
    function show(job) {
      if (leaving) return true;
      if (FINISHED.includes(job.status)) { leave(); location.reload(); return true; }
      section.dataset.status = job.status;
      setStatusBadge(document.querySelector(".job-status [data-status-badge]"), job.status);
      message.textContent = progressText(job);
      showProgress(bar, job);
      return false;
    }

    // The fallback: long polls, at most one a second, backing off while the server is unreachable.
    async function wait() {
      if (leaving) return;
      const started = Date.now();
      try {
        const job = await api(`/api/jobs/${encodeURIComponent(id)}?wait=25`, { signal: pending.signal });
        failures = 0;
        if (show(job)) return;
        setTimeout(wait, Math.max(0, 1000 - (Date.now() - started)));
      } catch (error) {
        if (leaving) return;
        if (error.status === 401 || error.status === 404) { location.reload(); return; }
        failures += 1;
        setTimeout(wait, Math.min(30000, 1000 * 2 ** failures));
      }
    }

    stream = followJob(id, show, () => { if (!leaving) wait(); });
  }

  // -- wiring ----------------------------------------------------------------------------------------

  function start() {
    localTimes(document);
    submitOnce(document);
    for (const form of document.querySelectorAll("form[data-job-form]")) jobForm(form);
    for (const table of document.querySelectorAll("table[data-jobs-table]")) jobsTable(table);
    for (const section of document.querySelectorAll("[data-job-live]")) jobLive(section);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();

  return { api, csrf, newKey };
})();
