"""``devbox traces ls|show|why`` and ``devbox topology``: the trace collector from the terminal."""

from __future__ import annotations

import dataclasses
import re
from datetime import datetime
from typing import Any

import typer
from rich.table import Table
from rich.text import Text

from devbox.cli.common import EXIT_USAGE, Api, ConfigOption, JsonOption, console, fail, print_json, whole

_UNITS_US = {"us": 1, "µs": 1, "ms": 1_000, "s": 1_000_000, "m": 60_000_000, "h": 3_600_000_000,
             "d": 86_400_000_000}
BAR_WIDTH = 40


def register(app: typer.Typer) -> None:
    traces = typer.Typer(help="Traces: list, waterfall, root cause, fan-out.", no_args_is_help=True)
    traces.command("ls")(ls)
    traces.command("show")(show)
    traces.command("why")(why)
    traces.command("fanout")(fanout)
    app.add_typer(traces, name="traces")
    app.command("topology")(topology)


def parse_duration_us(text: str, default_unit: str = "ms") -> int:
    """``250ms``, ``1.5s``, ``300us``, ``2h``; a bare number is in ``default_unit``."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(us|µs|ms|s|m|h|d)?\s*", text)
    if not match:
        raise ValueError(f"{text!r} is not a duration (e.g. 250ms, 1.5s, 15m)")
    return int(float(match.group(1)) * _UNITS_US[match.group(2) or default_unit])


def _duration_option(text: str | None, what: str, default_unit: str = "ms") -> int | None:
    if text is None:
        return None
    try:
        return parse_duration_us(text, default_unit)
    except ValueError as exc:
        fail(f"{what}: {exc}", EXIT_USAGE)


def fmt_us(us: int | float) -> str:
    if us >= 1_000_000:
        return f"{us / 1_000_000:.2f}s"
    if us >= 1_000:
        return f"{us / 1_000:.1f}ms"
    return f"{us:.0f}µs"


def _when(us: int) -> str:
    return datetime.fromtimestamp(us / 1_000_000).strftime("%H:%M:%S.%f")[:-3]


def ls(
    service: str | None = typer.Option(None, "--service", "-s", help="Only traces touching this service."),
    errors: bool = typer.Option(False, "--errors", help="Only traces with an error span."),
    min_duration: str | None = typer.Option(None, "--min-duration", help="Only traces with a span this long (250ms)."),
    lookback: str = typer.Option("1h", "--lookback", help="How far back (15m, 1h, 2d)."),
    limit: int = typer.Option(20, "--limit", min=1, max=1000),
    probes: bool = typer.Option(False, "--probes", help="Include health-probe traces (GET /healthz, grpc.health)."),
    config_file: str | None = ConfigOption,
    json_out: bool = JsonOption,
) -> None:
    """Recent traces, newest first (health probes left out unless --probes)."""
    params: dict[str, Any] = {"limit": limit, "lookback": _duration_option(lookback, "--lookback", "m") // 1000}
    if probes:
        params["probes"] = "true"
    if service:
        params["service"] = service
    if errors:
        params["errors"] = "true"
    if min_duration is not None:
        params["min_duration"] = _duration_option(min_duration, "--min-duration")
    data = Api(config_file).get("/api/traces", params=params)
    if json_out:
        print_json(data)
        return
    if not data["traces"]:
        console.print("no traces in that window")
        return
    table = Table(whole("trace id", (t["trace_id"] for t in data["traces"])), "start", "root", "duration", "spans",
                  "errors", "services")
    for t in data["traces"]:
        table.add_row(
            t["trace_id"], _when(t["start_us"]), f"{t['root_service']}: {t['root_name']}", fmt_us(t["duration_us"]),
            str(t["spans"]), f"[red]{t['errors']}[/]" if t["errors"] else "0", ", ".join(t["services"]),
        )
    console.print(table)


def _waterfall_rows(spans: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
    """Spans in tree order with their depth."""
    from devbox.mocks.tracing.analysis import build_tree
    from devbox.mocks.tracing.models import Span

    tree = build_tree([Span(**s) for s in spans])
    rows: list[tuple[int, dict[str, Any]]] = []
    stack = [(0, root) for root in reversed(tree.roots)]
    while stack:
        depth, key = stack.pop()
        s = tree.spans[key]
        rows.append((depth, dataclasses.asdict(s)))
        kids = sorted(tree.children(key), key=lambda k: tree.spans[k].start_us, reverse=True)
        stack.extend((depth + 1, k) for k in kids)
    return rows


def span_notes(span: dict[str, Any]) -> list[tuple[int, str, bool]]:
    """A span's OTel events and Zipkin annotations as ``(µs after the span's start, text, is an
    exception)``, in time order: a recorded exception reads ``exception ValueError: card declined``
    (its stack stays in ``--json``), another event its name and attributes, an annotation its value."""
    notes: list[tuple[int, str, bool]] = []
    start = span["start_us"]
    for event in span.get("events") or []:
        attrs = event.get("attributes") or {}
        if event.get("name") == "exception" or "exception.type" in attrs:
            kind, message = attrs.get("exception.type", ""), attrs.get("exception.message", "")
            text = f"exception {kind}{': ' if kind and message else ''}{message}".rstrip()
            notes.append((event.get("time_us", start) - start, text, True))
        else:
            extra = " ".join(f"{k}={v}" for k, v in attrs.items())
            notes.append((event.get("time_us", start) - start, f"{event.get('name', '')} {extra}".rstrip(), False))
    # stored apart (OTel events / Zipkin annotations); only the Zipkin API folds events into annotations
    for ts, value in span.get("annotations") or []:
        notes.append((ts - start, str(value), False))
    notes.sort(key=lambda n: n[0])
    return [(max(0, offset), text, bad) for offset, text, bad in notes]


def _bar(start: int, duration: int, t0: int, total: int) -> Text:
    left = int((start - t0) / total * BAR_WIDTH) if total else 0
    width = max(1, round(duration / total * BAR_WIDTH)) if total else 1
    left = min(left, BAR_WIDTH - 1)
    width = min(width, BAR_WIDTH - left)
    return Text(" " * left + "█" * width + " " * (BAR_WIDTH - left - width))


def show(
    trace_id: str = typer.Argument(..., help="Trace id (16 or 32 hex)."),
    config_file: str | None = ConfigOption,
    json_out: bool = JsonOption,
) -> None:
    """A trace as a waterfall, with its critical path share per service."""
    api = Api(config_file)
    data = api.get(f"/api/traces/{trace_id}")
    critical = api.get(f"/api/traces/{trace_id}/critical-path")
    if json_out:
        print_json({**data, "critical_path": critical})
        return
    spans = data["spans"]
    t0 = min(s["start_us"] for s in spans)
    total = max(s["start_us"] + s["duration_us"] for s in spans) - t0
    on_path = {seg["span_id"] for seg in critical["segments"]}
    console.print(f"[bold]trace {data['trace_id']}[/]  {len(spans)} spans  {fmt_us(total)}  "
                  f"started {_when(t0)}", highlight=False)
    table = Table("service", "operation", "kind", "duration", "timeline", box=None, pad_edge=False)
    for depth, s in _waterfall_rows(spans):
        style = "red" if s["error"] else ("bold" if s["span_id"] in on_path else "")
        name = "  " * depth + s["name"] + (f"  [red]✗ {s['status_message']}[/]" if s["error"] and s["status_message"]
                                            else "")
        bar = _bar(s["start_us"], s["duration_us"], t0, total)
        bar.stylize("red" if s["error"] else ("cyan" if s["span_id"] in on_path else "dim"))
        table.add_row(Text(s["service"], style=style), name, s["kind"].lower(), fmt_us(s["duration_us"]), bar)
        for offset, text, bad in span_notes(s):
            mark = _bar(s["start_us"] + offset, 0, t0, total)  # where on the timeline it happened
            mark.stylize("red" if bad else "yellow")
            table.add_row("", Text("  " * (depth + 1) + f"↳ +{fmt_us(offset)} {text}", style="red" if bad else "dim"),
                          "", "", mark)
    console.print(table)
    shares = ", ".join(f"{row['service']} {row['share']:.0%}" for row in critical["services"])
    console.print(f"critical path (cyan): {shares}", highlight=False)


def why(
    trace_id: str = typer.Argument(..., help="Trace id (16 or 32 hex)."),
    config_file: str | None = ConfigOption,
    json_out: bool = JsonOption,
) -> None:
    """Where a failed trace's error originated, and the call path that led there."""
    data = Api(config_file).get(f"/api/traces/{trace_id}/why")
    if json_out:
        print_json(data)
        return
    if not data["failed"]:
        console.print(f"[green]trace {data['trace_id']} has no error span[/]")
        return
    for cause in data["causes"]:
        console.print(f"[bold red]root cause:[/] {cause['service']} · {cause['name']}"
                      + (f" — {cause['message']}" if cause["message"] else ""), highlight=False)
        for depth, hop in enumerate(cause["path"]):
            mark = "[red]✗[/]" if hop["error"] else "✓"
            console.print(f"  {'  ' * depth}{mark} {hop['service']} · {hop['name']} ({hop['kind'].lower()})",
                          highlight=False)
    console.print(f"{data['error_spans']} error span(s), {len(data['causes'])} where the error originated")


