// devbox dashboard: reads devbox's own HTTP API and renders tables and SVG.
// The URL names the page and the selection (#/traces/TRACE_ID, #/topology/orders), so deep links
// and back/forward work: every navigation sets location.hash and one hashchange handler renders.
"use strict";

const $ = (id) => document.getElementById(id);
const esc = (v) => String(v ?? "").replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);
const ms = (us) => (us >= 1e6 ? (us / 1e6).toFixed(2) + " s" : (us / 1000).toFixed(us < 10000 ? 2 : 0) + " ms");
const when = (s) => (s ? new Date(s * 1000).toLocaleTimeString() : "");
const labels = (o) => Object.entries(o || {}).map(([k, v]) => `${k}=${v}`).join(", ");
const round = (v) => (typeof v === "number" ? (Math.abs(v) >= 100 ? v.toFixed(0) : v.toPrecision(3)) : esc(v));

async function api(path, options) {
  const r = await fetch(path, options);
  if (!r.ok) {
    let reason = r.statusText;
    try { const b = await r.json(); reason = b.reason || b.error || reason; } catch (_) { /* not JSON */ }
    throw new Error(`${path}: ${r.status} ${reason}`);
  }
  return r.status === 204 ? null : r.json();
}

function table(el, head, rows) {
  el.innerHTML = `<tr>${head.map((h) => `<th>${esc(h)}</th>`).join("")}</tr>` +
    (rows.length ? rows.map((r) => `<tr>${r.map((c) => `<td>${c}</td>`).join("")}</tr>`).join("")
      : `<tr><td colspan="${head.length}" class="muted">nothing yet</td></tr>`);
}

function showError(err) { $("error").textContent = err ? String(err.message || err) : ""; }
const go = (page, sel) => { location.hash = `#/${page}${sel ? "/" + encodeURIComponent(sel) : ""}`; };

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
    table($("services"), ["service", "ready", "instances", "tags", "restarts"], services.services.map((s) => [
      `<a href="#/topology/${esc(s.service)}">${esc(s.service)}</a>`,
      `<span class="${s.ready >= s.replicas ? "ok" : "warn"}">${s.ready}/${s.replicas}</span>`,
      (s.instances || []).map((i) => `${esc(i.name)} :${esc(i.port)} <span class="${i.healthy ? "ok" : "bad"}">${esc(i.state)}</span>`).join("<br>"),
      esc(labels(s.tags)), esc(s.restarts),
    ]));
    const { strangers } = await senders(services.services);
    // shown apart: not services of this project (another tool exporting to its ports), so not in its table
    $("strangers").hidden = !strangers.length;
    $("strangers").innerHTML = `<h3>Spans also arrive from services not in devbox.yaml</h3>` +
      `<p>${strangers.map((n) => `<span class="tag">${esc(n)}</span>`).join(" ")}</p>` +
      '<p class="muted">another tool exporting to this devbox\'s ports? Their spans are kept, but they are no part of the project: ' +
      'the topology leaves them out unless you ask for them.</p>';
  }
}

// Service names that sent spans (still stored) but are not services of devbox.yaml, as `devbox status`
// lists them (unknown_senders). A platform without services (deploy off, or a devbox.yaml that declares none)
// is the backend for services started elsewhere: then every sender is the project's, none a stranger.
async function senders(deployed) {
  const p = await api("/api/platform");
  if (!p.components.deploy || !p.components.tracing) return { strangers: [] };
  const d = deployed ? { services: deployed } : await api("/api/deploy/services");
  const declared = new Set(d.services.map((s) => s.service));
  if (!declared.size) return { strangers: [] };
  const t = await api("/api/traces/services");
  return { strangers: t.services.filter((n) => !declared.has(n)).sort() };
}

// --- topology: dagre's layered layout (ranks by call depth, edges routed around nodes) ------------
async function topology(sel) {
  const [t, { strangers }] = await Promise.all([api(`/api/topology?lookback=${$("window").value}`), senders()]);
  const odd = new Set(strangers);
  $("strangerToggle").hidden = !odd.size;
  $("strangerCount").textContent = odd.size ? `(${strangers.join(", ")})` : "";
  if (!$("showStrangers").checked) { // the project's own graph unless asked: strangers' traffic is not the project's
    t.services = t.services.filter((s) => !odd.has(s.name));
    t.edges = t.edges.filter((e) => !odd.has(e.caller) && !odd.has(e.callee));
  }
  const g = new dagre.graphlib.Graph();
  // top to bottom: the shop's call depth (4) with a label rank between each fits the card at 1:1, left to right did not
  g.setGraph({ rankdir: "TB", nodesep: 30, ranksep: 36, edgesep: 20, marginx: 20, marginy: 20 });
  g.setDefaultEdgeLabel(() => ({}));
  t.services.forEach((s) => g.setNode(s.name, { width: 130, height: 40, s }));
  t.edges.forEach((e) => g.setEdge(e.caller, e.callee, { e, width: 150, height: 34, labelpos: "c" }));
  dagre.layout(g);
  const health = (e) => (e.error_rate > 0.05 ? "#d64545" : e.error_rate > 0 ? "#d69e2e" : "#1f9d55");
  let out = `<defs>${["#d64545", "#d69e2e", "#1f9d55"].map((c, i) => `<marker id="arrow${i}" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto"><path d="M0,0L10,5L0,10z" fill="${c}"/></marker>`).join("")}</defs>`;
  g.edges().forEach((k) => {
    const { e, points, x, y } = g.edge(k);
    const c = health(e), mi = ["#d64545", "#d69e2e", "#1f9d55"].indexOf(c);
    const d = points.map((p, i) => `${i ? "L" : "M"}${p.x.toFixed(1)},${p.y.toFixed(1)}`).join("");
    const key = esc(`${e.caller}>${e.callee}`);
    out += `<path class="edge" data-edge="${key}" d="${d}" fill="none" stroke="${c}" stroke-width="1.8" marker-end="url(#arrow${mi})"/>`;
    const rate = e.calls / (Number($("window").value) / 1000);
    out += `<g class="elabel" data-edge="${key}"><rect x="${x - 72}" y="${y - 16}" width="144" height="32" rx="4" fill="#fff" opacity=".9"/>` +
      `<text x="${x}" y="${y - 3}" text-anchor="middle">${e.calls} calls (${rate.toFixed(2)}/s) · ${(e.error_rate * 100).toFixed(0)}% err</text>` +
      `<text x="${x}" y="${y + 11}" text-anchor="middle" fill="#6b7385">p99 ${ms(e.p99_us)}</text></g>`;
  });
  g.nodes().forEach((n) => {
    const { x, y, s } = g.node(n);
    const stranger = odd.has(n);
    out += `<g class="node${n === sel ? " sel" : ""}${stranger ? " stranger" : ""}" data-node="${esc(n)}"><rect x="${x - 65}" y="${y - 20}" width="130" height="40" rx="6" fill="${n === sel ? "#e6eefc" : stranger ? "#f3f0fa" : "#fff"}" stroke="${s.errors ? "#d64545" : stranger ? "#805ad5" : "#3b6fd8"}" stroke-width="${n === sel ? 2.5 : 1.5}"${stranger ? ' stroke-dasharray="5,3"' : ""}/>` +
      `<text x="${x}" y="${y + (stranger ? -1 : 4)}" text-anchor="middle">${esc(n)}</text>` +
      (stranger ? `<text x="${x}" y="${y + 13}" text-anchor="middle" fill="#805ad5" font-size="10">not in devbox.yaml</text>` : "") + "</g>";
  });
  const svg = $("graph");
  const gg = g.graph();
  svg.setAttribute("viewBox", `0 0 ${gg.width} ${gg.height}`);
  svg.setAttribute("width", String(gg.width)); // drawn 1:1 (the card scrolls): scaled to fit, labels were unreadable
  svg.setAttribute("height", String(Math.max(200, gg.height)));
  svg.innerHTML = out;
  svg.querySelectorAll("[data-node]").forEach((el) => el.addEventListener("click", () => go("topology", el.dataset.node)));
  const who = (n) => esc(n) + (odd.has(n) ? ' <span class="tag">not in devbox.yaml</span>' : "");
  table($("edges"), ["caller", "callee", "calls", "errors", "p50", "p99"], t.edges.map((e) => [
    who(e.caller), who(e.callee), e.calls, `<span class="${e.errors ? "bad" : ""}">${e.errors} (${(e.error_rate * 100).toFixed(0)}%)</span>`, ms(e.p50_us), ms(e.p99_us),
  ]));
  $("nodeinfo").innerHTML = sel ? await nodeInfo(sel) : '<span class="muted">click a service for its callers, callees, instances and indicators</span>';
}

