/* finetune-gateway dashboard. Everything a job carries is shown with textContent only:
 * never inner/outer HTML, no markup built from strings (the page's CSP forbids inline script too).
 * The gateway key lives in sessionStorage and goes in the Authorization header. */
"use strict";
(function () {
  const KEY = "finetune-gateway.key";
  const STATUSES = ["validating_files", "queued", "running", "succeeded", "failed", "cancelled"];
  const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
  const LIVE_MS = 2000; // while a job shown is not finished
  const IDLE_MS = 15000;
  const PAGE = 100;
  const MAX_PAGES = 100;
  const $ = (id) => document.getElementById(id);
  const state = { keys: [], jobs: [], errors: [], timer: null, generation: 0 };

  class ApiError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  async function api(path, virtualKey) {
    const headers = { Accept: "application/json" };
    const key = sessionStorage.getItem(KEY);
    if (key) headers.Authorization = "Bearer " + key;
    if (virtualKey) headers["x-portkey-virtual-key"] = virtualKey;
    const response = await fetch(path, { headers, cache: "no-store", credentials: "omit" });
    let body = null;
    try { body = await response.json(); } catch (_) { body = null; }
    if (!response.ok) {
      const message = body && body.error && body.error.message;
      throw new ApiError(response.status, message || `HTTP ${response.status}`);
    }
    return body;
  }

  function el(tag, text, className) {
    const n = document.createElement(tag);
    if (text !== undefined && text !== null) n.textContent = String(text);
    if (className) n.className = className;
    return n;
  }

  function time(seconds) {
    if (!seconds) return "";
    return new Date(seconds * 1000).toISOString().replace("T", " ").slice(0, 19);
  }

  function duration(job) {
    if (!job.created_at) return "";
    const end = job.finished_at || (TERMINAL.has(job.status) ? null : Date.now() / 1000);
    if (!end) return "";
    let s = Math.max(0, Math.round(end - job.created_at));
    const h = Math.floor(s / 3600); s -= h * 3600;
    const m = Math.floor(s / 60); s -= m * 60;
    return (h ? `${h}h ` : "") + (h || m ? `${m}m ` : "") + `${s}s`;
  }

  function suffixOf(job) {
    if (typeof job.user_provided_suffix === "string") return job.user_provided_suffix;
    const parts = (job.fine_tuned_model || "").split(":");
    return parts.length === 5 && parts[0] === "ft" ? parts[3] : "";
  }

  function pairs(object) {
    if (!object || typeof object !== "object") return "";
    return Object.entries(object).map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : v}`).join(", ");
  }

  function statusBadge(status) {
    const known = STATUSES.includes(status) ? status : "unknown";
    return el("span", status, `status status-${known}`);
  }

  function jobHref(virtualKey, id) {
    return `#job/${encodeURIComponent(virtualKey)}/${encodeURIComponent(id)}`;
  }

  function show(section) {
    for (const id of ["login", "jobs", "job"]) $(id).hidden = id !== section;
    $("logout").hidden = section === "login" || !sessionStorage.getItem(KEY);
  }

  function schedule(fn, ms) {
    clearTimeout(state.timer);
    state.timer = setTimeout(fn, ms);
  }

  function stamp() { $("updated").textContent = "updated " + new Date().toLocaleTimeString(); }

  // ---- login -----------------------------------------------------------------------
  async function signIn() {
    try {
      const answer = await api("/ui/api/virtual-keys");
      state.keys = answer.data || [];
      return true;
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) {
        const had = sessionStorage.getItem(KEY);
        sessionStorage.removeItem(KEY);
        show("login");
        $("login-error").textContent = had ? "That key was refused." : "";
        $("key").focus();
        return false;
      }
      throw err;
    }
  }

  // ---- the jobs table --------------------------------------------------------------
  async function jobsOf(vk) {
    const jobs = [];
    let after = null;
    for (let page = 0; page < MAX_PAGES; page++) {
      const query = new URLSearchParams({ limit: String(PAGE) });
      if (after) query.set("after", after);
      const answer = await api("/v1/fine_tuning/jobs?" + query, vk.name);
      const data = answer.data || [];
      for (const job of data) jobs.push({ vk, job });
      if (!answer.has_more || data.length === 0) break;
      after = data[data.length - 1].id;
    }
    return jobs;
  }

  async function loadJobs(generation) {
    const results = await Promise.allSettled(state.keys.map(jobsOf));
    if (generation !== state.generation) return;
    state.jobs = [];
    state.errors = [];
    results.forEach((result, i) => {
      if (result.status === "fulfilled") state.jobs.push(...result.value);
      else state.errors.push(`${state.keys[i].name}: ${result.reason.message}`);
    });
    state.jobs.sort((a, b) => (b.job.created_at || 0) - (a.job.created_at || 0));
    renderJobs();
    stamp();
    const live = state.jobs.some(({ job }) => !TERMINAL.has(job.status));
    schedule(() => route(), live ? LIVE_MS : IDLE_MS);
  }

  function fillFilters() {
    const providers = [...new Set(state.keys.map((k) => k.provider))].sort();
    for (const [select, values] of [[$("filter-provider"), providers], [$("filter-status"), STATUSES]]) {
      const chosen = select.value;
      select.replaceChildren(new Option("all", ""), ...values.map((v) => new Option(v, v)));
      select.value = values.includes(chosen) ? chosen : "";
    }
  }

  function renderJobs() {
    fillFilters();
    const provider = $("filter-provider").value, status = $("filter-status").value;
    const rows = state.jobs.filter(({ vk, job }) =>
      (!provider || vk.provider === provider) && (!status || job.status === status));
    const body = $("jobs-table").tBodies[0];
    body.replaceChildren(...rows.map(({ vk, job }) => {
      const tr = document.createElement("tr");
      tr.dataset.jobId = job.id;
      tr.dataset.provider = vk.provider;
      tr.dataset.status = job.status;
      const link = el("a", job.id);
      link.href = jobHref(vk.name, job.id);
      const cells = [link, vk.name, vk.provider, job.model, statusBadge(job.status), time(job.created_at),
        duration(job), job.trained_tokens ?? "", suffixOf(job), pairs(job.metadata)];
      for (const cell of cells) {
        const td = document.createElement("td");
        if (cell instanceof Node) td.append(cell); else td.textContent = String(cell);
        tr.append(td);
      }
      return tr;
    }));
    $("jobs-count").textContent = `${rows.length} of ${state.jobs.length} jobs, ${state.keys.length} virtual keys`;
    $("jobs-errors").replaceChildren(...state.errors.map((e) => el("li", e)));
  }

  // ---- one job ---------------------------------------------------------------------
  function fields(dl, entries) {
    dl.replaceChildren();
    for (const [name, value] of entries) {
      if (value === undefined || value === null || value === "") continue;
      dl.append(el("dt", name));
      const dd = document.createElement("dd");
      if (value instanceof Node) dd.append(value); else dd.textContent = String(value);
      dl.append(dd);
    }
  }

  function hyperparameters(job) {
    const out = Object.assign({}, job.hyperparameters || {});
    const method = job.method;
    if (method && method.type) {
      out.method = method.type;
      const own = method[method.type] && method[method.type].hyperparameters;
      Object.assign(out, own || {});
    }
    return Object.entries(out).map(([k, v]) => [k, typeof v === "object" ? JSON.stringify(v) : v]);
  }

  function rows(table, items, cellsOf) {
    table.tBodies[0].replaceChildren(...items.map((item) => {
      const tr = document.createElement("tr");
      for (const cell of cellsOf(item)) tr.append(el("td", cell ?? ""));
      return tr;
    }));
  }

  async function loadJob(vkName, id, generation) {
    const vk = state.keys.find((k) => k.name === vkName) || { name: vkName, provider: "" };
    const path = "/v1/fine_tuning/jobs/" + encodeURIComponent(id);
    const [job, events, checkpoints, metrics] = await Promise.all([
      api(path, vk.name),
      api(path + "/events?limit=100", vk.name).catch(() => ({ data: [] })),
      api(path + "/checkpoints?limit=100", vk.name).catch(() => ({ data: [] })),
      api("/ui/api/jobs/" + encodeURIComponent(id) + "/metrics", vk.name).catch(() => ({ series: {} })),
    ]);
    if (generation !== state.generation) return;
    $("job-title").textContent = job.id;
    const status = statusBadge(job.status);
    status.id = "job-status";
    fields($("job-fields"), [
      ["Virtual key", vk.name], ["Provider", vk.provider], ["Model", job.model], ["Status", status],
      ["Fine-tuned model", job.fine_tuned_model], ["Suffix", suffixOf(job)],
      ["Created", time(job.created_at)], ["Finished", time(job.finished_at)], ["Duration", duration(job)],
      ["Trained tokens", job.trained_tokens], ["Training file", job.training_file],
      ["Validation file", job.validation_file], ["Result files", (job.result_files || []).join(", ")],
      ["Seed", job.seed], ["Metadata", pairs(job.metadata)],
    ]);
    const error = $("job-error");
    error.hidden = !job.error;
    error.textContent = job.error
      ? `${job.error.code || "error"}: ${job.error.message || ""}${job.error.param ? ` (param: ${job.error.param})` : ""}`
      : "";
    fields($("job-hyper"), hyperparameters(job));
    const series = metrics.series || {};
    const pick = (names) => names.filter((n) => series[n]).map((n) => ({ name: n, ...series[n] }));
    window.FtgChart.draw($("chart-loss"), pick(["train_loss", "valid_loss", "full_valid_loss"]));
    window.FtgChart.draw($("chart-accuracy"),
      pick(["train_mean_token_accuracy", "valid_mean_token_accuracy", "full_valid_mean_token_accuracy"]));
    rows($("checkpoints"), checkpoints.data || [], (c) =>
      [c.step_number, time(c.created_at), c.fine_tuned_model_checkpoint, pairs(c.metrics)]);
    rows($("events"), events.data || [], (e) => [time(e.created_at), e.level, e.type, e.message]);
    stamp();
    schedule(() => route(), TERMINAL.has(job.status) ? IDLE_MS : LIVE_MS);
  }

  // ---- navigation ------------------------------------------------------------------
  async function route() {
    const generation = ++state.generation;
    clearTimeout(state.timer);
    try {
      if (!(await signIn())) return;
      if (generation !== state.generation) return;
      const match = /^#job\/([^/]+)\/([^/]+)$/.exec(location.hash);
      if (match) {
        show("job");
        await loadJob(decodeURIComponent(match[1]), decodeURIComponent(match[2]), generation);
      } else {
        show("jobs");
        await loadJobs(generation);
      }
    } catch (err) {
      if (generation !== state.generation) return;
      $("updated").textContent = "error: " + err.message;
      if (err instanceof ApiError && err.status === 401) { sessionStorage.removeItem(KEY); show("login"); return; }
      schedule(() => route(), IDLE_MS);
    }
  }

  function start() {
    $("login-form").addEventListener("submit", (event) => {
      event.preventDefault();
      sessionStorage.setItem(KEY, $("key").value);
      $("key").value = "";
      route();
    });
    $("logout").addEventListener("click", () => {
      sessionStorage.removeItem(KEY);
      state.keys = []; state.jobs = [];
      location.hash = "";
      route();
    });
    $("filter-provider").addEventListener("change", renderJobs);
    $("filter-status").addEventListener("change", renderJobs);
    window.addEventListener("hashchange", route);
    route();
  }

  document.addEventListener("DOMContentLoaded", start);
})();
