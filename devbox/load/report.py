"""The capacity report of a kept run: built from the run record and its traces (pure), printed as
terminal tables, written as JSON and as one self-contained HTML page with plotly charts.

The report's parts (each a key of the JSON):

- ``fanout``: per entry, calls per entry request to each service/operation (mean, p95);
- ``crosscheck``: per service/operation, calls predicted from the fan-out x the requests Locust
  sent against the span-derived counters' increase over the run;
- ``services``: measured QPS (counters) vs predicted (entry QPS x fan-out) with the error in %,
  CPU seconds per request, saturation from the ramp, capacity per instance;
- ``accuracy``: the same prediction where the fan-out came from another load level (a
  ``--baseline`` run, or a ramp's first step predicting its later steps);
- ``target``: instances needed per service for a target mix with headroom, and the first bottleneck;
- ``spans``: requests sent vs traces received, spans expected vs received; when more than 1% is
  missing, ``complete`` is False and the figures built on traces are marked.
"""

from __future__ import annotations

import html
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from devbox.load import model
from devbox.mocks.tracing.models import Span


def _entry_requests(record: Mapping[str, Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    for step in record["steps"]:
        for name, n in step.get("requests_by_entry", {}).items():
            if name != "Aggregated":
                out[name] = out.get(name, 0) + int(n)
    return out


def _seconds(record: Mapping[str, Any]) -> float:
    return sum(float(s["seconds"]) for s in record["steps"]) or 1e-9


def _fanout_json(fan: Mapping[str, model.EntryFanout]) -> list[dict[str, Any]]:
    return [{"entry": name, "service": f.service, "traces": f.traces, "spans_per_trace": f.spans_per_trace,
             "calls": [c.__dict__ for c in f.calls],
             "services": {s: {"mean": m, "p95": p} for s, (m, p) in f.services.items()}}
            for name, f in sorted(fan.items())]


def _predict_known(requests: Mapping[str, float], fan: Mapping[str, model.EntryFanout]) -> dict[str, float]:
    """Predicted calls per service for the entries the fan-out knows (others are reported apart)."""
    return model.predict_service_qps({e: n for e, n in requests.items() if e in fan}, fan)


def _accuracy_rows(predicted: Mapping[str, float], measured: Mapping[str, float]) -> list[dict[str, Any]]:
    return [{"service": s, "predicted": predicted.get(s, 0.0), "measured": measured.get(s, 0.0),
             "error_pct": model.error_pct(predicted.get(s, 0.0), measured.get(s, 0.0))}
            for s in sorted(set(predicted) | set(measured))]


def build(record: Mapping[str, Any], traces: Sequence[Sequence[Span]], *,
          baseline: Mapping[str, Any] | None = None, baseline_traces: Sequence[Sequence[Span]] | None = None,
          target: Mapping[str, float] | None = None, headroom: float = 0.3,
          cpu_limit: float = model.DEFAULT_CPU_LIMIT) -> dict[str, Any]:
    """The capacity report of ``record`` (a kept run) with its traces. Raises ModelError for a
    target naming an unknown entry."""
    entry_service = record["params"]["target"]
    requests = _entry_requests(record)
    fan = model.align_names(model.fanout(traces, entry_service=entry_service), [*requests, *(target or {})])
    seconds = _seconds(record)
    counters = record.get("counters") or []
    counted = defaultdict(float)
    for row in counters:
        counted[row["service"]] += row["calls"]
    spans_received = sum(len(t) for t in traces)
    spans = model.span_completeness(requests, fan, spans_received)
    spans["accepted_by_platform"] = record.get("spans_accepted")
    spans["traces_read_at_run_end"] = record.get("traces_read")
    marked = "" if spans["complete"] else " (spans missing: see spans)"

    # cross-check: per service/operation, traces x requests against the counters
    per_op_pred: dict[tuple[str, str], float] = defaultdict(float)
    for entry, n in requests.items():
        if entry in fan:
            per_op_pred[(fan[entry].service, entry.lower())] += n
            for c in fan[entry].calls:
                per_op_pred[(c.service, c.operation.lower())] += n * c.mean
    # operation names compared without case: the Zipkin API lower-cases them, the counters do not
    per_op_count: dict[tuple[str, str], float] = defaultdict(float)
    for r in counters:
        per_op_count[(r["service"], r["method"].lower())] += r["calls"]
    crosscheck = [{"service": s, "operation": o, "from_traces": per_op_pred.get((s, o), 0.0),
                   "from_counters": per_op_count.get((s, o)),
                   "error_pct": model.error_pct(per_op_pred.get((s, o), 0.0), per_op_count.get((s, o), 0.0))}
                  for s, o in sorted(set(per_op_pred) | set(per_op_count))]

    predicted_calls = _predict_known(requests, fan)
    steps = [_step(s) for s in record["steps"]]
    sat = model.saturation(steps, cpu_limit=cpu_limit) if record["kind"] == "ramp" else {}
    cpu_total: dict[str, float] = defaultdict(float)
    instances: dict[str, int] = {}
    for step in record["steps"]:
        for svc, cpu in step.get("cpu_s", {}).items():
            cpu_total[svc] += cpu
        for svc, n in step.get("instances", {}).items():
            instances[svc] = max(instances.get(svc, 0), n)
    services = []
    cpu_per_req: dict[str, float | None] = {}
    for svc in sorted(set(predicted_calls) | set(counted) | set(instances)):
        measured = counted.get(svc)
        calls = measured if measured else predicted_calls.get(svc, 0.0)
        cpu_per_req[svc] = cpu_total[svc] / calls if calls and svc in cpu_total else None
        info = sat.get(svc, {})
        services.append({
            "service": svc, "instances": instances.get(svc, 0),
            "measured_qps": measured / seconds if measured is not None else None,
            "predicted_qps": predicted_calls.get(svc, 0.0) / seconds,
            "error_pct": model.error_pct(predicted_calls.get(svc, 0.0), measured) if measured else None,
            "cpu_s": cpu_total.get(svc), "cpu_s_per_request": cpu_per_req[svc],
            "saturation": info or None,
        })

    accuracy = _accuracy(record, traces, requests, counted, baseline, baseline_traces, entry_service)

    target_part = None
    if target is not None:
        model.check_entries(target, fan)
        target_qps = model.predict_service_qps(target, fan)
        needs, bottleneck = model.instances_needed(
            target_qps, cpu_s_per_request=cpu_per_req,
            saturated_qps_per_instance={s: (i or {}).get("qps_per_instance") for s, i in sat.items()},
            instances_now=instances, headroom=headroom, cpu_limit=cpu_limit)
        target_part = {
            "mix": dict(target), "headroom": headroom, "services": [n.__dict__ for n in needs],
            "bottleneck": None if bottleneck is None else {
                "service": bottleneck.service,
                "why": f"{bottleneck.service} needs {bottleneck.target_qps:.0f}/s; one instance takes "
                       f"{bottleneck.capacity_per_instance:.0f}/s ({bottleneck.capacity_from}), so its "
                       f"{bottleneck.instances_now} instance(s) run out first (load x"
                       f"{bottleneck.load_factor or math.inf:.1f} of what they take){marked}"},
        }
    return {
        "run": {k: record.get(k) for k in ("id", "kind", "started_at", "ended_at", "status", "params")},
        "seconds": seconds, "entries": _entries(record), "fanout": _fanout_json(fan), "crosscheck": crosscheck,
        "services": services, "steps": [_step_json(s) for s in record["steps"]], "accuracy": accuracy,
        "target": target_part, "spans": spans, "unknown_entries": sorted(set(requests) - set(fan)),
    }


def _entries(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    if record["kind"] == "run":
        return list(record["steps"][0]["entries"])
    return [{**e, "step": i + 1} for i, s in enumerate(record["steps"]) for e in s["entries"]]


def _step(rec: Mapping[str, Any]) -> model.Step:
    services = {svc: model.ServiceStep(qps=row["qps"], instances=int(row.get("instances") or 1),
                                       cpu_s=float(row.get("cpu_s") or 0.0), seconds=float(rec["seconds"]),
                                       p99_ms=row["p99_ms"], errors=row["errors"])
                for svc, row in (rec.get("services") or {}).items()}
    return model.Step(users=int(rec["users"]), figures=dict(rec.get("figures") or {}), services=services,
                      broke=list(rec.get("broke") or []))


def _step_json(rec: Mapping[str, Any]) -> dict[str, Any]:
    return {k: rec.get(k) for k in ("label", "users", "seconds", "started_at", "ended_at", "total", "figures",
                                     "broke", "services", "cpu_s", "instances", "interrupted")}


def _accuracy(record: Mapping[str, Any], traces: Sequence[Sequence[Span]], requests: Mapping[str, int],
              counted: Mapping[str, float], baseline: Mapping[str, Any] | None,
              baseline_traces: Sequence[Sequence[Span]] | None, entry_service: str) -> dict[str, Any] | None:
    """Prediction at a second load level: the baseline run's fan-out x this run's entry requests
    against this run's counters; for a ramp without baseline, step 1's fan-out per later step."""
    if baseline is not None and baseline_traces is not None:
        base_fan = model.align_names(model.fanout(baseline_traces, entry_service=entry_service), requests)
        predicted = _predict_known(requests, base_fan)
        rows = _accuracy_rows(predicted, dict(counted))
        return {"from": baseline["id"], "users_from": baseline["params"]["users"],
                "users_to": record["params"]["users"], "rows": rows, "max_abs_error_pct": _max_abs(rows)}
    return ramp_accuracy(record, traces_of_step(traces, record["steps"][0]))


def traces_of_step(traces: Sequence[Sequence[Span]], step: Mapping[str, Any]) -> list[Sequence[Span]]:
    lo, hi = int(step["started_at"] * 1e6), int(step["ended_at"] * 1e6)
    return [t for t in traces if t and lo <= min(s.start_us for s in t) <= hi]


def ramp_accuracy(record: Mapping[str, Any], step1_traces: Sequence[Sequence[Span]]) -> dict[str, Any] | None:
    """A ramp's first step's fan-out predicting each later step's per-service calls (from traces)."""
    steps = record["steps"]
    if record["kind"] != "ramp" or len(steps) < 2:
        return None
    names = {n for s in steps for n in s.get("requests_by_entry", {})}
    fan = model.align_names(model.fanout(step1_traces, entry_service=record["params"]["target"]), names)
    out = []
    for i, step in enumerate(steps[1:], start=2):
        requests = {k: v for k, v in step.get("requests_by_entry", {}).items() if k != "Aggregated"}
        predicted = _predict_known(requests, fan)
        measured = {svc: row["calls"] for svc, row in (step.get("services") or {}).items()}
        rows = _accuracy_rows(predicted, measured)
        out.append({"step": i, "users": step["users"], "rows": rows, "max_abs_error_pct": _max_abs(rows)})
    return {"from": f"{record['id']} step 1", "steps": out,
            "max_abs_error_pct": max((s["max_abs_error_pct"] or 0 for s in out), default=None)}


def _max_abs(rows: Sequence[Mapping[str, Any]]) -> float | None:
    errors = [abs(r["error_pct"]) for r in rows if r["error_pct"] is not None]
    return max(errors) if errors else None


# --- terminal ------------------------------------------------------------------------------------


def _f(value: Any, fmt: str = "{:.1f}", none: str = "-") -> str:
    return none if value is None else fmt.format(value)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:+.1f}%"


def print_report(report: Mapping[str, Any], console: Any) -> None:
    """The report as rich tables."""
    from rich.table import Table

    run = report["run"]
    console.print(f"[bold]capacity · run {run['id']}[/] ({run['kind']}, {report['seconds']:.0f}s, "
                  f"{run['params']['users']} users, target {run['params']['target']})", highlight=False)
    spans = report["spans"]
    style = "green" if spans["complete"] else "yellow"
    console.print(f"[{style}]spans: {spans['traces_received']} traces for {spans['requests_sent']} requests sent "
                  f"({_f(spans['traces_ratio'], '{:.1%}')}); {spans['spans_received']} of ~"
                  f"{spans['spans_expected']} spans ({_f(spans['spans_ratio'], '{:.1%}')}), "
                  f"{spans['spans_missing']} missing[/]", highlight=False)
    for entry in report["fanout"]:
        table = Table(title=f"fan-out of {entry['service']} · {entry['entry']} ({entry['traces']} traces)",
                      title_justify="left")
        for col in ("service", "operation", "calls/request (mean)", "p95"):
            table.add_column(col)
        for c in entry["calls"]:
            table.add_row(c["service"], c["operation"], f"{c['mean']:.2f}", f"{c['p95']:g}")
        console.print(table)
    table = Table(title="per service", title_justify="left")
    for col in ("service", "inst", "measured QPS", "predicted QPS", "error", "CPU ms/req", "saturated at"):
        table.add_column(col)
    for s in report["services"]:
        sat = s["saturation"] or {}
        at = (f"step {sat['step'] + 1}: {_f(sat.get('qps_per_instance'))}/s per inst"
              if sat.get("step") is not None else ("not reached" if sat else "-"))
        table.add_row(s["service"], str(s["instances"]), _f(s["measured_qps"]), _f(s["predicted_qps"]),
                      _pct(s["error_pct"]), _f(s["cpu_s_per_request"] and s["cpu_s_per_request"] * 1000, "{:.2f}"),
                      at)
    console.print(table)
    acc = report.get("accuracy")
    if acc:
        if "rows" in acc:
            rows = [(f"{acc['users_from']}→{acc['users_to']} users", acc["rows"])]
        else:
            rows = [(f"step {s['step']} ({s['users']} users)", s["rows"]) for s in acc["steps"]]
        table = Table(title=f"prediction at another load level (fan-out from {acc['from']})", title_justify="left")
        for col in ("level", "service", "predicted", "measured", "error"):
            table.add_column(col)
        for level, rs in rows:
            for r in rs:
                table.add_row(level, r["service"], f"{r['predicted']:.0f}", f"{r['measured']:.0f}",
                              _pct(r["error_pct"]))
        console.print(table)
        console.print(f"largest prediction error: {_f(acc['max_abs_error_pct'], '{:.1f}%')} (target ±5%)",
                      highlight=False)
    tgt = report.get("target")
    if tgt:
        table = Table(title=f"instances needed for {', '.join(f'{k}={v:g}/s' for k, v in tgt['mix'].items())} "
                            f"(headroom {tgt['headroom']:.0%})", title_justify="left")
        for col in ("service", "target QPS", "per instance", "now", "needed", "from"):
            table.add_column(col)
        for n in tgt["services"]:
            table.add_row(n["service"], f"{n['target_qps']:.0f}", _f(n["capacity_per_instance"], "{:.0f}/s"),
                          str(n["instances_now"]), _f(n["needed"], "{}"), n["capacity_from"])
        console.print(table)
        if tgt["bottleneck"]:
            console.print(f"[bold]first bottleneck: {tgt['bottleneck']['service']}[/] — {tgt['bottleneck']['why']}",
                          highlight=False)


# --- HTML ----------------------------------------------------------------------------------------


def _table_html(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def figures(report: Mapping[str, Any]) -> list[Any]:
    """plotly figures: latency vs load per step, QPS per service predicted vs measured, fan-out."""
    import plotly.graph_objects as go

    out = []
    steps = report["steps"]
    if len(steps) > 1:
        fig = go.Figure()
        x = [s["total"]["rps"] for s in steps]
        for key in ("p50", "p95", "p99"):
            fig.add_trace(go.Scatter(x=x, y=[s["total"].get(key) for s in steps], mode="lines+markers", name=key,
                                     text=[f"{s['users']} users" for s in steps]))
        fig.update_layout(title="latency vs load (per ramp step)", xaxis_title="entry requests/s",
                          yaxis_title="ms")
        out.append(fig)
        fig = go.Figure()
        for svc in sorted({k for s in steps for k in (s.get("cpu_s") or {})}):
            fig.add_trace(go.Scatter(
                x=[(s.get("services") or {}).get(svc, {}).get("qps", 0) for s in steps],
                y=[(s.get("cpu_s") or {}).get(svc, 0) / s["seconds"] / max((s.get("instances") or {}).get(svc, 1), 1)
                   for s in steps], mode="lines+markers", name=svc))
        fig.update_layout(title="CPU per instance vs service QPS", xaxis_title="service requests/s",
                          yaxis_title="cores per instance")
        out.append(fig)
    services = report["services"]
    fig = go.Figure([
        go.Bar(name="predicted", x=[s["service"] for s in services], y=[s["predicted_qps"] for s in services]),
        go.Bar(name="measured", x=[s["service"] for s in services], y=[s["measured_qps"] or 0 for s in services]),
    ])
    fig.update_layout(title="throughput per service: predicted (entry QPS x fan-out) vs measured (counters)",
                      barmode="group", yaxis_title="requests/s")
    out.append(fig)
    entries = report["fanout"]
    if entries:
        svcs = sorted({s for e in entries for s in e["services"]})
        z = [[e["services"].get(s, {}).get("mean", 0) for s in svcs] for e in entries]
        fig = go.Figure(go.Heatmap(z=z, x=svcs, y=[e["entry"] for e in entries], colorscale="Blues",
                                   text=[[f"{v:.2f}" for v in row] for row in z], texttemplate="%{text}"))
        fig.update_layout(title="fan-out: calls per entry request", xaxis_title="service")
        out.append(fig)
    return out


def render_html(report: Mapping[str, Any]) -> str:
    """One self-contained page: plotly.js inlined once, the charts, then the tables."""
    import plotly.io as pio

    charts = [pio.to_html(fig, full_html=False, include_plotlyjs=(i == 0)) for i, fig in enumerate(figures(report))]
    run = report["run"]
    spans = report["spans"]
    parts = [f"<h1>Capacity · run {html.escape(run['id'])}</h1>",
             f"<p>{html.escape(run['kind'])}, {report['seconds']:.0f} s, {run['params']['users']} users, target "
             f"{html.escape(run['params']['target'])}. Spans: {spans['traces_received']} traces for "
             f"{spans['requests_sent']} requests, {spans['spans_received']} of ~{spans['spans_expected']} spans"
             f"{'' if spans['complete'] else ' — <b>spans missing: trace-based figures are low</b>'}.</p>"]
    tgt = report.get("target")
    if tgt:
        parts.append("<h2>Instances needed</h2>")
        if tgt["bottleneck"]:
            parts.append(f"<p><b>First bottleneck: {html.escape(tgt['bottleneck']['service'])}</b> — "
                         f"{html.escape(tgt['bottleneck']['why'])}</p>")
        parts.append(_table_html(("service", "target QPS", "per instance", "now", "needed", "from"), [
            (n["service"], f"{n['target_qps']:.0f}", _f(n["capacity_per_instance"], "{:.0f}/s"), n["instances_now"],
             _f(n["needed"], "{}"), n["capacity_from"]) for n in tgt["services"]]))
    parts += charts
    parts.append("<h2>Per service</h2>")
    parts.append(_table_html(("service", "instances", "measured QPS", "predicted QPS", "error", "CPU ms/request"), [
        (s["service"], s["instances"], _f(s["measured_qps"]), _f(s["predicted_qps"]), _pct(s["error_pct"]),
         _f(s["cpu_s_per_request"] and s["cpu_s_per_request"] * 1000, "{:.2f}")) for s in report["services"]]))
    acc = report.get("accuracy")
    if acc:
        rows = acc["rows"] if "rows" in acc else [r for s in acc["steps"] for r in s["rows"]]
        parts.append(f"<h2>Prediction at another load level (fan-out from {html.escape(acc['from'])})</h2>")
        parts.append(_table_html(("service", "predicted", "measured", "error"), [
            (r["service"], f"{r['predicted']:.0f}", f"{r['measured']:.0f}", _pct(r["error_pct"])) for r in rows]))
    parts.append("<h2>Fan-out</h2>")
    parts.append(_table_html(("entry", "service", "operation", "mean", "p95"), [
        (e["entry"], c["service"], c["operation"], f"{c['mean']:.2f}", f"{c['p95']:g}")
        for e in report["fanout"] for c in e["calls"]]))
    parts.append("<h2>Cross-check: traces vs span-derived counters</h2>")
    parts.append(_table_html(("service", "operation", "from traces", "from counters", "error"), [
        (r["service"], r["operation"], f"{r['from_traces']:.0f}", _f(r["from_counters"], "{:.0f}"),
         _pct(r["error_pct"])) for r in report["crosscheck"]]))
    style = ("body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;"
             "margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>devbox capacity {html.escape(run['id'])}"
            f"</title><style>{style}</style></head><body>{''.join(parts)}</body></html>")
