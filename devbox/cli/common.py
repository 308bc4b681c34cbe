"""What every CLI command shares: finding the config and the running platform, output, errors.

Exit codes: 0 success, 1 the thing asked about is wrong (a failed check, a failed scenario),
2 usage or config error, 3 the platform is not running or not reachable.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

import httpx
import typer
from rich.console import Console

from devbox import envvars
from devbox.config import ConfigError, ProjectConfig, find_config, load_config

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NOT_RUNNING = 3

#: File in the state dir where a running platform writes its pid and listeners.
RUNTIME_FILE = "platform.json"

console = Console()
err_console = Console(stderr=True)

ConfigOption = typer.Option(None, "--file", "-f", help="Path of devbox.yaml (default: ./devbox.yaml).")
JsonOption = typer.Option(False, "--json", help="Print JSON for scripts instead of tables.")


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def config_or_exit(path: str | None) -> ProjectConfig:
    try:
        return load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            err_console.print(f"[bold red]config error:[/] {problem}", highlight=False)
        raise typer.Exit(EXIT_USAGE) from None


def runtime_path(config: ProjectConfig) -> Path:
    return config.state_path / RUNTIME_FILE


def read_runtime(config: ProjectConfig) -> dict[str, Any] | None:
    """The running platform's pid and listeners, or None when none is recorded or it died."""
    path = runtime_path(config)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    try:
        os.kill(int(data["pid"]), 0)
    except (OSError, KeyError, ValueError):
        return None
    return data


def api_url(config_path: str | None = None) -> str:
    """Base URL of the running platform's API: $DEVBOX_API, else the project's runtime file, else 7070."""
    if os.environ.get(envvars.DEVBOX_API):
        return os.environ[envvars.DEVBOX_API].rstrip("/")
    source = find_config(config_path)
    if source.exists():
        config = config_or_exit(config_path)
        runtime = read_runtime(config)
        if runtime:
            return str(runtime["api"]).rstrip("/")
        return f"http://127.0.0.1:{config.platform.ports.api}"
    return "http://127.0.0.1:7070"


class Api:
    """A small client of the devbox HTTP API that turns failures into CLI errors."""

    def __init__(self, config_path: str | None = None, *, timeout: float = 10.0) -> None:
        self.base = api_url(config_path)
        headers = {}
        if os.environ.get(envvars.DEVBOX_TOKEN):
            headers["Authorization"] = f"Bearer {os.environ[envvars.DEVBOX_TOKEN]}"
        self.http = httpx.Client(base_url=self.base, timeout=timeout, headers=headers)

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            fail(
                f"devbox is not reachable at {self.base} ({exc.__class__.__name__}); start it with `devbox up`",
                EXIT_NOT_RUNNING,
            )
        if response.status_code >= 400:
            try:
                body = response.json()
                reason = body.get("reason") or body.get("error") or body.get("detail") or body
            except ValueError:
                reason = response.text
            fail(f"{method} {path}: {response.status_code}: {reason}")
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            return response.text

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.request("POST", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Any:
        return self.request("DELETE", path, **kwargs)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def ago(ts: float | None, *, never: str = "-", now: float | None = None) -> str:
    """How long ago an epoch time was, for tables: ``42s ago``, ``7m ago``, ``3.5h ago``.

    ``never`` is shown for a missing time (``None`` or 0: nothing happened yet).
    """
    if not ts:
        return never
    seconds = max(0.0, (time.time() if now is None else now) - ts)
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.1f}h ago"
