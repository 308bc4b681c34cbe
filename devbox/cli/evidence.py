"""``devbox snapshot save|load|ls|show``, ``devbox diff A B``, ``devbox why ALERT|SERVICE``: the evidence a
developer reads after a CI run or an alert — what changed between two runs, and why something fired.

Snapshots are files under ``.devbox/snapshots/NAME.db`` (:mod:`devbox.snapshot.format`). Everything
is read from the running platform through its HTTP APIs.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import typer

from devbox.cli.common import (
    EXIT_FAILED,
    EXIT_NOT_RUNNING,
    EXIT_USAGE,
    ConfigOption,
    JsonOption,
    api_token,
    api_url,
    config_or_exit,
    console,
    err_console,
    fail,
    print_json,
)
from devbox.cli.release import parse_duration

snapshot_app = typer.Typer(help="Save the platform's state and evidence to a file; load it back to inspect.",
                           no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(snapshot_app, name="snapshot")
    app.command("diff")(diff)
    app.command("why")(why)


# --- helpers ---------------------------------------------------------------------------------


def snapshots_dir(config_file: str | None) -> Path:
    return config_or_exit(config_file).state_path / "snapshots"


def _platform(config_file: str | None) -> Any:
    from devbox.snapshot.collect import Platform

    return Platform(api_url(config_file), api_token(config_file), timeout=60)


def _collect(config_file: str | None, **kwargs: Any) -> Any:
    from devbox.snapshot.collect import CollectError, collect

    try:
        return collect(_platform(config_file), **kwargs)
    except CollectError as exc:
        fail(f"{exc}; start it with `devbox up`", EXIT_NOT_RUNNING)


def _since(text: str, config_file: str | None) -> float | None:
    """``up`` (None: when the platform came up) or a duration ago."""
    if text == "up":
        return None
    try:
        return time.time() - parse_duration(text)
    except typer.BadParameter as exc:
        fail(str(exc), EXIT_USAGE)


def resolve(ref: str, config_file: str | None) -> Any:
    """A snapshot file or name, ``load:RUN_ID`` (that load run's window read from the running
    platform), or ``live`` (the running platform since it came up)."""
    from devbox.snapshot.format import SnapshotError, read

    if ref == "live":
        return _collect(config_file, name="live", with_metrics=False)
    if ref.startswith("load:"):
        run_id = ref[len("load:"):]
        run_file = config_or_exit(config_file).state_path / "load" / run_id / "run.json"
        try:
            run = json.loads(run_file.read_text())
        except (OSError, ValueError):
            fail(f"no load run {run_id!r} (`devbox load ls` lists them)", EXIT_USAGE)
        return _collect(config_file, start=float(run["started_at"]), end=float(run["ended_at"]), name=ref,
                        with_metrics=False)
    path = Path(ref)
    if not path.is_file():
        path = snapshots_dir(config_file) / f"{ref}.db"
    try:
        return read(path)
    except SnapshotError as exc:
        fail(f"{exc} (`devbox snapshot ls` lists the saved ones; `load:RUN_ID` and `live` also work)", EXIT_USAGE)


# --- snapshot --------------------------------------------------------------------------------


@snapshot_app.command("save")
def save(
    name: str = typer.Argument(..., help="Snapshot name: .devbox/snapshots/NAME.db"),
    since: str = typer.Option("up", "--since", help="Window start: 'up' (the platform came up) or a duration ago."),
    no_metrics: bool = typer.Option(False, "--no-metrics", help="Leave out the metric samples (faster, smaller)."),
    config_file: str | None = ConfigOption,
    json_out: bool = JsonOption,
) -> None:
    """Record the registry, rules, alert rules, silences and the window's traces, metrics, alert
    transitions and deploy events into one file."""
    from devbox.snapshot.format import write

    if not name or "/" in name or name.startswith("."):
        fail(f"{name!r} is not a snapshot name (letters, digits, - and _)", EXIT_USAGE)
    ev = _collect(config_file, start=_since(since, config_file), name=name, with_metrics=not no_metrics)
    path = write(snapshots_dir(config_file) / f"{name}.db", ev)
    counts = _counts(ev)
    if json_out:
        print_json({"path": str(path), **counts})
        return
    console.print(f"saved {path}: " + ", ".join(f"{v} {k}" for k, v in counts.items()), highlight=False)


def _counts(ev: Any) -> dict[str, int]:
    return {"spans": len(ev.spans), "traces": len({s["traceId"] for s in ev.spans}), "instances": len(ev.instances),
            "routing_rules": len(ev.routing_rules), "alert_rules": len(ev.alert_rules),
            "alert_transitions": len(ev.transitions), "deploy_events": len(ev.deploy_events),
            "metric_samples": len(ev.metrics)}


@snapshot_app.command("ls")
def ls(config_file: str | None = ConfigOption, json_out: bool = JsonOption) -> None:
    """Saved snapshots, newest first."""
    from devbox.snapshot.format import SnapshotError, read

    rows: list[dict[str, Any]] = []
    for path in sorted(snapshots_dir(config_file).glob("*.db"), key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            ev = read(path)
        except SnapshotError as exc:
            rows.append({"name": path.stem, "error": str(exc)})
            continue
        lo, hi = ev.window
        rows.append({"name": path.stem, "created": ev.meta.get("created"), "project": ev.meta.get("project"),
                     "window_s": round(hi - lo, 1), "bytes": path.stat().st_size, **_counts(ev)})
    if json_out:
        print_json(rows)
        return
    if not rows:
        console.print("no snapshots (`devbox snapshot save NAME`)")
    for r in rows:
        if "error" in r:
            console.print(f"{r['name']}  [red]{r['error']}[/]", highlight=False)
            continue
        created = time.strftime("%Y-%m-%d %H:%M", time.localtime(r["created"] or 0))
        console.print(f"{r['name']:<24} {created}  {r['window_s']:>8.0f}s window  {r['traces']:>6} traces  "
                      f"{r['alert_transitions']:>4} transitions  {r['bytes'] // 1024:>6} KiB", highlight=False)


@snapshot_app.command("show")
def show(name: str = typer.Argument(...), config_file: str | None = ConfigOption, json_out: bool = JsonOption) -> None:
    """A snapshot's header, counts, and its read-only history: alert transitions and deploy events."""
    ev = resolve(name, config_file)
    data = {"meta": ev.meta, **_counts(ev), "alert_transitions": ev.transitions, "deploy_events": ev.deploy_events,
            "faults": ev.faults}
    if json_out:
        print_json(data)
        return
    console.print(json.dumps({"meta": ev.meta, **_counts(ev)}, indent=2, default=str), highlight=False)
    for t in ev.transitions:
        labels = ", ".join(f"{k}={v}" for k, v in sorted((t.get("labels") or {}).items()) if k != "alertname")
        console.print(f"{time.strftime('%H:%M:%S', time.localtime(t.get('at') or 0))}  alert {t.get('alertname')}"
                      f"{' {' + labels + '}' if labels else ''} {t.get('from')} → {t.get('to')}", highlight=False)
    for e in ev.deploy_events:
        console.print(f"{time.strftime('%H:%M:%S', time.localtime(e.get('ts') or 0))}  {e.get('service')} "
                      f"{e.get('kind')}: {e.get('message')}", highlight=False)


