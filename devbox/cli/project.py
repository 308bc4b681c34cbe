"""Project commands: up, down, status, logs, init, schema.

``devbox up`` runs the platform in the foreground with a live status table (plain event lines when
stdout is not a terminal); Ctrl-C (or ``devbox down``) stops every instance's process group, then
the platform. ``up --detach`` runs that same foreground process in the background, writes its
pid to ``.devbox/devbox.pid`` and returns once every service is ready (or reports why not).

Exit codes (see :mod:`devbox.cli.common`): 0 ok, 1 a service failed (build, readiness, exit),
2 bad config / usage / port taken, 3 the platform is not running.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from devbox.cli.common import (
    EXIT_FAILED,
    EXIT_NOT_RUNNING,
    EXIT_USAGE,
    ConfigOption,
    JsonOption,
    config_or_exit,
    console,
    err_console,
    fail,
    print_json,
    read_runtime,
    registry_dir,
    running_on,
    runtime_path,
)
from devbox.cli.status import STATE_STYLE, show_status
from devbox.projectfile import DEFAULT_FILE

if TYPE_CHECKING:
    from rich.live import Live

    from devbox.config import ProjectConfig
    from devbox.platform.platform import Platform

LOG = logging.getLogger(__name__)

PIDFILE = "devbox.pid"
PLATFORM_LOG = "platform.log"

def register(app: typer.Typer) -> None:
    app.command()(up)
    app.command()(down)
    app.command()(status)
    app.command()(logs)
    app.command()(init)
    app.command()(schema)


# --- up ---------------------------------------------------------------------------------------


def up(
    config_file: str | None = ConfigOption,
    detach: bool = typer.Option(False, "--detach", "-d", help="Run in the background; stop with `devbox down`."),
    no_reload: bool = typer.Option(False, "--no-reload", help="Do not replace instances when files change."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log platform internals to stderr."),
    components: str | None = typer.Option(
        None, "--components", help="Comma-separated components to host (default: all installed), e.g. naming,deploy."
    ),
) -> None:
    """Start the platform and the project's services; Ctrl-C stops everything."""
    config = config_or_exit(config_file)
    chosen = _components(components)
    if no_reload:
        config.services = [s.model_copy(update={"reload": False}) for s in config.services]
    from devbox.mocks.deploy import core as deploy_core  # the deploy package's config model: not for status

    problems = deploy_core.preflight(config.services, config.root)
    if any(s.runtime == "docker" for s in config.services):
        from devbox.mocks.deploy.docker import engine_problem

        engine = engine_problem()
        if engine:
            problems.append(f"services with runtime docker cannot start: {engine}")
    if problems:
        for problem in problems:
            err_console.print(f"[bold red]config error:[/] {escape(problem)}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_USAGE)
    running = _running(config)
    if running:
        fail(f"devbox is already running for this project (pid {running['pid']}, {running['api']}); "
             "`devbox down` stops it", EXIT_USAGE)
    _reap(config)
    if detach:
        _detach(config, no_reload=no_reload, components=components)
        return
    from devbox.platform.platform import PortInUse  # the platform's imports are heavy: only `up` needs them

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        code = asyncio.run(_serve(config, components=chosen))
    except PortInUse as exc:
        fail(str(exc) + _holder(exc.port), EXIT_USAGE)
    except Exception as exc:
        if verbose:
            raise
        fail(f"the platform failed: {type(exc).__name__}: {exc} (`devbox up -v` shows the traceback)")
    if code:
        raise typer.Exit(code)


def _holder(port: int) -> str:
    """Which running devbox holds ``port`` (its machine-wide card), as a sentence; "" when none does."""
    card = running_on(port)
    if card is None:
        return ""
    return (f". It is held by the devbox of project {card.get('project') or '?'} (pid {card.get('pid')}): "
            f"`devbox down -f {card.get('config')}` stops it")


def _running(config: ProjectConfig) -> dict[str, Any] | None:
    """The runtime file of a devbox that is really running (a zombie left by a SIGKILL is not)."""
    runtime = read_runtime(config)
    if runtime is None or not _alive(int(runtime["pid"])):
        return None
    return runtime


def _clear_stale_runtime(config: ProjectConfig) -> None:
    for path in (runtime_path(config), config.state_path / PIDFILE):
        path.unlink(missing_ok=True)


def _reap(config: ProjectConfig) -> None:
    """Kill instance processes left by an earlier devbox of this project that was killed outright."""
    from devbox.mocks.deploy.runner import kill_leftovers

    killed = kill_leftovers(config.state_path)
    if any(s.runtime == "docker" for s in config.services):
        from devbox.mocks.deploy.docker import remove_leftover_containers

        removed = remove_leftover_containers(config.state_path)
        if removed:
            err_console.print(f"removed {len(removed)} leftover container(s) of an earlier devbox", style="yellow")
    if killed:
        err_console.print(f"stopped {len(killed)} leftover instance process(es) of an earlier devbox "
                          f"(pids {', '.join(map(str, killed))})", style="yellow", highlight=False)


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


async def _serve(config: ProjectConfig, *, components: list[str] | None = None) -> int:
    """Run until SIGINT/SIGTERM; returns the exit code. Always stops what it started."""
    from devbox.platform.component import ComponentState
    from devbox.platform.platform import Platform

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    t0 = time.monotonic()
    platform = Platform(config, components=components)
    live_mode = console.is_terminal
    try:
        await platform.start()
        _write_runtime(config, platform)
        ready_s = time.monotonic() - t0
        console.print(f"[bold]devbox[/] platform ready in {ready_s:.2f}s: {platform.ctx.url('api')}  "
                      f"({', '.join(f'{n} {p}' for n, (_, p) in platform.addresses.items())})", highlight=False,
                      soft_wrap=True)
        if "dashboard" in platform.components:
            console.print(dashboard_line(platform.ctx.url("api"), config.platform.token), highlight=False,
                          soft_wrap=True)
        deploy = platform.components.get("deploy")
        if deploy is None or deploy.state is ComponentState.ERROR:
            if config.services:
                err = deploy.error if deploy is not None else "the deploy component is not installed"
                err_console.print(f"[bold red]error:[/] cannot deploy services: {err}", highlight=False)
                return EXIT_FAILED
            console.print("no services in devbox.yaml: the platform runs alone (Ctrl-C stops it)")
            await stop.wait()
            return 0
        return await _run_deploy(config, deploy, stop, t0=t0, live_mode=live_mode)
    finally:
        if any(c.state is not ComponentState.NEW for c in platform.components.values()):
            console.print("stopping…", style="dim")
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


async def _run_deploy(config: ProjectConfig, deploy: Any, stop: asyncio.Event, *, t0: float,
                      live_mode: bool) -> int:
    unregistered: dict[str, str] = {}  # instance -> why naming does not list it (register failed / never self)

    def on_event(event: Any) -> None:
        registration_failed = event.kind.value == "registered" and event.data.get("ok") is False
        if event.kind.value == "registered" and event.instance:
            if registration_failed:
                unregistered[f"{event.service}/{event.instance}"] = event.message
            else:
                unregistered.pop(f"{event.service}/{event.instance}", None)
        if live_mode and not registration_failed and event.kind.value not in (
                "crashed", "crash_loop", "reload", "reloaded", "reload_failed", "build_failed", "not_ready",
                "config_changed", "config_error"):
            return
        target = live.console if live is not None else console
        stamp = time.strftime("%H:%M:%S", time.localtime(event.ts))
        where = f"{event.service}/{event.instance}" if event.instance else event.service
        style = "red" if registration_failed or event.kind.value in (
            "crashed", "crash_loop", "build_failed", "not_ready", "reload_failed", "config_error") else None
        target.print(Text(f"{stamp} {where} {event.kind.value}: {event.message}", style=style or ""), soft_wrap=True)

    from rich.live import Live  # only `up` draws a live table

    live: Live | None = None
    deploy.ctx.events.deploy_event.add_listener(on_event)
    try:
        if live_mode:
            live = Live(_table(deploy), console=console, refresh_per_second=4, transient=False,
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
                err_console.print(f"[bold red]error:[/] {escape(error)}", highlight=False, soft_wrap=True)
            err_console.print("devbox up failed; everything it started is being stopped", style="red")
            return EXIT_FAILED
        out = live.console if live is not None else console
        out.print(_ready_message(len(config.services), time.monotonic() - t0, unregistered), highlight=False,
                  soft_wrap=True)
        await stop.wait()
        return 0
    finally:
        if live is not None:
            live.stop()
        deploy.ctx.events.deploy_event.remove_listener(on_event)


def _ready_message(services: int, seconds: float, unregistered: dict[str, str]) -> str:
    """The line `up` ends its start with. Running but not registered in naming is not "ready":
    callers that discover through naming cannot reach those instances, so the line says so."""
    if not unregistered:
        return f"all {services} service(s) ready in {seconds:.2f}s; Ctrl-C stops everything"
    names = escape(", ".join(sorted(unregistered)))
    return (f"[yellow]all {services} service(s) running in {seconds:.2f}s, but {len(unregistered)} instance(s) "
            f"not registered in naming: {names}[/] — callers cannot discover them "
            "(`devbox logs SERVICE` shows why; `devbox naming ls`); Ctrl-C stops everything")


def _table(deploy: Any) -> Table:
    from rich.spinner import Spinner

    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("service", "instance", "state", "port", "pid", "restarts", "detail"):
        table.add_column(column)
    from devbox.platform.component import ComponentState

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


def _detach(config: ProjectConfig, *, no_reload: bool, components: str | None) -> None:
    """Start `devbox up` in its own session, wait for it to be ready (or to fail), and return."""
    state = config.state_path
    state.mkdir(parents=True, exist_ok=True)
    log_path = state / "logs" / PLATFORM_LOG
    log_path.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "devbox", "up", "-f", str(config.source)]
    if no_reload:
        command.append("--no-reload")
    if components:
        command += ["--components", components]
    with log_path.open("ab") as log:
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, cwd=str(config.root))
    try:
        runtime = _wait_detached(config, proc, log_path)
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait(30)
        fail("interrupted; the background devbox was stopped")
    console.print(f"devbox is running in the background (pid {proc.pid}, {runtime['api']}); "
                  f"`devbox status`, `devbox logs SERVICE`, `devbox down`", highlight=False, soft_wrap=True)
    console.print(dashboard_line(runtime["api"], config.platform.token), highlight=False, soft_wrap=True)


