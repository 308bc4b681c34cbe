"""``devbox alerts``: current alerts, rules, history, backtest, silences (the devbox alert API)."""

from __future__ import annotations

import getpass
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from devbox.cli.common import EXIT_USAGE, Api, ConfigOption, JsonOption, ago, console, fail, print_json
from devbox.yamlpos import plain


def register(app: typer.Typer) -> None:
    alerts = typer.Typer(help="Alerts, rules, history, backtests and silences.", no_args_is_help=True)
    for name, command in (("ls", ls), ("rules", rules), ("history", history), ("test", test)):
        alerts.command(name)(command)
    silence = typer.Typer(help="Silences: mute notifications of matching alerts for a while.", no_args_is_help=True)
    for name, command in (("add", silence_add), ("ls", silence_ls), ("expire", silence_expire)):
        silence.command(name)(command)
    alerts.add_typer(silence, name="silence")
    app.add_typer(alerts, name="alerts")


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")



def _labels(labels: dict[str, str], skip: tuple[str, ...] = ("alertname",)) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(labels.items()) if k not in skip)


def _value(v: Any) -> str:
    if v is None:
        return "-"
    return f"{v:.4g}" if isinstance(v, int | float) else str(v)


def ls(
    state: str = typer.Option("active", help="active (pending+firing), firing, pending or all."),
    config_file: str | None = ConfigOption,
    json_out: bool = JsonOption,
) -> None:
    """Alerts that are pending or firing now."""
    data = Api(config_file).get("/api/alerts", params={"state": state})
    if json_out:
        print_json(data)
        return
    alerts = data["alerts"]
    if not alerts:
        console.print("no alerts")
        return
    table = Table("state", "alert", "labels", "value", "since", "silenced", "summary")
    for a in alerts:
        color = "red" if a["state"] == "firing" else "yellow"
        table.add_row(
            f"[{color}]{a['state']}[/]",
            a["alertname"],
            _labels(a["labels"]),
            _value(a["value"]),
            ago(a["fired_at"] or a["active_at"]),
            "yes" if a["silenced_by"] else "",
            a["annotations"].get("summary", ""),
        )
    console.print(table)


def rules(
    export: bool = typer.Option(
        False, "--export", help="Print every loaded rule as one Prometheus rule file (for a real Prometheus)."
    ),
    config_file: str | None = ConfigOption,
    json_out: bool = JsonOption,
) -> None:
    """Loaded rules with their state and health, and rules that did not load (file:line: reason)."""
    if export:
        sys.stdout.write(Api(config_file).get("/api/alerts/rules/export"))
        return
    data = Api(config_file).get("/api/alerts/rules")
    if json_out:
        print_json(data)
        return
    table = Table("rule", "expr", "for", "state", "health", "source")
    for r in data["rules"]:
        health = r["health"] if r["health"] != "err" else f"[red]err: {r['last_error']}[/]"
        table.add_row(r["id"], r["expr"], f"{r['for']:g}s", r["state"], health, r["source"])
    console.print(table)
    for problem in data["errors"]:
        console.print(f"[bold red]rule error:[/] {problem}", highlight=False)
    for warning in data["warnings"]:
        console.print(f"[yellow]warning:[/] {warning}", highlight=False)


def history(
    rule: str | None = typer.Option(None, "--rule", help="Rule id (group/name) or alert name."),
    service: str | None = typer.Option(None, "--service", help="Only alerts of this service."),
    since: str = typer.Option("1h", "--since", help="How far back: a duration (1h, 30m) or a time."),
    until: str | None = typer.Option(None, "--until", help="Up to this time (default now)."),
    limit: int = typer.Option(200, "--limit", min=1, max=10000),
    config_file: str | None = ConfigOption,
    json_out: bool = JsonOption,
) -> None:
    """Every transition (pending, firing, resolved), its value and whether a silence muted it."""
    params: dict[str, Any] = {"since": since, "limit": limit}
    for key, value in (("rule", rule), ("service", service), ("until", until)):
        if value:
            params[key] = value
    data = Api(config_file).get("/api/alerts/history", params=params)
    if json_out:
        print_json(data)
        return
    rows = data["transitions"]
    if not rows:
        console.print("no transitions in that window")
        return
    table = Table("time", "alert", "labels", "transition", "value", "notification")
    for t in rows:
        note = "sent" if t["notified"] else "silenced" if t["silenced"] else "-"
        table.add_row(
            _when(t["at"]), t["alertname"], _labels(t["labels"]), f"{t['from']} → {t['to']}", _value(t["value"]), note
        )
    console.print(table)


