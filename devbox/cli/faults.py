"""``devbox faults add|ls|rm``: inject latency, errors and aborts into a service's inbound calls, or kill
an instance (``faults kill``), on a running devbox (needs ``faults: {enabled: true}`` for rules)."""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table

from devbox.cli.common import Api, ConfigOption, JsonOption, console, print_json, whole

faults_app = typer.Typer(help="Fault injection: latency, errors, aborts, killed instances.", no_args_is_help=True)


@faults_app.command("add")
def add(
    service: str = typer.Argument(..., help="Callee whose inbound calls are affected."),
    latency: float = typer.Option(0, "--latency", help="Milliseconds added to every call."),
    errors: float = typer.Option(0, "--errors", help="Fraction of calls answered with --status (0-1)."),
    status: int = typer.Option(503, "--status", help="Status of the injected errors."),
    abort: float = typer.Option(0, "--abort", help="Fraction of connections reset (0-1)."),
    caller: str | None = typer.Option(None, "--caller", help="Only calls from this service."),
    instance: str | None = typer.Option(None, "--instance", help="Only calls to this instance (users-2, or its "
                                        "naming id): one bad instance among healthy ones."),
    path: str | None = typer.Option(None, "--path", help="Only paths starting with this."),
    config_file: str | None = ConfigOption,
    as_json: bool = JsonOption,
) -> None:
    """Add a fault rule."""
    body: dict[str, Any] = {"service": service, "latency_ms": latency, "error_rate": errors, "status": status,
                            "abort_rate": abort}
    body.update({k: v for k, v in (("caller", caller), ("instance", instance), ("path", path)) if v})
    rule = Api(config_file).post("/api/faults", json=body)
    print_json(rule) if as_json else console.print(f"fault {rule['id']} added", highlight=False)


@faults_app.command("ls")
def ls(config_file: str | None = ConfigOption, as_json: bool = JsonOption) -> None:
    """List the fault rules and their hits."""
    data = Api(config_file).get("/api/faults")
    if as_json:
        print_json(data)
        return
    if not data["enabled"]:
        console.print("faults are disabled in this project (faults.enabled is false)")
    table = Table(whole("id", (f["id"] for f in data["faults"])), "service", "instance", "caller", "latency", "errors",
                  "abort", "hits", header_style="bold")
    for f in data["faults"]:
        table.add_row(f["id"], f["service"], f.get("instance") or "*", f["caller"] or "*", f"{f['latency_ms']:g} ms",
                      f"{f['error_rate']:.0%} → {f['status']}", f"{f['abort_rate']:.0%}", str(f["stats"]["hits"]))
    console.print(table)


@faults_app.command("rm")
def rm(rule: str = typer.Argument(..., help="Rule id, or `all`."), config_file: str | None = ConfigOption) -> None:
    """Remove one fault rule (or all of them)."""
    api = Api(config_file)
    if rule == "all":
        console.print(f"removed {api.delete('/api/faults')['removed']} fault(s)")
    else:
        api.delete(f"/api/faults/{rule}")
        console.print(f"removed {rule}")


@faults_app.command("kill")
def kill(service: str = typer.Argument(...), instance: str = typer.Argument(..., help="e.g. orders-2"),
         config_file: str | None = ConfigOption) -> None:
    """SIGKILL an instance, as a crash would (its restart policy then applies)."""
    inst = Api(config_file).post(f"/api/deploy/services/{service}/instances/{instance}/kill")
    console.print(f"killed {inst['name']} (pid {inst['pid']})", highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(faults_app, name="faults")