def dashboard_line(api: str, token: str | None) -> str:
    """Where the dashboard is; with a platform token, the ``?token=`` link a browser opens it with
    (the API answers it with a cookie and a redirect to the bare URL; see devbox.platform.http)."""
    from urllib.parse import quote

    url = api.rstrip("/") + "/"
    if not token:
        return f"dashboard: {url}"
    return f"dashboard: {url}?token={quote(token, safe='')}  (the link logs this browser in; keep it private)"


def _wait_detached(config: ProjectConfig, proc: subprocess.Popen[bytes], log_path: Path) -> dict[str, Any]:
    deadline = time.monotonic() + 60 + sum(s.readiness.timeout + (s.build_timeout if s.build else 0)
                                           for s in config.services)
    runtime: dict[str, Any] | None = None
    with console.status("starting devbox in the background…"):
        while True:
            code = proc.poll()
            if code is not None:
                lines = tail_lines(log_path, 25)
                err_console.print("\n".join(lines), highlight=False, markup=False)
                fail(f"devbox up exited with code {code} (log: {log_path})", code or EXIT_FAILED)
            runtime = read_runtime(config)
            if runtime and runtime.get("pid") == proc.pid:
                answer = _get_json(runtime["api"] + "/api/deploy/services", config.platform.token)
                if answer is not None and not answer.get("deploying", False):
                    if answer.get("errors"):
                        time.sleep(0.2)
                        continue  # the foreground process reports and exits non-zero
                    break
                if answer is None and not config.services:
                    break
            if time.monotonic() > deadline:
                proc.terminate()
                fail(f"devbox did not become ready in time (log: {log_path})")
            time.sleep(0.2)
    assert runtime is not None
    return runtime


