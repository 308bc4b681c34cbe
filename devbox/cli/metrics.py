"""``devbox metrics ls|query``: what is measured, and a metric or composite indicator over time.

devbox metrics ls
devbox metrics query success_rate --by callee --since 15m
devbox metrics query rpc_server_requests_total -w 'callee in orders|stock' -w status=error --by callee,method --top 5
devbox metrics query rpc_server_duration_seconds --agg p99 --by callee
devbox metrics query --promql 'sum by (callee) (rate(rpc_server_requests_total[1m]))'
"""

from __future__ import annotations

import difflib
import math
import re
from typing import Any

import typer
from rich.table import Table

from devbox.cli.common import EXIT_USAGE, Api, ConfigOption, JsonOption, console, fail, print_json

metrics_app = typer.Typer(help="Metrics: list what is measured, query metrics and indicators.", no_args_is_help=True)

_SINCE = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_SPARK = "▁▂▃▄▅▆▇█"


def register(app: typer.Typer) -> None:
    app.add_typer(metrics_app, name="metrics")


def _seconds(text: str, option: str) -> float:
    m = _SINCE.match(text.strip())
    if not m:
        fail(f"{option} {text!r}: write a duration like 30s, 15m, 2h or 1d", EXIT_USAGE)
    return float(m.group(1)) * _UNITS[m.group(2)]


@metrics_app.command("ls")
def ls(
    config: str | None = ConfigOption,
    as_json: bool = JsonOption,
    pattern: str = typer.Argument("", help="Only names containing this text."),
) -> None:
    """Base metrics (type, dimensions, series) and composite indicators."""
    data = Api(config).get("/api/metrics/ls")
    rows = [m for m in data["metrics"] if pattern in m["name"]]
    if as_json:
        print_json({"metrics": rows, "stats": data.get("stats", {})})
        return
    if not rows:
        console.print("no metrics yet: send spans, OTLP metrics or custom reports, or set `scrape:` on a service")
        return
    table = Table("name", "type", "series", "dimensions", "help / formula", box=None, header_style="bold")
    for m in rows:
        detail = m.get("formula") or m.get("help") or ""
        series = "" if m.get("series") is None else str(m["series"])
        kind = f"[cyan]{m['type']}[/]" if m["kind"] == "composite" else m["type"]
        table.add_row(m["name"], kind, series, ", ".join(m.get("dimensions") or []), detail)
    console.print(table)
    stats = data.get("stats") or {}
    if stats:
        console.print(
            f"[dim]{stats.get('series', 0)} series, {stats.get('samples_1s', 0)} points at 1 s, "
            f"{stats.get('samples_1m', 0)} rolled up to 1 min[/]"
        )


def _spark(values: list[float | None]) -> str:
    """One character per point; a gap (the API sends ``null`` for a step with no data) or NaN is a blank."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return ""
    lo, hi = min(finite), max(finite)
    if hi - lo <= 1e-9 * max(abs(hi), abs(lo), 1.0):  # flat (up to rounding): a level line
        return "".join(_SPARK[3] if v is not None and math.isfinite(v) else " " for v in values)
    span = hi - lo
    return "".join(_SPARK[int((v - lo) / span * (len(_SPARK) - 1))] if v is not None and math.isfinite(v) else " "
                   for v in values)


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    if not math.isfinite(v):
        return str(v)
    if v == int(v) and abs(v) < 1e12:
        return str(int(v))
    return f"{v:.4g}"


def labels_text(labels: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in labels.items()) or "(all)"


def summary(values: list[float | None]) -> tuple[str, str, str, str]:
    """Last, min, avg and max of a series as table cells; gaps (``None``) and NaN are left out,
    and the last value is the last point that has one."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return "-", "-", "-", "-"
    last = next(v for v in reversed(values) if v is not None and math.isfinite(v))
    return _fmt(last), _fmt(min(finite)), _fmt(sum(finite) / len(finite)), _fmt(max(finite))


@metrics_app.command("query")
def query(
    metric: str = typer.Argument("", help="Metric or composite indicator name (omit with --promql)."),
    where: list[str] = typer.Option(
        [], "--where", "-w", help="Filter: label=value, label!=value, label=~regex, label!~regex, 'label in a|b'."
    ),
    by: str | None = typer.Option(
        None,
        "--by",
        "-g",
        help="Group by these dimensions (comma-separated; '-' for one total; default: the "
        "indicator's own dimensions, none for base metrics).",
    ),
    agg: str = typer.Option("sum", "--agg", "-a", help="sum, avg, min, max, count, or a percentile p50/p90/p99."),
    top: int | None = typer.Option(None, "--top", help="Only the N series with the highest mean."),
    since: str = typer.Option("15m", "--since", help="How far back: 30s, 15m, 2h, 1d."),
    step: str | None = typer.Option(None, "--step", help="Resolution, e.g. 10s (default: about 60 points)."),
    window: str = typer.Option("1m", "--window", help="Rate window for counters."),
    promql: str | None = typer.Option(None, "--promql", help="Evaluate a PromQL expression instead (instant)."),
    config: str | None = ConfigOption,
    as_json: bool = JsonOption,
) -> None:
    """A metric or indicator over time, filtered, grouped and aggregated (counters are shown as rates)."""
    api = Api(config)
    if promql:
        data = api.get("/api/metrics/promql", params={"query": promql})
        if as_json:
            print_json(data)
            return
        table = Table("labels", "value", box=None, header_style="bold")
        for item in data["result"]:
            labels = ", ".join(f"{k}={v}" for k, v in sorted(item["labels"].items())) or "{}"
            table.add_row(labels, _fmt(item["value"]))
        console.print(table if data["result"] else "no result")
        return
    if not metric:
        fail("name a metric or indicator (see `devbox metrics ls`), or pass --promql", EXIT_USAGE)
    span = _seconds(since, "--since")
    body: dict[str, Any] = {
        "metric": metric,
        "start": f"-{span:g}s",
        "filters": list(where),
        "aggregate": agg,
        "window": _seconds(window, "--window"),
    }
    body["step"] = _seconds(step, "--step") if step else max(1.0, math.ceil(span / 60))
    if by is not None:
        body["group_by"] = [g.strip() for g in by.split(",") if g.strip() and g.strip() != "-"]
    if top is not None:
        body["top"] = top
    data = api.post("/api/metrics/query", json=body)
    if as_json:
        print_json(data)
        return
    series = data["series"]
    if not series:
        known = {m["name"] for m in api.get("/api/metrics/ls")["metrics"]}
        if metric not in known:
            close = difflib.get_close_matches(metric, sorted(known), n=1)
            fail(f"no metric or indicator named {metric!r}" + (f"; did you mean {close[0]!r}?" if close else "")
                 + " (`devbox metrics ls` lists them)")
        console.print(f"no data for {metric} in the last {since}")
        return
    table = Table("series", "last", "min", "avg", "max", f"last {since}", box=None, header_style="bold")
    for s in series:
        values = [v for _, v in s["points"]]
        table.add_row(labels_text(s["labels"]), *summary(values), _spark(values))
    console.print(f"[bold]{metric}[/] [dim]{data['expr']} · step {data['step']:g}s[/]")
    console.print(table)
