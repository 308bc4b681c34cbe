"""What every CLI command shares: finding the config and the running platform, output, errors.

Exit codes: 0 success, 1 the thing asked about is wrong (a failed check, a failed scenario),
2 usage or config error, 3 the platform is not running or not reachable.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

from devbox import envvars
from devbox.httpcore_loader import load_httpx
from devbox.projectfile import DEFAULT_FILE, find_config, read_platform_address
from devbox.tls import tls_for

if TYPE_CHECKING:
    import httpx
    from rich.console import Console
    from rich.table import Column

    from devbox.config import ProjectConfig


EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NOT_RUNNING = 3

#: File in the state dir where a running platform writes its pid and listeners.
RUNTIME_FILE = "platform.json"

console: Console
err_console: Console


def __getattr__(name: str) -> Any:
    """Made on first use: ``console``/``err_console``, rich's consoles for stdout and stderr, not
    loaded by the platform's process when its output is not a terminal (:mod:`devbox.cli.serve`);
    ``ConfigOption``/``JsonOption``, the typer options every command shares, not loaded by a
    command that runs without typer (``devbox status``, see :func:`devbox.cli.main`)."""
    if name in ("console", "err_console"):
        return _console(stderr=name == "err_console")
    if name in ("ConfigOption", "JsonOption"):
        import typer

        options = {
            "ConfigOption": typer.Option(None, "--file", "-f", help="Path of devbox.yaml (default: ./devbox.yaml)."),
            "JsonOption": typer.Option(False, "--json", help="Print JSON for scripts instead of tables."),
        }
        globals().update(options)
        return options[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _console(*, stderr: bool) -> Console:
    name = "err_console" if stderr else "console"
    if name not in globals():
        from rich.console import Console

        globals()[name] = Console(stderr=stderr)
    return globals()[name]  # type: ignore[no-any-return]


def exit_with(code: int) -> BaseException:
    """The exception that ends the command with ``code``: typer's ``Exit`` inside the typer app,
    a plain ``SystemExit`` when the command runs without typer (the same exit status)."""
    typer = sys.modules.get("typer")
    return typer.Exit(code) if typer is not None else SystemExit(code)


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    _console(stderr=True).print(f"[bold red]error:[/] {message}", highlight=False)
    raise exit_with(code)


def config_or_exit(path: str | None) -> ProjectConfig:
    # the config model is assembled from every component's spec: imported when a command needs it
    from devbox.config import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            _console(stderr=True).print(f"[bold red]config error:[/] {problem}", highlight=False)
        raise exit_with(EXIT_USAGE) from None


class HasStatePath(Protocol):
    """A ProjectConfig, or the PlatformAddress read-only commands get without building one."""

    @property
    def state_path(self) -> Path: ...


def runtime_path(config: HasStatePath) -> Path:
    return config.state_path / RUNTIME_FILE


def read_runtime(config: HasStatePath) -> dict[str, Any] | None:
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
    if not source.exists():
        fail(no_config_message(source), EXIT_USAGE)
    # platform: read plainly (the running platform validated the file); a file that cannot be read
    # plainly gets the full load and its file:line:key message
    address = read_platform_address(source)
    if address is None:
        config = config_or_exit(config_path)
        runtime, port = read_runtime(config), config.platform.ports.api
    else:
        runtime, port = read_runtime(address), address.api_port
    if runtime:
        return str(runtime["api"]).rstrip("/")
    other = _other_project_on(port, source)
    if other is not None:
        fail(f"this project ({source}) is not running, and the devbox answering on port {port} is another project's: "
             f"{other.get('project') or '?'} ({other.get('config') or '?'}). Start this one with `devbox up` (give it "
             "another platform.ports.api while the other runs), or pass -f that project's devbox.yaml",
             EXIT_NOT_RUNNING)
    return f"http://127.0.0.1:{port}"


def _other_project_on(port: int, source: Path) -> dict[str, Any] | None:
    """The card of a running devbox of another project whose API listens on ``port``, if any: this
    project has no runtime file, so a command sent to that port would act on that project."""
    card = running_on(port, listener="api")
    config = card.get("config") if card else None
    return card if config and Path(config).resolve() != source.resolve() else None


def running_on(port: int, *, listener: str | None = None) -> dict[str, Any] | None:
    """The card of the running devbox listening on ``port`` (on ``listener`` only, if given), if any."""
    if not port:
        return None
    for card in running_platforms():
        listeners = card.get("listeners") or {}
        addresses = [listeners.get(listener) or [None]] if listener else listeners.values()
        if any(address[-1] == port for address in addresses):
            return card
    return None


def api_token(config_path: str | None = None) -> str | None:
    """The token the running platform wants: $DEVBOX_TOKEN, else ``platform.token`` of devbox.yaml
    (load_config already prefers the environment's), None when neither is set."""
    if os.environ.get(envvars.DEVBOX_TOKEN):
        return os.environ[envvars.DEVBOX_TOKEN]
    source = find_config(config_path)
    if not source.exists():
        return None
    address = read_platform_address(source)
    return address.token if address is not None else config_or_exit(config_path).platform.token


def auth_headers(token: str | None) -> dict[str, str]:
    """The header that carries the platform token (none when no token is set)."""
    return {"Authorization": f"Bearer {token}"} if token else {}


def registry_dir() -> Path:
    """Where every running devbox leaves a card (pid, project, config file, API), so that a command
    run outside any project can say which ones run. Removed on a clean stop; a card whose pid is
    gone (kill -9) is ignored and swept by the next reader."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "devbox" / "running"


def running_platforms() -> list[dict[str, Any]]:
    """The cards of the devboxes running on this machine, oldest first."""
    cards = []
    try:
        paths = list(registry_dir().glob("*.json"))
    except OSError:
        return []
    for path in paths:
        try:
            card = json.loads(path.read_text())
            os.kill(int(card["pid"]), 0)
        except ProcessLookupError:
            path.unlink(missing_ok=True)
            continue
        except (OSError, ValueError, KeyError, TypeError):
            continue
        cards.append(card)
    return sorted(cards, key=lambda c: c.get("started_at") or 0)


def no_config_message(source: Path) -> str:
    """No devbox.yaml where the command looked: say so, and which projects run elsewhere."""
    where = (f"no {source.name} in {source.absolute().parent}" if source.name == DEFAULT_FILE and not source.parent.name
             else f"{source} does not exist")
    cards = running_platforms()
    if not cards:
        return f"{where}; no devbox is running on this machine (`devbox init` writes a starter project)"
    running = "; ".join(f"{c.get('project') or '?'} ({c.get('config') or '?'}, {c.get('api')})" for c in cards)
    return f"{where}. Running on this machine: {running}. Pass -f <devbox.yaml> or run from that folder"


class Api:
    """A small client of the devbox HTTP API that turns failures into CLI errors."""

    def __init__(self, config_path: str | None = None, *, timeout: float = 10.0) -> None:
        self.base = api_url(config_path)
        self.token = api_token(config_path)
        # without trio or httpx's own CLI (devbox.httpcore_loader); not at import: `devbox up` runs
        # the platform in this process, and a project without services never needs httpx
        httpx = load_httpx()
        self.http = httpx.Client(base_url=self.base, timeout=timeout, headers=auth_headers(self.token),
                                 verify=tls_for(self.base))

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.http.request(method, path, **kwargs)
        except load_httpx().TransportError as exc:
            fail(
                f"devbox is not reachable at {self.base} ({exc.__class__.__name__}); start it with `devbox up`",
                EXIT_NOT_RUNNING,
            )
        if response.status_code >= 400:
            fail(refusal(response))
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


def refusal(response: httpx.Response) -> str:
    """What the platform's refusal means for the user: its reason with durations readable, not the
    raw route and status (a route is an implementation detail; a bare status says nothing)."""
    reason: Any = None
    try:
        body = response.json()
    except ValueError:
        body = response.text.strip()
    if isinstance(body, dict):
        reason = body.get("reason") or body.get("detail") or body.get("error")
        if isinstance(reason, list):  # FastAPI's validation detail: [{"loc": [...], "msg": ...}]
            reason = "; ".join(f"{'.'.join(map(str, d.get('loc', [])[1:]))}: {d.get('msg')}" if isinstance(d, dict)
                               else str(d) for d in reason)
    elif body:
        reason = body
    phrase = response.reason_phrase or str(response.status_code)
    if not reason or str(reason).strip().lower() == phrase.lower():
        parts = response.request.url.path.strip("/").split("/")
        part = parts[1] if len(parts) > 1 and parts[0] == "api" else parts[0]
        if response.status_code == 404:
            return f"this devbox does not serve {part or 'that'} (is that component running? `devbox status`)"
        return f"the platform refused the request: {response.status_code} {phrase}"
    return humanize_durations(str(reason))


_MS = re.compile(r"\b(\d+(?:\.\d+)?) ?ms\b")


def whole(header: str, values: Iterable[str]) -> Column:
    """A table column of what a later command is given (trace ids, run ids, rule ids, addresses):
    never cut or wrapped; on a narrow terminal (80 columns, any pipe) the other columns give way."""
    from rich.table import Column

    return Column(header, no_wrap=True, min_width=max((len(v) for v in values), default=len(header)))


def human_duration(seconds: float) -> str:
    """``1h``, ``15m``, ``1m30s``, ``2d``, ``250ms``: the units a user would type."""
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    out, rest = [], round(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            out.append(f"{rest // size}{unit}")
            rest %= size
    return "".join(out[:2])


def humanize_durations(text: str) -> str:
    """``3600000 ms`` in a message from the API becomes ``1h`` (milliseconds under a second stay)."""
    return _MS.sub(lambda m: human_duration(float(m.group(1)) / 1000) if float(m.group(1)) >= 1000 else m.group(0),
                   text)


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