def _get_json(url: str, token: str | None = None) -> Any:
    import httpx

    from devbox.tls import tls_for

    try:
        response = httpx.get(url, timeout=2.0, headers=_auth_headers(token), verify=tls_for(url))
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    return response.json()


def _auth_headers(token: str | None = None) -> dict[str, str]:
    from devbox import envvars

    token = os.environ.get(envvars.DEVBOX_TOKEN) or token  # the config's token already includes the env's
    return {"Authorization": f"Bearer {token}"} if token else {}


# --- down ---------------------------------------------------------------------------------------


def down(
    config_file: str | None = ConfigOption,
    timeout: float = typer.Option(30.0, help="Seconds to wait for a clean stop before SIGKILL."),
) -> None:
    """Stop a devbox running for this project (started with `up --detach`, or in another terminal)."""
    config = config_or_exit(config_file)
    runtime = _running(config)
    if runtime is None:
        _reap(config)
        _clear_stale_runtime(config)
        console.print("devbox is not running for this project; nothing to stop")
        return
    pid = int(runtime["pid"])
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    with console.status(f"stopping devbox (pid {pid})…"):
        while _alive(pid):
            if time.monotonic() > deadline:
                err_console.print(f"pid {pid} did not stop in {timeout:g}s; killing it", style="yellow")
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                break
            time.sleep(0.1)
    _reap(config)
    console.print(f"devbox stopped (pid {pid})")


