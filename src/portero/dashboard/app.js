// The dashboard: polls the management API every POLL_MS, draws everything, and runs the admin's actions.
import { ApiError, call, setToken, token } from "./api.js";
import { PALETTE, lineChart } from "./charts.js";
import { language, message, setLanguage, t, translate, word } from "./i18n.js";

const POLL_MS = 2000;
const BASE = "/scalability";
const $ = (selector) => document.querySelector(selector);
const state = { summary: null, charts: null, logs: [], following: null, readOnly: sessionStorage.getItem("portero.readonly") === "1", timer: null, first: true, edits: {} };
const GONE = "#c3c8d0"; // a replica that no longer exists: its line stays in the chart, grey and out of the legend

const fmt = {
  rate: (v) => `${v < 10 ? v.toFixed(1) : Math.round(v)}/s`,
  seconds: (v) => (v < 1 ? `${Math.round(v * 1000)} ms` : `${v.toFixed(2)} s`),
  ratio: (v) => `${(v * 100).toFixed(v < 0.1 ? 1 : 0)}%`,
  window: (s) => (s < 90 ? `${Math.round(s)} s` : `${Math.round(s / 60)} min`),
  percent: (v) => `${Math.round(v)}%`,
  bytes: (v) => `${Math.round(v / 1048576)} MiB`,
  count: (v) => String(Math.round(v * 10) / 10),
  ago: (s) => (s < 90 ? `${Math.round(s)} s` : s < 5400 ? `${Math.round(s / 60)} min` : `${(s / 3600).toFixed(1)} h`),
  time: (at) => new Date(at * 1000).toLocaleTimeString(language()),
  days: (s) => (s < 0 ? "0 d" : s < 2 * 86400 ? `${Math.round(s / 3600)} h` : `${Math.round(s / 86400)} d`),
};

function node(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") el.className = value;
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else el.setAttribute(key, value);
  }
  el.append(...children.filter((c) => c !== null && c !== undefined));
  return el;
}

// -- login, roles ----------------------------------------------------------------------------------------------

function showLogin(message) {
  $("#login-error").hidden = !message;
  $("#login-error").textContent = message || "";
  $("#token").value = "";
  if (!$("#login").open) $("#login").showModal();
}

function setReadOnly(on) {
  state.readOnly = on;
  sessionStorage.setItem("portero.readonly", on ? "1" : "0");
  document.body.classList.toggle("read-only", on);
  $("#readonly").hidden = !on;
}

function signedIn() {
  $("#signin").hidden = Boolean(token());
  $("#signout").hidden = !token();
}

// -- polling ---------------------------------------------------------------------------------------------------

async function poll() {
  clearTimeout(state.timer);
  const generation = (state.generation = (state.generation ?? 0) + 1); // only the newest poll renders and re-arms
  const windowS = Number($("#window").value);
  const points = Math.min(600, Math.max(60, Math.round(($("#chart-rps").clientWidth || 480) / 2)));
  try {
    // A day's view has a point every ~5 min: asking again every 2 s would bring the same 150 KB. Short windows
    // are asked every poll: the newest bucket's value moves while it fills.
    const seriesPath = `${BASE}/dashboard/series?window_s=${windowS}&max_points=${points}`;
    const fresh = state.charts && state.charts.step_s > 10 && state.seriesPath === seriesPath && Date.now() - state.seriesAt < state.charts.step_s * 1000;
    const [summary, charts] = await Promise.all([call("GET", `${BASE}/dashboard`), fresh ? state.charts : call("GET", seriesPath)]);
    if (generation !== state.generation) return;
    if (summary.role) setReadOnly(summary.role === "viewer"); // portero says what the token may do
    if (!fresh) Object.assign(state, { seriesPath, seriesAt: Date.now() });
    state.summary = summary;
    state.charts = charts;
    render();
    if (!state.following) followLogs();
    Object.assign($("#status"), { textContent: t("live"), className: "status ok" });
    $("#status").dataset.i18n = "live"; // what a switch of language translates
    if (state.first) {
      state.first = false;
      performance.mark("portero:rendered"); // what the load-time test measures
    }
  } catch (err) {
    if (generation !== state.generation) return;
    Object.assign($("#status"), { textContent: t("offline"), className: "status bad" });
    $("#status").dataset.i18n = "offline";
    if (err instanceof ApiError && err.status === 401) {
      state.following?.abort();
      setToken(null);
      signedIn();
      showLogin(state.triedToken ? t("badToken") : "");
      return; // resumes when a token is given
    }
  }
  state.timer = setTimeout(poll, POLL_MS);
}

