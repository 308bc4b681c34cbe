"""`devbox status`: what the running platform says about itself and its services.

Kept apart from :mod:`devbox.cli.project` and free of typer (whose import brings pydantic), so
that :func:`devbox.cli.main` can run it without building the typer app: a read-only command that
answers within ``devbox status <= 0.3 s`` (issue 15). ``project.status`` is the same command as
typer registers it (help, flags).
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from rich.markup import escape

from devbox.cli.common import EXIT_FAILED, Api, console, err_console, exit_with, print_json

if TYPE_CHECKING:
    from rich.table import Table

STATE_STYLE = {
    "ready": "green", "starting": "yellow", "pending": "dim", "building": "yellow", "unhealthy": "red",
    "backoff": "yellow", "crashloop": "bold red", "failed": "bold red", "stopping": "dim", "stopped": "dim",
}


def show_status(config_file: str | None = None, as_json: bool = False) -> None:
    """Services, instances, ports, health and restarts of the running devbox."""
    api = Api(config_file)
    platform = api.get("/api/platform")
    components = platform.get("components", {})
    deployed = api.get("/api/deploy/services") if "deploy" in components else None
    declared = {d["service"] for d in (deployed or {}).get("services", [])}
    strangers = _unknown_senders(api, declared) if deployed is not None and "tracing" in components else []
    if as_json:
        print_json({"platform": platform, **(deployed or {"services": [], "phase": {}, "errors": []}),
                    "unknown_senders": strangers})
        return
    listeners = ", ".join(f"{n} {v['port']}" for n, v in platform.get("listeners", {}).items())
    console.print(f"[bold]{platform.get('project')}[/] devbox {platform.get('version')} — {listeners}",
                  highlight=False, soft_wrap=True)
    if not deployed or not deployed.get("services"):
        console.print("no services deployed" + (" yet" if deployed and deployed.get("deploying") else ""))
    else:
        width = _width()
        console.width = width  # print(width=...) alone is capped at the console's own width (80 on a pipe)
        console.print(_status_table(deployed["services"], time.time(), width))
    if strangers:
        console.print(f"[yellow]spans also arrive from services not in devbox.yaml:[/] {', '.join(strangers)} "
                      "[dim](another tool exporting to this devbox's ports? they are kept apart from the project)[/]",
                      highlight=False, soft_wrap=True)
    for error in (deployed or {}).get("errors", []):
        err_console.print(f"[bold red]error:[/] {escape(error)}", highlight=False, soft_wrap=True)
    bad = [i for d in (deployed or {}).get("services", []) for i in d["instances"]
           if i["state"] in ("failed", "crashloop")]
    if bad or (deployed or {}).get("errors"):
        raise exit_with(EXIT_FAILED)


#: Status columns, most important first: when the terminal is too narrow the last ones are dropped
#: (whole columns, never a clipped service name).
STATUS_COLUMNS = ("service", "instance", "state", "port", "health", "restarts", "pid", "uptime", "id")


def _width() -> int:
    """The terminal's width, or COLUMNS; a pipe with neither gets every column."""
    if console.is_terminal or os.environ.get("COLUMNS"):
        return console.width
    return 200


def _status_rows(services: list[dict[str, Any]], now: float) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for dep in services:
        label = dep["service"] if dep["group"] == "default" else f"{dep['service']}@{dep['group']}"
        label += f" :{dep['front_port']}" if dep.get("front_port") and dep["group"] == "default" else ""  # entry
        if not dep["instances"]:
            rows.append({"service": label, "instance": "-", "state": "scaled to 0"})
        for inst in dep["instances"]:
            rows.append({
                "service": label, "instance": inst["name"], "state": inst["state"],
                "health": ("healthy" if inst["healthy"] else "unhealthy") if inst["pid"] else "",
                "port": str(inst["port"]), "pid": str(inst["pid"] or ""), "restarts": str(inst["restarts"]),
                "uptime": f"{now - inst['started_at']:.0f}s" if inst["started_at"] and inst["pid"] else "",
                "id": (inst["id"] or "")[:12],
            })
    return rows


def _status_table(services: list[dict[str, Any]], now: float, width: int) -> Table:
    from rich.table import Table  # only when there is a table to show (~15 ms of a status without services)
    from rich.text import Text

    rows = _status_rows(services, now)
    columns = list(STATUS_COLUMNS)

    def needed(cols: list[str]) -> int:  # rich's default box: one border + a space each side per column
        return 1 + sum(3 + max(len(c), *(len(r.get(c, "")) for r in rows)) for c in cols)

    while len(columns) > 3 and needed(columns) > width:
        columns.pop()
    table = Table(header_style="bold")
    for column in columns:
        # names are never clipped with "…": a cell that still does not fit folds onto a second line
        table.add_column(column, overflow="fold", no_wrap=column in ("service", "instance"))
    for row in rows:
        cells: list[Any] = []
        for column in columns:
            value = row.get(column, "")
            if column == "state":
                cells.append(Text(value, style=STATE_STYLE.get(value, "")))
            elif column == "health":
                cells.append(Text(value, style="green" if value == "healthy" else "red"))
            else:
                cells.append(value)
        table.add_row(*cells)
    return table


def _unknown_senders(api: Api, declared: set[str]) -> list[str]:
    """Service names that sent spans (still stored) but are not services of devbox.yaml. The
    dashboard's rule: a devbox.yaml that declares no services is the backend for services started
    elsewhere, so every sender is the project's and none is unknown."""
    if not declared:
        return []
    senders = api.get("/api/traces/services").get("services", [])
    return sorted(s for s in senders if s not in declared)