def _alive(pid: int) -> bool:
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


# --- status -------------------------------------------------------------------------------------


def status(config_file: str | None = ConfigOption, as_json: bool = JsonOption) -> None:
    """Services, instances, ports, health and restarts of the running devbox."""
    show_status(config_file, as_json)


# --- logs ---------------------------------------------------------------------------------------


def logs(
    service: str = typer.Argument(..., help="Service name as in devbox.yaml."),
    config_file: str | None = ConfigOption,
    # not -f: that is --file on every command (the README passes `-f devbox.yaml` everywhere); -F as in tail
    follow: bool = typer.Option(False, "--follow", "-F", help="Keep printing new lines (Ctrl-C stops)."),
    instance: str | None = typer.Option(None, "--instance", "-i", help="Only this instance (e.g. orders-2)."),
    grep: str | None = typer.Option(None, "--grep", "-g", help="Only lines matching this regular expression."),
    lines: int = typer.Option(100, "--lines", "-n", min=0, help="How many past lines per instance."),
    build: bool = typer.Option(False, "--build", help="Show the service's last build output instead."),
    as_json: bool = JsonOption,
) -> None:
    """Show an instance's stdout/stderr, kept under .devbox/logs/<service>/<instance>.log."""
    config = config_or_exit(config_file)
    folder = config.state_path / "logs" / service
    known = [s.name for s in config.services]
    if not folder.is_dir():
        if service not in known:
            fail(f"unknown service {service!r}" + (f"; services: {', '.join(known)}" if known else ""), EXIT_USAGE)
        fail(f"no logs for {service} yet (is it deployed? `devbox status`)")
    try:
        pattern = re.compile(grep) if grep else None
    except re.error as exc:
        fail(f"--grep: not a valid regular expression: {exc}", EXIT_USAGE)

    def files() -> list[Path]:
        if build:
            return [p for p in [folder / "build.log"] if p.exists()]
        found = sorted((p for p in folder.glob("*.log") if p.name != "build.log"), key=_instance_order)
        if instance:
            found = [p for p in found if p.stem == instance]
        return found

    chosen = files()
    if not chosen and not follow:
        fail(f"no log of instance {instance!r} of {service}" if instance else f"no logs for {service} yet")
    prefix = len(chosen) > 1 or follow

    def emit(path: Path, line: str) -> None:
        if pattern is not None and not pattern.search(line):
            return
        if as_json:
            sys.stdout.write(json.dumps({"service": service, "instance": path.stem, "line": line}) + "\n")
        elif prefix:
            sys.stdout.write(f"{path.stem} | {line}\n")
        else:
            sys.stdout.write(line + "\n")

    offsets: dict[Path, int] = {}
    for path in chosen:
        for line in (tail_lines(path, lines, max_bytes=max(64 * 1024, lines * 400)) if lines else []):
            emit(path, line)
        offsets[path] = path.stat().st_size
    sys.stdout.flush()
    if not follow:
        return
    partial: dict[Path, bytes] = {}
    try:
        while True:
            for path in files():
                offset = offsets.get(path, 0)
                try:
                    size = path.stat().st_size
                except OSError:
                    continue
                if size < offset:
                    offset = 0
                if size > offset:
                    with path.open("rb") as fh:
                        fh.seek(offset)
                        data = partial.pop(path, b"") + fh.read(size - offset)
                    offsets[path] = size
                    *complete, rest = data.split(b"\n")
                    if rest:
                        partial[path] = rest
                    for raw in complete:
                        emit(path, raw.decode("utf-8", "replace"))
                    sys.stdout.flush()
                else:
                    offsets.setdefault(path, size)
            time.sleep(0.2)
    except KeyboardInterrupt:
        return


