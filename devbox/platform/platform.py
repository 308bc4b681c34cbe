"""Platform: assembles the components, binds the listeners, runs them on one asyncio loop.

Every listening socket is bound before any component is imported or started, so a taken port is
reported by its name (``polaris_grpc: port 8091 is taken``) and nothing has started yet. One HTTP
app (FastAPI under uvicorn) per HTTP listener, one ``grpc.aio`` server per gRPC listener, started
by its first client's bytes (:mod:`devbox.platform.grpc_front`). A component that fails to start is
marked ``error`` and the rest keep running.

Bind first, then load: each listener serves from the moment it is bound, answering 503
``{"error": "starting"}`` with ``Retry-After`` (gRPC: UNAVAILABLE "starting") while the components
are imported (in a worker thread, so the loop keeps answering), started, and their apps built;
then the real app is swapped in. A client that connects early gets told to retry, never
"connection refused", and ``devbox up`` answers on every port within a fraction of its start.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import gc
import json
import logging
import socket
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import devbox
from devbox.platform import registry
from devbox.platform.component import (
    API_LISTENER,
    Component,
    ComponentSpec,
    ComponentState,
    Listener,
    PlatformContext,
    ProjectSettings,
)
from devbox.platform.edge import load_fastapi, load_uvicorn
from devbox.platform.events import Events
from devbox.platform.grpc_front import GrpcListener
from devbox.platform.store import CorruptState

if TYPE_CHECKING:
    from fastapi import FastAPI

    from devbox.platform.http_server import PlatformServer

LOG = logging.getLogger(__name__)

#: Platforms of this process that have frozen the heap they started with (see :func:`_hold_heap`).
_holding = 0
#: The collector's thresholds while a platform serves (CPython's default: 700, 10, 10): young passes
#: every 10k allocations, the middle generation (at most ~50k objects) every 5 of them.
GC_THRESHOLDS = (10_000, 5, 10)
_thresholds: tuple[int, int, int] | None = None


def _hold_heap(hold: bool) -> None:
    """Keep the cyclic garbage collector's stop-the-world passes short and rare while a platform serves.

    What a platform allocated to start (modules, apps, routes, config) lives as long as it serves:
    ``gc.freeze`` takes it out of the full passes, which walked it all each time ingest had
    allocated enough. Ingest allocates fast (a 20k-alert POST makes ~250k objects): with the default
    threshold a full pass came every few seconds, 0.3-1.5 s each on a busy 2-core machine, with every
    listener stalled; a higher young threshold makes them ~30x rarer. Both are undone when the last
    platform of the process stops, so what a stopped platform left (tests start many) is collected."""
    global _holding, _thresholds
    _holding += 1 if hold else -1
    if hold and _holding == 1:
        gc.freeze()
        _thresholds = gc.get_threshold()
        gc.set_threshold(*GC_THRESHOLDS)
    elif not hold and _holding == 0:
        gc.unfreeze()
        if _thresholds is not None:
            gc.set_threshold(*_thresholds)

def _trim_heap() -> None:
    """Give the C heap's free pages back to the system: a start (imports, compiling, building the
    apps) frees ~1.6 MB that malloc would otherwise keep resident for good. glibc's ``malloc_trim``;
    where there is none (macOS), nothing."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return
    trim(0)


class PortInUse(Exception):
    """A listener's port is taken. ``str()`` names the listener and says what to do; ``port`` is it."""

    def __init__(self, message: str, *, port: int = 0) -> None:
        super().__init__(message)
        self.port = port


#: Seconds a client told "starting" is asked to wait before it retries.
STARTING_RETRY_AFTER = 1
STARTING_REASON = "devbox is starting: its components are loading; retry in a moment"


class _Switch:
    """The ASGI app an HTTP listener serves from the moment it is bound: answers 503 "starting"
    until ``app`` (the listener's real app) is set, then hands every request to it."""

    def __init__(self) -> None:
        self.app: Any = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        app = self.app
        if app is not None:
            await app(scope, receive, send)
        elif scope["type"] == "http":
            body: dict[str, Any] = {"error": "starting", "reason": STARTING_REASON}
            if scope.get("path") == "/healthz":
                body = {"status": "starting", **body}
            payload = json.dumps(body).encode()
            await send({"type": "http.response.start", "status": 503, "headers": [
                (b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
                (b"retry-after", str(STARTING_RETRY_AFTER).encode())]})
            await send({"type": "http.response.body", "body": payload})
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1013})  # 1013: try again later


