"""The faults component: fault injection at the platform boundary, so services in any language feel it.

- ``front(service, instance_id, host, port) -> (host, port)`` (:class:`~devbox.platform.ports.FaultFront`):
  the deploy pipeline calls this before registering an instance (when the project enables
  faults) and registers the returned address: a :class:`~devbox.mocks.faults.proxy.FaultProxy`
  in front of the instance. Callers that resolve through naming then go through the proxy.
- rules (``POST /api/faults``): latency, error rate with status, abort; scoped to a callee, a
  caller→callee pair (caller from ``x-devbox-caller``, baggage ``caller``, else the calling
  process found by its socket), one instance of the callee (deploy name or naming id: the proxy
  in front of each instance knows which it is), an HTTP method or a path prefix.
- naming faults: heartbeats of chosen instances are dropped (whoever sends them), so naming turns
  them unhealthy after the TTL as if the network lost them (naming's own hook,
  :meth:`~devbox.platform.ports.NamingPort.drop_heartbeats`).
- every injected error, abort or delay with a trace context becomes a span of the callee (sent to
  the collector over OTLP), so traces show the fault where it was injected.
- zero-code tracing (``trace: auto|on|off`` per service): the proxy in front of each instance
  makes the SERVER span of every HTTP request (:mod:`devbox.mocks.faults.proxy`) or gRPC call
  (:mod:`devbox.mocks.faults.grpc_proxy`, the proxy a traced gRPC service gets), shipped with the fault
  spans, so a service with no OpenTelemetry SDK shows in traces, topology and RED metrics. ``auto``
  turns it off for a service once tracing has seen spans of its own
  (:meth:`~devbox.platform.ports.TracesPort.services_seen`). A service traced this way gets a proxy
  even when faults are disabled.

One hop, one server span. A request through a service's entry port goes entry -> instance proxy
(when there is one) -> instance. The instance proxy is the one that makes the server span: it sees
every caller (the entry and the other services alike) and knows the instance. The entry makes the
span only when the instance it picked has no tracing proxy in front (e.g. a ``register: self``
instance); it then is the root server span when the caller sent no context. Never both: two server
spans of one service for one request would count each call twice in RED metrics.

The API on ``api`` is :mod:`devbox.mocks.faults.api`. Which process calls (for caller-scoped
rules) is found through :class:`~devbox.platform.ports.DeployView`.

LIMITATIONS: see :mod:`devbox.mocks.faults.proxy`; a proxy adds about a connection set-up per call.
Zero-code tracing covers HTTP/1.1 services and gRPC ones (:mod:`devbox.mocks.faults.grpc_proxy`; a gRPC
service devbox does not trace keeps the TCP-level proxy: no spans, rules unscoped by method). Under
``trace: auto`` an instrumented service's first requests, before tracing has seen its own spans
(a flush or two), get the proxy's span too, with the service's own nested under it; ``trace: on``
keeps both for every request (two server spans per hop, each counted in RED metrics).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from devbox.mocks.faults.api import FaultsApi
from devbox.mocks.faults.entry import EntryProxy
from devbox.mocks.faults.errors import (
    EntryPortTaken,
    FaultsDisabled,
    InvalidFault,
    NamingAbsent,
    UnknownFault,
    UnknownTarget,
)
from devbox.mocks.faults.proxy import FaultProxy, RequestHead
from devbox.mocks.faults.rules import Decision, FaultSpec, Rule, decide, parse_traceparent
from fastapi import APIRouter
from pydantic import ValidationError

from devbox.httpcore_loader import load_httpx
from devbox.platform.component import Component, PlatformContext
from devbox.platform.ports import DeployView, FaultFront, NamingPort, TracesPort, UnknownInstance

if TYPE_CHECKING:
    import httpx
    from devbox.mocks.faults.grpc_proxy import GrpcProxy

LOG = logging.getLogger(__name__)

#: Seconds a ``trace: auto`` service's proxy spans are held after its first request, waiting to see
#: whether the service sends spans of its own (its SDK exports every 0.5 s; tracing indexes in ~1 s).
AUTO_HOLD = 3.0


class FaultsComponent(Component):
    """Owns the fault rules, the proxies in front of instances and the dropped heartbeats."""

    name = "faults"

    def __init__(self, ctx: PlatformContext) -> None:
        super().__init__(ctx)
        section = getattr(ctx.config, "faults", None)
        #: Whether deploy should put a proxy in front of instances (see ``front``).
        self.enabled: bool = bool(getattr(section, "enabled", False))
        self.rules: dict[str, Rule] = {}
        self.proxies: dict[tuple[str, int], FaultProxy | GrpcProxy] = {}
        #: service -> its stable entry port (see :mod:`devbox.mocks.faults.entry`), open until stop.
        self.entries: dict[str, EntryProxy] = {}
        #: Instances whose heartbeats naming drops on our request.
        self.dropped: set[str] = set()
        self._spans: list[dict[str, Any]] = []
        self._http: httpx.AsyncClient | None = None
        self._flusher: asyncio.Task[None] | None = None
        #: peer (host, port) -> (calling service, when found): a gRPC connection asks once per chunk.
        self._callers: dict[tuple[str, int], tuple[str | None, float]] = {}
        #: Services tracing has seen sending their own spans (``trace: auto`` leaves them alone).
        self._instrumented: set[str] = set()
        #: trace: auto services that sent no span of their own for AUTO_HOLD s after their first request
        self._untraced: set[str] = set()
        self._held: list[tuple[float, str, dict[str, Any]]] = []
        self._held_since: dict[str, float] = {}
        #: instance id -> its deploy tags, for the resource of the spans its proxy makes.
        self._tags: dict[str, dict[str, str]] = {}
        ctx.provide(FaultFront, self)

    # --- the deploy hook -------------------------------------------------------------------

    async def front(self, service: str, instance_id: str, host: str, port: int) -> tuple[str, int]:
        """The address to register for an instance: a proxy in front of it when faults are enabled
        or devbox traces the service (see :meth:`traces`)."""
        if not self.enabled and not self.traces(service):
            return host, port
        existing = self.proxies.get((host, port))
        if existing is not None and existing.address is not None:
            existing.instance_id = instance_id
            if not existing.listening and not existing.blocked:  # the instance came back after a crash
                with contextlib.suppress(OSError):
                    return await existing.start()
                del self.proxies[(host, port)]  # its port was taken meanwhile: a new proxy
            else:
                return existing.address
        mode = "http"
        with contextlib.suppress(KeyError):
            mode = "tcp" if self.ctx.config.service(service).protocol == "grpc" else "http"
        proxy: FaultProxy | GrpcProxy
        if mode == "tcp" and self.traces(service):  # a traced gRPC service: a proxy that sees each call
            from devbox.mocks.faults.grpc_proxy import GrpcProxy  # grpc: loaded by the first such service

            proxy = GrpcProxy(service=service, instance_id=instance_id, upstream=(host, port),
                              decide=self._decide, on_fault=self._on_fault)
        else:
            proxy = FaultProxy(
                service=service, instance_id=instance_id, upstream=(host, port), mode=mode,
                decide=self._decide, on_fault=self._on_fault,
            )
        self._retune(proxy)
        address = await proxy.start(host if host not in ("0.0.0.0", "") else "127.0.0.1")
        self.proxies[(host, port)] = proxy
        LOG.info("fault proxy for %s %s: %s:%s -> %s:%s", service, instance_id, *address, host, port)
        return address

    async def entry(self, service: str, port: int | None = None, *, protocol: str = "http") -> tuple[str, int]:
        """The service's stable entry address, opened on first call (at ``port``, or a free one).

        Open whatever ``faults.enabled`` says: the entry is not a fault, it is what users call.
        """
        existing = self.entries.get(service)
        if existing is not None and existing.address is not None:
            return existing.address
        naming = self.ctx.lookup(NamingPort)
        if naming is None:
            raise NamingAbsent("naming is not hosted: an entry port has no instance list to forward to")

        def candidates() -> list[Any]:
            return list(naming.instances(naming.namespace, service))

        proxy = EntryProxy(service=service, mode="tcp" if protocol == "grpc" else "http", candidates=candidates,
                           traced_behind=self._traced_behind)
        self._retune(proxy)
        try:
            # where the platform listens: loopback by default; a project that binds devbox beyond this
            # machine (platform.host + token) makes its entry ports reachable too (remote load workers)
            address = await proxy.start(self.ctx.config.platform.host or "127.0.0.1", port or 0)
        except OSError as exc:
            raise EntryPortTaken(f"entry port {port} of service {service} cannot be opened: {exc.strerror or exc}; "
                                 "free it or choose another `port:` in devbox.yaml") from None
        self.entries[service] = proxy
        LOG.info("entry port of %s: %s:%s", service, *address)
        return address

    async def release(self, instance_id: str) -> None:
        """The instance is gone for good: close the proxy in front of it."""
        self._tags.pop(instance_id, None)
        for backend, proxy in list(self.proxies.items()):
            if proxy.instance_id == instance_id:
                del self.proxies[backend]
                await proxy.stop()

    def backend_of(self, host: str, port: int) -> tuple[str, int]:
        """The instance behind a proxy address (or the address itself)."""
        for backend, proxy in self.proxies.items():
            if proxy.address == (host, port):
                return backend
        return host, port

    # --- zero-code tracing -----------------------------------------------------------------

    def traces(self, service: str) -> bool:
        """Whether devbox's proxies make the server spans of ``service`` (its ``trace:`` setting)."""
        if self.ctx.lookup(TracesPort) is None or "otlp_http" not in self.ctx.addresses:
            return False
        try:
            svc = self.ctx.config.service(service)
        except KeyError:
            return False
        if svc.trace == "off":
            return False
        return svc.trace == "on" or service not in self._instrumented

    def _retune(self, proxy: FaultProxy | GrpcProxy) -> None:
        """Give the proxy its span sink, or take it away, after the service's tracing changed."""
        proxy.on_span = self._on_span if proxy.mode in ("http", "grpc") and self.traces(proxy.service) else None
        proxy.provisional = self._provisional

    def _provisional(self, service: str) -> bool:
        """Whether the proxy spans of ``service`` made now may yet be dropped: ``trace: auto`` and not
        yet found silent (:data:`AUTO_HOLD`) — they are held, and dropped if its own spans arrive."""
        try:
            auto = self.ctx.config.service(service).trace == "auto"
        except KeyError:
            return False
        return auto and service not in self._untraced

    def _traced_behind(self, address: tuple[str, int]) -> bool:
        """Whether ``address`` is an instance proxy that makes server spans (the entry then makes none)."""
        return any(p.address == address and p.on_span is not None for p in self.proxies.values())

    def _refresh_instrumented(self) -> None:
        traces = self.ctx.lookup(TracesPort)
        if traces is None:
            return
        seen = traces.services_seen()
        if seen - self._instrumented:
            LOG.info("services sending their own spans (trace: auto stops the proxy's): %s",
                     ", ".join(sorted(seen - self._instrumented)))
            self._instrumented |= seen
            for proxy in [*self.proxies.values(), *self.entries.values()]:
                self._retune(proxy)

    def _on_span(self, service: str, instance_id: str, span: dict[str, Any]) -> None:
        item = {"resource": _resource(service, instance_id, self._instance_tags(service, instance_id)), "span": span}
        if not self._provisional(service):
            self._spans.append(item)
            return
        # trace: auto, not decided yet: an instrumented service's first spans reach tracing a moment after
        # its first requests (its SDK batches for 0.5 s); held until then, they are dropped when its own
        # arrive — else the first checkouts would carry two server spans of the gateway, one its own
        self._held.append((time.monotonic(), service, item))
        self._held_since.setdefault(service, time.monotonic())

    def _instance_tags(self, service: str, instance_id: str) -> dict[str, str]:
        """The instance's deploy tags (version, env...) from its registration, as an SDK would put them in its
        resource (``devbox.<tag>``, see OTEL_RESOURCE_ATTRIBUTES): a release gate compares versions by them."""
        tags = self._tags.get(instance_id)
        if tags is None:
            naming = self.ctx.lookup(NamingPort)
            found = next((i for i in naming.instances(naming.namespace, service) if i.id == instance_id),
                         None) if naming is not None else None
            if found is None:  # not registered yet: ask again at its next span
                return {}
            tags = self._tags[instance_id] = {k: v for k, v in found.metadata.items() if not k.startswith("devbox.")}
        return tags

    # --- rules -----------------------------------------------------------------------------

    def add_rule(self, spec: FaultSpec | Mapping[str, Any]) -> dict[str, Any]:
        """Add a rule; :class:`InvalidFault` (every problem in its reason) when it does not validate."""
        if not self.enabled:
            raise FaultsDisabled(
                "faults are disabled in this project (faults.enabled is false): no fault proxy stands in "
                "front of the instances, so the rule would change nothing. Set `faults: {enabled: true}` "
                "in devbox.yaml and restart `devbox up` (scenario runs enable it themselves)"
            )
        if not isinstance(spec, FaultSpec):
            try:
                spec = FaultSpec.model_validate(spec)
            except ValidationError as exc:
                reasons = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())
                raise InvalidFault(reasons) from None
        if spec.instance is not None:
            known = self._instance_names(spec.service)
            if known and spec.instance not in known:
                raise InvalidFault(f"instance: {spec.service} has no instance {spec.instance!r} "
                                   f"(its instances: {', '.join(sorted(known))})")
        rule = Rule(spec)
        self.rules[rule.id] = rule
        LOG.info("fault %s added: %s", rule.id, spec.model_dump(exclude_defaults=True))
        return rule.to_json()

    def remove_rule(self, rule_id: str) -> None:
        if self.rules.pop(rule_id, None) is None:
            raise UnknownFault(f"no fault {rule_id!r}")

    def clear(self) -> None:
        """Remove every rule and let every heartbeat through again."""
        self.rules.clear()
        for instance_id in list(self.dropped):
            self.drop_heartbeats(instance_id, False)

    async def reset(self) -> None:
        """:meth:`clear`, and accept connections again for instances whose circuit was forced open."""
        self.clear()
        for proxy in self.proxies.values():
            if proxy.blocked:
                await self.open_circuit(proxy.instance_id, False)

    async def _decide(
        self, service: str, caller: str | None, method: str | None, path: str | None, peer: tuple[str, int],
        instance_id: str,
    ) -> Decision:
        rules = [r for r in self.rules.values() if r.spec.service == service]
        if not rules:
            return Decision()
        if caller is None and any(r.spec.caller for r in rules):
            caller = await self._caller_by_socket(peer)
        names: set[str] = {instance_id}
        if any(r.spec.instance is not None and r.spec.instance != instance_id for r in rules):
            names |= self._instance_names(service, instance_id)
        return decide(rules, service=service, caller=caller, method=method, path=path, instance=names)

    def _instance_names(self, service: str, instance_id: str | None = None) -> set[str]:
        """The names the service's instances go by (naming id, deploy name ``users-2``); only those of
        ``instance_id`` when given. Deploy knows the names of what it runs; naming keeps the name in the
        ``devbox.instance`` metadata of what deploy registered."""
        names: set[str] = set()
        deploy = self.ctx.lookup(DeployView)
        for inst in deploy.running_instances() if deploy is not None else ():
            if inst.service == service and inst.naming_id and instance_id in (None, inst.naming_id):
                names |= {inst.name, inst.naming_id}
        naming = self.ctx.lookup(NamingPort)
        for found in naming.instances(naming.namespace, service) if naming is not None else ():
            if instance_id in (None, found.id):
                names.add(found.id)
                if found.metadata.get("devbox.instance"):
                    names.add(found.metadata["devbox.instance"])
        return names

    async def _caller_by_socket(self, peer: tuple[str, int]) -> str | None:
        """The service whose process owns the calling socket: works for callers in any language."""
        key = (str(peer[0]), int(peer[1]))
        cached = self._callers.get(key)
        now = time.monotonic()
        if cached is not None and now - cached[1] < 5:
            return cached[0]
        if len(self._callers) > 4096:
            self._callers.clear()
        caller = await self._lookup_caller(peer)
        self._callers[key] = (caller, now)
        return caller

    async def _lookup_caller(self, peer: tuple[str, int]) -> str | None:
        deploy = self.ctx.lookup(DeployView)
        if deploy is None:
            return None
        pids = {inst.pid: inst.service for inst in deploy.running_instances() if inst.pid}
        return await asyncio.to_thread(_owner_of, peer, pids)

    # --- naming faults ---------------------------------------------------------------------

    async def open_circuit(self, instance_id: str, opened: bool = True) -> None:
        """Make callers' circuit breakers open for an instance that naming still lists as healthy.

        Breakers live in each caller's SDK, in whatever language: the platform cannot flip them.
        What it can do is what trips them in production: the instance's proxy stops accepting
        connections (connection refused), so every caller fails over and its breaker ejects the
        instance, while heartbeats keep it healthy in naming. ``opened=False`` accepts again.
        """
        proxy = next((p for p in self.proxies.values() if p.instance_id == instance_id), None)
        if proxy is None:
            raise UnknownTarget(f"no fault proxy in front of instance {instance_id!r} (is faults.enabled on?)")
        proxy.blocked = opened
        if opened and proxy.listening:
            await proxy.suspend()
        elif not opened and not proxy.listening:
            await proxy.start()

    def drop_heartbeats(self, instance_id: str, drop: bool = True) -> None:
        """Drop (or let through again) every heartbeat of an instance, whoever sends it."""
        naming = self.ctx.lookup(NamingPort)
        if naming is None:
            raise NamingAbsent("naming is not hosted: there are no heartbeats to drop")
        try:
            naming.drop_heartbeats(instance_id, drop)
        except UnknownInstance as exc:
            if drop:
                raise UnknownTarget(str(exc.args[0]) if exc.args else str(exc)) from None
            # letting an instance's heartbeats through that naming forgot meanwhile: nothing to undo
        if drop:
            self.dropped.add(instance_id)
        else:
            self.dropped.discard(instance_id)

    # --- spans of injected faults ----------------------------------------------------------

    def _on_fault(self, instance_id: str, decision: Decision, head: RequestHead | None, start: float,
                  end: float) -> None:
        if head is None:
            return
        context = parse_traceparent(head.header("traceparent"))
        if context is None:
            return
        trace_id, parent = context
        proxy = next((p for p in self.proxies.values() if p.instance_id == instance_id), None)
        service = proxy.service if proxy else "unknown"
        if decision.abort:
            name, error, message = f"{head.method} {head.path.split('?')[0]}", True, "connection aborted (injected)"
        elif decision.status is not None:
            name, error = f"{head.method} {head.path.split('?')[0]}", True
            message = f"HTTP {decision.status} (injected)"
        else:
            name, error, message = "devbox.fault.latency", False, ""
        attributes = [
            {"key": "devbox.fault", "value": {"stringValue": ",".join(decision.rules)}},
            {"key": "devbox.fault.latency_ms", "value": {"doubleValue": decision.latency_ms}},
        ]
        if decision.status is not None:
            attributes.append({"key": "http.response.status_code", "value": {"intValue": str(decision.status)}})
        attributes.append({"key": "devbox.span.source", "value": {"stringValue": "fault"}})
        self._spans.append({
            "resource": _resource(service, instance_id, self._instance_tags(service, instance_id)),
            "span": {
                "traceId": trace_id,
                "spanId": os.urandom(8).hex(),
                "parentSpanId": parent,
                "name": name,
                # an error answered in the callee's place is its server span; a delay is internal time
                "kind": 2 if error else 1,
                "startTimeUnixNano": str(int(start * 1e9)),
                "endTimeUnixNano": str(int(max(end, start + 1e-6) * 1e9)),
                "attributes": attributes,
                "status": {"code": 2, "message": message} if error else {"code": 0},
            },
        })

    def _release_held(self) -> None:
        """Drop held spans of services now seen sending their own; ship those of services that stayed
        silent for :data:`AUTO_HOLD` seconds after their first request (from then on, no holding)."""
        if not self._held:
            return
        now = time.monotonic()
        for service, since in list(self._held_since.items()):
            if service not in self._instrumented and now - since >= AUTO_HOLD:
                self._untraced.add(service)
                del self._held_since[service]
        keep = []
        for item in self._held:
            service = item[1]
            if service in self._instrumented:
                continue
            if service in self._untraced:
                self._spans.append(item[2])
            else:
                keep.append(item)
        self._held = keep
        for service in [s for s in self._held_since if s in self._instrumented]:
            del self._held_since[service]

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(0.2)
            self._refresh_instrumented()
            self._release_held()
            if self._spans and "otlp_http" in self.ctx.addresses:
                batch, self._spans = self._spans, []
                await self._send(batch)

    async def _send(self, batch: list[dict[str, Any]]) -> None:
        by_resource: dict[tuple[str, str], list[dict[str, Any]]] = {}
        resources: dict[tuple[str, str], dict[str, Any]] = {}
        for item in batch:
            attrs = item["resource"]["attributes"]
            key = (attrs[0]["value"]["stringValue"], attrs[1]["value"]["stringValue"])
            by_resource.setdefault(key, []).append(item["span"])
            resources[key] = item["resource"]
        body = {
            "resourceSpans": [
                {"resource": resources[k], "scopeSpans": [{"scope": {"name": "devbox.proxy"}, "spans": spans}]}
                for k, spans in by_resource.items()
            ]
        }
        httpx = load_httpx()

        if self._http is None:  # made on the first spans: a project without faults never loads httpx
            # only ever posts to the platform's own plain-HTTP OTLP listener: no TLS, no CA bundle to load
            self._http = httpx.AsyncClient(timeout=5.0, verify=False)
        try:
            await self._http.post(self.ctx.url("otlp_http") + "/v1/traces", json=body)
        except httpx.HTTPError as exc:
            LOG.warning("sending %d proxy spans failed: %s", len(batch), exc)

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        self._refresh_instrumented()  # starts tracing's watch of who sends spans of their own
        self._flusher = asyncio.create_task(self._flush_loop(), name="faults:spans")

    async def stop(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        for proxy in [*self.proxies.values(), *self.entries.values()]:
            await proxy.stop()
        self.proxies.clear()
        self.entries.clear()
        if self._spans and "otlp_http" in self.ctx.addresses:
            with contextlib.suppress(Exception):
                await self._send(self._spans)
        if self._http is not None:
            await self._http.aclose()
        for instance_id in list(self.dropped):
            with contextlib.suppress(Exception):  # naming may be gone already
                self.drop_heartbeats(instance_id, False)

    def info(self) -> dict[str, Any]:
        return {"enabled": self.enabled, "rules": len(self.rules), "proxies": len(self.proxies),
                "dropped_heartbeats": len(self.dropped),
                "entries": {s: p.address[1] for s, p in self.entries.items() if p.address is not None}}

    def http_routes(self) -> list[tuple[str, APIRouter]]:
        return [("api", FaultsApi(self).router())]


def _resource(service: str, instance_id: str, tags: Mapping[str, str]) -> dict[str, Any]:
    return {"attributes": [
        {"key": "service.name", "value": {"stringValue": service}},
        {"key": "service.instance.id", "value": {"stringValue": instance_id}},
        *({"key": f"devbox.{k}", "value": {"stringValue": v}} for k, v in sorted(tags.items())),
    ]}


def _owner_of(peer: tuple[str, int], pids: dict[int, str]) -> str | None:
    """Which deployed service's process (or a child of it) holds the socket at ``peer``."""
    try:
        import psutil

        for conn in psutil.net_connections(kind="tcp"):
            if conn.laddr and (conn.laddr.ip, conn.laddr.port) == tuple(peer[:2]) and conn.pid:
                proc: Any = psutil.Process(conn.pid)
                while proc is not None:
                    if proc.pid in pids:
                        return pids[proc.pid]
                    proc = proc.parent()
                return None
    except Exception:
        LOG.debug("finding the caller of %s failed", peer, exc_info=True)
    return None