def _instance_order(path: Path) -> tuple[str, int]:
    name, _, n = path.stem.rpartition("-")
    return (name, int(n)) if n.isdigit() else (path.stem, 0)


# --- init / schema --------------------------------------------------------------------------------

STARTER_CONFIG = """\
# devbox.yaml — the project's services and the platform they run on.
# Reference: `devbox schema` prints the JSON Schema of this file (point your editor at it).
project: {project}

# The platform: every protocol on its usual port, so SDK defaults work with zero configuration.
# 0 picks a free port. Uncomment to change one:
# platform:
#   ports:
#     api: 7070            # devbox API + dashboard
#     otlp_http: 4318      # OpenTelemetry OTLP/HTTP
#     polaris_grpc: 8091   # Polaris naming (gRPC)

services:
  # Each service: a folder with a start.sh that starts ONE instance listening on $PORT.
  # devbox builds it, gives every instance a free port, injects PORT, DEVBOX_* and OTEL_* variables
  # (and $DEVBOX_INSTANCE_CONFIG, a YAML file with the same facts), waits until it is ready,
  # registers it in naming, restarts it if it crashes and replaces it when its files change.
  - name: hello
    path: hello                 # folder, relative to this file
    # build: pip install -r requirements.txt   # run in `path` before starting
    # start: ./start.sh         # the default (the 123 convention)
    replicas: 1
    readiness:
      http: /healthz            # or `tcp: true`, or `grpc: true` (grpc.health.v1)
      timeout: 30
    tags:
      env: base                 # instance metadata, used by routing rules (feature environments)
    # register: self            # if the service registers itself with a Polaris SDK
    # env: {{LOG_LEVEL: debug}}
"""

HELLO_APP = '''\
"""hello: the smallest devbox service (stdlib only). It listens on $PORT and says who it is."""

import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/healthz":
            body = b"ok"
        else:
            body = json.dumps({
                "hello": "world",
                "service": os.environ.get("DEVBOX_SERVICE"),
                "instance": os.environ.get("DEVBOX_INSTANCE_ID"),
                "tags": os.environ.get("DEVBOX_TAGS"),
            }).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json" if body != b"ok" else "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        if "/healthz" not in str(args[:1]):  # devbox probes it every few seconds
            super().log_message(format, *args)


if __name__ == "__main__":
    port = int(os.environ.get("PORT", "8000"))
    print(f"hello listening on {port}", flush=True)
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
'''

HELLO_START = """\
#!/bin/sh
# Starts one instance of hello. devbox sets $PORT (and DEVBOX_*, OTEL_* variables).
# `exec` so that the server gets devbox's signals directly.
cd "$(dirname "$0")"
exec python3 app.py
"""


def init(
    directory: Path = typer.Argument(Path("."), help="Project folder (created if missing)."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing devbox.yaml."),
) -> None:
    """Write a commented starter devbox.yaml and a hello service with its start.sh."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / DEFAULT_FILE
    if target.exists() and not force:
        fail(f"{target} exists already; pass --force to overwrite it", EXIT_USAGE)
    project = re.sub(r"[^a-z0-9-]+", "-", directory.resolve().name.lower()).strip("-") or "devbox"
    target.write_text(STARTER_CONFIG.format(project=project))
    hello = directory / "hello"
    hello.mkdir(exist_ok=True)
    written = [target]
    for name, text in (("app.py", HELLO_APP), ("start.sh", HELLO_START)):
        path = hello / name
        if not path.exists() or force:
            path.write_text(text)
            written.append(path)
    (hello / "start.sh").chmod(0o755)
    for path in written:
        console.print(f"wrote {path}", highlight=False)
    console.print("next: `devbox up` (in that folder), then `devbox status`")


def schema() -> None:
    """Print the JSON Schema of devbox.yaml, for editors."""
    from devbox.config import json_schema  # builds the whole config model: only this command needs it

    print_json(json_schema())


__all__ = ["EXIT_NOT_RUNNING", "register"]


def tail_lines(path: Path, lines: int, **kwargs: Any) -> list[str]:
    """deploy's log tail, imported when used (the deploy package builds its config model on import)."""
    from devbox.mocks.deploy import core as deploy_core

    return deploy_core.tail_lines(path, lines, **kwargs)