async function nodeInfo(name) {
  const [t, n, ind] = await Promise.all([
    api(`/api/topology?service=${encodeURIComponent(name)}&lookback=${$("window").value}`),
    api(`/api/naming/services/default/${encodeURIComponent(name)}`).catch(() => null),
    api(`/api/metrics/query?metric=success_rate&filter=${encodeURIComponent("callee=" + name)}&window=300`).catch(() => null),
  ]);
  const s = t.service || {};
  const last = ind && ind.series[0] ? ind.series[0].points.filter((p) => p[1] !== null).pop() : null;
  return `<h3>${esc(name)}</h3><p>called by: ${esc((s.callers || []).join(", ") || "-")} · calls: ${esc((s.callees || []).join(", ") || "-")}</p>` +
    `<p>transitively: callers ${esc((s.callers_transitive || []).join(", ") || "-")} · callees ${esc((s.callees_transitive || []).join(", ") || "-")}</p>` +
    `<p>success rate (5 min): ${last ? round(last[1]) + "%" : "-"}</p>` +
    `<p>instances: ${(n ? n.instances : []).map((i) => `${esc(i.metadata["devbox.instance"] || i.id.slice(0, 8))} ${esc(i.host)}:${esc(i.port)} <span class="${i.healthy ? "ok" : "bad"}">${i.healthy ? "healthy" : "unhealthy"}</span>`).join(" · ") || "-"}</p>`;
}

// --- traces: a waterfall in tree order on a shared time axis --------------------------------------
const collapsed = new Set();
// operation, tags and a duration range are the Zipkin query API's (spanName, annotationQuery,
// minDuration/maxDuration in µs); devbox's /api/traces answers the plain service/errors listing.
async function searchTraces() {
  const svc = $("traceService").value.trim(), op = $("traceOperation").value.trim(), tags = $("traceTags").value.trim();
  const min = $("traceMin").value, max = $("traceMax").value, errors = $("errorsOnly").checked;
  if (!op && !tags && !max) {
    const q = `${errors ? "&errors=true" : ""}${svc ? "&service=" + encodeURIComponent(svc) : ""}${min ? "&min_duration=" + Math.round(min * 1000) : ""}`;
    return (await api(`/api/traces?limit=30&lookback=3600000${q}`)).traces;
  }
  const query = [tags, errors ? "error" : ""].filter(Boolean).join(" and ");
  const p = new URLSearchParams({ lookback: "3600000", limit: "30" });
  if (svc) p.set("serviceName", svc);
  if (op) p.set("spanName", op);
  if (query) p.set("annotationQuery", query);
  if (min) p.set("minDuration", String(Math.round(min * 1000)));
  if (max) p.set("maxDuration", String(Math.round(max * 1000)));
  return (await api(`/api/v2/traces?${p}`)).map((spans) => {
    const root = spans.find((s) => !s.parentId) || spans[0];
    const start = Math.min(...spans.map((s) => s.timestamp || Infinity));
    const end = Math.max(...spans.map((s) => (s.timestamp || 0) + (s.duration || 0)));
    return { trace_id: root.traceId, root_service: (root.localEndpoint || {}).serviceName || "", root_name: root.name || "",
      services: [...new Set(spans.map((s) => (s.localEndpoint || {}).serviceName).filter(Boolean))].sort(),
      spans: spans.length, errors: spans.filter((s) => s.tags && "error" in s.tags).length,
      duration_us: end - start, start_us: start };
  }).sort((a, b) => b.start_us - a.start_us);
}

async function traces(sel) {
  const found = await searchTraces();
  table($("tracelist"), ["", "trace", "entry", "services", "spans", "duration", "started"], found.map((t) => [
    `<input type="checkbox" data-cmp="${esc(t.trace_id)}"${ticked.includes(t.trace_id) ? " checked" : ""} title="compare">`,
    `<a href="#/traces/${esc(t.trace_id)}" data-trace="${esc(t.trace_id)}">${esc(t.trace_id.slice(0, 12))}…</a>`,
    `${esc(t.root_service)} ${esc(t.root_name)}`, esc(t.services.join(", ")),
    `${t.spans}${t.errors ? ` <span class="bad">(${t.errors} errors)</span>` : ""}`,
    ms(t.duration_us), when(t.start_us / 1e6),
  ]));
  $("tracelist").querySelectorAll("[data-cmp]").forEach((box) => box.addEventListener("change", () => {
    ticked = ticked.filter((id) => id !== box.dataset.cmp);
    if (box.checked) ticked = [...ticked, box.dataset.cmp].slice(-2); // the two ticked last: A, then B
    $("tracelist").querySelectorAll("[data-cmp]").forEach((b) => { b.checked = ticked.includes(b.dataset.cmp); });
    $("compareBtn").disabled = ticked.length !== 2;
  }));
  $("compareBtn").disabled = ticked.length !== 2;
  if (sel) await trace(sel); else $("trace").hidden = true;
}
let ticked = []; // trace ids ticked for comparison, kept across the list's refreshes

