"""Naming client for user services: resolve by service name, route, balance, break circuits.

    client = NamingClient.from_env()          # DEVBOX_API_URL, DEVBOX_NAMESPACE, DEVBOX_SERVICE, DEVBOX_TAGS
    inst = client.pick("orders", labels={"env": "feature-x"})
    client.report(inst, ok=True, latency=0.012)
    print(client.explain("orders", {"env": "feature-x"}))

    async with http_client() as http:          # http://orders/... resolves through naming
        await http.get("http://orders/orders/42")
    stub = InventoryStub(grpc_channel("polaris://inventory"))

What it owns: a local cache per service, filled and kept fresh by the platform's long-poll
``GET /api/naming/watch`` (one background thread with its own asyncio loop, started on the first
lookup — never at import or construction). When the platform is unreachable the cache keeps
serving what it last had and the watch retries with backoff, re-syncing when the platform is
back; an answer with no instances does not wipe a non-empty cache (Polaris's empty protection).

A pick runs :func:`devbox.polaris.routing.evaluate` (isolation → health → circuit breaker →
routing rule) and then a balancer: ring hash when a ``key`` is given (over httpx: the request
extension :data:`HASH_KEY`), otherwise the client's balancer (weighted random by default).
Routing labels are the current OTel baggage merged with :func:`routing_labels` overrides;
transports propagate them as a W3C ``baggage`` header / gRPC metadata so the next hop routes
the same way (:class:`RoutingLabelsMiddleware` picks them up again when tracing is off).
With tracing on, every pick is recorded on the current span (``devbox.naming.*`` attributes
and a ``devbox.naming.pick`` event).

The module-level :func:`http_client` / :func:`grpc_channel` use the process's default client:
the last one made by :meth:`NamingClient.from_env` (one per process, as the SDK facade wants).

LIMITATIONS: only the devbox watch API is spoken (not Polaris's gRPC Discover); gRPC has no
pluggable resolver in Python, so :class:`NamingChannel` keeps one real channel per instance and
picks per call; only unary calls fail over; without ``DEVBOX_API_URL`` names are not resolved
(the http transport passes requests through unchanged, picks raise :class:`NamingUnavailable`).
Only dot-free URL hosts are resolved (``http://orders/``; a dotted host is DNS), and httpx
lowercases hosts, so services called over httpx need dot-free lowercase names (``pick`` and
``grpc_channel`` take any name). Through the transports, naming failures look like the
protocol's own: :class:`UnresolvedService` (an ``httpx.ConnectError``) and gRPC UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import functools
import ipaddress
import logging
import os
import threading
import time
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
from pydantic import ValidationError

from devbox import envvars
from devbox.polaris.balancer import Balancer, NoInstanceError, RingHash, make_balancer
from devbox.polaris.circuit import BreakerConfig, CircuitBreakers, CircuitState
from devbox.polaris.routing import RouteRequest, RouteResult, RoutingRule, evaluate

if TYPE_CHECKING:
    import grpc

LOG = logging.getLogger(__name__)

__all__ = [
    "HASH_KEY",
    "Instance",
    "NamingChannel",
    "NamingClient",
    "NamingUnavailable",
    "NoInstanceError",
    "UnresolvedService",
    "current_labels",
    "default_client",
    "grpc_channel",
    "http_client",
    "routing_labels",
]

#: Explicit routing labels of the current context (used on top of OTel baggage).
_LABELS: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar("devbox_routing_labels",
                                                                                   default=None)


class NamingUnavailable(RuntimeError):
    """The platform cannot be reached and nothing is cached for the service."""


@dataclass(frozen=True)
class Instance:
    """One instance as the client sees it (the watch API's instance JSON)."""

    id: str
    service: str
    namespace: str
    host: str
    port: int
    protocol: str = "http"
    version: str = ""
    weight: int = 100
    healthy: bool = True
    isolated: bool = False
    metadata: Mapping[str, str] = field(default_factory=dict)
    location: Mapping[str, str] | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def __hash__(self) -> int:  # metadata is a dict: hash by identity in the registry
        return hash(self.id)

    @classmethod
    def from_json(cls, data: Mapping[str, Any], *, service: str, namespace: str) -> Instance:
        return cls(
            id=str(data.get("id") or f"{data['host']}:{data['port']}"),
            service=service,
            namespace=namespace,
            host=str(data["host"]),
            port=int(data["port"]),
            protocol=str(data.get("protocol") or "http"),
            version=str(data.get("version") or ""),
            weight=int(data.get("weight", 100)),
            healthy=bool(data.get("healthy", True)),
            isolated=bool(data.get("isolated", False)),
            metadata={str(k): str(v) for k, v in (data.get("metadata") or {}).items()},
            location=data.get("location") or None,
        )


@dataclass(frozen=True)
class _Snapshot:
    revision: str = ""
    instances: tuple[Instance, ...] = ()
    rules: tuple[RoutingRule, ...] = ()
    breaker: Mapping[str, Any] | None = None
    #: Routing results by (labels, blocked instances); lives and dies with this snapshot.
    routes: dict[tuple[Any, ...], RouteResult] = field(default_factory=dict, compare=False, repr=False)

    @functools.cached_property
    def memoizable(self) -> bool:
        """Whether a route depends only on labels and breaker state (so it can be reused)."""
        return all(_label_only(rule) for rule in self.rules)


def _label_only(rule: RoutingRule) -> bool:
    """Rules that match on labels only and never draw between same-priority groups."""
    if any(arg.type != "CUSTOM" for src in rule.sources for arg in src.arguments):
        return False
    levels = [g.priority for g in rule.destinations if not g.isolate]
    return len(levels) == len(set(levels))


@dataclass
class _Entry:
    service: str
    snapshot: _Snapshot = field(default_factory=_Snapshot)
    #: Set by the first sync (or at once when there is no platform to ask).
    ready: threading.Event = field(default_factory=threading.Event)
    created: float = field(default_factory=time.monotonic)
    synced: bool = False
    error: str = ""
    stale_since: float | None = None
    empty_protected: bool = False
    task: concurrent.futures.Future[None] | None = None


# --- routing labels -------------------------------------------------------------------------


@functools.cache
def _otel() -> tuple[Any, Any] | None:
    """The OTel API modules (baggage, trace), imported on first use; None without OTel."""
    try:
        from opentelemetry import baggage, trace
    except ImportError:  # pragma: no cover - OTel is a dependency, but the SDK must not need it
        return None
    return baggage, trace


def current_labels() -> dict[str, str]:
    """Routing labels of the current context: OTel baggage, then :func:`routing_labels` on top."""
    labels: dict[str, str] = {}
    otel = _otel()
    if otel is not None:
        entries = otel[0].get_all()
        if entries:
            labels.update({str(k): str(v) for k, v in entries.items()})
    extra = _LABELS.get()
    if extra:
        labels.update(extra)
    return labels


@contextlib.contextmanager
def routing_labels(**labels: str) -> Iterator[dict[str, str]]:
    """Route calls made inside the block with these labels (also when tracing is off)."""
    merged = {**(_LABELS.get() or {}), **labels}
    token = _LABELS.set(merged)
    try:
        yield merged
    finally:
        _LABELS.reset(token)


def baggage_header(labels: Mapping[str, str]) -> str:
    """W3C baggage header value for ``labels``."""
    quote = urllib.parse.quote
    return ",".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in sorted(labels.items()))


