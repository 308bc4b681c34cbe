"""The ``devbox`` command line (typer + rich).

Each command module exposes ``register(app)``; this package only assembles them, so a new
command group is one module and one line in ``MODULES``.
"""

from __future__ import annotations

import importlib
import logging
import os

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
)

LOG = logging.getLogger(__name__)


def build_app() -> typer.Typer:
    app = typer.Typer(
        name="devbox",
        help="A platform-in-a-box: naming, tracing, metrics and alerting, deploy — on one laptop.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )
    for name in MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(app)
    return app


def main() -> None:
    # grpc core logs an INFO line for every fork it sees (deploy forks to spawn instances); that is
    # noise in a terminal. Set before grpc is imported; a user's own GRPC_VERBOSITY wins.
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    build_app()()