// The log stream: one long request that portero keeps open, tailing the replicas' files with a cursor (polling
// would re-read whole files every time); server-sent events read from the body, since EventSource cannot send
// the token. Dropped (portero restarting, a network blip): it comes back from the last line it has.
async function followLogs() {
  const controller = new AbortController();
  state.following = controller;
  const since = state.logs.length ? state.logs.at(-1).at + 0.000001 : -300;
  try {
    const response = await fetch(`${BASE}/logs?follow=true&limit=200&since=${since}`, {
      headers: { Accept: "text/event-stream", Authorization: `Bearer ${token()}` },
      signal: controller.signal,
      cache: "no-store",
    });
    if (!response.ok) throw new ApiError(response.status, response.statusText);
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        for (const line of buffer.slice(0, cut).split("\n")) {
          if (line.startsWith("data: ")) state.logs.push(JSON.parse(line.slice(6)));
        }
        buffer = buffer.slice(cut + 2);
      }
      state.logs = state.logs.slice(-200);
      if (!state.logsDrawPending) {
        state.logsDrawPending = true;
        requestAnimationFrame(() => { state.logsDrawPending = false; renderLogs(); });
      }
    }
  } catch (err) {
    if (controller.signal.aborted) return; // signed out, or a new token: someone else restarts it
  }
  if (state.following === controller) setTimeout(followLogs, POLL_MS);
}

// -- rendering -------------------------------------------------------------------------------------------------

function render() {
  const s = state.summary;
  renderKpis(s);
  renderCharts(s, state.charts);
  renderServices(s);
  renderAlerts(s);
  renderDeployment(s);
  renderAutoscaler(s);
  renderEndpoints(s);
  renderCertificates(s);
  renderEvents(s);
  renderLogs();
}

function renderKpis(s) {
  const cards = s.services.map((svc) => {
    const traffic = s.traffic[svc.name];
    const value = (v, f) => (v === null || v === undefined ? "–" : f(v));
    return node("div", { class: "kpi", dataset: { service: svc.name } },
      node("h3", {}, svc.name),
      node("p", {}, node("strong", { class: "replica-count" }, `${svc.ready}/${svc.desired}`), ` ${t("replicas")}`),
      node("p", {}, node("span", { class: "rps" }, value(traffic?.requests_per_second, fmt.rate)), " · p95 ", node("span", { class: "p95" }, value(traffic?.latency_p95_s, fmt.seconds)),
        " · 5xx ", node("span", { class: "errors-5xx" }, value(traffic?.error_ratio, fmt.ratio)), " · 4xx ", node("span", { class: "errors-4xx" }, value(traffic?.client_error_ratio, fmt.ratio))),
      node("p", { class: "small muted" }, t("windowNote", { window: fmt.window(s.window_s) })));
  });
  const alerts = s.alerts.filter((a) => a.state === "firing").length;
  cards.push(node("div", { class: `kpi ${alerts ? "alarm" : ""}` }, node("h3", {}, t("alerts")), node("p", {}, node("strong", {}, String(alerts)), ` ${t("firingKpi")}`)));
  $("#kpis").replaceChildren(...cards);
}

// A chart's lines; `value` gives each legend the figure the cards and tables show (the same definition, read at the
// same moment), not the chart's last bucket; `live` keeps replicas that are gone out of the legend.
function linesOf(charts, name, label, { value, live } = {}) {
  const list = charts?.series?.[name] ?? [];
  let shown = 0;
  return list.map((series) => {
    const gone = live !== undefined && !live(series.labels);
    return {
      label: label(series.labels),
      color: gone ? GONE : PALETTE[shown++ % PALETTE.length],
      points: series.points,
      legend: !gone,
      value: value ? value(series.labels) : undefined,
    };
  });
}