let openTrace = null;
async function trace(id) {
  if (!openTrace || openTrace.id !== id) {
    const [data, critical, why] = await Promise.all([
      api(`/api/traces/${id}`), api(`/api/traces/${id}/critical-path`), api(`/api/traces/${id}/why`)]);
    openTrace = { id, spans: data.spans, critical, why };
    collapsed.clear();
  }
  renderTrace();
}

function renderTrace() {
  const { id, spans, critical, why } = openTrace;
  const byId = Object.fromEntries(spans.map((s) => [s.span_id, s]));
  const kids = {};
  spans.forEach((s) => { const p = byId[s.parent_id] ? s.parent_id : ""; (kids[p] = kids[p] || []).push(s); });
  Object.values(kids).forEach((l) => l.sort((a, b) => a.start_us - b.start_us));
  const rows = [];
  const walk = (s, depth) => {
    rows.push([s, depth]);
    if (!collapsed.has(s.span_id)) (kids[s.span_id] || []).forEach((c) => walk(c, depth + 1));
  };
  (kids[""] || []).forEach((r) => walk(r, 0));
  const t0 = Math.min(...spans.map((s) => s.start_us));
  const total = Math.max(...spans.map((s) => s.start_us + s.duration_us)) - t0 || 1;
  const onPath = new Set(critical.segments.map((s) => s.span_id));
  $("trace").hidden = false;
  $("traceTitle").textContent = `trace ${id} · ${spans.length} spans · ${ms(total)}`;
  $("traceLogs").href = `#/logs/${encodeURIComponent("trace:" + id)}`;
  $("cause").innerHTML = why.failed ? why.causes.map((c) => {
    const code = (c.attributes || {})["http.status_code"] || c.message || "an error";
    const top = c.path[0];
    const via = [...new Set(c.path.slice(1, -1).map((h) => h.service))].filter((s) => s !== c.service && s !== top.service);
    return `<p class="cause bad">Root cause: <b>${esc(c.service)} · ${esc(c.name)}</b> failed with ${esc(code)}` +
      (top.span_id !== c.span_id ? `; it made ${esc(top.service)}'s ${esc(top.name)} fail${via.length ? " via " + esc(via.join(", ")) : ""}` : "") + ".</p>";
  }).join("") : '<p class="ok">no span failed</p>';
  $("critical").textContent = "critical path: " + critical.services.map((s) => `${s.service} ${(s.share * 100).toFixed(0)}%`).join(", ");
  const ticks = [0, 0.25, 0.5, 0.75, 1].map((f) => `<span style="left:${f * 100}%">${ms(f * total)}</span>`).join("");
  $("waterfall").innerHTML = `<tr><th>service · operation</th><th>duration</th><th class="axis">${ticks}</th></tr>` + rows.map(([s, depth]) => {
    const has = (kids[s.span_id] || []).length;
    const left = ((s.start_us - t0) / total) * 100, width = Math.max(0.3, (s.duration_us / total) * 100);
    const cls = [s.error ? "err" : "", onPath.has(s.span_id) ? "crit" : ""].join(" ");
    return `<tr class="span" data-span="${esc(s.span_id)}"><td style="padding-left:${0.6 + depth * 1.1}rem">` +
      `${has ? `<button class="tog" data-tog="${esc(s.span_id)}">${collapsed.has(s.span_id) ? "▸" : "▾"}</button>` : '<span class="tog"></span>'}` +
      `<b>${esc(s.service)}</b> ${esc(s.name)} <span class="muted">${esc(s.kind.toLowerCase())}</span>${s.error ? ' <span class="bad">✗</span>' : ""}</td>` +
      `<td>${ms(s.duration_us)}</td><td class="lane"><div class="bar"><span class="${cls}" style="left:${left}%;width:${width}%"></span></div></td></tr>`;
  }).join("");
  $("waterfall").querySelectorAll("[data-tog]").forEach((b) => b.addEventListener("click", (ev) => {
    ev.stopPropagation();
    const k = b.dataset.tog; if (collapsed.has(k)) collapsed.delete(k); else collapsed.add(k);
    renderTrace();
  }));
  $("waterfall").querySelectorAll("tr.span").forEach((tr) => tr.addEventListener("click", () => spanDetail(byId[tr.dataset.span])));
}

function spanDetail(s) {
  const events = (s.events || []).map((e) => `<li><b>${esc(e.name)}</b> ${esc(labels(e.attributes))}</li>`).join("");
  $("spandetail").innerHTML = `<h3>${esc(s.service)} · ${esc(s.name)}</h3><p>${esc(s.kind)} · ${ms(s.duration_us)}` +
    `${s.error ? ` · <span class="bad">error ${esc(s.status_message)}</span>` : ""} · span ${esc(s.span_id)}</p>` +
    `<table>${Object.entries(s.attributes || {}).map(([k, v]) => `<tr><td>${esc(k)}</td><td>${esc(JSON.stringify(v))}</td></tr>`).join("")}</table>` +
    `<h4>events</h4>${events ? `<ul>${events}</ul>` : '<p class="muted">no events recorded</p>'}` +
    `<h4>logs around this span</h4><table id="spanlogs" class="logs"><tr><td class="muted">loading…</td></tr></table>`;
  spanLogs(s).catch((err) => { $("spanlogs").innerHTML = `<tr><td class="muted">${esc(err.message)}</td></tr>`; });
}

// The span's resource names its instance (service.instance.id) when the SDK sent it; the log files
// are named by devbox's instance name, so ask for the service and keep that instance's lines if it has any.
async function spanLogs(s) {
  const inst = (s.resource || {})["service.instance.id"] || "";
  const r = await api(`/api/deploy/logs?service=${encodeURIComponent(s.service)}&since=${s.start_us / 1e6 - 2}` +
    `&until=${(s.start_us + s.duration_us) / 1e6 + 2}&limit=60`);
  const mine = r.lines.filter((l) => l.instance === inst);
  logRows($("spanlogs"), mine.length ? mine : r.lines, s.trace_id);
}

