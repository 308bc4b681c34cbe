"""Self-registration: the instance registers itself with the naming server over Polaris's HTTP client API.

Used when the environment says the service registers itself (``DEVBOX_REGISTER=self`` — what
``devbox export`` sets, since no devbox runs on an exported stack to register anything) and names the
naming server (``DEVBOX_NAMING_HTTP``). :func:`devbox.sdk.bootstrap` starts it; under devbox with
``DEVBOX_REGISTER=auto`` (the default) nothing here runs, so an instance is never registered twice.

Owns :class:`SelfRegistration`: one background thread per process that

1. waits until the instance's port accepts connections (never discoverable before it serves);
2. ``POST /v1/RegisterInstance`` (heartbeat health check with TTL :data:`TTL`) and at once a first
   ``POST /v1/Heartbeat`` (Polaris keeps a heartbeat-checked instance unhealthy until its first one);
3. heartbeats every ``ttl / 2`` and registers again when the server has forgotten the instance (400202);
4. ``POST /v1/DeregisterInstance`` on :meth:`~SelfRegistration.stop` — the app's lifespan shutdown,
   or interpreter exit for a process without an app (a gRPC server).

Bodies are protobuf-JSON of ``v1.Instance`` (wrapper types as plain values, the server parses them
with ``json_format``), answers ``v1.Response``; codes are read as polaris-go reads them: Register
succeeds on 200000 or 400201 (already there), Deregister on 200000 or 400202 (already gone).

The address registered: ``DEVBOX_HOST`` when it names one; for a wildcard bind (``0.0.0.0``, in
containers on a bridge network or in pods) the local address on the route to the naming server —
the one the other containers reach — as polaris-go picks it.

LIMITATIONS: the HTTP client API only (not Polaris's gRPC one); no Polaris service tokens (the
platform token, if any, goes as ``Authorization: Bearer``). A process killed without running its
exit hooks (SIGKILL) stays registered until the server marks it unhealthy, 3 x TTL after its last
heartbeat.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from devbox import envvars
from devbox.polaris.ids import instance_id

LOG = logging.getLogger(__name__)

#: Heartbeat TTL in seconds (Polaris's default; the server marks an instance unhealthy after 3 x TTL).
TTL = 5
#: Polaris answer codes this module reads.
OK, EXISTED, NOT_FOUND = 200000, 400201, 400202
#: Bind addresses that mean "every interface": the instance is reached at another address.
WILDCARDS = frozenset({"", "0.0.0.0", "::", "[::]"})


class RegistrationRefused(RuntimeError):
    """The naming server answered a registration call with a code that is not a success."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class InstanceSpec:
    """What this instance registers as: read from the injected environment by :meth:`from_env`."""

    naming_http: str
    service: str
    namespace: str
    port: int
    bind_host: str = "127.0.0.1"
    protocol: str = "http"
    metadata: Mapping[str, str] = field(default_factory=dict)
    token: str | None = None
    ttl: int = TTL

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> InstanceSpec | None:
        """The spec when the env asks for self-registration and says enough to do it; else None."""
        env = os.environ if environ is None else environ
        if env.get(envvars.DEVBOX_REGISTER, "auto") != "self":
            return None
        url = env.get(envvars.DEVBOX_NAMING_HTTP)
        service = env.get(envvars.DEVBOX_SERVICE) or env.get(envvars.OTEL_SERVICE_NAME)
        port = env.get(envvars.PORT, "")
        if not url or not service or not port.isdigit():
            LOG.warning("%s=self but %s, %s or %s is missing: not registering", envvars.DEVBOX_REGISTER,
                        envvars.DEVBOX_NAMING_HTTP, envvars.DEVBOX_SERVICE, envvars.PORT)
            return None
        tags: dict[str, str] = {}
        for pair in env.get(envvars.DEVBOX_TAGS, "").split(","):
            key, sep, value = pair.partition("=")
            if sep and key.strip():
                tags[key.strip()] = value.strip()
        return cls(naming_http=url.rstrip("/"), service=service,
                   namespace=env.get(envvars.DEVBOX_NAMESPACE) or "default", port=int(port),
                   bind_host=env.get(envvars.DEVBOX_HOST, "127.0.0.1"),
                   protocol=env.get(envvars.DEVBOX_PROTOCOL) or "http", metadata=tags,
                   token=env.get(envvars.DEVBOX_TOKEN) or None)

    @property
    def probe_host(self) -> str:
        """Where this process reaches its own listener."""
        if self.bind_host in WILDCARDS:
            return "::1" if ":" in self.bind_host else "127.0.0.1"
        return self.bind_host.strip("[]")


