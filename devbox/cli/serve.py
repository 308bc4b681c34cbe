"""``devbox up`` in the foreground: the process that is the platform, until Ctrl-C or ``devbox down``.

Kept apart from :mod:`devbox.cli.project` and free of typer, so that :func:`devbox.cli.main` runs
``up`` with its plain flags without building the typer app, and of rich unless stdout is a
terminal (the live status table): a platform whose output goes to a file or a pipe (``up -d``'s
log, CI) holds neither, ~7 MB of an idle platform's memory (issue 15). ``project.up`` is the same
command as typer registers it (help, flags, ``--detach``).

Exit codes (see :mod:`devbox.cli.common`): 0 ok, 1 a service failed (build, readiness, exit),
2 bad config / usage / port taken.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devbox.cli.common import (
    EXIT_FAILED,
    EXIT_USAGE,
    config_or_exit,
    exit_with,
    fail,
    read_runtime,
    registry_dir,
    running_on,
    runtime_path,
)

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from devbox.config import ProjectConfig
    from devbox.platform.platform import Platform

LOG = logging.getLogger(__name__)

PIDFILE = "devbox.pid"

#: A piece of a line: plain text, or (text, rich style).
Part = str | tuple[str, str]

#: rich's own switches that make it draw styles without a terminal: a user who sets one gets rich.
RICH_ENV = ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE")


def plain(parts: Iterable[Part]) -> str:
    """The line's text, without its styles."""
    return "".join(p if isinstance(p, str) else p[0] for p in parts)


class Lines:
    """What the platform's process prints: through rich (styles, the live table) when stdout is a
    terminal or rich is forced on; otherwise plain lines, flushed each, without importing rich."""

    def __init__(self, console: Console | None = None) -> None:
        if console is None and (sys.stdout.isatty() or any(os.environ.get(k) for k in RICH_ENV)):
            from devbox.cli.common import console as rich_console

            console = rich_console
        self.console = console
        if console is not None:
            from devbox.cli.common import err_console

            for each in (console, err_console):
                keep_serving(each)

    @property
    def live(self) -> bool:
        """Whether to draw the live status table (rich thinks stdout is a terminal)."""
        return self.console is not None and self.console.is_terminal

    def say(self, *parts: Part, err: bool = False) -> None:
        stream = sys.stderr if err else sys.stdout
        try:
            if self.console is None:
                print(plain(parts), file=stream, flush=True)
                return
            from rich.text import Text

            from devbox.cli.common import err_console

            (err_console if err else self.console).print(Text.assemble(*parts), soft_wrap=True)
        except BrokenPipeError:
            _discard(stream)

    def error(self, message: str) -> None:
        self.say(("error:", "bold red"), " " + message, err=True)


def keep_serving(console: Console) -> None:
    """A reader of ``console`` that goes away costs its lines, not the platform: rich's own answer to
    a broken pipe (its ``on_broken_pipe`` hook) is to exit the process, skipping the platform's stop,
    and to redirect stdout even when the broken stream is stderr."""

    def on_broken_pipe() -> None:
        console.quiet = True
        _discard(console.file)

    console.on_broken_pipe = on_broken_pipe  # type: ignore[method-assign]


def _discard(stream: Any) -> None:
    """Send what is still written to ``stream`` to /dev/null: its reader went away (``devbox up | head``).
    The platform keeps running until Ctrl-C or ``devbox down``, then stops what it started, as it
    would with its output read; only the lines are lost, not the shutdown or the exit's last flush."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, stream.fileno())
    finally:
        os.close(devnull)


def up(config_file: str | None = None, *, no_reload: bool = False, verbose: bool = False,
       components: str | None = None) -> None:
    """Run the platform and the project's services in this process until SIGINT/SIGTERM."""
    config, chosen = prepare(config_file, no_reload=no_reload, components=components)
    from devbox.platform.platform import PortInUse  # the platform's imports are heavy: only `up` needs them

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        code = asyncio.run(_serve(config, Lines(), components=chosen))
    except PortInUse as exc:
        fail(str(exc) + _holder(exc.port), EXIT_USAGE)
    except Exception as exc:
        if verbose:
            raise
        fail(f"the platform failed: {type(exc).__name__}: {exc} (`devbox up -v` shows the traceback)")
    if code:
        raise exit_with(code)


