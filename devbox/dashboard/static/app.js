// devbox dashboard: reads devbox's own HTTP API and renders plain tables and SVG.
"use strict";

const $ = (id) => document.getElementById(id);
const esc = (v) => String(v ?? "").replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);
const ms = (us) => (us / 1000).toFixed(us < 10000 ? 2 : 0) + " ms";
const when = (s) => (s ? new Date(s * 1000).toLocaleTimeString() : "");

async function api(path) {
  const r = await fetch(path);
  if (!r.ok) {
    let reason = r.statusText;
    try { const b = await r.json(); reason = b.reason || b.error || reason; } catch (_) { /* not JSON */ }
    throw new Error(`${path}: ${r.status} ${reason}`);
  }
  return r.json();
}

function table(el, head, rows) {
  el.innerHTML = `<tr>${head.map((h) => `<th>${esc(h)}</th>`).join("")}</tr>` +
    (rows.length ? rows.map((r) => `<tr>${r.map((c) => `<td>${c}</td>`).join("")}</tr>`).join("")
      : `<tr><td colspan="${head.length}" class="muted">nothing yet</td></tr>`);
}

function showError(err) { $("error").textContent = err ? String(err.message || err) : ""; }

// --- overview -------------------------------------------------------------------------------
async function overview() {
  const p = await api("/api/platform");
  $("title").textContent = `devbox · ${p.project}`;
  table($("components"), ["component", "state", "facts"], Object.entries(p.components).map(([n, c]) => {
    const facts = Object.entries(c).filter(([k, v]) => !["state", "error"].includes(k) && typeof v !== "object")
      .map(([k, v]) => `${esc(k)}=${esc(v)}`).join(" ");
    return [esc(n), `<span class="${c.state === "running" ? "ok" : "bad"}">${esc(c.state)}</span> ${esc(c.error || "")}`, facts];
  }));
  table($("listeners"), ["listener", "address", "protocol"], Object.entries(p.listeners).map(([n, l]) =>
    [esc(n), `${esc(l.host)}:${esc(l.port)}`, esc(l.protocol)]));
  if (p.components.deploy) {
    const services = await api("/api/deploy/services");
    const list = services.services;
    table($("services"), ["service", "ready", "instances", "tags", "restarts"], list.map((s) => [
      esc(s.service), `<span class="${s.ready >= s.replicas ? "ok" : "warn"}">${s.ready}/${s.replicas}</span>`,
      (s.instances || []).map((i) => `${esc(i.name)} :${esc(i.port)} <span class="${i.healthy ? "ok" : "bad"}">${esc(i.state)}</span>`).join("<br>"),
      esc(Object.entries(s.tags || {}).map(([k, v]) => `${k}=${v}`).join(", ")), esc(s.restarts),
    ]));
    const ev = await api("/api/deploy/events?limit=5000");
    table($("events"), ["time", "service", "instance", "event", "message"], ev.events.slice(-15).reverse().map((e) => [
      when(e.ts), esc(e.service), esc(e.instance), esc(e.kind), esc(e.message),
    ]));
  }
}

