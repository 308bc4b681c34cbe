"""Test helpers: a running platform inside the test process, on ephemeral ports.

``with running_platform(tmp_path) as p: httpx.get(p.url("api") + "/healthz")``. The platform runs
on its own asyncio loop in a daemon thread; :meth:`PlatformThread.call` runs a coroutine there.
The pytest plugin (:mod:`devbox.pytest_plugin`) wraps this as the ``devbox_platform`` fixture.
:func:`wait_for` is the one way a test waits: a deadline on the condition it then asserts.

The platform itself is imported when a platform starts, not with this module: the pytest plugin
imports this module in every pytest run (also ``pytest scenarios/...``), and importing every
component costs seconds on a busy machine before a single test is collected.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from devbox.config import ProjectConfig
    from devbox.platform.component import Component
    from devbox.platform.platform import Platform

T = TypeVar("T")


def wait_for(check: Callable[[], T], timeout: float = 30.0, what: str = "condition", *, every: float = 0.1) -> T:
    """Poll ``check`` until it returns something truthy, and return that; fail after ``timeout`` s.

    ``check`` must test exactly what the test asserts next (not a sign that usually comes first):
    on a busy machine the order in which things become true is not the order seen on a fast one.
    The failure names ``what`` and the last value seen, so a timeout says what was still missing.
    """
    deadline = time.monotonic() + timeout
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}; last seen: {last!r}")
        time.sleep(every)


def traceparent() -> tuple[str, str, str]:
    """A new W3C trace context: (trace id, parent span id, ``traceparent`` header value)."""
    trace, parent = f"{time.time_ns():032x}", "00f067aa0ba902b7"
    return trace, parent, f"00-{trace}-{parent}-01"


class PlatformThread:
    """A :class:`Platform` served from a background thread; ``start()`` returns once it listens."""

    def __init__(self, config: ProjectConfig, *, components: list[str] | None = None) -> None:
        self.config = config
        self._components = components
        self.platform: Platform | None = None
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="devbox-platform", daemon=True)
        self._ready: concurrent.futures.Future[Platform] = concurrent.futures.Future()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._main())
        self.loop.close()

    async def _main(self) -> None:
        from devbox.platform.platform import Platform

        try:
            self.platform = Platform(self.config, components=self._components)
            await self.platform.start()
        except BaseException as exc:
            self._ready.set_exception(exc)
            return
        self._ready.set_result(self.platform)
        self._stop = asyncio.Event()
        await self._stop.wait()
        await self.platform.stop()

    def start(self, timeout: float = 30) -> Platform:
        self._thread.start()
        return self._ready.result(timeout=timeout)

    def stop(self) -> None:
        if self._thread.is_alive() and self._ready.done() and not self._ready.exception():
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=30)

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        """Run ``coro`` on the platform's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def url(self, listener: str = "api") -> str:
        assert self.platform is not None
        return self.platform.ctx.url(listener)

    def target(self, listener: str) -> str:
        assert self.platform is not None
        return self.platform.ctx.target(listener)

    def component(self, name: str) -> Component:
        assert self.platform is not None
        return self.platform.component(name)

    def trace(self, trace_id: str, count: int, timeout: float = 30) -> list[dict[str, Any]]:
        """Trace ``trace_id`` from the Zipkin API once it holds ``count`` spans (spans are indexed
        off the request path, so a trace is complete a moment after its last export)."""
        import httpx

        from devbox.tls import tls_for

        def spans() -> list[dict[str, Any]] | None:
            r = httpx.get(self.url("zipkin") + f"/api/v2/trace/{trace_id}", timeout=10,
                          verify=tls_for(self.url("zipkin")))
            return r.json() if r.status_code == 200 and len(r.json()) >= count else None

        found = wait_for(spans, timeout, f"{count} spans of trace {trace_id}")
        assert found is not None  # wait_for returns the first truthy answer
        return found


@contextlib.contextmanager
def starting_in_background(platform: Platform, gate: threading.Event) -> Iterator[dict[str, Any]]:
    """``platform.start()`` on a loop of its own in a thread, for tests of what happens *while* it
    starts (a component of the test holds the start until ``gate`` is set). Yields the outcome:
    ``started`` once start() returned, ``error`` the exception it raised. On exit the gate is set, the
    start awaited and the platform stopped."""
    loop = asyncio.new_event_loop()
    outcome: dict[str, Any] = {}

    def run() -> None:
        async def main() -> None:
            outcome["stop"] = asyncio.Event()
            try:
                await platform.start()
                outcome["started"] = True
            except BaseException as exc:  # reported by the test's waits
                outcome["error"] = exc
                return
            await outcome["stop"].wait()
            await platform.stop()

        loop.run_until_complete(main())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield outcome
    finally:
        gate.set()
        wait_for(lambda: "started" in outcome or "error" in outcome, 30, "the platform's start to end")
        if "stop" in outcome and "started" in outcome:
            loop.call_soon_threadsafe(outcome["stop"].set)
        thread.join(60)
        if not thread.is_alive():
            loop.close()


@contextlib.contextmanager
def running_platform(
    root: Path | None = None,
    *,
    config: ProjectConfig | None = None,
    components: list[str] | None = None,
    **overrides: Any,
) -> Iterator[PlatformThread]:
    """A platform on ephemeral ports with state under ``root``; stopped on exit."""
    if config is None:
        if root is None:
            raise ValueError("give root (a folder for state) or a config")
        from devbox.config import ProjectConfig

        config = ProjectConfig.for_tests(root, **overrides)
    thread = PlatformThread(config, components=components)
    thread.start()
    try:
        yield thread
    finally:
        thread.stop()


# --- a real Docker engine -----------------------------------------------------------------------