def prepare(config_file: str | None, *, no_reload: bool, components: str | None
            ) -> tuple[ProjectConfig, list[str] | None]:
    """What `up` checks before it starts anything, in the foreground or detached: the config, the
    components asked for, the services' preflight, no devbox of this project already running; then
    it stops what a devbox of this project killed outright left behind."""
    config = config_or_exit(config_file)
    chosen = _components(components)
    if no_reload:
        unwatched = [s.model_copy(update={"reload": False}) for s in config.services]
        config = config.model_copy(update={"services": unwatched})
    from devbox.mocks.deploy import core as deploy_core  # the deploy package's config model: not for status

    problems = deploy_core.preflight(config.services, config.root)
    if any(s.runtime == "docker" for s in config.services):
        from devbox.mocks.deploy.docker import engine_problem

        engine = engine_problem()
        if engine:
            problems.append(f"services with runtime docker cannot start: {engine}")
    if problems:
        from rich.markup import escape

        from devbox.cli.common import err_console

        for problem in problems:
            err_console.print(f"[bold red]config error:[/] {escape(problem)}", highlight=False, soft_wrap=True)
        raise exit_with(EXIT_USAGE)
    running = running_platform(config)
    if running:
        fail(f"devbox is already running for this project (pid {running['pid']}, {running['api']}); "
             "`devbox down` stops it", EXIT_USAGE)
    reap(config, Lines())
    return config, chosen


def _holder(port: int) -> str:
    """Which running devbox holds ``port`` (its machine-wide card), as a sentence; "" when none does."""
    card = running_on(port)
    if card is None:
        return ""
    return (f". It is held by the devbox of project {card.get('project') or '?'} (pid {card.get('pid')}): "
            f"`devbox down -f {card.get('config')}` stops it")


def running_platform(config: ProjectConfig) -> dict[str, Any] | None:
    """The runtime file of a devbox that is really running (a zombie left by a SIGKILL is not)."""
    runtime = read_runtime(config)
    if runtime is None or not alive(int(runtime["pid"])):
        return None
    return runtime


def clear_stale_runtime(config: ProjectConfig) -> None:
    for path in (runtime_path(config), config.state_path / PIDFILE):
        path.unlink(missing_ok=True)


def reap(config: ProjectConfig, lines: Lines) -> None:
    """Kill instance processes left by an earlier devbox of this project that was killed outright."""
    from devbox.mocks.deploy.runner import kill_leftovers

    killed = kill_leftovers(config.state_path)
    if any(s.runtime == "docker" for s in config.services):
        from devbox.mocks.deploy.docker import remove_leftover_containers

        removed = remove_leftover_containers(config.state_path)
        if removed:
            lines.say((f"removed {len(removed)} leftover container(s) of an earlier devbox", "yellow"), err=True)
    if killed:
        lines.say((f"stopped {len(killed)} leftover instance process(es) of an earlier devbox "
                   f"(pids {', '.join(map(str, killed))})", "yellow"), err=True)


def alive(pid: int) -> bool:
    try:
        finished, _ = os.waitpid(pid, os.WNOHANG)
        if finished == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return _state_of(pid) != "Z"