function renderCharts(s, charts) {
  if (!charts) return;
  const win = fmt.window(s.window_s);
  $("#caption-p95").textContent = t("p95", { window: win });
  $("#caption-errors").textContent = t("errors", { window: win });
  // A window longer than the data (portero just started) fits the data: a line squeezed to the edge says nothing.
  const firsts = Object.values(charts.series).flatMap((group) => group.map((series) => series.points[0]?.[0] ?? Infinity));
  const since = Math.max(charts.since, Math.min(charts.until - 60, Math.min(...firsts) - charts.step_s));
  const opts = { since, until: charts.until, step: charts.step_s, empty: s.monitoring ? t("noData") : t("monitoringOff") };
  const traffic = (field) => (l) => s.traffic[l.service]?.[field] ?? null;
  const replicas = new Map(s.services.flatMap((svc) => svc.replicas.map((r) => [r.id, r])));
  const live = (l) => replicas.has(l.replica);
  const usage = (field) => (l) => replicas.get(l.replica)?.[field] ?? null;
  const services = new Map(s.services.map((svc) => [svc.name, svc]));
  const byService = (l) => l.service;
  const byReplica = (l) => l.replica;
  lineChart($("#chart-rps"), $("#legend-rps"), linesOf(charts, "service_requests_per_second", byService, { value: traffic("requests_per_second") }), { ...opts, format: fmt.rate });
  lineChart($("#chart-p95"), $("#legend-p95"), linesOf(charts, "service_latency_p95_seconds", byService, { value: traffic("latency_p95_s") }), { ...opts, format: fmt.seconds });
  const errors = [
    ...linesOf(charts, "service_error_ratio", (l) => `${l.service} 5xx`, { value: traffic("error_ratio") }),
    ...linesOf(charts, "service_client_error_ratio", (l) => `${l.service} 4xx`, { value: traffic("client_error_ratio") }),
  ].map((line, index) => ({ ...line, color: PALETTE[index % PALETTE.length] }));
  lineChart($("#chart-errors"), $("#legend-errors"), errors, { ...opts, format: fmt.ratio });
  const counts = [
    ...linesOf(charts, "service_desired_replicas", (l) => `${l.service} ${t("desired")}`, { value: (l) => services.get(l.service)?.desired ?? null }),
    ...linesOf(charts, "service_ready_replicas", (l) => `${l.service} ${t("ready")}`, { value: (l) => services.get(l.service)?.ready ?? null }),
  ].map((line, index) => ({ ...line, color: PALETTE[index % PALETTE.length] }));
  const markers = s.autoscaler.services.flatMap((svc) =>
    svc.decisions.filter((d) => d.changed).map((d) => ({ at: d.at, label: `${svc.service}: ${d.current} → ${d.desired} (${message(d.reason)})` })));
  lineChart($("#chart-replicas"), $("#legend-replicas"), counts, { ...opts, format: fmt.count, markers });
  lineChart($("#chart-cpu"), $("#legend-cpu"), linesOf(charts, "replica_cpu_percent", byReplica, { live, value: usage("cpu_percent") }), { ...opts, format: fmt.percent });
  lineChart($("#chart-memory"), $("#legend-memory"), linesOf(charts, "replica_memory_bytes", byReplica, { live, value: usage("memory_bytes") }), { ...opts, format: fmt.bytes });
}

function button(label, cls, onclick) {
  return node("button", { type: "button", class: `action ${cls}`, onclick }, label);
}

const badge = (value) => node("span", { class: `state ${value}` }, word("state", value));