class Platform:
    """Owns the components, the listeners and their servers for one project.

    ``specs`` are the component specs in start order; by default the ones the config was
    assembled from (``ProjectConfig.component_specs``, see :mod:`devbox.assembly`). ``components``
    picks some of them by name (default: every one installed).
    """

    def __init__(
        self,
        config: ProjectSettings,
        *,
        components: list[str] | None = None,
        specs: Iterable[ComponentSpec] | None = None,
    ) -> None:
        self.config = config
        self.events = Events()
        self.ctx = PlatformContext(config=config, events=self.events)
        self.started_at: float | None = None
        assembled: Iterable[ComponentSpec] = specs if specs is not None else getattr(config, "component_specs", ())
        self._specs = registry.specs_by_name(assembled)
        self._listeners = _listeners(self._specs.values())
        if components is None:
            components = [name for name, spec in self._specs.items() if registry.importable(spec.factory)]
        unknown = [name for name in components if name not in self._specs]
        if unknown:
            raise ValueError(f"unknown components {', '.join(unknown)}; known: {', '.join(self._specs)}")
        self._wanted = components
        self._components: dict[str, Component] = {}
        self._sockets: dict[str, socket.socket] = {}
        self._http: dict[str, PlatformServer] = {}
        self._switches: dict[str, _Switch] = {}
        self._grpc: dict[str, GrpcListener] = {}
        self._tasks: list[asyncio.Task[Any]] = []
        self._holds_heap = False
        self.stopped = asyncio.Event()

    # --- assembly -------------------------------------------------------------------------

    def component(self, name: str) -> Component:
        return self._components[name]

    @property
    def components(self) -> dict[str, Component]:
        return dict(self._components)

    @property
    def addresses(self) -> dict[str, tuple[str, int]]:
        return dict(self.ctx.addresses)

    def _load_factories(self) -> dict[str, type[Component]]:
        # in a worker thread: these imports are most of a start, and the loop keeps answering meanwhile
        load_fastapi()  # before the components' routes import it
        return {name: registry.load_factory(self._specs[name].factory) for name in self._wanted}

    def _instantiate(self, classes: dict[str, type[Component]]) -> None:
        for name in self._wanted:
            component = classes[name](self.ctx)
            self._components[name] = component
            self.ctx._components[name] = component

    def _listeners_needed(self) -> dict[str, list[Any]]:
        needed: dict[str, list[Any]] = {API_LISTENER.name: []}
        for name, component in self._components.items():
            for listener, item in [*component.http_routes(), *component.grpc_services()]:
                if listener not in self._listeners:
                    raise ValueError(
                        f"component {name} serves on listener {listener!r}, which no component spec declares "
                        f"(declared: {', '.join(self._listeners)})"
                    )
                needed.setdefault(listener, []).append(item)
        return needed

    async def grpc_backend(self, listener: str) -> tuple[str, int]:
        """The loopback address of gRPC ``listener``'s grpc server, which its port relays to (started
        now if no client has connected yet). For benchmarks: the relay's cost is the difference."""
        return (await self._grpc[listener].backend()).address

    def protocol(self, listener: str) -> str:
        """``http`` or ``grpc``: what the listener speaks, as its spec declares."""
        return self._listeners[listener].protocol

    def _bind(self, listener: str) -> socket.socket:
        host = self.config.platform.host
        port = getattr(self.config.platform.ports, listener)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EADDRINUSE:
                raise PortInUse(
                    f"{listener}: port {port} on {host} is taken (is another devbox running? "
                    f"`devbox down`, or set platform.ports.{listener} in devbox.yaml; 0 picks a free one)", port=port
                ) from None
            raise PortInUse(f"{listener}: cannot bind {host}:{port}: {exc.strerror}", port=port) from None
        # Accepted sockets inherit this: without it, keep-alive requests stall ~40 ms on the
        # Nagle/delayed-ACK interplay (uvloop does not set TCP_NODELAY on sockets it is handed).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.listen(512)
        sock.set_inheritable(False)
        return sock

    def _listeners_declared(self) -> list[str]:
        """What is bound before any component is imported: ``api`` and the wanted specs' listeners."""
        names = [API_LISTENER.name]
        for name in self._wanted:
            names += [listener.name for listener in self._specs[name].listeners if listener.name not in names]
        return names

    def _http_app(self, listener: str, routers: list[Any]) -> FastAPI:
        from fastapi import FastAPI, Request
        from fastapi.exceptions import RequestValidationError
        from starlette.exceptions import HTTPException as StarletteHTTPException

        from devbox.platform.edge import api_error_handler, openapi_without_422
        from devbox.platform.errors import ApiError, BadRequest, MethodNotAllowed, NotFound
        from devbox.platform.http import BodyLimitMiddleware, TokenMiddleware

        api = listener == API_LISTENER.name
        app = FastAPI(
            title=f"devbox {listener}",
            version=devbox.__version__,
            docs_url="/docs" if api else None,
            redoc_url=None,
            openapi_url="/openapi.json" if api else None,
        )
        app.add_middleware(
            BodyLimitMiddleware,
            max_bytes=self.config.platform.max_body_bytes,
            read_timeout=self.config.platform.read_timeout,
        )
        if self.config.platform.token:
            app.add_middleware(TokenMiddleware, token=self.config.platform.token)

        # The listener's one error map: every ApiError a handler raises, in the protocol's shape —
        # and so are the refusals FastAPI makes itself (invalid parameters, unknown path or method).
        handle = api_error_handler(self._listeners[listener])

        async def _invalid(request: Request, exc: Exception) -> Any:
            errors = exc.errors() if isinstance(exc, RequestValidationError) else []
            reasons = [f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in errors]
            refused = BadRequest("; ".join(reasons) or "invalid request", code="invalid request",
                                 detail={"reasons": reasons})
            return await handle(request, refused)

        async def _routing(request: Request, exc: Exception) -> Any:
            status = exc.status_code if isinstance(exc, StarletteHTTPException) else 500
            if status == 405:
                refused: ApiError = MethodNotAllowed(f"{request.method} is not allowed on {request.url.path}")
            elif status == 404:
                refused = NotFound(f"no such endpoint: {request.method} {request.url.path}")
            else:
                detail = exc.detail if isinstance(exc, StarletteHTTPException) else str(exc)
                refused = ApiError(str(detail))
                refused.status = status
            response = await handle(request, refused)
            for key, value in (getattr(exc, "headers", None) or {}).items():
                response.headers.setdefault(key, value)
            return response

        async def _too_deep(request: Request, exc: Exception) -> Any:
            # json.loads of a body nested ~100,000 deep raises RecursionError in a handler that
            # parses its body itself: a malformed request, never a 500.
            return await handle(request, BadRequest("the body is nested too deeply to parse; flatten it"))

        app.add_exception_handler(RecursionError, _too_deep)
        app.add_exception_handler(RequestValidationError, _invalid)
        app.add_exception_handler(StarletteHTTPException, _routing)
        app.add_exception_handler(ApiError, handle)
        if api:
            app.openapi = openapi_without_422(app)  # type: ignore[method-assign]
        if api:
            self._platform_routes(app)
        for router in routers:
            app.include_router(router)
        return app

    def _platform_routes(self, app: FastAPI) -> None:
        @app.get("/healthz", tags=["platform"])
        async def healthz() -> dict[str, Any]:
            bad = {n: c.error for n, c in self._components.items() if c.state is ComponentState.ERROR}
            return {"status": "ok" if not bad else "degraded", "errors": bad}

        @app.get("/api/platform", tags=["platform"])
        async def platform_info() -> dict[str, Any]:
            return self.describe()

    def describe(self) -> dict[str, Any]:
        return {
            "project": self.config.project,
            "version": devbox.__version__,
            "root": str(self.config.root),
            "state_dir": str(self.config.state_path),
            "started_at": self.started_at,
            "listeners": {
                name: {"host": host, "port": port, "protocol": self.protocol(name)}
                for name, (host, port) in self.ctx.addresses.items()
            },
            "components": {
                name: {"state": c.state.value, "error": c.error, **c.info()}
                for name, c in self._components.items()
            },
        }

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind every listener and serve "starting" on it, then import, instantiate and start every
        component and swap in the real apps; returns once all of that is done. Raises PortInUse
        before anything starts; on any other failure stops what it started, then raises."""
        self.config.state_path.mkdir(parents=True, exist_ok=True)
        declared = self._listeners_declared()
        try:
            await self._bind_and_serve(declared)
            LOG.info("platform listening (starting): %s", {k: v[1] for k, v in self.ctx.addresses.items()})
            self._instantiate(await asyncio.to_thread(self._load_factories))
            needed = self._listeners_needed()
            for listener in needed:
                if listener not in declared:  # served by a component added at run time (tests, benchmarks)
                    declared.append(listener)
                    await self._bind_and_serve([listener])
            for name, component in self._components.items():
                await self._start_component(name, component)
            for listener, items in needed.items():
                if self.protocol(listener) == "grpc":
                    await self._grpc[listener].serve(items)
                else:
                    self._switches[listener].app = await asyncio.to_thread(self._http_app, listener, items)
            for listener in declared:  # declared by a spec, served by no component: the real 404s
                if listener not in needed:
                    if self.protocol(listener) == "grpc":
                        await self._grpc[listener].serve([])
                    else:
                        self._switches[listener].app = await asyncio.to_thread(self._http_app, listener, [])
        except BaseException:
            await self._close_listeners()
            raise
        self.ctx.serving.set()
        self.started_at = time.time()
        if not self._holds_heap:
            self._holds_heap = True
            _hold_heap(True)
        _trim_heap()
        LOG.info("platform up: %s", {k: v[1] for k, v in self.ctx.addresses.items()})

    async def _bind_and_serve(self, listeners: list[str]) -> None:
        """Bind every one of ``listeners`` (PortInUse before any serves), then serve "starting" on each."""
        try:
            for listener in listeners:
                self._sockets[listener] = self._bind(listener)
                host, port = self._sockets[listener].getsockname()[:2]
                self.ctx.addresses[listener] = (host, port)
        except PortInUse:
            self._close_sockets()
            raise
        for listener in listeners:
            if self.protocol(listener) == "grpc":
                await self._serve_grpc(listener)
            else:
                await self._serve_http(listener)

    async def _start_component(self, name: str, component: Component) -> None:
        component.state = ComponentState.STARTING
        try:
            await component.start()
        except CorruptState:
            # Not a component fault to run degraded with: the user must decide about their data
            # before devbox claims to be up (the error says which file and what to do).
            component.state = ComponentState.ERROR
            raise
        except Exception as exc:
            LOG.exception("component %s failed to start", name)
            component.state = ComponentState.ERROR
            component.error = f"{type(exc).__name__}: {exc}"
        else:
            component.state = ComponentState.RUNNING

    async def _serve_http(self, listener: str) -> None:
        load_uvicorn()  # before uvicorn's modules: without its command line (see load_uvicorn)
        from devbox.platform.http_server import server as http_server

        switch = self._switches[listener] = _Switch()
        server = http_server(switch)
        self._http[listener] = server
        sock = self._sockets[listener]
        self._tasks.append(asyncio.create_task(server.serve(sockets=[sock]), name=f"http:{listener}"))
        while not server.started:
            if self._tasks[-1].done():
                self._tasks[-1].result()
            await asyncio.sleep(0.005)

    async def _serve_grpc(self, listener: str) -> None:
        front = GrpcListener(listener, self._sockets.pop(listener), token=self.config.platform.token)
        self._grpc[listener] = front
        await front.start()

    async def stop(self) -> None:
        """Stop in three steps, each safe to repeat: components that own user processes (while the
        listeners still serve, so instances can flush spans and deregister), then the listeners
        (once every component has answered its long-polls), then every other component in
        reverse start order."""
        components = list(reversed(self._components.items()))
        for name, component in components:
            if component.stops_before_listeners:
                await self._stop_component(name, component)
        # Long-polls (naming watch, log follow) would otherwise hold their listener open until
        # uvicorn's graceful-shutdown timeout ends and it cancels them with an ERROR line.
        for name, component in components:
            await self._before_listeners_close(name, component)
        await self._close_listeners()
        for name, component in components:
            await self._stop_component(name, component)
        if self._holds_heap:
            self._holds_heap = False
            _hold_heap(False)
        self.stopped.set()

    async def _close_listeners(self) -> None:
        for server in self._http.values():
            server.should_exit = True
        for front in self._grpc.values():
            await front.close(grace=1.0)
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)
        self._http.clear()
        self._grpc.clear()
        self._tasks.clear()
        self._close_sockets()

    async def _before_listeners_close(self, name: str, component: Component) -> None:
        # every instantiated component: a stopped or failed one's routes are still served
        try:
            await component.before_listeners_close()
        except Exception:
            LOG.exception("component %s failed to release its waiting requests", name)

    async def _stop_component(self, name: str, component: Component) -> None:
        if component.state not in (ComponentState.RUNNING, ComponentState.ERROR):
            return
        try:
            await component.stop()
        except Exception:
            LOG.exception("component %s failed to stop cleanly", name)
        component.state = ComponentState.STOPPED

    def _close_sockets(self) -> None:
        for sock in self._sockets.values():
            sock.close()
        self._sockets.clear()


def _listeners(specs: Iterable[ComponentSpec]) -> dict[str, Listener]:
    """Every listener the specs declare, by name, the platform's own ``api`` first."""
    found: dict[str, Listener] = {API_LISTENER.name: API_LISTENER}
    for spec in specs:
        for listener in spec.listeners:
            if listener.name in found and found[listener.name] != listener:
                raise ValueError(f"listener {listener.name!r} is declared twice (component {spec.name})")
            found[listener.name] = listener
    return found