def _state_of(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


def _write_runtime(config: ProjectConfig, platform: Platform) -> None:
    state = config.state_path
    data = {
        "pid": os.getpid(),
        "api": platform.ctx.url("api"),
        "listeners": {name: list(addr) for name, addr in platform.addresses.items()},
        "config": str(config.source) if config.source else None,
        "started_at": time.time(),
    }
    tmp = state / (runtime_path(config).name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(runtime_path(config))
    (state / PIDFILE).write_text(f"{os.getpid()}\n")
    try:  # the machine-wide card: best effort, a read-only home must not stop `up`
        card = registry_dir() / f"{os.getpid()}.json"
        card.parent.mkdir(parents=True, exist_ok=True)
        card.write_text(json.dumps({**data, "project": config.project}))
    except OSError as exc:
        LOG.info("cannot write %s: %s", registry_dir(), exc)


def _clear_runtime(config: ProjectConfig) -> None:
    (registry_dir() / f"{os.getpid()}.json").unlink(missing_ok=True)
    for path in (runtime_path(config), config.state_path / PIDFILE):
        try:
            if path.name == PIDFILE and path.read_text().strip() != str(os.getpid()):
                continue
            path.unlink()
        except (OSError, ValueError):
            pass


def _components(option: str | None) -> list[str] | None:
    if option is None:
        return None
    from devbox.platform import registry

    names = [n.strip() for n in option.split(",") if n.strip()]
    unknown = [n for n in names if n not in registry.COMPONENTS]
    if unknown:
        fail(f"--components: unknown {', '.join(unknown)}; known: {', '.join(registry.COMPONENTS)}", EXIT_USAGE)
    return names


async def _serve(config: ProjectConfig, lines: Lines, *, components: list[str] | None = None) -> int:
    """Run until SIGINT/SIGTERM; returns the exit code. Always stops what it started."""
    from devbox.platform.component import ComponentState
    from devbox.platform.platform import Platform

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    t0 = time.monotonic()
    platform = Platform(config, components=components)
    try:
        await platform.start()
        _write_runtime(config, platform)
        ready_s = time.monotonic() - t0
        lines.say(("devbox", "bold"), f" platform ready in {ready_s:.2f}s: {platform.ctx.url('api')}  "
                  f"({', '.join(f'{n} {p}' for n, (_, p) in platform.addresses.items())})")
        if "dashboard" in platform.components:
            lines.say(dashboard_line(platform.ctx.url("api"), config.platform.token))
        deploy = platform.components.get("deploy")
        if deploy is None or deploy.state is ComponentState.ERROR:
            if config.services:
                err = deploy.error if deploy is not None else "the deploy component is not installed"
                lines.error(f"cannot deploy services: {err}")
                return EXIT_FAILED
            lines.say("no services in devbox.yaml: the platform runs alone (Ctrl-C stops it)")
            await stop.wait()
            return 0
        return await _run_deploy(config, deploy, stop, lines, t0=t0)
    finally:
        if any(c.state is not ComponentState.NEW for c in platform.components.values()):
            lines.say(("stopping…", "dim"))
            shutdown = _ShutdownCancels()
            logging.getLogger("uvicorn.error").addFilter(shutdown)
            try:
                await platform.stop()
            finally:
                logging.getLogger("uvicorn.error").removeFilter(shutdown)
        _clear_runtime(config)


class _ShutdownCancels(logging.Filter):
    """uvicorn says ``ERROR: Cancel 3 running task(s), timeout graceful shutdown exceeded`` when
    requests are still running 2 s after the stop began. Long-polls no longer cause it (every
    component answers them in ``before_listeners_close``), but work a client asked for still can:
    a PromQL query may run up to its 30 s timeout, a deploy API call (start, reload, scale) may be
    building. Cutting those short is what the user's stop asked for, not a devbox error: the line
    is kept, as INFO with what it means (seen with `up -v`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        match = re.match(r"Cancel (\d+) running task\(s\), timeout graceful shutdown exceeded", message)
        if match:
            record.msg, record.args = ("closed %s open request(s) at shutdown (still running 2 s after the stop "
                                       "began, such as a slow query or a deploy operation)"), (match.group(1),)
            record.levelno, record.levelname = logging.INFO, "INFO"
            return LOG.isEnabledFor(logging.INFO) or logging.getLogger().isEnabledFor(logging.INFO)
        return True


#: Deploy events shown above the live table; without it every event is a line.
LIVE_EVENTS = ("crashed", "crash_loop", "reload", "reloaded", "reload_failed", "build_failed", "not_ready",
               "config_changed", "config_error")
FAILED_EVENTS = ("crashed", "crash_loop", "build_failed", "not_ready", "reload_failed", "config_error")


async def _run_deploy(config: ProjectConfig, deploy: Any, stop: asyncio.Event, lines: Lines, *, t0: float) -> int:
    unregistered: dict[str, str] = {}  # instance -> why naming does not list it (register failed / never self)
    live_mode = lines.live

    def on_event(event: Any) -> None:
        registration_failed = event.kind.value == "registered" and event.data.get("ok") is False
        if event.kind.value == "registered" and event.instance:
            if registration_failed:
                unregistered[f"{event.service}/{event.instance}"] = event.message
            else:
                unregistered.pop(f"{event.service}/{event.instance}", None)
        if live_mode and not registration_failed and event.kind.value not in LIVE_EVENTS:
            return
        stamp = time.strftime("%H:%M:%S", time.localtime(event.ts))
        where = f"{event.service}/{event.instance}" if event.instance else event.service
        style = "red" if registration_failed or event.kind.value in FAILED_EVENTS else ""
        lines.say((f"{stamp} {where} {event.kind.value}: {event.message}", style))

    live: Any = None
    deploy.ctx.events.deploy_event.add_listener(on_event)
    try:
        if live_mode:
            from rich.live import Live  # only a terminal gets the live table

            live = Live(_table(deploy), console=lines.console, refresh_per_second=4, transient=False,
                        get_renderable=lambda: _table(deploy))
            live.start()
        waiting = asyncio.ensure_future(deploy.wait_deployed())
        stopper = asyncio.ensure_future(stop.wait())
        await asyncio.wait({waiting, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if not waiting.done():
            waiting.cancel()
            stopper.cancel()
            return 0
        stopper.cancel()
        errors = waiting.result()
        if errors:
            if live is not None:
                live.stop()
                live = None
            for error in errors:
                lines.error(error)
            lines.say(("devbox up failed; everything it started is being stopped", "red"), err=True)
            return EXIT_FAILED
        lines.say(*_ready_message(len(config.services), time.monotonic() - t0, unregistered))
        await stop.wait()
        return 0
    finally:
        if live is not None:
            live.stop()
        deploy.ctx.events.deploy_event.remove_listener(on_event)


def _ready_message(services: int, seconds: float, unregistered: dict[str, str]) -> list[Part]:
    """The line `up` ends its start with. Running but not registered in naming is not "ready":
    callers that discover through naming cannot reach those instances, so the line says so."""
    if not unregistered:
        return [f"all {services} service(s) ready in {seconds:.2f}s; Ctrl-C stops everything"]
    names = ", ".join(sorted(unregistered))
    return [(f"all {services} service(s) running in {seconds:.2f}s, but {len(unregistered)} instance(s) "
             f"not registered in naming: {names}", "yellow"),
            " — callers cannot discover them (`devbox logs SERVICE` shows why; `devbox naming ls`); "
            "Ctrl-C stops everything"]


def _table(deploy: Any) -> Table:
    from rich.spinner import Spinner
    from rich.table import Table
    from rich.text import Text

    from devbox.cli.status import STATE_STYLE
    from devbox.platform.component import ComponentState

    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("service", "instance", "state", "port", "pid", "restarts", "detail"):
        table.add_column(column)
    started = deploy.state in (ComponentState.RUNNING, ComponentState.STOPPED)
    described = {d["service"]: d for d in deploy.services()} if started else {}
    for name, phase in deploy.phase.items():
        dep = described.get(name)
        instances = dep["instances"] if dep else []
        if not instances:
            state: Any = Spinner("dots", text=phase) if phase in ("building", "starting", "pending") else Text(
                phase, style=STATE_STYLE.get(phase, ""))
            table.add_row(name, "", state, "", "", "", "")
            continue
        for inst in instances:
            state = inst["state"]
            shown: Any = Spinner("dots", text=state) if state == "starting" else Text(
                state, style=STATE_STYLE.get(state, ""))
            table.add_row(name, inst["name"], shown, str(inst["port"]), str(inst["pid"] or ""),
                          str(inst["restarts"]), Text(inst["message"][:60], style="dim"))
    return table


def dashboard_line(api: str, token: str | None) -> str:
    """Where the dashboard is; with a platform token, the ``?token=`` link a browser opens it with
    (the API answers it with a cookie and a redirect to the bare URL; see devbox.platform.http)."""
    from urllib.parse import quote

    url = api.rstrip("/") + "/"
    if not token:
        return f"dashboard: {url}"
    return f"dashboard: {url}?token={quote(token, safe='')}  (the link logs this browser in; keep it private)"