function renderServices(s) {
  const focused = document.activeElement?.id; // a redraw must not steal the input the operator types in
  const blocks = s.services.map((svc) => {
    // The scale box shows the desired count, whoever changed it (the autoscaler, the CLI, another page), unless
    // the operator is typing a number of their own in it.
    const scaleId = `scale-${svc.name}`;
    const scaleInput = node("input", { id: scaleId, type: "number", min: String(svc.min), max: String(svc.max), value: state.edits[scaleId] ?? String(svc.desired), class: "action num",
      oninput: (e) => { state.edits[scaleId] = e.target.value; } });
    const versionId = `version-${svc.name}`;
    const versionInput = node("input", { id: versionId, type: "text", placeholder: t("version"), value: state.edits[versionId] ?? "", class: "action", size: "8",
      oninput: (e) => { state.edits[versionId] = e.target.value; } });
    const actions = node("div", { class: "actions" },
      scaleInput, button(t("scale"), "scale", () => scale(svc, Number(scaleInput.value))),
      versionInput, button(t("deploy"), "deploy", () => deploy(svc, versionInput.value.trim())),
      button(t("rollback"), "rollback", () => rollback(svc)));
    const endpoints = new Set(s.endpoints.filter((e) => e.service === svc.name && e.state === "active").map((e) => e.address));
    const drained = new Set(s.endpoints.filter((e) => e.service === svc.name && e.state === "draining").map((e) => e.address));
    const rows = svc.replicas.map((r) => node("tr", { dataset: { replica: r.id } },
      node("td", {}, r.id), node("td", {}, badge(r.state)), node("td", {}, String(r.revision)),
      node("td", {}, r.address ?? "–"), node("td", {}, r.cpu_percent == null ? "–" : fmt.percent(r.cpu_percent)),
      node("td", {}, r.memory_bytes == null ? "–" : fmt.bytes(r.memory_bytes)), node("td", {}, r.uptime_s == null ? "–" : fmt.ago(r.uptime_s)),
      node("td", {}, String(r.restarts)),
      node("td", {}, r.address && endpoints.has(r.address) ? button(t("drain"), "drain", () => drain(svc, r))
        : r.address && drained.has(r.address) ? button(t("undrain"), "undrain", () => undrain(svc, r)) : "")));
    const head = node("tr", {}, ...[t("replica"), t("state"), t("revision"), t("address"), "CPU", "RAM", t("uptime"), t("restarts"), ""].map((h) => node("th", {}, h)));
    return node("div", { class: "service", dataset: { service: svc.name } },
      node("h3", {}, `${svc.name} · ${t("revision")} ${svc.revision} · `, node("span", { class: "replica-count" }, `${svc.ready}/${svc.desired}`), ` ${t("ready")} (min ${svc.min}, max ${svc.max})`),
      actions, node("div", { class: "scroll" }, node("table", {}, node("thead", {}, head), node("tbody", {}, ...rows))));
  });
  $("#services").replaceChildren(...blocks);
  if (focused) document.getElementById(focused)?.focus();
}

function renderAlerts(s) {
  const items = s.alerts.map((a) => node("li", { class: `alert ${a.state}` },
    node("strong", {}, a.name), ` · ${word("state", a.state)}`, a.value == null ? "" : ` · ${Math.round(a.value * 100) / 100}`,
    node("div", { class: "small" }, message(a.annotations.summary ?? a.annotations.description ?? Object.entries(a.labels).map(([k, v]) => `${k}=${v}`).join(" ")))));
  $("#alerts").replaceChildren(...(items.length ? items : [node("li", { class: "muted" }, s.monitoring ? t("noAlerts") : t("monitoringOff"))]));
}

function renderDeployment(s) {
  const d = s.deployments.current;
  if (!d) {
    $("#deployment").replaceChildren(node("p", { class: "muted" }, t("noDeployments")));
    return;
  }
  const steps = d.steps.map((step) => node("li", {}, node("time", {}, fmt.time(step.at)), " ", message(step.message)));
  const recent = s.deployments.recent.slice(0, 5).map((r) => node("li", {}, `${fmt.time(r.started_at)} ${r.service} ${r.from_revision}→${r.to_revision} ${word("kind", r.kind)} `, badge(r.state)));
  $("#deployment").replaceChildren(node("div", {},
    node("p", { class: "deploy-head" }, node("strong", {}, `${d.service} ${d.from_revision} → ${d.to_revision}`), ` · ${word("strategy", d.strategy)} · ${word("kind", d.kind)} · `,
      badge(d.state), ` · ${t("phase")} ${word("phase", d.phase)}`),
    d.reason ? node("p", { class: "small reason" }, message(d.reason)) : null,
    node("ol", { class: "timeline" }, ...steps),
    node("ul", { class: "list small" }, ...recent)));
}