def advertised_host(bind_host: str, naming_http: str) -> str:
    """The address others reach this instance at: the bind address, or for a wildcard bind the local
    address on the route to the naming server (a UDP ``connect`` sends nothing; it only picks the route)."""
    if bind_host not in WILDCARDS:
        return bind_host.strip("[]")
    target = urlsplit(naming_http)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.connect((target.hostname or "127.0.0.1", target.port or 80))
            return str(sock.getsockname()[0])
    except OSError:
        with contextlib.suppress(OSError):
            return socket.gethostbyname(socket.gethostname())
    return "127.0.0.1"


def listening(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class SelfRegistration:
    """Owns this instance's registration in naming: register once it listens, heartbeat, deregister."""

    def __init__(self, spec: InstanceSpec, *, transport: httpx.BaseTransport | None = None,
                 is_listening: Callable[[str, int], bool] = listening) -> None:
        self.spec = spec
        self.host = advertised_host(spec.bind_host, spec.naming_http)
        self.id = instance_id(spec.namespace, spec.service, self.host, spec.port)
        headers = {"Authorization": f"Bearer {spec.token}"} if spec.token else {}
        self._http = httpx.Client(base_url=spec.naming_http, headers=headers, timeout=5.0, transport=transport)
        self._is_listening = is_listening
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        #: Set once the instance is registered and has sent its first heartbeat.
        self.registered = threading.Event()
        self.deregistered = False

    # --- the wire --------------------------------------------------------------------------------

    def instance_body(self) -> dict[str, Any]:
        """The ``v1.Instance`` this instance registers as (protobuf-JSON)."""
        spec = self.spec
        return {
            "id": self.id, "service": spec.service, "namespace": spec.namespace, "host": self.host,
            "port": spec.port, "protocol": spec.protocol, "version": spec.metadata.get("version", ""),
            "weight": 100, "enable_health_check": True,
            "health_check": {"type": "HEARTBEAT", "heartbeat": {"ttl": spec.ttl}},
            "metadata": {**spec.metadata, "devbox.registered_by": "self"},
        }

    def _key(self) -> dict[str, Any]:
        """What Heartbeat and Deregister name the instance by."""
        spec = self.spec
        return {"id": self.id, "service": spec.service, "namespace": spec.namespace, "host": self.host,
                "port": spec.port}

    def _call(self, path: str, body: dict[str, Any], accept: tuple[int, ...] = (OK,)) -> dict[str, Any]:
        """POST ``body``; the answer (a ``v1.Response``) when its code is one of ``accept``."""
        answer = self._http.post(path, json=body)
        try:
            data = dict(answer.json())
            code = int(data.get("code") or (answer.status_code * 1000))
            info = str(data.get("info") or "")
        except (ValueError, AttributeError, TypeError):
            data, code, info = {}, answer.status_code * 1000, answer.text[:200]
        if code not in accept:
            raise RegistrationRefused(f"{path} answered {code}: {info}", code)
        return data

    def register(self) -> None:
        """Register and send the first heartbeat (raises RegistrationRefused / httpx.HTTPError)."""
        data = self._call("/v1/RegisterInstance", self.instance_body(), accept=(OK, EXISTED))
        given = (data.get("instance") or {}).get("id")
        if given:  # the server's id wins (the real one derives the same; a configured id generator may not)
            self.id = str(given)
        self.heartbeat()
        self.registered.set()
        LOG.info("registered %s at %s:%d in naming (%s) as %s", self.spec.service, self.host, self.spec.port,
                 self.spec.naming_http, self.id)

    def heartbeat(self) -> None:
        self._call("/v1/Heartbeat", self._key())

    def deregister(self) -> None:
        with contextlib.suppress(httpx.HTTPError, RegistrationRefused):
            self._call("/v1/DeregisterInstance", self._key(), accept=(OK, NOT_FOUND))
            self.deregistered = True
            LOG.info("deregistered %s at %s:%d from naming", self.spec.service, self.host, self.spec.port)

    # --- the thread --------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the background thread (once); it registers as soon as the port accepts connections."""
        with self._lock:
            if self._thread is not None or self._stop.is_set():
                return
            self._thread = threading.Thread(target=self._run, name="devbox-self-registration", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        spec = self.spec
        waited = time.monotonic()
        warned = False
        while not self._stop.is_set() and not self._is_listening(spec.probe_host, spec.port):
            if not warned and time.monotonic() - waited > 30:
                LOG.warning("%s: nothing listens on %s:%d yet; registering once it does", spec.service,
                            spec.probe_host, spec.port)
                warned = True
            self._stop.wait(0.1)
        backoff = 0.2
        interval = max(0.5, spec.ttl / 2)
        while not self._stop.is_set():
            try:
                if self.registered.is_set():
                    try:
                        self.heartbeat()
                    except RegistrationRefused as exc:
                        if exc.code != NOT_FOUND:
                            raise
                        LOG.info("naming forgot %s (%s); registering again", self.id, exc)
                        self.registered.clear()
                        self.register()
                else:
                    self.register()
            except (httpx.HTTPError, RegistrationRefused) as exc:
                LOG.warning("self-registration of %s: %s (retrying)", spec.service, exc)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, interval)
                continue
            backoff = 0.2
            self._stop.wait(interval)

    def stop(self) -> None:
        """Stop heartbeating and deregister (if registered). Idempotent."""
        with self._lock:
            if self._stop.is_set():
                return
            self._stop.set()
            thread = self._thread
        if thread is not None:
            thread.join(10)
        if self.registered.is_set():
            self.deregister()
        self._http.close()


# --- hooks: where bootstrap attaches it ---------------------------------------------------------

#: The process's registration (one per process, whatever the number of bootstrap calls).
_current: dict[str, SelfRegistration] = {}


def current() -> SelfRegistration | None:
    return _current.get("registration")


def self_register(app: Any = None, environ: Mapping[str, str] | None = None) -> SelfRegistration | None:
    """Register this instance itself when the env says so (``DEVBOX_REGISTER=self``); else None.

    With an ASGI ``app`` (FastAPI/Starlette): registration starts after the app's own startup and is
    withdrawn before its shutdown (its lifespan is wrapped). Without one: it starts now, and the
    instance deregisters at interpreter exit; SIGTERM, if the process has no handler of its own,
    then exits through those hooks (a container stop) instead of dying on the spot.
    """
    existing = current()
    if existing is not None:
        return existing
    spec = InstanceSpec.from_env(environ)
    if spec is None:
        return None
    registration = _current["registration"] = SelfRegistration(spec)
    if app is not None and _wrap_lifespan(app, registration):
        return registration
    registration.start()
    atexit.register(registration.stop)
    _exit_on_sigterm()
    return registration


def _wrap_lifespan(app: Any, registration: SelfRegistration) -> bool:
    router = getattr(app, "router", None)
    inner = getattr(router, "lifespan_context", None)
    if router is None or inner is None:
        return False

    @asynccontextmanager
    async def lifespan(scope_app: Any) -> AsyncIterator[Any]:
        async with inner(scope_app) as state:
            registration.start()
            try:
                yield state
            finally:
                await asyncio.to_thread(registration.stop)  # deregister before the app's own shutdown

    router.lifespan_context = lifespan
    atexit.register(registration.stop)  # a server stopped without its lifespan shutdown
    return True


def _exit_on_sigterm() -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return

    def exit_now(signum: int, frame: Any) -> None:
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, exit_now)