@snapshot_app.command("load")
def load(
    name: str = typer.Argument(...),
    config_file: str | None = ConfigOption,
) -> None:
    """Start a platform with no services holding the snapshot (registry, rules, traces, alert rules,
    silences) to inspect with the dashboard and every `devbox` command; Ctrl-C stops it."""
    from devbox.snapshot.format import read
    from devbox.snapshot.serve import serve

    path = Path(name) if Path(name).is_file() else snapshots_dir(config_file) / f"{name}.db"
    from devbox.snapshot.format import SnapshotError

    try:
        ev = read(path)
    except SnapshotError as exc:
        fail(str(exc), EXIT_USAGE)
    serve(ev, path.with_suffix(".view"), out=console)


# --- diff ------------------------------------------------------------------------------------


def diff(
    a: str = typer.Argument(..., help="Snapshot name or file, load:RUN_ID, or live."),
    b: str = typer.Argument(..., help="Snapshot name or file, load:RUN_ID, or live."),
    html_file: str | None = typer.Option(None, "--html", help="Also write the diff as an HTML page here."),
    config_file: str | None = ConfigOption,
    json_out: bool = JsonOption,
) -> None:
    """What changed from A to B: fan-out, topology edges, latency (p50/p99 with a significance
    test), error rates and types, alerts that fired, registry and rules. Exit 1 when anything did."""
    from devbox.diff.core import diff as compare
    from devbox.diff.profile import profile
    from devbox.diff.render import print_table, to_html

    result = compare(profile(resolve(a, config_file)), profile(resolve(b, config_file)))
    if html_file:
        Path(html_file).write_text(to_html(result), encoding="utf-8")
    if json_out:
        print_json(result.to_json())
    else:
        print_table(result, console)
        if html_file:
            console.print(f"HTML: {html_file}", highlight=False)
    if result.findings:
        raise typer.Exit(EXIT_FAILED)


# --- why -------------------------------------------------------------------------------------


def why(
    target: str = typer.Argument(..., help="An alert rule name (or id), or a service."),
    at: str | None = typer.Option(None, "--at", help="When: Unix seconds, RFC 3339, or a duration ago (default: now,"
                                  " or the alert's last firing)."),
    window: str = typer.Option("2m", "--window", help="How far back from --at the evidence is read."),
    config_file: str | None = ConfigOption,
    json_out: bool = JsonOption,
) -> None:
    """Rank the likely causes of an alert or of a service's trouble, each with a score and its evidence."""
    from devbox.why.gather import gather

    try:
        span = parse_duration(window)
    except typer.BadParameter as exc:
        fail(str(exc), EXIT_USAGE)
    try:
        report = gather(_platform(config_file), target, at=at, window=span)
    except (LookupError, ValueError) as exc:
        fail(str(exc), EXIT_USAGE)
    if json_out:
        print_json(report)
        return
    console.print(report["headline"], highlight=False)
    if not report["suspects"]:
        console.print("no suspect: nothing on the failing path changed or stands out in the window")
    for i, s in enumerate(report["suspects"], 1):
        console.print(f"{i:>2}. [bold]{s['score']:>5.2f}[/]  {s['subject']:<28} {s['reason']}", highlight=False)
    for line in report.get("notes", []):
        err_console.print(f"[dim]{line}[/]", highlight=False)
