"""``devbox naming``: services, instances, isolation, routing rules and routing explanations.

Every command talks to the running platform's ``/api/naming`` API and takes ``--json``.
INSTANCE arguments accept an instance id, a unique id prefix (6+ characters) or ``host:port``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
import yaml
from rich.table import Table

from devbox.cli.common import EXIT_USAGE, Api, ConfigOption, JsonOption, ago, console, fail, print_json, whole
from devbox.httpcore_loader import load_httpx

naming_app = typer.Typer(help="Naming (Polaris): services, instances, routing rules.", no_args_is_help=True)
rules_app = typer.Typer(help="Routing rules.", no_args_is_help=True)
naming_app.add_typer(rules_app, name="rules")

NamespaceOption = typer.Option("default", "--namespace", "-n", help="Namespace.")


def register(app: typer.Typer) -> None:
    app.add_typer(naming_app, name="naming")



def _meta(metadata: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(metadata.items()))


def _health(instance: dict[str, Any]) -> str:
    if instance["isolated"]:
        return "[yellow]isolated[/]"
    return "[green]healthy[/]" if instance["healthy"] else "[red]unhealthy[/]"


@naming_app.command("ls")
def ls(
    namespace: str | None = typer.Option(None, "--namespace", "-n", help="Only this namespace."),
    config_file: str | None = ConfigOption,
    as_json: bool = JsonOption,
) -> None:
    """List services with their instance counts."""
    services = Api(config_file).get("/api/naming/services", params={"namespace": namespace} if namespace else None)
    if as_json:
        print_json(services)
        return
    if not services:
        console.print("no services registered")
        return
    table = Table("namespace", "service", "instances", "available", "revision", "metadata")
    for svc in services:
        table.add_row(
            svc["namespace"], svc["name"], str(svc["instances"]), str(svc["healthy"]), svc["revision"][:8],
            _meta(svc["metadata"]),
        )
    console.print(table)


@naming_app.command("show")
def show(
    service: str = typer.Argument(..., help="Service name."),
    namespace: str = NamespaceOption,
    config_file: str | None = ConfigOption,
    as_json: bool = JsonOption,
) -> None:
    """A service: its instances (health, weight, metadata), routing rules and circuit breaker."""
    data = Api(config_file).get(f"/api/naming/services/{namespace}/{service}")
    if as_json:
        print_json(data)
        return
    console.print(f"[bold]{data['namespace']}/{data['name']}[/]  revision {data['revision'][:12]}"
                  f"{'  (token required)' if data['require_token'] else ''}")
    addresses = [f"{inst['host']}:{inst['port']}" for inst in data["instances"]]
    table = Table("id", whole("address", addresses), "state", "weight", "metadata", "ttl", "last heartbeat")
    for inst in data["instances"]:
        table.add_row(
            inst["id"][:12], f"{inst['host']}:{inst['port']}", _health(inst), str(inst["weight"]),
            _meta(inst["metadata"]), f"{inst['ttl']:g}s" if inst["health_check"] else "-",
            ago(inst["last_heartbeat"], never="never") if inst["health_check"] else "-",
        )
    console.print(table if data["instances"] else "no instances")
    if data["routing"]:
        console.print("[bold]routing rules[/]")
        for rule in data["routing"]:
            console.print(f"  {_describe_rule(rule)}")
    if data["circuit_breaker"]:
        console.print(f"[bold]circuit breaker[/] {json.dumps(data['circuit_breaker'])}")


def _describe_rule(rule: dict[str, Any]) -> str:
    def match(m: dict[str, Any]) -> str:
        value = f"${m['value']}" if m.get("value_type") == "PARAMETER" else m.get("value", "")
        return value if m.get("type", "EXACT") == "EXACT" else f"{m['type']} {value}"

    sources = []
    for src in rule.get("sources") or []:
        args = [f"{a['key'] or a['type']}={match(a['value'])}" for a in src.get("arguments", [])]
        who = "" if src.get("service", "*") == "*" else f"from {src['service']} "
        sources.append(who + (" & ".join(args) or "any"))
    dests = []
    for dest in rule.get("destinations") or []:
        labels = ",".join(f"{k}={match(m)}" for k, m in sorted(dest.get("labels", {}).items())) or "*"
        dests.append(f"p{dest.get('priority', 0)}:{labels}")
    state = "" if rule.get("enable", True) else " [disabled]"
    return (f"{rule['name']}{state} ({rule['service']}) when {' | '.join(sources) or 'any'} "
            f"-> {' then '.join(dests)}; failover {rule.get('failover', 'all')}")


def _set_isolated(instance: str, isolated: bool, config_file: str | None, as_json: bool) -> None:
    data = Api(config_file).request(
        "PUT", f"/api/naming/instances/{instance}/isolate", json={"isolated": isolated}
    )
    if as_json:
        print_json(data)
        return
    state = "isolated" if isolated else "back in rotation"
    console.print(f"{data['service']} {data['host']}:{data['port']} ({data['id'][:12]}) {state}")


@naming_app.command("isolate")
def isolate(
    instance: str = typer.Argument(..., help="Instance id, id prefix or host:port."),
    config_file: str | None = ConfigOption,
    as_json: bool = JsonOption,
) -> None:
    """Take an instance out of rotation (it stays registered)."""
    _set_isolated(instance, True, config_file, as_json)


@naming_app.command("unisolate")
def unisolate(
    instance: str = typer.Argument(..., help="Instance id, id prefix or host:port."),
    config_file: str | None = ConfigOption,
    as_json: bool = JsonOption,
) -> None:
    """Put an isolated instance back in rotation."""
    _set_isolated(instance, False, config_file, as_json)


@naming_app.command("explain")
def explain(
    service: str = typer.Argument(..., help="Callee service."),
    label: list[str] = typer.Option([], "--label", "-l", help="Request label k=v (repeatable), e.g. env=feature-x."),
    caller: str = typer.Option("", "--caller", help="Caller service name, for rules on callers."),
    namespace: str = NamespaceOption,
    config_file: str | None = ConfigOption,
    as_json: bool = JsonOption,
) -> None:
    """Explain how a request with these labels is routed: rule, filters, candidates, pick."""
    labels: dict[str, str] = {}
    for item in label:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"--label {item!r} must be key=value", EXIT_USAGE)
        labels[key] = value
    data = Api(config_file).post(
        "/api/naming/explain",
        json={"namespace": namespace, "service": service, "labels": labels, "caller_service": caller},
    )
    if as_json:
        print_json(data)
        return
    if not data["known"]:
        console.print(f"[yellow]service {namespace}/{service} is not registered[/]")
    console.print(f"[bold]{namespace}/{service}[/] labels {_meta(labels) or '(none)'}")
    console.print(f"rule: {data['rule'] or '(none matched)'}  — {data['reason']}")
    for step in data["filters"]:
        removed = ", ".join(step["removed"]) or "nothing"
        note = f"  ({step['note']})" if step.get("note") else ""
        console.print(f"  {step['filter']:<16} removed {removed}{note}")
    console.print(f"candidates: {', '.join(data['candidates']) or 'none'}")
    pick = data.get("pick")
    console.print(f"pick ({pick['balancer']}): {pick['instance']}" if pick else "[red]no instance to pick[/]")


@rules_app.command("ls")
def rules_ls(
    service: str | None = typer.Argument(None, help="Only rules applying to this service."),
    namespace: str | None = typer.Option(None, "--namespace", "-n"),
    config_file: str | None = ConfigOption,
    as_json: bool = JsonOption,
) -> None:
    """List routing rules (with SERVICE: its own and the namespace-wide ones)."""
    params = {k: v for k, v in {"namespace": namespace, "service": service}.items() if v}
    rules = Api(config_file).get("/api/naming/rules", params=params)
    if as_json:
        print_json(rules)
        return
    if not rules:
        console.print("no routing rules")
        return
    for rule in rules:
        console.print(f"{rule['namespace']}: {_describe_rule(rule)}")


@rules_app.command("set")
def rules_set(
    file: Path = typer.Argument(..., help="YAML or JSON file: one rule or a list of rules.", exists=True),
    config_file: str | None = ConfigOption,
    as_json: bool = JsonOption,
) -> None:
    """Create or replace rules from a file (each keyed by namespace, service, name)."""
    try:
        loaded = yaml.safe_load(file.read_text())
    except (yaml.YAMLError, OSError) as exc:
        fail(f"{file}: {exc}", EXIT_USAGE)
    rules = loaded if isinstance(loaded, list) else [loaded]
    if not rules or not all(isinstance(r, dict) for r in rules):
        fail(f"{file}: expected a rule object or a list of rule objects", EXIT_USAGE)
    api = Api(config_file)
    stored = [_post_rule(api, file, rule) for rule in rules]
    if as_json:
        print_json(stored)
        return
    for rule in stored:
        console.print(f"set {rule['namespace']}: {_describe_rule(rule)}")


def _post_rule(api: Api, file: Path, rule: dict[str, Any]) -> Any:
    """POST one rule; a refused rule fails with every validation reason (not just the first line)."""
    try:
        response = api.http.post("/api/naming/rules", json=rule)
    except load_httpx().TransportError:  # made by Api: loaded
        return api.post("/api/naming/rules", json=rule)  # reports "not reachable" the common way
    if response.status_code >= 400:
        try:
            body = response.json()
        except ValueError:
            body = {"reason": response.text}
        reasons = body.get("reasons") or [body.get("reason") or body.get("error") or str(body)]
        fail(f"{file}: rule {rule.get('name', '?')!r} refused: " + "; ".join(str(r) for r in reasons))
    return response.json()


@rules_app.command("rm")
def rules_rm(
    name: str = typer.Argument(..., help="Rule name."),
    service: str = typer.Option("*", "--service", "-s", help="Service the rule belongs to ('*': namespace-wide)."),
    namespace: str = NamespaceOption,
    config_file: str | None = ConfigOption,
) -> None:
    """Delete one routing rule."""
    Api(config_file).delete(f"/api/naming/rules/{namespace}/{service}/{name}")
    console.print(f"deleted rule {name} of {namespace}/{service}")