function logRows(el, lines, hilite, append) {
  const html = lines.map((l) => `<tr class="${hilite && l.trace_id === hilite ? "hit" : ""}"><td>${esc(l.instance)}</td>` +
    `<td>${l.ts ? new Date(l.ts * 1000).toLocaleTimeString() : ""}</td><td>${esc(l.line).replace(/trace_id=([0-9a-f]{16,32})/,
      (m, t) => `trace_id=<a href="#/traces/${t}">${t}</a>`)}</td></tr>`).join("");
  if (append) el.insertAdjacentHTML("beforeend", html);
  else el.innerHTML = html || '<tr><td class="muted">no log lines here</td></tr>';
}

// --- compare two traces: span trees matched by path ------------------------------------------------
// A span's key is its parent's key + "service · operation · kind" + its repeat number among siblings with that
// label, so the same call in two requests matches while a retry (a second repeat) or a new call does not. Repeats
// are numbered by callee (the service of a client span's child), then start: calls made side by side (the
// gateway's GET to users and its GET to orders) start in a different order from one request to the next, and a
// call whose callee made no span (a cache answered, the callee was down) still numbers after the others.
function keyedTree(spans) {
  const byId = Object.fromEntries(spans.map((s) => [s.span_id, s]));
  const kids = {};
  spans.forEach((s) => { const p = byId[s.parent_id] ? s.parent_id : ""; (kids[p] = kids[p] || []).push(s); });
  Object.values(kids).forEach((l) => l.sort((a, b) => a.start_us - b.start_us));
  const labelOf = (s) => `${s.service} · ${s.name} · ${s.kind.toLowerCase()}`;
  const callee = (s) => ((kids[s.span_id] || []).find((c) => c.service !== s.service) || {}).service || s.remote_service || "\uffff";
  const nodes = new Map(), children = {};
  const walk = (parent, list, depth) => {
    const seen = {}, repeat = new Map();
    [...list].sort((a, b) => labelOf(a).localeCompare(labelOf(b)) || callee(a).localeCompare(callee(b)) || a.start_us - b.start_us)
      .forEach((s) => { const label = labelOf(s); seen[label] = (seen[label] || 0) + 1; repeat.set(s, seen[label]); });
    list.forEach((s) => {
      const key = `${parent}/${labelOf(s)}#${repeat.get(s)}`;
      nodes.set(key, { s, depth, repeat: repeat.get(s) });
      (children[parent] = children[parent] || []).push(key);
      walk(key, kids[s.span_id] || [], depth + 1);
    });
  };
  walk("", kids[""] || [], 0);
  const t0 = Math.min(...spans.map((s) => s.start_us));
  const total = Math.max(...spans.map((s) => s.start_us + s.duration_us)) - t0 || 1;
  const hops = new Set(spans.filter((s) => byId[s.parent_id] && byId[s.parent_id].service !== s.service)
    .map((s) => `${byId[s.parent_id].service} → ${s.service}`));
  return { nodes, children, t0, total, hops, spans, root: nodes.get((children[""] || [])[0]) };
}

// Rows of the merged tree: A's order, with B's extra spans after their siblings.
function diffRows(a, b) {
  const rows = [];
  const walk = (parent) => {
    const keys = [...(a.children[parent] || [])];
    (b.children[parent] || []).forEach((k) => { if (!keys.includes(k)) keys.push(k); });
    keys.forEach((k) => { rows.push({ key: k, a: a.nodes.get(k), b: b.nodes.get(k) }); walk(k); });
  };
  walk("");
  return rows;
}

const changed = (r) => !r.a || !r.b || Math.abs(r.b.s.duration_us - r.a.s.duration_us) >= Math.max(1000, 0.2 * r.a.s.duration_us) || r.a.s.error !== r.b.s.error;
let compared = null;
async function compare(sel) {
  const [idA, idB] = sel.split("..");
  $("cmpA").value = idA || ""; $("cmpB").value = idB || "";
  if (!idA || !idB) return;
  if (!compared || compared.key !== sel) {
    const [da, db] = await Promise.all([api(`/api/traces/${encodeURIComponent(idA)}`), api(`/api/traces/${encodeURIComponent(idB)}`)]);
    compared = { key: sel, a: keyedTree(da.spans), b: keyedTree(db.spans) };
  }
  const { a, b } = compared;
  const rows = diffRows(a, b);
  const onlyA = rows.filter((r) => !r.b), onlyB = rows.filter((r) => !r.a), both = rows.filter((r) => r.a && r.b);
  const hopsA = [...a.hops].filter((h) => !b.hops.has(h)), hopsB = [...b.hops].filter((h) => !a.hops.has(h));
  const moved = both.map((r) => ({ r, d: r.b.s.duration_us - r.a.s.duration_us })).filter((x) => changed(x.r) && x.d)
    .sort((x, y) => Math.abs(y.d) - Math.abs(x.d)).slice(0, 3);
  const side = (t, id, tag) => `<p><b>${tag}</b> <a href="#/traces/${esc(id)}">${esc(id.slice(0, 12))}…</a> ${esc(t.root ? t.root.s.service + " " + t.root.s.name : "")} · ` +
    `${t.spans.length} spans · ${ms(t.total)}${t.spans.some((s) => s.error) ? ` · <span class="bad">${t.spans.filter((s) => s.error).length} error span(s)</span>` : ""}</p>`;
  const sign = (d) => (d > 0 ? "+" : "−") + ms(Math.abs(d));
  const count = (n, what, cls) => `<span class="${n ? cls : "muted"}">${n} ${what}</span>`;
  const summary = `<p id="cmpSummary">${both.length} spans matched · ${count(onlyA.length, "only in A", "bad")} · ${count(onlyB.length, "only in B", "ok")} · ` +
    `total ${sign(b.total - a.total)}</p>` +
    `<p>hops only in A: ${esc(hopsA.join(", ") || "-")} · hops only in B: ${esc(hopsB.join(", ") || "-")}</p>` +
    (moved.length ? `<p>largest changes: ${moved.map((x) => `${esc(x.r.a.s.service)} ${esc(x.r.a.s.name)} <span class="${x.d > 0 ? "delta-up" : "delta-down"}">${sign(x.d)}</span>`).join(" · ")}</p>` : "");
  // one scale for both timelines (each from its own start), so equal lengths are equal durations
  const scale = Math.max(a.total, b.total);
  const bar = (n, t) => (n ? `<div class="bar"><span class="${n.s.error ? "err" : ""}" style="left:${((n.s.start_us - t.t0) / scale) * 100}%;width:${Math.max(0.3, (n.s.duration_us / scale) * 100)}%"></span></div>` : "");
  const shown = $("cmpChanged").checked ? rows.filter(changed) : rows;
  const body = shown.map((r) => {
    const n = r.a || r.b, status = r.a && r.b ? "both" : r.a ? "onlyA" : "onlyB";
    const d = r.a && r.b ? r.b.s.duration_us - r.a.s.duration_us : null;
    const dcls = d === null || !changed(r) ? "muted" : d > 0 ? "delta-up" : "delta-down";
    const err = (x) => (x && x.s.error ? ' <span class="bad">✗</span>' : "");
    return `<tr class="cmp ${status}" data-status="${status}"><td style="padding-left:${0.6 + n.depth * 1.1}rem"><b>${esc(n.s.service)}</b> ${esc(n.s.name)} ` +
      `<span class="muted">${esc(n.s.kind.toLowerCase())}${n.repeat > 1 ? " #" + n.repeat : ""}</span>` +
      `${status === "onlyA" ? ' <span class="tag">only in A</span>' : status === "onlyB" ? ' <span class="tag">only in B</span>' : ""}</td>` +
      `<td>${r.a ? ms(r.a.s.duration_us) + err(r.a) : "-"}</td><td>${r.b ? ms(r.b.s.duration_us) + err(r.b) : "-"}</td>` +
      `<td class="${dcls}">${d === null ? "" : sign(d)}</td><td class="lane2">${bar(r.a, a)}</td><td class="lane2">${bar(r.b, b)}</td></tr>`;
  }).join("");
  $("cmpOut").innerHTML = side(a, idA, "A") + side(b, idB, "B") + summary +
    `<table id="cmpTable"><tr><th>service · operation</th><th>A</th><th>B</th><th>Δ (B − A)</th><th>A timeline (0–${ms(scale)})</th><th>B timeline (same scale)</th></tr>${body ||
      '<tr><td colspan="6" class="muted">no differences</td></tr>'}</table>`;
}