// --- topology -------------------------------------------------------------------------------
async function topology() {
  const t = await api("/api/topology?lookback=3600000");
  const depth = {};
  const callers = {};
  t.edges.forEach((e) => { (callers[e.callee] = callers[e.callee] || []).push(e.caller); });
  const level = (n, seen = new Set()) => {
    if (depth[n] !== undefined) return depth[n];
    if (seen.has(n)) return 0;
    seen.add(n);
    depth[n] = (callers[n] || []).reduce((m, c) => Math.max(m, level(c, seen) + 1), 0);
    return depth[n];
  };
  t.services.forEach((s) => level(s.name));
  const columns = {};
  t.services.forEach((s) => (columns[depth[s.name]] = columns[depth[s.name]] || []).push(s));
  const pos = {};
  const svg = $("graph");
  const width = svg.clientWidth || 900;
  const ncol = Object.keys(columns).length || 1;
  Object.entries(columns).forEach(([d, nodes]) => nodes.forEach((s, i) => {
    pos[s.name] = { x: 80 + (Number(d) * (width - 160)) / Math.max(1, ncol - 1), y: 50 + i * 80, s };
  }));
  let out = `<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto"><path d="M0,0L10,5L0,10z" fill="#8a94a8"/></marker></defs>`;
  t.edges.forEach((e) => {
    const a = pos[e.caller], b = pos[e.callee];
    if (!a || !b) return;
    const color = e.errors ? "#d64545" : "#8a94a8";
    out += `<line x1="${a.x + 50}" y1="${a.y}" x2="${b.x - 50}" y2="${b.y}" stroke="${color}" stroke-width="1.5" marker-end="url(#arrow)"/>`;
    out += `<text x="${(a.x + b.x) / 2}" y="${(a.y + b.y) / 2 - 4}" text-anchor="middle" fill="#6b7385">${e.calls} calls · p99 ${ms(e.p99_us)}</text>`;
  });
  Object.values(pos).forEach(({ x, y, s }) => {
    out += `<rect x="${x - 50}" y="${y - 16}" width="100" height="32" rx="6" fill="#fff" stroke="${s.errors ? "#d64545" : "#3b6fd8"}"/>`;
    out += `<text x="${x}" y="${y + 4}" text-anchor="middle">${esc(s.name)}</text>`;
  });
  svg.setAttribute("height", String(Math.max(200, ...Object.values(pos).map((p) => p.y + 50))));
  svg.innerHTML = out;
  table($("edges"), ["caller", "callee", "calls", "errors", "p50", "p99"], t.edges.map((e) => [
    esc(e.caller), esc(e.callee), e.calls, `<span class="${e.errors ? "bad" : ""}">${e.errors}</span>`, ms(e.p50_us), ms(e.p99_us),
  ]));
}

// --- traces ---------------------------------------------------------------------------------
async function traces() {
  const q = $("errorsOnly").checked ? "&errors=true" : "";
  const r = await api(`/api/traces?limit=30&lookback=3600000${q}`);
  table($("tracelist"), ["trace", "entry", "services", "spans", "duration", "started"], r.traces.map((t) => [
    `<a data-trace="${esc(t.trace_id)}">${esc(t.trace_id.slice(0, 12))}…</a>`,
    `${esc(t.root_service)} ${esc(t.root_name)}`, esc(t.services.join(", ")),
    `${t.spans}${t.errors ? ` <span class="bad">(${t.errors} errors)</span>` : ""}`,
    ms(t.duration_us), when(t.start_us / 1e6),
  ]));
  document.querySelectorAll("[data-trace]").forEach((a) => a.addEventListener("click", () => trace(a.dataset.trace).catch(showError)));
}

async function trace(id) {
  const spans = await api(`/api/v2/trace/${id}`);
  spans.sort((a, b) => a.timestamp - b.timestamp);
  const t0 = Math.min(...spans.map((s) => s.timestamp));
  const total = Math.max(...spans.map((s) => s.timestamp + (s.duration || 0))) - t0 || 1;
  const byId = Object.fromEntries(spans.map((s) => [s.id, s]));
  const depth = (s) => (s.parentId && byId[s.parentId] ? 1 + depth(byId[s.parentId]) : 0);
  $("trace").hidden = false;
  $("traceTitle").textContent = `trace ${id} · ${spans.length} spans · ${ms(total)}`;
  table($("waterfall"), ["service", "operation", "duration", ""], spans.map((s) => {
    const err = s.tags && s.tags.error !== undefined;
    const left = ((s.timestamp - t0) / total) * 100, width = Math.max(0.5, ((s.duration || 0) / total) * 100);
    return [`<span style="padding-left:${depth(s) * 14}px">${esc(s.localEndpoint?.serviceName)}</span>`, esc(s.name),
      ms(s.duration || 0), `<div class="bar"><span class="${err ? "err" : ""}" style="left:${left}%;width:${width}%"></span></div>`];
  }));
  $("cause").innerHTML = "";
  if (spans.some((s) => s.tags && s.tags.error !== undefined)) {
    const why = await api(`/api/traces/${id}/why`);
    $("cause").innerHTML = `<p class="bad">root cause: <pre>${esc(JSON.stringify(why.causes || why, null, 1))}</pre></p>`;
  }
}