function renderAutoscaler(s) {
  const a = s.autoscaler;
  const blocks = a.services.map((svc) => {
    const last = svc.decisions.at(-1);
    return node("div", {}, node("p", {}, node("strong", {}, svc.service), ` · ${svc.enabled && a.enabled ? t("enabled") : t("disabled")} · ${svc.min}–${svc.max} · ${t("desired")} ${svc.desired}`),
      last ? node("p", { class: "small reason" }, `${t("lastDecision")} ${fmt.time(last.at)}: ${last.current} → ${last.desired} (${message(last.reason)})`) : null);
  });
  $("#autoscaler").replaceChildren(...(blocks.length ? blocks : [node("p", { class: "muted" }, t("disabled"))]));
}

function renderEndpoints(s) {
  const win = fmt.window(s.window_s);
  const head = node("tr", {}, ...[t("service"), t("address"), t("state"), t("weight"), t("inflight"), t("requests"), t("faults"), t("ejections"), `p95 (${win})`].map((h) => node("th", {}, h)));
  const rows = s.endpoints.map((e) => {
    const p95 = s.endpoint_traffic[e.address]?.latency_p95_s;
    // A fault is a try the endpoint failed (refused, reset, timeout...): the total, its kinds on hover.
    const kinds = Object.entries(e.faults).filter(([, n]) => n > 0);
    const faults = kinds.reduce((sum, [, n]) => sum + n, 0);
    return node("tr", { dataset: { address: e.address } }, node("td", {}, e.service), node("td", {}, e.address), node("td", {}, badge(e.state)),
      node("td", {}, String(e.weight)), node("td", {}, String(e.in_flight)), node("td", {}, String(e.requests)),
      node("td", { class: "faults", title: kinds.map(([k, n]) => `${k}: ${n}`).join(", ") }, String(faults)),
      node("td", { class: "ejections" }, String(e.ejections) + (e.ejected ? ` (${t("ejectedNow")})` : "")),
      node("td", { class: "p95" }, p95 == null ? "–" : fmt.seconds(p95)));
  });
  $("#endpoints").replaceChildren(node("thead", {}, head), node("tbody", {}, ...rows));
}

function renderCertificates(s) {
  const certs = s.certificates ?? [];
  $("#certificates-panel").hidden = !certs.length; // no router.tls
  const day = (at) => new Date(at * 1000).toLocaleDateString(language());
  const rows = certs.map((c) => node("tr", {}, ...[c.host, c.source, badge(c.state),
    c.not_after == null ? "–" : `${day(c.not_after)} (${fmt.days(c.not_after - s.at)})`,
    c.error ? message(c.error) : c.renew_at == null ? "–" : day(c.renew_at)].map((v) => node("td", {}, v))));
  const head = node("tr", {}, ...["host", "source", "state", "expires", "renewal"].map((h) => node("th", {}, t(h))));
  $("#certificates").replaceChildren(node("thead", {}, head), node("tbody", {}, ...rows));
}

function renderEvents(s) {
  $("#events").replaceChildren(...s.events.slice(0, 30).map((e) => node("li", {}, node("time", {}, fmt.time(e.at)), ` ${word("event", e.kind)} · ${message(e.message)}`)));
}

// Control characters written out, as `portero logs` does on a terminal: a "\r" or an ANSI escape in a replica's
// line must neither hide text nor pass for a line of its own.
const CONTROL = /[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]/g;
const NAMED = { "\r": "\\r", "\n": "\\n" };
function shown(text) {
  return text.replace(CONTROL, (c) => {
    const code = c.charCodeAt(0);
    return NAMED[c] ?? (code < 0x100 ? `\\x${code.toString(16).padStart(2, "0")}` : `\\u${code.toString(16).padStart(4, "0")}`);
  });
}

function renderLogs() {
  const box = $("#logs");
  const atBottom = box.scrollTop + box.clientHeight >= box.scrollHeight - 4;
  box.textContent = state.logs.map((l) => `${fmt.time(l.at)} ${l.replica} ${shown(l.text)}`).join("\n");
  if (atBottom) box.scrollTop = box.scrollHeight;
}

// -- actions ---------------------------------------------------------------------------------------------------

function confirmDialog(text) {
  const dialog = $("#confirm");
  $("#confirm-text").textContent = text;
  dialog.returnValue = "";
  dialog.showModal();
  return new Promise((resolve) => dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true }));
}

