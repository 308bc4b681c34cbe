"""The ``devbox`` command line (typer + rich).

Each command module exposes ``register(app)``; this package only assembles them, so a new
command group is one module and one line in ``MODULES``. ``devbox status`` and ``devbox up`` with
their plain flags run without typer (see :data:`PLAIN`).
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import typer

MODULES = (
    "devbox.cli.project",  # up, down, status, logs, init, schema
    "devbox.cli.naming",  # naming ls|show|explain|isolate|unisolate
    "devbox.cli.traces",  # traces ls|show|why, topology
    "devbox.cli.metrics",  # metrics ls|query
    "devbox.cli.alerts",  # alerts ls|history|test|silence
    "devbox.cli.scenario",  # scenario run
    "devbox.cli.load",  # load [ramp|worker|ls|show], capacity
    "devbox.cli.learn",  # explain request|service, tour
    "devbox.cli.release",  # release SERVICE|status|history|pause|resume|rollback, url
    "devbox.cli.faults",  # faults add|ls|rm|kill
    "devbox.cli.evidence",  # snapshot save|load|ls|show, diff, why
    "devbox.cli.export",  # export compose|k8s
    "devbox.cli.docker",  # docker base
)

#: Which module registers each top-level command: `devbox status` imports project.py alone, not
#: every command's dependencies (tracing analysis, scenario engine, Locust glue), so that a command
#: that only reads from the API starts fast. A name missing here (help, a typo) builds everything.
COMMANDS = {
    **dict.fromkeys(("up", "down", "status", "logs", "init", "schema"), "devbox.cli.project"),
    "naming": "devbox.cli.naming",
    "traces": "devbox.cli.traces",
    "topology": "devbox.cli.traces",
    "metrics": "devbox.cli.metrics",
    "alerts": "devbox.cli.alerts",
    "scenario": "devbox.cli.scenario",
    "load": "devbox.cli.load",
    "capacity": "devbox.cli.load",
    **dict.fromkeys(("release", "url"), "devbox.cli.release"),
    "faults": "devbox.cli.faults",
    **dict.fromkeys(("snapshot", "diff", "why"), "devbox.cli.evidence"),
    "export": "devbox.cli.export",
    "docker": "devbox.cli.docker",
}

LOG = logging.getLogger(__name__)


def build_app(command: str | None = None) -> typer.Typer:
    """The CLI; with ``command`` (the first argument), only the module that registers it."""
    import typer

    app = typer.Typer(
        name="devbox",
        help="A platform-in-a-box: naming, tracing, metrics and alerting, deploy — on one laptop.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )
    only = COMMANDS.get(command or "")
    for name in (only,) if only else MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(app)
    return app


#: Commands that run without building the typer app when given only these flags: boolean flags and
#: options with a value, each to its keyword argument. typer imports pydantic (~0.1-0.2 s), most of
#: what was left of ``devbox status <= 0.3 s`` (issue 15); and ``up``'s process is the platform,
#: which then holds neither typer nor (without a terminal) rich: ~7 MB of an idle platform.
PLAIN: dict[str, tuple[str, dict[str, str], dict[str, str]]] = {
    "status": ("devbox.cli.status:show_status", {"--json": "as_json"},
               {"-f": "config_file", "--file": "config_file"}),
    "up": ("devbox.cli.serve:up", {"--no-reload": "no_reload", "-v": "verbose", "--verbose": "verbose"},
           {"-f": "config_file", "--file": "config_file", "--components": "components"}),
}


def fast_path(args: list[str]) -> Callable[[], None] | None:
    """The command to run without building the typer app, or None (typer runs it).

    Only a command of :data:`PLAIN` with the flags it lists there (``--opt VALUE`` or
    ``--opt=VALUE``). Anything else (``--help``, a typo, a missing value, ``up -d``) goes to typer,
    which explains it as before.
    """
    if not args or args[0] not in PLAIN:
        return None
    target, flags, options = PLAIN[args[0]]
    kwargs: dict[str, object] = {}
    rest = iter(args[1:])
    for arg in rest:
        name, eq, inline = arg.partition("=")
        if arg in flags:
            kwargs[flags[arg]] = True
        elif name in options and eq and name.startswith("--"):
            kwargs[options[name]] = inline
        elif arg in options:
            value = next(rest, None)
            if value is None or value.startswith("-"):
                return None
            kwargs[options[arg]] = value
        else:
            return None

    def run() -> None:
        module, _, function = target.partition(":")
        getattr(importlib.import_module(module), function)(**kwargs)

    return run


def main() -> None:
    # grpc core logs an INFO line for every fork it sees (deploy forks to spawn instances); that is
    # noise in a terminal. Set before grpc is imported; a user's own GRPC_VERBOSITY wins.
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    fast = fast_path(sys.argv[1:])
    if fast is not None:
        try:
            fast()
        except KeyboardInterrupt:  # Ctrl-C before `up` handles it itself: quiet, as a shell expects
            sys.exit(130)
        return
    command = sys.argv[1] if len(sys.argv) > 1 else None
    if command != "up":
        # httpx without its own command line (devbox.httpcore_loader), before a command's modules
        # import it plainly; not for `up`, whose process is the platform's: one without services
        # never needs an HTTP client (~5 MB and ~40 ms of its start)
        from devbox.httpcore_loader import load_httpx

        load_httpx()
    build_app(command)()