// --- metrics --------------------------------------------------------------------------------
const palette = ["#3b6fd8", "#d64545", "#1f9d55", "#d69e2e", "#805ad5", "#2c7a7b", "#b83280"];
async function metrics() {
  const q = $("promql").value.trim();
  if (!q) return;
  const r = await api(`/api/dashboard/range?minutes=15&query=${encodeURIComponent(q)}`);
  const svg = $("chart");
  const w = svg.clientWidth || 900, h = 300, pad = 40;
  const pts = r.series.flatMap((s) => s.points.map((p) => p[1])).filter(Number.isFinite);
  const ymax = Math.max(1e-9, ...pts), ymin = Math.min(0, ...pts);
  const x = (t) => pad + ((t - r.start) / (r.end - r.start)) * (w - 2 * pad);
  const y = (v) => h - pad - ((v - ymin) / (ymax - ymin || 1)) * (h - 2 * pad);
  let out = `<line x1="${pad}" y1="${h - pad}" x2="${w - pad}" y2="${h - pad}" stroke="#ccc"/>` +
    `<text x="4" y="${pad}">${ymax.toPrecision(3)}</text><text x="4" y="${h - pad}">${ymin.toPrecision(3)}</text>`;
  r.series.forEach((s, i) => {
    const d = s.points.filter((p) => Number.isFinite(p[1])).map((p, j) => `${j ? "L" : "M"}${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join("");
    out += `<path d="${d}" fill="none" stroke="${palette[i % palette.length]}" stroke-width="1.6"/>`;
  });
  svg.innerHTML = out;
  $("legend").innerHTML = r.series.map((s, i) => `<span style="color:${palette[i % palette.length]}">■</span> ${esc(JSON.stringify(s.labels))}`).join("<br>") || '<span class="muted">no data</span>';
}

// --- alerts ---------------------------------------------------------------------------------
async function alerts() {
  const a = await api("/api/alerts?state=active");
  table($("active"), ["alert", "state", "labels", "value", "since", "silenced by"], a.alerts.map((x) => [
    esc(x.alertname), `<span class="${x.state === "firing" ? "bad" : "warn"}">${esc(x.state)}</span>`,
    esc(Object.entries(x.labels).map(([k, v]) => `${k}=${v}`).join(", ")), esc(x.value), when(x.active_at), esc((x.silenced_by || []).join(", ")),
  ]));
  const h = await api("/api/alerts/history?limit=50");
  table($("history"), ["time", "alert", "from → to", "value", "notification"], h.transitions.map((x) => [
    when(x.at), esc(x.alertname), `${esc(x.from)} → ${esc(x.to)}`, esc(x.value),
    x.silenced ? '<span class="warn">silenced</span>' : esc(x.notified),
  ]));
}

// --- wiring ---------------------------------------------------------------------------------
const views = { overview, topology, traces, metrics, alerts };
let current = "overview";
function show(tab) {
  current = tab;
  document.querySelectorAll("nav button").forEach((b) => b.classList.toggle("active", b.dataset.tab === tab));
  document.querySelectorAll("section").forEach((s) => s.classList.toggle("active", s.id === tab));
  refresh();
}
function refresh() { views[current]().then(() => showError(null), showError); }
document.querySelectorAll("nav button").forEach((b) => b.addEventListener("click", () => show(b.dataset.tab)));
$("run").addEventListener("click", refresh);
$("errorsOnly").addEventListener("change", refresh);
setInterval(() => { if (current !== "traces" || $("trace").hidden) refresh(); }, 3000);
show(location.hash.slice(1) || "overview");
