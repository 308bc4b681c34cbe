"""Project commands: up, schema. (down, status, logs, init are added by the deploy work.)"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal

import typer

from devbox.cli.common import EXIT_USAGE, ConfigOption, config_or_exit, console, fail, print_json, runtime_path
from devbox.config import json_schema
from devbox.platform.platform import Platform, PortInUse


def register(app: typer.Typer) -> None:
    app.command()(up)
    app.command()(schema)


def up(config_file: str | None = ConfigOption) -> None:
    """Start the platform and the project's services in the foreground; Ctrl-C stops everything."""
    config = config_or_exit(config_file)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(_serve(config))
    except PortInUse as exc:
        fail(str(exc), EXIT_USAGE)


async def _serve(config) -> None:  # type: ignore[no-untyped-def]
    platform = Platform(config)
    await platform.start()
    path = runtime_path(config)
    path.write_text(
        json.dumps({"pid": os.getpid(), "api": platform.ctx.url("api"), "listeners": platform.addresses})
    )
    console.print(f"devbox up: {platform.ctx.url('api')}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await platform.stop()
    path.unlink(missing_ok=True)


def schema() -> None:
    """Print the JSON Schema of devbox.yaml, for editors."""
    print_json(json_schema())