def parse_baggage(value: str) -> dict[str, str]:
    """Labels from a W3C baggage header value (properties after ';' are dropped)."""
    out: dict[str, str] = {}
    for member in value.split(","):
        key, sep, rest = member.partition("=")
        if sep and key.strip():
            out[urllib.parse.unquote(key.strip())] = urllib.parse.unquote(rest.split(";", 1)[0].strip())
    return out


class RoutingLabelsMiddleware:
    """ASGI middleware: incoming ``baggage`` becomes this request's routing labels, so labels flow
    along the call chain even when tracing (and thus OTel's propagator) is off."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        raw = dict(scope.get("headers") or []).get(b"baggage")
        if not raw:
            await self.app(scope, receive, send)
            return
        token = _LABELS.set({**(_LABELS.get() or {}), **parse_baggage(raw.decode("latin-1"))})
        try:
            await self.app(scope, receive, send)
        finally:
            _LABELS.reset(token)


# --- the client -------------------------------------------------------------------------------


class NamingClient:
    """Resolve service names through devbox naming, with routing rules, balancing and breakers."""

    def __init__(
        self,
        api_url: str | None,
        *,
        namespace: str = "default",
        service: str = "",
        metadata: Mapping[str, str] | None = None,
        balancer: str = "weighted_random",
        watch_timeout: float = 30.0,
        first_sync_timeout: float = 5.0,
        empty_protection: bool = True,
        token: str | None = None,
        breaker: BreakerConfig | None = None,
        watch_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.api_url = api_url.rstrip("/") if api_url else None
        self.namespace = namespace
        self.service = service
        self.metadata = dict(metadata or {})
        self.balancer_name = balancer
        make_balancer(balancer)  # validate the name now, not on the first pick
        self.watch_timeout = watch_timeout
        self.first_sync_timeout = first_sync_timeout
        self.empty_protection = empty_protection
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._breaker_override = breaker
        self._watch_transport = watch_transport
        self._breakers: dict[str, CircuitBreakers] = {}
        self._balancers: dict[str, Balancer] = {}
        self._rings: dict[str, RingHash] = {}
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.RLock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._http: httpx.AsyncClient | None = None
        self._closed = False
        self._from_env: tuple[Any, ...] | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **kw: Any) -> NamingClient:
        """A client configured from the deploy pipeline's injected variables; becomes the default."""
        env = os.environ if environ is None else environ
        tags: dict[str, str] = {}
        for pair in env.get(envvars.DEVBOX_TAGS, "").split(","):
            key, sep, value = pair.partition("=")
            if sep and key.strip():
                tags[key.strip()] = value.strip()
        kw.setdefault("namespace", env.get(envvars.DEVBOX_NAMESPACE) or "default")
        kw.setdefault("service", env.get(envvars.DEVBOX_SERVICE) or env.get(envvars.OTEL_SERVICE_NAME) or "")
        kw.setdefault("metadata", tags)
        kw.setdefault("token", env.get(envvars.DEVBOX_TOKEN) or None)
        if env.get(envvars.DEVBOX_NAMING_BALANCER):
            kw.setdefault("balancer", env[envvars.DEVBOX_NAMING_BALANCER])
        api_url = env.get(envvars.DEVBOX_API_URL) or None
        settings = (cls, api_url, sorted((k, repr(v)) for k, v in kw.items()))
        current = _default_holder.get("client")
        if current is not None and not current._closed and current._from_env == settings:
            return current  # bootstrap called twice: one cache and one watch thread, not two
        client = cls(api_url, **kw)
        client._from_env = settings
        _set_default(client)
        return client

    # --- cache and watch ----------------------------------------------------------------------

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._closed:
                raise RuntimeError("NamingClient is closed")
            if self._loop is None:
                loop = asyncio.new_event_loop()
                started = threading.Event()

                def run() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(started.set)
                    loop.run_forever()
                    loop.run_until_complete(loop.shutdown_asyncgens())
                    loop.close()

                self._thread = threading.Thread(target=run, name="devbox-naming-watch", daemon=True)
                self._thread.start()
                started.wait()
                self._loop = loop
            return self._loop

    def _entry(self, service: str) -> _Entry:
        entry = self._entries.get(service)
        if entry is not None:
            return entry
        with self._lock:
            entry = self._entries.get(service)
            if entry is None:
                entry = _Entry(service)
                if self.api_url is None:
                    entry.error = f"{envvars.DEVBOX_API_URL} is not set: no platform to resolve {service!r}"
                    entry.ready.set()
                else:
                    loop = self._ensure_loop()
                    entry.task = asyncio.run_coroutine_threadsafe(self._watch(entry), loop)
                self._entries[service] = entry
        return entry

    async def _watch(self, entry: _Entry) -> None:
        assert self.api_url is not None
        _untraced()  # this task's context only: the caller's span must not adopt the long-polls
        if self._http is None:
            self._http = httpx.AsyncClient(headers=self._headers, transport=self._watch_transport)
        http = self._http
        url = f"{self.api_url}/api/naming/watch"
        backoff = 0.2
        while not self._closed:
            sent = entry.snapshot.revision if entry.synced else ""
            started = time.monotonic()
            try:
                answer = await http.get(
                    url,
                    params={"namespace": self.namespace, "service": entry.service, "revision": sent,
                            "timeout": self.watch_timeout},
                    timeout=self.watch_timeout + 10,
                )
            except httpx.HTTPError as exc:
                self._unreachable(entry, f"platform unreachable: {exc!r}")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            if answer.status_code == 404:
                self._apply(entry, _Snapshot(revision=""))
            elif answer.status_code != 200:
                self._unreachable(entry, f"watch answered {answer.status_code}: {answer.text[:200]}")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            else:
                try:
                    self._apply(entry, self._parse(entry.service, answer.json()))
                except (ValueError, KeyError, TypeError) as exc:
                    self._unreachable(entry, f"watch answer not understood: {exc}")
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 2.0)
                    continue
            backoff = 0.2
            if entry.snapshot.revision == sent and time.monotonic() - started < 0.2:
                await asyncio.sleep(1.0)  # the server did not hold the poll: do not spin

    def _parse(self, service: str, data: Mapping[str, Any]) -> _Snapshot:
        instances = tuple(Instance.from_json(i, service=service, namespace=self.namespace)
                          for i in data.get("instances") or [])
        rules: list[RoutingRule] = []
        for raw in data.get("routing") or []:
            try:
                rules.append(RoutingRule.model_validate(raw))
            except ValidationError as exc:
                LOG.warning("ignoring routing rule of %s the SDK cannot read: %s", service, exc)
        return _Snapshot(revision=str(data.get("revision") or ""), instances=instances, rules=tuple(rules),
                         breaker=data.get("circuit_breaker"))

    def _apply(self, entry: _Entry, snap: _Snapshot) -> None:
        old = entry.snapshot
        protected = False
        if self.empty_protection and not snap.instances and old.instances:
            snap = _Snapshot(revision=snap.revision, instances=old.instances, rules=snap.rules, breaker=snap.breaker)
            protected = True
        with self._lock:
            if snap.breaker != old.breaker or not entry.synced:
                self._breaker_set(entry.service).configure(self._breaker_config(snap.breaker))
            self._breaker_set(entry.service).forget({i.id for i in snap.instances})
        entry.snapshot = snap
        entry.empty_protected = protected
        entry.synced = True
        entry.error = ""
        entry.stale_since = None
        entry.ready.set()
        LOG.debug("naming cache %s: revision %s, %d instances", entry.service, snap.revision, len(snap.instances))

    def _unreachable(self, entry: _Entry, reason: str) -> None:
        if entry.stale_since is None:
            entry.stale_since = time.time()
            LOG.info("naming watch for %s: %s (serving from cache)", entry.service, reason)
        entry.error = reason  # picks serve the cache meanwhile; the watch keeps trying

    def _breaker_config(self, data: Mapping[str, Any] | None) -> BreakerConfig:
        if self._breaker_override is not None:
            return self._breaker_override
        try:
            return BreakerConfig.from_mapping(data)
        except (TypeError, ValueError) as exc:
            LOG.warning("ignoring circuit_breaker settings %r: %s", data, exc)
            return BreakerConfig()

    def _breaker_set(self, service: str) -> CircuitBreakers:
        breakers = self._breakers.get(service)
        if breakers is None:
            breakers = self._breakers[service] = CircuitBreakers(self._breaker_override or BreakerConfig())
        return breakers

    def _first_sync_wait(self, entry: _Entry) -> float:
        """How long a pick may still wait for the first sync: callers in the first
        ``first_sync_timeout`` seconds wait for it, later ones fail fast while it is missing."""
        if entry.ready.is_set():
            return 0.0
        return max(0.0, entry.created + self.first_sync_timeout - time.monotonic())

    def _checked(self, service: str, entry: _Entry) -> tuple[_Entry, _Snapshot]:
        if not entry.synced:
            raise NamingUnavailable(entry.error or f"no answer from naming for {service!r} yet")
        return entry, entry.snapshot

    def _snapshot(self, service: str) -> tuple[_Entry, _Snapshot]:
        entry = self._entry(service)
        wait = self._first_sync_wait(entry)
        if wait:
            entry.ready.wait(wait)
        return self._checked(service, entry)

    async def _asnapshot(self, service: str) -> tuple[_Entry, _Snapshot]:
        entry = self._entry(service)
        wait = self._first_sync_wait(entry)
        if wait:
            await asyncio.to_thread(entry.ready.wait, wait)
        return self._checked(service, entry)

    def instances(self, service: str) -> list[Instance]:
        """Every cached instance of ``service`` (no filtering)."""
        return list(self._snapshot(service)[1].instances)

    def wait_for(self, service: str, predicate: Any, timeout: float = 10.0) -> list[Instance]:
        """Block until ``predicate(instances)`` holds for the cached list (tests, startup ordering)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                current = self.instances(service)
                if predicate(current):
                    return current
            except NamingUnavailable:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"naming cache of {service!r} did not reach the expected state")
            time.sleep(0.02)

    # --- picking ------------------------------------------------------------------------------

    def _request(self, labels: Mapping[str, str] | None, **extra: Any) -> RouteRequest:
        return RouteRequest(
            labels=current_labels() if labels is None else dict(labels),
            caller_service=self.service,
            caller_namespace=self.namespace,
            caller_metadata=self.metadata,
            **extra,
        )

    def _route(self, service: str, snap: _Snapshot, request: RouteRequest,
               exclude: Sequence[str] = ()) -> RouteResult:
        breakers = self._breaker_set(service)
        instances: Sequence[Instance] = snap.instances
        if exclude:
            instances = [i for i in instances if i.id not in exclude]
        elif snap.memoizable:
            key = (tuple(sorted(request.labels.items())), breakers.blocked())
            hit = snap.routes.get(key)
            if hit is None:
                hit = evaluate(namespace=self.namespace, service=service, instances=instances, rules=snap.rules,
                               request=request, is_open=lambda i: breakers.is_open(i.id))
                if len(snap.routes) >= 256:
                    snap.routes.clear()
                snap.routes[key] = hit
            return hit
        return evaluate(namespace=self.namespace, service=service, instances=instances, rules=snap.rules,
                        request=request, is_open=lambda i: breakers.is_open(i.id))

    def _choose(self, service: str, candidates: Sequence[Instance], key: str | None) -> tuple[Instance, str]:
        if key is not None:
            ring = self._rings.get(service)
            if ring is None:
                ring = self._rings[service] = RingHash()
            return ring.choose(candidates, key=key), ring.name
        balancer = self._balancers.get(service)
        if balancer is None:
            balancer = self._balancers[service] = make_balancer(self.balancer_name)
        return balancer.choose(candidates), balancer.name

    def _pick(self, service: str, snap: _Snapshot, request: RouteRequest, key: str | None,
              exclude: Sequence[str] = ()) -> tuple[Instance, RouteResult, str]:
        with self._lock:
            result = self._route(service, snap, request, exclude)
            if not result.instances:
                raise NoInstanceError(f"no instance of {service!r} to call: {result.reason}")
            chosen, balancer = self._choose(service, result.instances, key)
            self._breaker_set(service).acquire(chosen.id)
        _record_on_span(service, chosen, result, balancer)
        return chosen, result, balancer

    def pick(self, service: str, labels: Mapping[str, str] | None = None, key: str | None = None) -> Instance:
        """One instance of ``service`` for a call (labels default to the current routing labels)."""
        _, snap = self._snapshot(service)
        return self._pick(service, snap, self._request(labels), key)[0]

    async def apick(self, service: str, labels: Mapping[str, str] | None = None, key: str | None = None) -> Instance:
        """:meth:`pick` that waits for a first sync without blocking the event loop."""
        _, snap = await self._asnapshot(service)
        return self._pick(service, snap, self._request(labels), key)[0]

    def report(self, instance: Instance, ok: bool, latency: float | None = None) -> CircuitState:
        """The outcome of a call to ``instance`` (feeds its circuit breaker); returns the breaker state."""
        entry = self._entries.get(instance.service)
        peers = len(entry.snapshot.instances) if entry is not None else None
        with self._lock:
            state = self._breaker_set(instance.service).record(instance.id, ok, peers=peers)
        if not ok:
            LOG.debug("naming: call to %s %s failed (latency %s) -> breaker %s", instance.service,
                      instance.address, latency, state.value)
        return state

    def explain(self, service: str, labels: Mapping[str, str] | None = None, key: str | None = None) -> dict[str, Any]:
        """Why a call with ``labels`` would go where it goes: rule, each filter's removals, choice."""
        entry, snap = self._snapshot(service)
        request = self._request(labels)
        with self._lock:
            result = self._route(service, snap, request)
            chosen: Instance | None = None
            balancer = ""
            if result.instances:
                # a throwaway balancer so explaining does not move round-robin state
                probe = RingHash() if key is not None else make_balancer(self.balancer_name)
                chosen, balancer = probe.choose(result.instances, key=key), probe.name
            breakers = self._breaker_set(service).snapshot()
        by_id = {i.id: i.address for i in snap.instances}
        return {
            "service": service,
            "namespace": self.namespace,
            "revision": snap.revision,
            "caller": self.service,
            "labels": dict(request.labels),
            **result.to_dict(),
            "balancer": balancer,
            "chosen": chosen.address if chosen else None,
            "circuit_breakers": {by_id.get(k, k): v for k, v in breakers.items()},
            "cache": {"stale": entry.stale_since is not None, "error": entry.error,
                      "empty_protected": entry.empty_protected},
        }

    # --- transports -----------------------------------------------------------------------------

    def resolves(self, host: str) -> bool:
        """Whether ``host`` is a service name to resolve (not an IP, not dotted, not localhost)."""
        if self.api_url is None or not host or "." in host or host == "localhost":
            return False
        try:
            ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            return True
        return False

    def transport(self, **kw: Any) -> NamingTransport:
        """A sync httpx transport resolving service names (``kw`` go to ``httpx.HTTPTransport``)."""
        return NamingTransport(self, httpx.HTTPTransport(**kw))

    def async_transport(self, **kw: Any) -> AsyncNamingTransport:
        """An async httpx transport resolving service names."""
        return AsyncNamingTransport(self, httpx.AsyncHTTPTransport(**kw))

    def http_client(self, **kw: Any) -> httpx.AsyncClient:
        """``httpx.AsyncClient`` whose ``http://<service>/...`` URLs resolve through this client."""
        transport_kw = {k: kw.pop(k) for k in ("verify", "cert", "http2", "retries") if k in kw}
        return httpx.AsyncClient(transport=self.async_transport(**transport_kw), **kw)

    def sync_http_client(self, **kw: Any) -> httpx.Client:
        transport_kw = {k: kw.pop(k) for k in ("verify", "cert", "http2", "retries") if k in kw}
        return httpx.Client(transport=self.transport(**transport_kw), **kw)

    def grpc_channel(self, target: str, **options: Any) -> NamingChannel:
        """A grpc.aio channel-like object for ``target`` (``orders`` or ``polaris://orders``).

        Starts watching the service now (without waiting), so the first call finds a warm cache.
        """
        service = _service_of(target)
        if not service:
            raise ValueError(f"no service name in gRPC target {target!r}")
        self._entry(service)
        return NamingChannel(self, service, **options)

    def close(self) -> None:
        """Stop watching; the cache stays readable."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            loop, thread = self._loop, self._thread
        if loop is not None and thread is not None:
            async def shutdown() -> None:
                for entry in self._entries.values():
                    if entry.task is not None:
                        entry.task.cancel()
                if self._http is not None:
                    await self._http.aclose()

            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(shutdown(), loop).result(5)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(5)
        if _default_holder.get("client") is self:
            _default_holder.pop("client", None)

    def __enter__(self) -> NamingClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- span recording ---------------------------------------------------------------------------


def _untraced() -> None:
    """Detach the current task from any trace and switch OTel instrumentation off in it.

    Tasks copy their creator's context, so without this the watch's long-polls would show up
    as CLIENT spans inside whatever request first asked for the service."""
    try:
        from opentelemetry import context as otel_context
        from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY
    except ImportError:  # pragma: no cover
        return
    otel_context.attach(otel_context.set_value(_SUPPRESS_INSTRUMENTATION_KEY, True, otel_context.Context()))


def _record_on_span(service: str, chosen: Instance, result: RouteResult, balancer: str) -> None:
    otel = _otel()
    if otel is None:  # pragma: no cover
        return
    span = otel[1].get_current_span()
    if not span.is_recording():
        return
    filtered = list(result.removed_labels())
    attributes: dict[str, Any] = {
        "devbox.naming.service": service,
        "devbox.naming.rule": result.rule or "",
        "devbox.naming.destination": result.destination or "",
        "devbox.naming.instance": chosen.address,
        "devbox.naming.instance_id": chosen.id,
        "devbox.naming.filtered": filtered,
        "devbox.naming.candidates": len(result.instances),
        "devbox.naming.balancer": balancer,
        "devbox.naming.failover": result.failover,
        "devbox.naming.reason": result.reason,
    }
    span.set_attributes(attributes)
    span.add_event("devbox.naming.pick", attributes)


# --- httpx ----------------------------------------------------------------------------------

#: ``httpx`` request extension: a key for consistent hashing (ring hash), e.g. the user id, so
#: ``http.get("http://carts/...", extensions={HASH_KEY: user})`` keeps a user on one instance.
HASH_KEY = "devbox_hash_key"

_RETRY_ON = (httpx.ConnectError, httpx.ConnectTimeout)
#: Idempotent requests also fail over when a (pooled) connection died before any answer came.
_RETRY_IDEMPOTENT = (httpx.RemoteProtocolError, httpx.ReadError)
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


def _retryable(exc: Exception, request: httpx.Request) -> bool:
    if isinstance(exc, _RETRY_ON):
        return True
    return isinstance(exc, _RETRY_IDEMPOTENT) and request.method in _IDEMPOTENT


def _route_request(client: NamingClient, request: httpx.Request) -> RouteRequest:
    labels = current_labels()
    return client._request(
        labels,
        headers=dict(request.headers),
        query=dict(request.url.params),
        method=request.method,
        path=request.url.path,
    )


def _retarget(request: httpx.Request, instance: Instance, labels: Mapping[str, str]) -> None:
    request.url = request.url.copy_with(host=instance.host, port=instance.port)
    request.headers["Host"] = instance.address
    if labels and "baggage" not in request.headers:
        request.headers["baggage"] = baggage_header(labels)


class UnresolvedService(httpx.ConnectError):
    """An httpx error for a service name naming cannot turn into an instance (no platform and no
    cache, or no instance left after health, breakers and routing); ``__cause__`` says which."""


def _unresolved(exc: Exception, request: httpx.Request) -> UnresolvedService:
    error = UnresolvedService(str(exc), request=request)
    error.__cause__ = exc
    return error


def _next_instance(client: NamingClient, service: str, snap: _Snapshot, route: RouteRequest,
                   request: httpx.Request, tried: list[str], failed: Exception | None) -> Instance:
    try:
        key = request.extensions.get(HASH_KEY)
        return client._pick(service, snap, route, None if key is None else str(key), exclude=tried)[0]
    except NoInstanceError as exc:
        if failed is not None:
            raise failed from None  # nothing to fail over to: the connect error is the news
        raise _unresolved(exc, request) from exc


class NamingTransport(httpx.BaseTransport):
    """Sync transport: ``http://orders/x`` → a picked instance; one failover on connect errors
    (and, for idempotent methods, on a connection that died before answering).

    Naming failures surface as :class:`UnresolvedService` (an ``httpx.ConnectError``), so code
    that handles ``httpx.HTTPError`` handles them too.
    """

    def __init__(self, client: NamingClient, inner: httpx.BaseTransport) -> None:
        self.client = client
        self.inner = inner

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        service = request.url.host
        if not self.client.resolves(service):
            return self.inner.handle_request(request)
        try:
            _, snap = self.client._snapshot(service)
        except NamingUnavailable as exc:
            raise _unresolved(exc, request) from exc
        route = _route_request(self.client, request)
        tried: list[str] = []
        failed: Exception | None = None
        while True:
            instance = _next_instance(self.client, service, snap, route, request, tried, failed)
            _retarget(request, instance, route.labels)
            started = time.perf_counter()
            try:
                response = self.inner.handle_request(request)
            except httpx.TransportError as exc:
                self.client.report(instance, False, time.perf_counter() - started)
                tried.append(instance.id)
                if failed is not None or not _retryable(exc, request):
                    raise
                failed = exc
                LOG.info("naming: %s at %s failed (%r); failing over", service, instance.address, exc)
                continue
            self.client.report(instance, response.status_code < 500, time.perf_counter() - started)
            return response

    def close(self) -> None:
        self.inner.close()


class AsyncNamingTransport(httpx.AsyncBaseTransport):
    """Async transport: ``http://orders/x`` → a picked instance; one failover on connect errors
    (and, for idempotent methods, on a connection that died before answering).

    Naming failures surface as :class:`UnresolvedService` (an ``httpx.ConnectError``).
    """

    def __init__(self, client: NamingClient, inner: httpx.AsyncBaseTransport) -> None:
        self.client = client
        self.inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        service = request.url.host
        if not self.client.resolves(service):
            return await self.inner.handle_async_request(request)
        try:
            _, snap = await self.client._asnapshot(service)
        except NamingUnavailable as exc:
            raise _unresolved(exc, request) from exc
        route = _route_request(self.client, request)
        tried: list[str] = []
        failed: Exception | None = None
        while True:
            instance = _next_instance(self.client, service, snap, route, request, tried, failed)
            _retarget(request, instance, route.labels)
            started = time.perf_counter()
            try:
                response = await self.inner.handle_async_request(request)
            except httpx.TransportError as exc:
                self.client.report(instance, False, time.perf_counter() - started)
                tried.append(instance.id)
                if failed is not None or not _retryable(exc, request):
                    raise
                failed = exc
                LOG.info("naming: %s at %s failed (%r); failing over", service, instance.address, exc)
                continue
            self.client.report(instance, response.status_code < 500, time.perf_counter() - started)
            return response

    async def aclose(self) -> None:
        await self.inner.aclose()


# --- gRPC -------------------------------------------------------------------------------------


def _service_of(target: str) -> str:
    for prefix in ("polaris://", "devbox://", "dns:///"):
        if target.startswith(prefix):
            target = target[len(prefix):]
    return target.strip("/").split("/", 1)[0]


def _grpc_error_codes() -> frozenset[Any]:
    import grpc

    return frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.INTERNAL,
                      grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS})


class NamingChannel:
    """A grpc.aio channel look-alike: each call picks an instance (one real channel per instance).

    Stubs generated by grpcio accept it (``InventoryStub(channel)``). Unary-unary calls fail over
    once on UNAVAILABLE; every call's status feeds the instance's circuit breaker (UNAVAILABLE,
    DEADLINE_EXCEEDED, INTERNAL, UNKNOWN, DATA_LOSS count as errors; application statuses don't).
    """

    def __init__(self, client: NamingClient, service: str, *, options: Sequence[tuple[str, Any]] | None = None,
                 interceptors: Sequence[Any] | None = None) -> None:
        self.client = client
        self.service = service
        self._options = list(options or [])
        self._interceptors = list(interceptors or [])
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._errors = _grpc_error_codes()

    def _channel(self, instance: Instance) -> grpc.aio.Channel:
        channel = self._channels.get(instance.address)
        if channel is None:
            import grpc

            channel = grpc.aio.insecure_channel(instance.address, options=self._options,
                                                interceptors=self._interceptors or None)
            self._channels[instance.address] = channel
        return channel

    def _metadata(self, metadata: Any, labels: Mapping[str, str]) -> Any:
        if not labels:
            return metadata
        pairs = list(metadata or ())
        if any(k == "baggage" for k, _ in pairs):
            return metadata
        pairs.append(("baggage", baggage_header(labels)))
        return tuple(pairs)

    def unary_unary(self, method: str, request_serializer: Any = None, response_deserializer: Any = None,
                    _registered_method: bool | None = False) -> _UnaryUnary:
        return _UnaryUnary(self, method, request_serializer, response_deserializer)

    def unary_stream(self, method: str, request_serializer: Any = None, response_deserializer: Any = None,
                     _registered_method: bool | None = False) -> _Streaming:
        return _Streaming(self, "unary_stream", method, request_serializer, response_deserializer)

    def stream_unary(self, method: str, request_serializer: Any = None, response_deserializer: Any = None,
                     _registered_method: bool | None = False) -> _Streaming:
        return _Streaming(self, "stream_unary", method, request_serializer, response_deserializer)

    def stream_stream(self, method: str, request_serializer: Any = None, response_deserializer: Any = None,
                      _registered_method: bool | None = False) -> _Streaming:
        return _Streaming(self, "stream_stream", method, request_serializer, response_deserializer)

    def _report_later(self, instance: Instance, started: float, call: Any) -> None:
        async def report() -> None:
            try:
                code = await call.code()
            except asyncio.CancelledError:
                return
            self.client.report(instance, code not in self._errors, time.perf_counter() - started)

        task = asyncio.get_running_loop().create_task(report())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def channel_ready(self) -> None:
        instance = await self.client.apick(self.service)
        await self._channel(instance).channel_ready()

    async def close(self, grace: float | None = None) -> None:
        channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            await channel.close(grace)

    async def __aenter__(self) -> NamingChannel:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class _UnaryUnary:
    def __init__(self, channel: NamingChannel, method: str, serializer: Any, deserializer: Any) -> None:
        self._ch = channel
        self._method = method
        self._serializer = serializer
        self._deserializer = deserializer
        #: per instance address: (the real channel, its multicallable), rebuilt if the channel is new
        self._callables: dict[str, tuple[Any, Any]] = {}

    def __call__(self, request: Any, *, timeout: float | None = None, metadata: Any = None, **kw: Any) -> Any:
        return self._invoke(request, timeout=timeout, metadata=metadata, **kw)

    async def _invoke(self, request: Any, *, timeout: float | None, metadata: Any, **kw: Any) -> Any:
        import grpc

        ch, client = self._ch, self._ch.client
        try:
            _, snap = await client._asnapshot(ch.service)
        except NamingUnavailable as exc:
            raise _unavailable(exc) from exc
        route = client._request(None, method=self._method)
        tried: list[str] = []
        failed: grpc.aio.AioRpcError | None = None
        while True:
            try:
                instance = client._pick(ch.service, snap, route, None, exclude=tried)[0]
            except NoInstanceError as exc:
                if failed is not None:
                    raise failed from None
                raise _unavailable(exc) from exc
            channel = ch._channel(instance)
            cached = self._callables.get(instance.address)
            if cached is None or cached[0] is not channel:
                cached = self._callables[instance.address] = (channel, channel.unary_unary(
                    self._method, request_serializer=self._serializer, response_deserializer=self._deserializer))
            callable_ = cached[1]
            started = time.perf_counter()
            try:
                response = await callable_(request, timeout=timeout, metadata=ch._metadata(metadata, route.labels),
                                           **kw)
            except grpc.aio.AioRpcError as exc:
                client.report(instance, exc.code() not in ch._errors, time.perf_counter() - started)
                tried.append(instance.id)
                if exc.code() is grpc.StatusCode.UNAVAILABLE and failed is None:
                    failed = exc
                    LOG.info("naming: %s at %s unavailable; failing over", ch.service, instance.address)
                    continue
                raise
            client.report(instance, True, time.perf_counter() - started)
            return response


def _unavailable(exc: Exception) -> grpc.aio.AioRpcError:
    """A naming failure as the UNAVAILABLE status a gRPC caller already handles."""
    import grpc

    return grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(),
                                details=f"devbox naming: {exc}")


class _Streaming:
    def __init__(self, channel: NamingChannel, kind: str, method: str, serializer: Any, deserializer: Any) -> None:
        self._ch = channel
        self._kind = kind
        self._method = method
        self._serializer = serializer
        self._deserializer = deserializer

    def __call__(self, request: Any = None, *, metadata: Any = None, **kw: Any) -> Any:
        ch, client = self._ch, self._ch.client
        route = client._request(None, method=self._method)
        try:
            instance = client.pick(ch.service, labels=route.labels)
        except (NamingUnavailable, NoInstanceError) as exc:
            raise _unavailable(exc) from exc
        factory = getattr(ch._channel(instance), self._kind)
        callable_ = factory(self._method, request_serializer=self._serializer,
                            response_deserializer=self._deserializer)
        args = () if request is None else (request,)
        call = callable_(*args, metadata=ch._metadata(metadata, route.labels), **kw)
        ch._report_later(instance, time.perf_counter(), call)
        return call


# --- the process default ------------------------------------------------------------------------

#: The process's default client (what ``bootstrap`` made); a dict so there is no ``global``.
_default_holder: dict[str, NamingClient] = {}


def _set_default(client: NamingClient) -> None:
    _default_holder["client"] = client


def default_client() -> NamingClient:
    """The default client: the last :meth:`NamingClient.from_env`, made now if there is none."""
    client = _default_holder.get("client")
    return client if client is not None else NamingClient.from_env()


def http_client(**kw: Any) -> httpx.AsyncClient:
    """``httpx.AsyncClient`` resolving ``http://<service>/...`` through the default client."""
    return default_client().http_client(**kw)


def grpc_channel(target: str, **options: Any) -> NamingChannel:
    """A grpc.aio channel-like object for ``target`` (``orders`` or ``polaris://orders``)."""
    return default_client().grpc_channel(target, **options)
