"""``devbox release`` (gray release in batches) and ``devbox url SERVICE`` (a service's stable entry).

``devbox release SERVICE --version v2 --batches 10,50,100 --pause 30s --gate RULE`` starts a release in
the platform and follows it; interrupting the command leaves the release running (``devbox release
status`` shows it). ``devbox release status|history|pause|resume|rollback`` act on the current one.
A service named like one of those words is released with ``devbox release -- NAME``.
"""

from __future__ import annotations

import re
import time
from typing import Any

import typer

from devbox.cli.common import Api, ConfigOption, JsonOption, console, fail, print_json

ACTIONS = ("status", "history", "pause", "resume", "rollback")
FINAL = ("succeeded", "rolled_back", "failed", "interrupted")


def parse_duration(text: str) -> float:
    """``30s``, ``2m``, ``500ms``, ``1h`` or plain seconds."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(ms|s|m|h)?\s*", text)
    if not m:
        raise typer.BadParameter(f"{text!r} is not a duration such as 30s, 2m or 500ms")
    return float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]


def _pairs(items: list[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"{what} {item!r} must be KEY=VALUE")
        out[key] = value
    return out


def show(rel: dict[str, Any], *, traffic: bool = False, steps_from: int | None = None) -> None:
    """A release: its state and what it is doing (the state once), its gates, its recent steps —
    those from ``steps_from`` when the earlier ones were printed as they happened. ``traffic``: how
    traffic is split (a paragraph: once per release command, not for pause, resume, rollback)."""
    state, explain = rel["state"], rel["explain"]
    said = explain if explain.startswith(state) else f"{state}: {explain}"  # 'succeeded: …' says it already
    console.print(f"[bold]{rel['service']} {rel['version']}[/] — {said}", highlight=False)
    if traffic:
        console.print(f"traffic by {rel['traffic']['method']}: {rel['traffic']['why']}", highlight=False)
    failed = rel.get("gate_failed") or {}
    for gate in rel.get("last_gate") or []:
        if failed and gate["gate"] == failed.get("gate"):
            continue  # said once, below
        verdict = {True: "[green]ok[/]", False: "[red]FAILED[/]", None: "[yellow]not judged[/]"}[gate["ok"]]
        message = gate.get("message") or ""
        console.print(f"  gate {gate['gate']}: {verdict}{' ' + message if message else ''}", highlight=False)
    if failed:
        console.print(f"[red]gate {failed['gate']} failed:[/] {failed.get('message', '')}", highlight=False)
    if rel.get("switch_seconds"):
        console.print("batch switch: " + ", ".join(f"{s * 1000:.0f} ms" for s in rel["switch_seconds"]))
    steps = rel.get("steps", [])
    for step in steps[steps_from:] if steps_from is not None else steps[-8:]:
        console.print(f"  {time.strftime('%H:%M:%S', time.localtime(step['ts']))} {step['kind']}: {step['message']}",
                      highlight=False)


def release(
    target: str = typer.Argument(..., help=f"The service to release, or one of: {', '.join(ACTIONS)}."),
    version: str = typer.Option("v2", "--version", help="Version tag of the new instances."),
    batches: str = typer.Option("10,50,100", "--batches", help="Percent of traffic per batch, rising to 100."),
    pause: str = typer.Option("30s", "--pause", help="How long each batch is watched by the gates."),
    gate: list[str] = typer.Option([], "--gate", help="Alert rule name, success_rate<99.5 or p99>1.2x."),
    in_place: bool = typer.Option(False, "--in-place", help="Replace instance by instance, no extra capacity."),
    env: list[str] = typer.Option([], "--env", help="KEY=VALUE environment of the new version (repeatable)."),
    tag: list[str] = typer.Option([], "--tag", help="KEY=VALUE tag of the new instances (repeatable)."),
    detach: bool = typer.Option(False, "--detach", "-d", help="Start it and return."),
    config_file: str | None = ConfigOption,
    as_json: bool = JsonOption,
) -> None:
    """Gray release in batches, gated, with automatic rollback; or act on the current release."""
    api = Api(config_file, timeout=60)
    if target in ACTIONS:
        if target == "history":
            data = api.get("/api/deploy/releases")["history"]
            if as_json:
                print_json(data)
                return
            for rel in data:
                console.print(f"{rel['id']}: {rel['state']} — {rel['reason'] or rel['explain']}", highlight=False)
            if not data:
                console.print("no release yet")
            return
        path = "/api/deploy/releases/current" + ("" if target == "status" else f"/{target}")
        rel = api.get(path) if target == "status" else api.post(path)
        print_json(rel) if as_json else show(rel, traffic=target == "status")
        return
    try:
        shares = [int(b) for b in batches.split(",") if b.strip()]
    except ValueError:
        fail(f"--batches {batches!r} must be percentages such as 10,50,100", 2)
    body = {"service": target, "version": version, "batches": shares, "pause": parse_duration(pause),
            "gates": gate, "in_place": in_place, "env": _pairs(env, "--env"), "tags": _pairs(tag, "--tag")}
    rel = api.post("/api/deploy/releases", json=body)
    if detach:
        print_json(rel) if as_json else show(rel, traffic=True)
        return
    seen = 0
    while rel["state"] not in FINAL:
        if not as_json:
            for step in rel["steps"][seen:]:
                console.print(f"{step['kind']}: {step['message']}", highlight=False)
            seen = len(rel["steps"])
        time.sleep(0.5)
        rel = api.get("/api/deploy/releases/current")
    if as_json:
        print_json(rel)
    else:
        show(rel, traffic=True, steps_from=seen)  # the steps before were printed as they happened
    if rel["state"] != "succeeded":
        raise typer.Exit(1)


def url(service: str = typer.Argument(..., help="A service of devbox.yaml."),
        config_file: str | None = ConfigOption) -> None:
    """The stable address of a service (its entry port): unchanged by reloads, restarts and releases."""
    deployed = Api(config_file).get("/api/deploy/services")["services"]
    found = [d for d in deployed if d["service"] == service and d.get("front_port")]
    if not found:
        names = sorted({d["service"] for d in deployed})
        fail(f"no entry port for {service!r} (services: {', '.join(names) or 'none'})")
    print(found[0]["url"])


def register(app: typer.Typer) -> None:
    app.command()(release)
    app.command()(url)