function toast(text, bad = false) {
  const box = $("#toast");
  box.textContent = text;
  box.className = `toast ${bad ? "bad" : "ok"}`;
  box.hidden = false;
  clearTimeout(box.timer);
  box.timer = setTimeout(() => { box.hidden = true; }, 5000);
}

async function act(question, what, method, path, body) {
  if (!(await confirmDialog(question))) return false;
  let ok = false;
  try {
    await call(method, path, body);
    toast(t("done", { what }));
    ok = true;
  } catch (err) {
    if (err instanceof ApiError && err.status === 403) {
      setReadOnly(true);
      toast(t("forbidden"), true);
    } else if (err instanceof ApiError && err.status === 401) {
      setToken(null);
      signedIn();
      showLogin(t("badToken"));
    } else {
      toast(t("failed", { what: message(err.message) }), true); // a refusal says why (a 409's reason)
    }
  }
  poll();
  return ok;
}

async function scale(svc, to) {
  const done = await act(t("confirmScale", { service: svc.name, from: svc.desired, to }), `${t("scale")} ${svc.name} → ${to}`,
    "POST", `${BASE}/services/${encodeURIComponent(svc.name)}/scale`, { replicas: to });
  delete state.edits[`scale-${svc.name}`]; // asked (done or refused): the box follows the desired count again
  if (state.summary) renderServices(state.summary);
  return done;
}

async function deploy(svc, version) {
  const body = version ? { service: svc.name, version } : { service: svc.name };
  const question = version ? t("confirmDeploy", { service: svc.name, version }) : t("confirmDeployEnv", { service: svc.name });
  const done = await act(question, `${t("deploy")} ${svc.name} ${version}`, "POST", `${BASE}/deploy`, body);
  if (done) delete state.edits[`version-${svc.name}`]; // a deployed version is not one to deploy again
  if (state.summary) renderServices(state.summary);
}

function rollback(svc) {
  return act(t("confirmRollback", { service: svc.name }), `${t("rollback")} ${svc.name}`, "POST", `${BASE}/rollback`, { service: svc.name });
}

// Draining the last endpoint that takes requests stops the service: the API refuses it unless `force` is sent,
// and the page sends it only after a second question that says so.
async function drain(svc, replica) {
  const what = `${t("drain")} ${replica.id}`;
  const body = { service: svc.name, address: replica.address };
  const question = t("confirmDrain", { replica: replica.id, address: replica.address });
  const others = (state.summary?.endpoints ?? []).filter((e) => e.service === svc.name && e.address !== replica.address && e.state === "active" && e.weight > 0);
  if (others.length) return act(question, what, "POST", `${BASE}/load-balancer/drain`, body);
  if (!(await confirmDialog(question))) return false;
  return act(t("confirmDrainLast", { service: svc.name, replica: replica.id }), what, "POST", `${BASE}/load-balancer/drain`, { ...body, force: true });
}

function undrain(svc, replica) {
  return act(t("confirmUndrain", { replica: replica.id, address: replica.address }), `${t("undrain")} ${replica.id}`,
    "POST", `${BASE}/load-balancer/undrain`, { service: svc.name, address: replica.address });
}

// -- start -----------------------------------------------------------------------------------------------------

function start() {
  const asked = new URLSearchParams(location.search).get("window"); // ?window=86400 links to a day's view
  if (asked && [...$("#window").options].some((o) => o.value === asked)) $("#window").value = asked;
  translate(document);
  $("#lang").textContent = language() === "es" ? "EN" : "ES";
  $("#lang").addEventListener("click", () => {
    setLanguage(language() === "es" ? "en" : "es");
    $("#lang").textContent = language() === "es" ? "EN" : "ES";
    if (state.summary) render();
  });
  $("#window").addEventListener("change", poll);
  $("#signin").addEventListener("click", () => showLogin(""));
  $("#signout").addEventListener("click", () => {
    state.following?.abort();
    state.following = null;
    setToken(null);
    setReadOnly(false);
    signedIn();
    showLogin("");
  });
  $("#login-form").addEventListener("submit", () => {
    state.following?.abort();
    state.following = null;
    setToken($("#token").value.trim());
    state.triedToken = true;
    setReadOnly(false);
    signedIn();
    poll();
  });
  setReadOnly(state.readOnly);
  signedIn();
  poll();
}

start();