def test(
    rule: str | None = typer.Argument(None, help="A loaded rule (group/name or name); or use --expr / --rule-file."),
    since: str = typer.Option("1h", "--since", help="Replay this far back."),
    step: str | None = typer.Option(None, "--step", help="Evaluation step (default: the rule interval)."),
    expr: str | None = typer.Option(None, "--expr", help="Test this PromQL instead of a loaded rule."),
    for_: str = typer.Option("0s", "--for", help="With --expr: how long it must hold before firing."),
    rule_file: Path | None = typer.Option(
        None, "--rule-file", help="A rule file: test its first rule (or RULE in it)."
    ),
    config_file: str | None = ConfigOption,
    json_out: bool = JsonOption,
) -> None:
    """Replay a rule over the stored data: when it would have fired and resolved, before it is saved."""
    body: dict[str, Any] = {"since": since}
    if step:
        body["step"] = step
    if expr:
        body["rule"] = {"alert": rule or "Test", "expr": expr, "for": for_}
    elif rule_file is not None:
        body["rule"] = _rule_from_file(rule_file, rule)
    elif rule:
        body["id"] = rule
    else:
        fail("name a loaded rule, or give --expr or --rule-file", EXIT_USAGE)
    data = Api(config_file, timeout=60).post("/api/alerts/rules/test", json=body)
    if json_out:
        print_json(data)
        return
    r = data["rule"]
    console.print(
        f"[bold]{r['id']}[/]: {r['expr']} for {r['for']:g}s — {data['evaluations']} evaluations "
        f"from {_when(data['start'])} to {_when(data['end'])} every {data['step']:g}s",
        highlight=False,
    )
    if not data["episodes"]:
        console.print("[green]would not have fired or been pending in this window[/]")
        return
    table = Table("labels", "pending at", "fired at", "resolved at", "min", "max")
    for e in data["episodes"]:
        fired = f"[red]{_when(e['fired_at'])}[/]" if e["fired_at"] else "never (not held for long enough)"
        table.add_row(
            _labels(e["labels"]),
            _when(e["pending_at"]),
            fired,
            _when(e["resolved_at"]) if e["resolved_at"] else "still active",
            _value(e["min_value"]),
            _value(e["max_value"]),
        )
    console.print(table)
    console.print("[red]would have fired[/]" if data["would_fire"] else "[yellow]pending only, never fired[/]")


def _rule_from_file(path: Path, name: str | None) -> dict[str, Any]:
    from devbox.mocks.alerting.rules import parse_yaml

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        fail(f"{path}: {exc}", EXIT_USAGE)
    tree, error = parse_yaml(text, str(path))
    if error:
        fail(error, EXIT_USAGE)
    data = tree.get("alerting", tree)
    candidates: list[dict[str, Any]] = []
    for group in data.get("groups") or []:
        for item in group.get("rules") or []:
            if item.get("alert"):
                candidates.append({**plain(item), "group": group.get("name", "devbox")})
    candidates.extend(plain(item) for item in data.get("rules") or [])
    for item in candidates:
        if name is None or name in (item.get("alert"), item.get("name")):
            return item
    fail(f"{path}: no rule {name!r} in it" if name else f"{path}: no alert rules in it", EXIT_USAGE)


def silence_add(
    matchers: list[str] = typer.Argument(..., help='Matchers: alertname=HighErrors service=~"orders|pay".'),
    duration: str = typer.Option("1h", "--duration", "-d", help="How long the silence lasts."),
    start: str | None = typer.Option(None, "--start", help="When it starts (default now)."),
    comment: str = typer.Option("", "--comment", "-c"),
    author: str | None = typer.Option(None, "--author", "-a", help="Default: your user name."),
    config_file: str | None = ConfigOption,
    json_out: bool = JsonOption,
) -> None:
    """Mute notifications of the alerts matching all MATCHERS."""
    body: dict[str, Any] = {
        "matchers": matchers,
        "duration": duration,
        "comment": comment,
        "created_by": author or _user(),
    }
    if start:
        body["starts_at"] = start
    data = Api(config_file).post("/api/alerts/silences", json=body)
    if json_out:
        print_json(data)
        return
    console.print(data["id"])


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "devbox"


def silence_ls(
    all_: bool = typer.Option(False, "--all", help="Include expired silences."),
    config_file: str | None = ConfigOption,
    json_out: bool = JsonOption,
) -> None:
    """Silences (active and pending; --all adds expired ones)."""
    data = Api(config_file).get("/api/alerts/silences")
    silences = [s for s in data["silences"] if all_ or s["state"] != "expired"]
    if json_out:
        print_json({"silences": silences})
        return
    if not silences:
        console.print("no silences")
        return
    table = Table("id", "state", "matchers", "starts", "ends", "by", "comment")
    for s in silences:
        table.add_row(
            s["id"],
            s["state"],
            s["matchers_text"],
            _when(s["starts_at"]),
            _when(s["ends_at"]),
            s["created_by"],
            s["comment"],
        )
    console.print(table)


def silence_expire(
    ids: list[str] = typer.Argument(..., help="Silence ids (from `devbox alerts silence ls`)."),
    config_file: str | None = ConfigOption,
    json_out: bool = JsonOption,
) -> None:
    """End silences now."""
    api = Api(config_file)
    done = [api.delete(f"/api/alerts/silences/{silence_id}") for silence_id in ids]
    if json_out:
        print_json({"expired": done})
        return
    for s in done:
        console.print(f"expired {s['id']}")