// --- metrics: indicator picker with group-by, time axis, readable legends -------------------------
const palette = ["#3b6fd8", "#d64545", "#1f9d55", "#d69e2e", "#805ad5", "#2c7a7b", "#b83280"];
async function metrics() {
  if (!$("indicator").options.length) {
    const ls = await api("/api/metrics/ls");
    $("indicator").innerHTML = ls.metrics.filter((m) => m.kind === "composite")
      .map((m) => `<option value="${esc(m.name)}" title="${esc(m.help)}">${esc(m.name)}</option>`).join("");
    $("indicator").value = "success_rate";
  }
  const minutes = Number($("range").value);
  const end = Date.now() / 1000, start = end - minutes * 60, step = Math.max(5, (minutes * 60) / 120);
  let r;
  $("metricsError").textContent = "";
  if ($("promql").value.trim()) {
    try {
      r = await api(`/api/dashboard/range?minutes=${minutes}&query=${encodeURIComponent($("promql").value.trim())}`);
    } catch (err) { // shown under the expression that caused it, not in the page header; the old chart goes
      $("metricsError").textContent = String(err.message || err);
      $("chart").innerHTML = ""; $("legend").innerHTML = '<span class="muted">no chart: the expression failed</span>';
      return;
    }
  } else {
    const by = $("groupby").value;
    // "(all)" is one total: group_by=- (an absent group_by would mean the indicator's own default, by callee)
    r = await api(`/api/metrics/query?metric=${$("indicator").value}&group_by=${by || "-"}&start=${start}&end=${end}&step=${step}`);
    r.start = start; r.end = end;
  }
  drawChart($("chart"), $("legend"), r.series.map((s) => ({ name: labels(s.labels) || "(all)", points: s.points })), r.start, r.end);
}