#: Where :func:`docker_engine` keeps the engine it starts: outside any checkout, so built images
#: survive between test runs on the same machine.
DOCKER_ROOT = Path("/var/lib/devbox-test-docker")


class EngineUnavailable(RuntimeError):
    """No Docker engine can run here; ``str()`` says why (what is missing, the daemon's last log lines)."""


def _engine_answers(host: str) -> bool:
    import docker  # type: ignore[import-untyped]

    try:
        client = docker.DockerClient(base_url=host, timeout=5)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


_ENGINE: dict[str, str] = {}


def docker_engine(root: Path = DOCKER_ROOT, *, timeout: float = 60.0) -> str:
    """The ``DOCKER_HOST`` of a running engine: $DOCKER_HOST if it answers, else one under ``root``,
    started as /work/shared/DOCKER.md says (vfs, no bridge, no iptables; containers use the host
    network) when none runs there. Raises :class:`EngineUnavailable` with the reason when docker.io
    is not installed and cannot be, or the daemon does not start. Sets $DOCKER_HOST for the docker
    SDK, the CLI and testcontainers. An engine this function started is stopped at interpreter exit.
    """
    import atexit
    import os
    import shutil
    import signal
    import subprocess

    if "host" in _ENGINE:
        return _ENGINE["host"]
    given = os.environ.get("DOCKER_HOST")
    sock = root / "docker.sock"
    host = given if given and _engine_answers(given) else f"unix://{sock}"
    if not _engine_answers(host):
        if shutil.which("dockerd") is None and shutil.which("apt-get") and os.geteuid() == 0:
            subprocess.run(["apt-get", "install", "-y", "-q", "docker.io"], capture_output=True, timeout=600,
                           env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        if shutil.which("dockerd") is None:
            raise EngineUnavailable("dockerd is not installed (apt-get install docker.io, or `make install`)")
        if os.geteuid() != 0:
            raise EngineUnavailable("dockerd needs root here (no rootless setup); run the tests as root or set "
                                    "DOCKER_HOST to a running engine")
        root.mkdir(parents=True, exist_ok=True)
        log = root / "dockerd.log"
        with log.open("ab") as out:
            proc = subprocess.Popen(
                ["dockerd", "--data-root", str(root / "data"), "--exec-root", str(root / "exec"),
                 "--pidfile", str(root / "dockerd.pid"), "--host", host, "--storage-driver", "vfs",
                 "--iptables=false", "--bridge=none"],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while not _engine_answers(host):
            if proc.poll() is not None or time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                tail = log.read_text(errors="replace").splitlines()[-5:]
                raise EngineUnavailable("dockerd did not start: " + " | ".join(tail))
            time.sleep(0.2)

        def stop() -> None:
            proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(20)

        atexit.register(stop)
    os.environ["DOCKER_HOST"] = host
    _ENGINE["host"] = host
    return host


class ServiceContainer:
    """A service image running against a devbox platform (see :func:`service_container`)."""

    def __init__(self, container: Any, port: int, env: dict[str, str]) -> None:
        #: The testcontainers ``DockerContainer`` (``.get_logs()``, ``.get_wrapped_container()``).
        self.container = container
        self.port = port
        self.env = env

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextlib.contextmanager
def service_container(
    image: str,
    platform: PlatformThread,
    *,
    service: str = "svc",
    env: dict[str, str] | None = None,
    ready: str | None = "/healthz",
    timeout: float = 60.0,
) -> Iterator[ServiceContainer]:
    """Run ``image`` with testcontainers against ``platform``, injected as devbox's deploy would:
    ``PORT`` (a free port), the naming, OTLP and API addresses, ``OTEL_SERVICE_NAME=service``.

    The container uses the host network (the platform listens on 127.0.0.1; engines without a bridge
    need it), so ``.url`` is on 127.0.0.1. ``ready``: an HTTP path waited for (None: no wait). Ryuk is
    disabled (its image would be pulled); the container is removed on exit. The engine comes from
    :func:`docker_engine`; pytest users: ``with service_container("my/image:dev", devbox_platform) as c``.
    """
    import os
    import socket

    os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
    docker_engine()
    import httpx
    from testcontainers.core.container import DockerContainer

    from devbox.mocks.deploy.config import ServiceConfig
    from devbox.mocks.deploy.core import InstanceRecord, PlatformFacts, instance_env
    from devbox.tls import tls_for

    assert platform.platform is not None
    addresses = platform.platform.ctx.addresses
    facts = PlatformFacts(
        api_url=platform.url("api"),
        naming_http=platform.url("polaris_http") if "polaris_http" in addresses else None,
        naming_grpc=platform.target("polaris_grpc") if "polaris_grpc" in addresses else None,
        otlp_http=platform.url("otlp_http") if "otlp_http" in addresses else None,
        token=platform.config.platform.token,
    )
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    svc = ServiceConfig(name=service, env=dict(env or {}))
    record = InstanceRecord(name=f"{service}-tc", service=service, group="default", port=port)
    injected = instance_env(svc, record=record, instance_id=f"{service}-tc-{port}", tags={}, platform=facts,
                            config_file=Path("/dev/null"))
    container = DockerContainer(image).with_kwargs(network_mode="host")
    for key, value in injected.items():
        container.with_env(key, value)
    container.start()
    try:
        running = ServiceContainer(container, port, injected)
        if ready is not None:
            def answers() -> bool:
                try:
                    return httpx.get(running.url + ready, timeout=2, verify=tls_for(running.url)).status_code == 200
                except httpx.HTTPError:
                    return False

            wait_for(answers, timeout=timeout, what=f"{image} answering {ready} on port {port}")
        yield running
    finally:
        container.stop()