def fanout(
    lookback: str = typer.Option("1h", "--lookback", help="Window of traces to average over (15m, 1h)."),
    probes: bool = typer.Option(False, "--probes", help="Include health-probe entries (GET /healthz, grpc.health)."),
    config_file: str | None = ConfigOption,
    json_out: bool = JsonOption,
) -> None:
    """Per entry operation: how many calls each downstream service/operation gets per entry request
    (health probes left out unless --probes)."""
    params: dict[str, Any] = {"lookback": _duration_option(lookback, "--lookback", "m") // 1000}
    if probes:
        params["probes"] = "true"
    data = Api(config_file, timeout=60).get("/api/traces/fanout", params=params)
    if json_out:
        print_json(data)
        return
    if not data["entries"]:
        console.print("no traces in that window")
        return
    for entry in data["entries"]:
        console.print(f"[bold]{entry['service']} · {entry['operation']}[/]  {entry['requests']} request(s)",
                      highlight=False)
        table = Table("service", "operation", "calls", "per request", box=None, pad_edge=False)
        for row in entry["downstream"]:
            table.add_row(row["service"], row["operation"], str(row["calls"]), f"{row['per_request']:.2f}")
        console.print(table)


def topology(
    service: str | None = typer.Argument(None, help="Show who calls this service and whom it calls."),
    lookback: str = typer.Option("1h", "--lookback", help="Window to build the graph from (15m, 1h)."),
    config_file: str | None = ConfigOption,
    json_out: bool = JsonOption,
) -> None:
    """The service dependency graph from traces: calls, errors and latency per edge."""
    params: dict[str, Any] = {"lookback": _duration_option(lookback, "--lookback", "m") // 1000}
    if service:
        params["service"] = service
    data = Api(config_file, timeout=60).get("/api/topology", params=params)
    if json_out:
        print_json(data)
        return
    edges = data["edges"]
    if service:
        info = data["service"]
        edges = [e for e in edges if service in (e["caller"], e["callee"])]
        console.print(f"[bold]{service}[/]", highlight=False)
        console.print(f"  called by: {', '.join(info['callers']) or '-'}"
                      f"  (transitively: {', '.join(info['callers_transitive']) or '-'})", highlight=False)
        console.print(f"  calls:     {', '.join(info['callees']) or '-'}"
                      f"  (transitively: {', '.join(info['callees_transitive']) or '-'})", highlight=False)
    if not edges:
        console.print("no calls between services in that window")
        return
    table = Table("caller", "callee", "calls", "errors", "p50", "p90", "p99")
    for e in edges:
        errors = f"[red]{e['errors']} ({e['error_rate']:.0%})[/]" if e["errors"] else "0"
        table.add_row(e["caller"], e["callee"], str(e["calls"]), errors, fmt_us(e["p50_us"]), fmt_us(e["p90_us"]),
                      fmt_us(e["p99_us"]))
    console.print(table)
    if data["window"]["truncated"]:
        console.print(f"[yellow]only the newest {data['window']['spans']} spans of the window were read[/]")
