"""``devbox explain request|service`` and ``devbox tour``: learning the platform on the running example."""

from __future__ import annotations

from typing import Any

import typer

from devbox.cli.common import EXIT_FAILED, Api, ConfigOption, JsonOption, console, print_json
from devbox.learn.explain import explain_request, explain_service
from devbox.learn.reader import Reader


def register(app: typer.Typer) -> None:
    explain = typer.Typer(help="Explain a request or a service in plain sentences.", no_args_is_help=True)
    explain.command("request")(request)
    explain.command("service")(service)
    app.add_typer(explain, name="explain")
    app.command("tour")(tour)


def _print(story: dict[str, Any], json_out: bool) -> None:
    if json_out:
        print_json(story)
        return
    for sentence in story["sentences"]:
        style = "bold red" if sentence.startswith("Root cause") else ""
        console.print(sentence, style=style, highlight=False, soft_wrap=True)


def request(
    trace_id: str = typer.Argument(..., help="Trace id (from `devbox traces ls`)."),
    config_file: str | None = ConfigOption,
    json_out: bool = JsonOption,
) -> None:
    """One request's path: which instance each hop went to and why, how long each took, what failed."""
    _print(explain_request(Reader(Api(config_file)), trace_id), json_out)


def service(
    name: str = typer.Argument(..., help="Service name."),
    config_file: str | None = ConfigOption,
    json_out: bool = JsonOption,
) -> None:
    """A service: what it is, who calls it and whom it calls, instances, indicators, alert rules, deploys."""
    _print(explain_service(Reader(Api(config_file, timeout=60)), name), json_out)


def tour(
    auto: bool = typer.Option(False, "--auto", help="Do every step yourself (for CI): act, then check."),
    step: int = typer.Option(1, "--step", min=1, help="Start at this step."),
    timeout: float = typer.Option(60.0, "--timeout", help="Seconds each check waits for the platform."),
    config_file: str | None = ConfigOption,
    json_out: bool = JsonOption,
) -> None:
    """A guided walk through the running example: each step explains, asks you to act, checks it happened."""
    from devbox.learn.tour import Tour

    result = Tour(Reader(Api(config_file, timeout=60)), auto=auto, timeout=timeout, out=console).run(start=step)
    if json_out:
        print_json(result)
    if not result["passed"]:
        raise typer.Exit(EXIT_FAILED)
