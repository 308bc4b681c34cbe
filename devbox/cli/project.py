"""Project commands: up, down, status, logs, init, schema.

``devbox up`` runs the platform in the foreground (:mod:`devbox.cli.serve`) with a live status
table (plain event lines when stdout is not a terminal); Ctrl-C (or ``devbox down``) stops every
instance's process group, then the platform. ``up --detach`` runs that same foreground process in
the background, writes its pid to ``.devbox/devbox.pid`` and returns once every service is ready
(or reports why not).

Exit codes (see :mod:`devbox.cli.common`): 0 ok, 1 a service failed (build, readiness, exit),
2 bad config / usage / port taken, 3 the platform is not running.
"""

from __future__ import annotations

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

from devbox.cli import serve
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
)
from devbox.cli.status import show_status
from devbox.projectfile import DEFAULT_FILE

if TYPE_CHECKING:
    from devbox.config import ProjectConfig

LOG = logging.getLogger(__name__)

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
    if detach:
        config, _ = serve.prepare(config_file, no_reload=no_reload, components=components)
        _detach(config, no_reload=no_reload, components=components)
        return
    serve.up(config_file, no_reload=no_reload, verbose=verbose, components=components)


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
    console.print(serve.dashboard_line(runtime["api"], config.platform.token), highlight=False, soft_wrap=True)


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
    runtime = serve.running_platform(config)
    if runtime is None:
        serve.reap(config, serve.Lines(console))
        serve.clear_stale_runtime(config)
        console.print("devbox is not running for this project; nothing to stop")
        return
    pid = int(runtime["pid"])
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    with console.status(f"stopping devbox (pid {pid})…"):
        while serve.alive(pid):
            if time.monotonic() > deadline:
                err_console.print(f"pid {pid} did not stop in {timeout:g}s; killing it", style="yellow")
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                break
            time.sleep(0.1)
    serve.reap(config, serve.Lines(console))
    console.print(f"devbox stopped (pid {pid})")


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
