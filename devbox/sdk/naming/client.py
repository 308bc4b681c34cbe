"""The naming client: a per-service cache fed by the platform's watch, and picks made from it.

Owns :class:`NamingClient` and the process's default client (:func:`default_client`, and the
module-level :func:`http_client` / :func:`grpc_channel` that use it).

The cache: one entry per service, filled and kept fresh by the long-poll ``GET /api/naming/watch``
(one background thread with its own asyncio loop, started on the first lookup — never at import or
construction). Without devbox's API (``DEVBOX_API_URL`` unset: an exported stack, where the naming
server is a Polaris server) but with ``DEVBOX_NAMING_HTTP``, the same cache is fed by Polaris's own
client API instead: ``POST /v1/Discover`` (type INSTANCE) with the cached revision every ``refresh``
seconds, as polaris-go polls (200001: unchanged; 400202: the service has no instance yet). When the
server is unreachable the cache keeps serving what it last had and the
watch retries with backoff; an answer with no instances does not wipe a non-empty cache (Polaris's
empty protection).

LIMITATIONS: through Polaris's Discover only instances are read — no routing rules (devbox's rules
reach the SDK through the watch) and default circuit-breaker settings.

A pick runs :func:`devbox.polaris.routing.evaluate` (isolation → health → circuit breaker → routing
rule) and then a balancer: ring hash when a ``key`` is given, otherwise the client's balancer
(weighted random by default); :func:`devbox.sdk.naming.spans.record_pick` puts it on the span.
The transports (:mod:`devbox.sdk.naming.http`, :mod:`devbox.sdk.naming.grpc`) call through it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import ipaddress
import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from pydantic import ValidationError

from devbox import envvars
from devbox.polaris.balancer import Balancer, NoInstanceError, RingHash, make_balancer
from devbox.polaris.circuit import BreakerConfig, CircuitBreakers, CircuitState
from devbox.polaris.routing import RouteRequest, RouteResult, RoutingRule, evaluate
from devbox.sdk.naming.grpc import NamingChannel, service_of
from devbox.sdk.naming.http import AsyncNamingTransport, NamingTransport
from devbox.sdk.naming.instance import Instance, NamingUnavailable
from devbox.sdk.naming.labels import current_labels
from devbox.sdk.naming.spans import record_pick, untraced
from devbox.tls import default_tls, tls_for

LOG = logging.getLogger(__name__)

#: Polaris answer codes the Discover poll reads.
POLARIS_OK, POLARIS_UNCHANGED, POLARIS_NOT_FOUND = 200000, 200001, 400202


@dataclass(frozen=True)
class Snapshot:
    """One service as the last watch answer showed it: instances, routing rules, breaker settings."""

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
    for sub in rule.subrules():
        if any(arg.type != "CUSTOM" for src in sub.sources for arg in src.arguments):
            return False
        levels = [g.priority for g in sub.destinations if not g.isolate]
        if len(levels) != len(set(levels)):
            return False
    return True


@dataclass
class Entry:
    """The cache's record of one service: its snapshot, whether it ever synced, and how fresh it is."""

    service: str
    snapshot: Snapshot = field(default_factory=Snapshot)
    #: Set by the first sync (or at once when there is no platform to ask).
    ready: threading.Event = field(default_factory=threading.Event)
    created: float = field(default_factory=time.monotonic)
    synced: bool = False
    error: str = ""
    stale_since: float | None = None
    empty_protected: bool = False
    task: concurrent.futures.Future[None] | None = None


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
        naming_http: str | None = None,
        refresh: float = 2.0,
    ) -> None:
        self.api_url = api_url.rstrip("/") if api_url else None
        #: Polaris's HTTP client API: where names resolve when there is no devbox API to watch.
        self.naming_http = naming_http.rstrip("/") if naming_http else None
        self.refresh = refresh
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
        self._entries: dict[str, Entry] = {}
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
        if api_url is None and env.get(envvars.DEVBOX_NAMING_HTTP):
            kw.setdefault("naming_http", env[envvars.DEVBOX_NAMING_HTTP])
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

    def _entry(self, service: str) -> Entry:
        entry = self._entries.get(service)
        if entry is not None:
            return entry
        with self._lock:
            entry = self._entries.get(service)
            if entry is None:
                entry = Entry(service)
                if self.api_url is None and self.naming_http is None:
                    entry.error = (f"neither {envvars.DEVBOX_API_URL} nor {envvars.DEVBOX_NAMING_HTTP} is set: "
                                   f"no platform to resolve {service!r}")
                    entry.ready.set()
                else:
                    loop = self._ensure_loop()
                    feed = self._watch(entry) if self.api_url is not None else self._poll_polaris(entry)
                    entry.task = asyncio.run_coroutine_threadsafe(feed, loop)
                self._entries[service] = entry
        return entry

    def _polling_client(self) -> httpx.AsyncClient:
        """The one client every entry's watch (or Discover poll) shares."""
        if self._http is None:
            self._http = httpx.AsyncClient(headers=self._headers, transport=self._watch_transport,
                                           verify=tls_for(self.api_url or self.naming_http or ""))
        return self._http

    async def _watch(self, entry: Entry) -> None:
        assert self.api_url is not None
        untraced()  # this task's context only: the caller's span must not adopt the long-polls
        http = self._polling_client()
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
                self._apply(entry, Snapshot(revision=""))
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

    async def _poll_polaris(self, entry: Entry) -> None:
        """Keep ``entry`` fresh from Polaris's ``POST /v1/Discover`` (no devbox API to watch)."""
        assert self.naming_http is not None
        untraced()
        http = self._polling_client()
        url = f"{self.naming_http}/v1/Discover"
        backoff = 0.2
        while not self._closed:
            revision = entry.snapshot.revision if entry.synced else ""
            body = {"type": "INSTANCE",
                    "service": {"name": entry.service, "namespace": self.namespace, "revision": revision}}
            try:
                answer = await http.post(url, json=body, timeout=10)
                data = answer.json()
                code = int(data.get("code") or answer.status_code * 1000)
                if code == POLARIS_OK:
                    self._apply(entry, self._parse_polaris(entry.service, data))
                elif code == POLARIS_NOT_FOUND:  # nothing registered under that name (yet)
                    self._apply(entry, Snapshot())
                elif code != POLARIS_UNCHANGED:
                    raise ValueError(f"Discover answered {code}: {str(data.get('info') or '')[:200]}")
            except (httpx.HTTPError, ValueError, KeyError, TypeError, AttributeError) as exc:
                self._unreachable(entry, f"naming server {self.naming_http}: {exc!r}")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            backoff = 0.2
            # nothing to call yet (no instance, or none healthy: registered, its first heartbeat not seen):
            # ask again sooner, so a service that is starting is found quickly
            callable_ = any(i.healthy and not i.isolated and i.weight > 0 for i in entry.snapshot.instances)
            await asyncio.sleep(self.refresh if callable_ else min(self.refresh, 0.5))

    def _parse_polaris(self, service: str, data: Mapping[str, Any]) -> Snapshot:
        """A ``v1.DiscoverResponse`` (protobuf-JSON, either field-name style) as a snapshot."""
        instances = []
        for raw in data.get("instances") or []:
            location = {k: v for k, v in (raw.get("location") or {}).items() if v}
            instances.append(Instance.from_json({
                "id": raw.get("id"), "host": raw["host"], "port": raw["port"], "protocol": raw.get("protocol"),
                "version": raw.get("version"), "weight": raw.get("weight", 100), "healthy": raw.get("healthy", True),
                "isolated": raw.get("isolate", False), "metadata": raw.get("metadata"), "location": location or None,
            }, service=service, namespace=self.namespace))
        revision = str((data.get("service") or {}).get("revision") or "")
        return Snapshot(revision=revision, instances=tuple(instances))

    def _parse(self, service: str, data: Mapping[str, Any]) -> Snapshot:
        instances = tuple(Instance.from_json(i, service=service, namespace=self.namespace)
                          for i in data.get("instances") or [])
        rules: list[RoutingRule] = []
        for raw in data.get("routing") or []:
            try:
                rules.append(RoutingRule.model_validate(raw))
            except ValidationError as exc:
                LOG.warning("ignoring routing rule of %s the SDK cannot read: %s", service, exc)
        return Snapshot(revision=str(data.get("revision") or ""), instances=instances, rules=tuple(rules),
                         breaker=data.get("circuit_breaker"))

    def _apply(self, entry: Entry, snap: Snapshot) -> None:
        old = entry.snapshot
        protected = False
        if self.empty_protection and not snap.instances and old.instances:
            snap = Snapshot(revision=snap.revision, instances=old.instances, rules=snap.rules, breaker=snap.breaker)
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

    def _unreachable(self, entry: Entry, reason: str) -> None:
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

    def _first_sync_wait(self, entry: Entry) -> float:
        """How long a pick may still wait for the first sync: callers in the first
        ``first_sync_timeout`` seconds wait for it, later ones fail fast while it is missing."""
        if entry.ready.is_set():
            return 0.0
        return max(0.0, entry.created + self.first_sync_timeout - time.monotonic())

    def _checked(self, service: str, entry: Entry) -> tuple[Entry, Snapshot]:
        if not entry.synced:
            raise NamingUnavailable(entry.error or f"no answer from naming for {service!r} yet")
        return entry, entry.snapshot

    def _snapshot(self, service: str) -> tuple[Entry, Snapshot]:
        entry = self._entry(service)
        wait = self._first_sync_wait(entry)
        if wait:
            entry.ready.wait(wait)
        return self._checked(service, entry)

    async def _asnapshot(self, service: str) -> tuple[Entry, Snapshot]:
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

    def _route(self, service: str, snap: Snapshot, request: RouteRequest,
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

    def _pick(self, service: str, snap: Snapshot, request: RouteRequest, key: str | None,
              exclude: Sequence[str] = ()) -> tuple[Instance, RouteResult, str]:
        with self._lock:
            result = self._route(service, snap, request, exclude)
            if not result.instances:
                raise NoInstanceError(f"no instance of {service!r} to call: {result.reason}")
            chosen, balancer = self._choose(service, result.instances, key)
            breakers = self._breaker_set(service)
            state = breakers.state(chosen.id)  # before acquire: a half-open probe taken is this call's
            breakers.acquire(chosen.id)
        record_pick(service, chosen, result, balancer, breaker=str(state))
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
        if (self.api_url is None and self.naming_http is None) or not host or "." in host or host == "localhost":
            return False
        try:
            ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            return True
        return False

    def transport(self, **kw: Any) -> NamingTransport:
        """A sync httpx transport resolving service names (``kw`` go to ``httpx.HTTPTransport``)."""
        kw.setdefault("verify", default_tls())
        return NamingTransport(self, httpx.HTTPTransport(**kw))

    def async_transport(self, **kw: Any) -> AsyncNamingTransport:
        """An async httpx transport resolving service names."""
        kw.setdefault("verify", default_tls())
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
        service = service_of(target)
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