// A line chart on a time axis (epoch seconds): series [{name, points: [[t, v], ...]}].
function drawChart(svg, legend, series, start, end) {
  const r = { series, start, end };
  const w = svg.clientWidth || 900, h = Number(svg.getAttribute("height")) || 300, pad = 50;
  const pts = r.series.flatMap((s) => s.points.map((p) => p[1])).filter(Number.isFinite);
  const ymax = Math.max(1e-9, ...pts), ymin = Math.min(0, ...pts);
  const x = (t) => pad + ((t - r.start) / (r.end - r.start)) * (w - 2 * pad);
  const y = (v) => h - pad - ((v - ymin) / (ymax - ymin || 1)) * (h - 2 * pad);
  let out = `<line x1="${pad}" y1="${h - pad}" x2="${w - pad}" y2="${h - pad}" stroke="#ccc"/><line x1="${pad}" y1="${pad}" x2="${pad}" y2="${h - pad}" stroke="#ccc"/>`;
  [0, 0.5, 1].forEach((f) => { const v = ymin + f * (ymax - ymin); out += `<text x="4" y="${y(v) + 4}">${round(v)}</text>`; });
  for (let i = 0; i <= 4; i++) { const t = r.start + (i / 4) * (r.end - r.start); out += `<text class="tick" data-t="${t}" x="${x(t)}" y="${h - pad + 18}" text-anchor="middle">${new Date(t * 1000).toLocaleTimeString()}</text>`; }
  r.series.forEach((s, i) => {
    const d = s.points.filter((p) => Number.isFinite(p[1])).map((p, j) => `${j ? "L" : "M"}${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join("");
    out += `<path d="${d}" fill="none" stroke="${palette[i % palette.length]}" stroke-width="1.8"/>`;
    // a point with no finite neighbour draws no line: mark it, or a young series is invisible
    s.points.forEach((p, j) => {
      const alone = Number.isFinite(p[1]) && !Number.isFinite((s.points[j - 1] || [])[1]) && !Number.isFinite((s.points[j + 1] || [])[1]);
      if (alone) out += `<circle class="dot" cx="${x(p[0]).toFixed(1)}" cy="${y(p[1]).toFixed(1)}" r="3" fill="${palette[i % palette.length]}"/>`;
    });
  });
  svg.innerHTML = out;
  legend.innerHTML = r.series.map((s, i) => `<span class="leg"><span style="color:${palette[i % palette.length]}">■</span> ${esc(s.name)}</span>`).join("") || '<span class="muted">no data in this range</span>';
}

// --- alerts -----------------------------------------------------------------------------------
// Alertmanager's matcher objects as people write them (amtool's form): name=value, name=~regex, name!=value
const matcherText = (ms) => (ms || []).map((m) =>
  `${m.name}${m.isRegex ? (m.isEqual === false ? "!~" : "=~") : (m.isEqual === false ? "!=" : "=")}${m.value}`).join(", ");
async function alerts() {
  const a = await api("/api/alerts?state=active");
  table($("active"), ["alert", "state", "labels", "value", "since", "silenced by", ""], a.alerts.map((x) => [
    esc(x.alertname), `<span class="${x.state === "firing" ? "bad" : "warn"}">${esc(x.state)}</span>` +
      ((x.silenced_by || []).length ? ' <span class="tag">silenced</span>' : ""),
    esc(labels(x.labels)), round(x.value), when(x.active_at), esc((x.silenced_by || []).join(", ")),
    `<button class="act" data-silence='${esc(JSON.stringify(x.labels))}'>silence 1h</button>`,
  ]));
  $("active").querySelectorAll("[data-silence]").forEach((b) => b.addEventListener("click", async () => {
    const l = JSON.parse(b.dataset.silence);
    const matchers = ["alertname", "callee", "method"].filter((k) => l[k]).map((k) => `${k}=${l[k]}`);
    await api("/api/alerts/silences", { method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify({ matchers, duration: "1h", comment: "from the dashboard", created_by: "dashboard" }) });
    refresh();
  }));
  const s = await api("/api/alerts/silences");
  table($("silences"), ["id", "matchers", "state", "ends", "comment", ""], s.silences.filter((x) => x.state !== "expired").map((x) => [
    esc(String(x.id).slice(0, 8)), esc(matcherText(x.matchers)), esc(x.state), new Date(x.ends_at * 1000).toLocaleString(), esc(x.comment),
    `<button class="act" data-expire="${esc(x.id)}">expire</button>`,
  ]));
  $("silences").querySelectorAll("[data-expire]").forEach((b) => b.addEventListener("click", async () => {
    await api(`/api/alerts/silences/${b.dataset.expire}`, { method: "DELETE" }); refresh();
  }));
  const h = await api("/api/alerts/history?limit=50");
  table($("history"), ["time", "alert", "labels", "from → to", "value", "notification", ""], h.transitions.map((x, i) => [
    when(x.at), esc(x.alertname), esc(labels(x.labels)), `${esc(x.from)} → ${esc(x.to)}`, round(x.value),
    x.silenced ? '<span class="warn">silenced</span>' : esc(x.notified),
    `<a data-around="${i}">traces &amp; deploys around</a>`,
  ]));
  $("history").querySelectorAll("[data-around]").forEach((a) => a.addEventListener("click", () => around(h.transitions[a.dataset.around])));
}

// What happened near a transition: failed traces of the service the alert names, and deploy events, ±2 min.
async function around(x) {
  const svc = (x.labels || {}).callee || (x.labels || {}).service || "";
  const endMs = Math.round((x.at + 120) * 1000);
  const p = await api("/api/platform");
  const [t, ev] = await Promise.all([
    api(`/api/traces?limit=10&errors=true&lookback=240000&end=${endMs}${svc ? "&service=" + encodeURIComponent(svc) : ""}`),
    // the events API pages by event id (since=ID), not by time: take the newest and keep the window's
    p.components.deploy ? api("/api/deploy/events?limit=5000") : { events: [] },
  ]);
  const events = ev.events.filter((e) => e.kind !== "health" && Math.abs(e.ts - x.at) <= 120).slice(-20);
  $("histctx").hidden = false;
  $("histctx").innerHTML = `<h3>around ${esc(x.alertname)} ${esc(x.from)} → ${esc(x.to)} at ${when(x.at)}</h3>` +
    `<h4>likely causes (devbox why)</h4><p id="ctxWhyHead" class="muted">ranking…</p><table id="ctxWhy"></table>` +
    `<h4>failed traces${svc ? " of " + esc(svc) : ""}</h4><table id="ctxTraces"></table><h4>deploy events</h4><table id="ctxEvents"></table>`;
  suspects(x, svc);
  table($("ctxTraces"), ["trace", "entry", "started"], t.traces.map((tr) => [
    `<a href="#/traces/${esc(tr.trace_id)}">${esc(tr.trace_id.slice(0, 12))}…</a>`, `${esc(tr.root_service)} ${esc(tr.root_name)}`, when(tr.start_us / 1e6)]));
  table($("ctxEvents"), ["time", "service", "instance", "event", "message"], events.map((e) => [
    when(e.ts), esc(e.service), esc(e.instance), esc(e.kind), esc(e.message)]));
}

// The transition's likely causes, ranked as `devbox why` ranks them (GET /api/why): the service the alert
// names when it has one (a rule firing for several callees), else the rule. Loaded after the rest of the panel.
async function suspects(x, svc) {
  const q = svc ? `service=${encodeURIComponent(svc)}` : `alert=${encodeURIComponent(x.alertname)}`;
  let r;
  try {
    r = await api(`/api/why?${q}&at=${x.at}`);
  } catch (e) {
    if ($("ctxWhyHead")) $("ctxWhyHead").textContent = `not ranked: ${e.message || e}`;
    return;
  }
  if (!$("ctxWhy")) return;  // another transition's panel replaced this one meanwhile
  $("ctxWhyHead").textContent = r.suspects.length ? r.headline : "no suspect: nothing on the failing path changed or stands out";
  table($("ctxWhy"), ["#", "score", "suspect", "why"], r.suspects.slice(0, 5).map((s, i) => [
    i + 1, `<span class="${s.score >= 0.5 ? "bad" : s.score >= 0.3 ? "warn" : ""}">${s.score.toFixed(2)}</span>`,
    esc(s.subject), esc(s.reason)]));
}

// --- naming and deploys -------------------------------------------------------------------------
async function naming(selection) {
  const [sel, query] = [selection.split("?")[0], new URLSearchParams(selection.split("?")[1] || "")];
  const list = await api("/api/naming/services");
  table($("namingServices"), ["service", "instances", "healthy"], list.map((s) => [
    `<a href="#/naming/${esc(s.name)}">${esc(s.name)}</a>`, s.instances, `<span class="${s.healthy < s.instances ? "warn" : "ok"}">${s.healthy}</span>`]));
  if (!sel) { $("namingDetail").innerHTML = '<span class="muted">pick a service</span>'; return; }
  const s = await api(`/api/naming/services/default/${encodeURIComponent(sel)}`);
  // the explanation sits under the instances it picks from; the raw rules (long JSON) come last
  $("namingDetail").innerHTML = `<h3>${esc(sel)}</h3><table id="namingInstances"></table>` +
    `<h4>explain a pick</h4><p class="filters">request labels <input type="text" id="explainLabels" placeholder="env=feature-x, tier=gold">` +
    ` caller <input type="text" id="explainCaller" placeholder="gateway"> <button class="act" id="explainBtn">explain</button></p><div id="explainOut"></div>` +
    `<h4>circuit breaker</h4><pre>${esc(JSON.stringify(s.circuit_breaker))}</pre><h4>routing rules</h4><pre>${esc(JSON.stringify(s.routing, null, 1))}</pre>`;
  $("explainLabels").value = query.get("labels") || "";
  $("explainCaller").value = query.get("caller") || "";
  const ask = () => { // the question is part of the URL: a deep link shows the same explanation
    const q = new URLSearchParams({ labels: $("explainLabels").value.trim(), caller: $("explainCaller").value.trim() });
    location.hash = `#/naming/${encodeURIComponent(sel)}?${q}`; // the query stays readable in the URL
  };
  $("explainBtn").addEventListener("click", ask);
  ["explainLabels", "explainCaller"].forEach((id) => $(id).addEventListener("keydown", (ev) => { if (ev.key === "Enter") ask(); }));
  if (query.has("labels") || query.has("caller")) await explainPick(sel, query.get("labels") || "", query.get("caller") || "");
  table($("namingInstances"), ["instance", "address", "weight", "health", "tags"], s.instances.map((i) => [
    esc(i.metadata["devbox.instance"] || i.id.slice(0, 12)), `${esc(i.host)}:${esc(i.port)}`, i.weight,
    `<span class="${i.healthy && !i.isolated ? "ok" : "bad"}">${i.isolated ? "isolated" : i.healthy ? "healthy" : "unhealthy"}</span>`,
    esc(labels(Object.fromEntries(Object.entries(i.metadata).filter(([k]) => !k.startsWith("devbox.")))))]));
}

// naming's explain API (what `devbox naming explain` prints): which rule matched, what each filter removed, the pick.
async function explainPick(service, labelText, caller) {
  const p = new URLSearchParams({ service });
  labelText.split(",").map((l) => l.trim()).filter(Boolean).forEach((l) => p.append("label", l));
  if (caller) p.set("caller", caller);
  let x;
  try { x = await api(`/api/naming/explain?${p}`); } catch (err) { // a bad label is shown where it was typed
    $("explainOut").innerHTML = `<p class="bad">${esc(err.message)}</p>`; return;
  }
  const removedBy = {};
  x.filters.forEach((f) => f.removed.forEach((a) => { removedBy[a] = removedBy[a] || f.filter; }));
  const asked = labels(x.request.labels) || "no labels";
  $("explainOut").innerHTML = `<p>A call to <b>${esc(service)}</b> with ${esc(asked)}${x.request.caller_service ? " from " + esc(x.request.caller_service) : ""}:` +
    ` rule <b>${esc(x.rule || "none")}</b>${x.destination ? ` → destination <b>${esc(x.destination)}</b>` : ""}` +
    `${x.failover ? ' <span class="warn">failover</span>' : ""}${x.recovered_all ? ' <span class="warn">every instance filtered out: all recovered</span>' : ""}</p>` +
    `<p class="cause">${esc(x.reason)}</p><table id="explainFilters"></table><table id="explainInstances"></table>` +
    `<p>pick: ${x.pick ? `<b class="ok">${esc(x.pick.instance)}</b> <span class="muted">(${esc(x.pick.balancer)} by weight over ${x.candidates.length} candidate(s); another call may pick another)</span>` : '<b class="bad">no instance</b>'}</p>` +
    (x.known ? "" : '<p class="warn">this service is not registered</p>');
  table($("explainFilters"), ["step", "removed", "note"], x.filters.map((f) => [esc(f.filter), esc(f.removed.join(", ") || "-"), esc(f.note || "")]));
  table($("explainInstances"), ["instance", "address", "tags", "weight", "verdict"], x.instances.map((i) => [
    esc(i.metadata["devbox.instance"] || i.id.slice(0, 12)), esc(i.address),
    esc(labels(Object.fromEntries(Object.entries(i.metadata).filter(([k]) => !k.startsWith("devbox."))))), i.weight,
    x.pick && x.pick.instance === i.address ? '<b class="ok">picked</b>' : x.candidates.includes(i.address) ? '<span class="ok">candidate</span>'
      : `<span class="muted">removed by ${esc(removedBy[i.address] || "routing")}</span>`]));
}

async function deploys() {
  const ev = await api("/api/deploy/events?limit=500");
  table($("events"), ["time", "service", "instance", "event", "message"], ev.events.filter((e) => e.kind !== "health").slice(-60).reverse().map((e) => [
    when(e.ts), esc(e.service), esc(e.instance), `<span class="${/fail|crash/.test(e.kind) ? "bad" : ""}">${esc(e.kind)}</span>`, esc(e.message),
  ]));
}

// --- logs: per instance, search, follow (long-poll on the cursor), trace ids linked ---------------
let follow = 0, followAbort = null; // generation: a new view or filter ends the previous follow loop
function stopFollow() { if (followAbort) followAbort.abort(); followAbort = null; }
async function logs(sel) {
  const gen = ++follow;
  stopFollow();
  const abort = followAbort = new AbortController();
  if (sel.startsWith("trace:")) { $("logTrace").value = sel.slice(6); }
  else if (sel) {
    const [svc, inst] = sel.split("/");
    $("logService").dataset.want = svc; $("logInstance").dataset.want = inst || "";
  }
  const services = (await api("/api/deploy/services")).services;
  const names = [...new Set(services.map((s) => s.service))];
  const want = $("logService").dataset.want || $("logService").value;
  $("logService").innerHTML = `<option value="">(all)</option>` + names.map((n) => `<option>${esc(n)}</option>`).join("");
  $("logService").value = names.includes(want) ? want : (sel.startsWith("trace:") ? "" : names[0] || "");
  delete $("logService").dataset.want;
  const insts = services.filter((s) => s.service === $("logService").value).flatMap((s) => (s.instances || []).map((i) => i.name));
  const wantI = $("logInstance").dataset.want ?? $("logInstance").value;
  $("logInstance").innerHTML = `<option value="">(all)</option>` + insts.map((n) => `<option>${esc(n)}</option>`).join("");
  $("logInstance").value = insts.includes(wantI) ? wantI : "";
  delete $("logInstance").dataset.want;
  const p = new URLSearchParams({ limit: "300" });
  if ($("logService").value) p.set("service", $("logService").value);
  if ($("logInstance").value) p.set("instance", $("logInstance").value);
  if ($("logQuery").value.trim()) p.set("q", $("logQuery").value.trim());
  if ($("logTrace").value.trim()) p.set("trace_id", $("logTrace").value.trim());
  if (!p.has("service") && !p.has("trace_id") && !p.has("q")) { logRows($("loglines"), []); return; }
  const r = await api(`/api/deploy/logs?${p}`);
  const hilite = $("logTrace").value.trim().toLowerCase();
  logRows($("loglines"), r.lines, hilite);
  $("logState").textContent = `${r.lines.length} lines${r.truncated ? " (newest shown)" : ""}`;
  let cursor = r.cursor;
  while ($("logFollow").checked && gen === follow && current === "logs") {
    p.set("after", cursor); p.set("wait", "20");
    let more;
    try { more = await api(`/api/deploy/logs?${p}`, { signal: abort.signal }); } catch (err) { if (!abort.signal.aborted) showError(err); return; }
    if (gen !== follow || current !== "logs") return;
    if (more.lines.length) {
      if ($("loglines").querySelector("td.muted")) $("loglines").innerHTML = "";
      logRows($("loglines"), more.lines, hilite, true);
      const rows = $("loglines").rows;
      for (let i = rows.length - 1000; i > 0; i--) rows[0].remove(); // keep the page small
      $("logState").textContent = `following · ${rows.length} lines`;
    }
    cursor = more.cursor;
  }
}

// --- load runs: kept `devbox load` runs, their charts and capacity table -------------------------
async function load(sel) {
  const r = await api("/api/load/runs");
  table($("loadruns"), ["run", "kind", "status", "target", "users", "steps", "req/s", "errors", "p95", "started"], r.runs.map((x) => [
    `<a href="#/load/${esc(x.id)}">${esc(x.id)}</a>`, esc(x.kind), `<span class="${x.status === "complete" ? "ok" : "warn"}">${esc(x.status)}</span>`,
    esc(x.target), esc(x.users), x.steps, x.total ? round(x.total.rps) : "-",
    x.total ? `${round(x.total.errors * 100)}%` : "-", x.total && x.total.p95 != null ? `${round(x.total.p95)} ms` : "-", when(x.started_at),
  ]));
  if (!sel) { $("loadrun").hidden = true; return; }
  const d = await api(`/api/load/runs/${encodeURIComponent(sel)}`);
  const run = d.run, h = d.history;
  $("loadrun").hidden = false;
  $("loadTitle").textContent = `${run.kind} ${run.id} · ${run.status}`;
  $("loadSummary").textContent = `target ${run.params.target} · ${run.params.users} users · ${round(run.ended_at - run.started_at)} s` +
    (run.platform_error ? ` · platform: ${run.platform_error}` : "");
  const series = (key, name) => ({ name, points: h.filter((p) => p.t != null).map((p) => [p.t, p[key]]) });
  const t0 = h.length ? h[0].t : run.started_at, t1 = h.length ? h[h.length - 1].t : run.ended_at;
  drawChart($("loadRps"), $("loadRpsLegend"), [series("rps", "requests/s"), series("fps", "failures/s"), series("users", "users")], t0, t1 || t0 + 1);
  drawChart($("loadLat"), $("loadLatLegend"), [series("p50", "p50"), series("p95", "p95"), series("p99", "p99")], t0, t1 || t0 + 1);
  table($("loadSteps"), ["step", "users", "seconds", "req/s", "errors", "p95", "broke"], (run.steps || []).map((s, i) => [
    esc(s.label || i + 1), esc(s.users), round(s.seconds), s.total ? round(s.total.rps) : "-", s.total ? `${round(s.total.errors * 100)}%` : "-",
    s.total && s.total.p95 != null ? `${round(s.total.p95)} ms` : "-", esc((s.broke || []).join(", ")),
  ]));
  const cap = d.capacity;
  // predicted QPS needs the run's fan-out from traces (`devbox capacity`); this table is built without them
  table($("loadCapacity"), ["service", "instances", "measured QPS", "CPU ms/req", "saturated at"], cap ? cap.services.map((s) => {
    const sat = s.saturation || {};
    return [esc(s.service), s.instances, s.measured_qps == null ? "-" : round(s.measured_qps),
      s.cpu_s_per_request == null ? "-" : round(s.cpu_s_per_request * 1000),
      sat.step != null ? `step ${sat.step + 1}: ${round(sat.qps_per_instance)}/s per instance` : s.saturation ? "not reached" : "-"];
  }) : []);
  if (!cap && d.capacity_error) $("loadCapacity").insertAdjacentHTML("beforeend", `<tr><td colspan="5" class="bad">${esc(d.capacity_error)}</td></tr>`);
}

// --- wiring: the hash is the state ---------------------------------------------------------------
const views = { overview, topology, traces, compare, metrics, alerts, naming, deploys, logs, load };
let current = "overview", selection = "";
function route() {
  const [, page, sel] = location.hash.match(/^#\/?([a-z]+)?\/?(.*)$/) || [];
  current = views[page] ? page : "overview";
  if (current !== "logs") stopFollow(); // a pending long-poll would hold one of the browser's connections
  selection = decodeURIComponent(sel || "");
  document.querySelectorAll("nav a").forEach((b) => b.classList.toggle("active", b.dataset.tab === current));
  document.querySelectorAll("main > section").forEach((s) => s.classList.toggle("active", s.id === current));
  refresh();
}
function refresh() { views[current](selection).then(() => showError(null), showError); }
window.addEventListener("hashchange", route);
["run", "errorsOnly", "traceService", "traceOperation", "traceTags", "traceMin", "traceMax", "window", "indicator", "groupby", "range",
  "logQuery", "logTrace", "logFollow", "showStrangers", "cmpChanged"].forEach((id) => $(id).addEventListener("change", refresh));
// a chosen service/instance is part of the URL (deep links); the trace id box stays a filter
["logService", "logInstance"].forEach((id) => $(id).addEventListener("change", () => {
  if (id === "logService") $("logInstance").value = "";
  const sel = [$("logService").value, $("logInstance").value].filter(Boolean).join("/");
  if (location.hash === `#/logs/${encodeURIComponent(sel)}` || (!sel && location.hash === "#/logs")) refresh(); else go("logs", sel);
}));
$("run").addEventListener("click", refresh);
$("compareBtn").addEventListener("click", () => go("compare", ticked.join("..")));
$("cmpGo").addEventListener("click", () => go("compare", `${$("cmpA").value.trim()}..${$("cmpB").value.trim()}`));
// logs follow by long-poll and load runs do not change by themselves: no timer for them
setInterval(() => { if (!["logs", "load", "compare"].includes(current) && (!["traces", "naming"].includes(current) || !selection)) refresh(); }, 5000);
route();
