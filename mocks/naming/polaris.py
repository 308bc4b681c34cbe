"""Polaris's client protocol over the naming service: one object both the gRPC and HTTP adapters call.

Takes and returns the official protobuf messages (``v1.Instance``, ``v1.DiscoverRequest``, ...),
so the adapters only do transport: the gRPC servicer passes messages through, the HTTP adapter
converts protobuf-JSON both ways.

What polaris-go needs (read from its source): Register accepts 200000/400201 and reads
``instance.id``; Deregister 200000/400202; Heartbeat only 200000; Discover answers exactly once per
request, echoing ``type`` and ``service.name``/``service.namespace``; the client sends back the
revision it cached (per type: the service revision for INSTANCE, ``routing.revision`` for
ROUTING, ...) and an unchanged one is answered 200001 with no payload.

LIMITATIONS: circuit-breaker, fault-detector, lane, rate-limit and nearby-route answers are
always empty (the SDK then uses its local defaults); routing rules are sent both as v2
``RouteRule`` objects in ``Routing.rules`` and, where v1 can express them, as v1 ``inbounds``
(see :func:`v1_route`); no auth plugin beyond per-service tokens.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from devbox.mocks.naming.models import Code, Instance, NamingError, Service
from devbox.mocks.naming.polaris_pb import PolarisProtos, protos
from devbox.mocks.naming.service import NamingService

from devbox.polaris import routing as routing_rules

LOG = logging.getLogger(__name__)

_INFO = {
    Code.ExecuteSuccess: "execute success",
    Code.DataNoChange: "discover data is no change",
}


def _ts(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds)) if seconds else ""


def content_revision(kind: str, payload: Any) -> str:
    """A revision that depends only on content (stable across restarts and equal answers)."""
    return hashlib.sha1(f"{kind}:{json.dumps(payload, sort_keys=True)}".encode()).hexdigest()


#: Polaris system services SDKs look up when their config names them; devbox answers them with
#: its own gRPC address unless a service of that name was registered for real.
SYSTEM_NAMESPACE = "Polaris"
SYSTEM_SERVICES = frozenset({"polaris.discover", "polaris.healthcheck"})


class PolarisApi:
    """Polaris client-API operations over the :class:`NamingService`, in Polaris's own messages and codes.

    ``system_address()`` gives the ``(host, port)`` to answer for the system services (or None).
    Refusals are answers (``Response.code``), never exceptions: that is Polaris's protocol, on
    gRPC and HTTP alike.
    """

    def __init__(
        self, service: NamingService, *, system_address: Callable[[], tuple[str, int] | None] | None = None
    ) -> None:
        self.service = service
        self.registry = service.registry
        self.system_address = system_address or (lambda: None)

    @property
    def pb(self) -> PolarisProtos:
        """The official messages, loaded by the first Polaris call (~3 MB an idle platform does without)."""
        return protos()

    # --- responses -------------------------------------------------------------------------

    def response(self, code: Code, info: str = "", **fields: Any) -> Any:
        return self.pb.response.Response(
            code={"value": int(code)}, info={"value": info or _INFO.get(code, code.name)}, **fields
        )

    def error(self, exc: NamingError, **fields: Any) -> Any:
        return self.response(exc.code, exc.reason, **fields)

    # --- conversions -----------------------------------------------------------------------

    def instance_to_pb(self, instance: Instance) -> Any:
        pb = self.pb
        msg = pb.service.Instance(
            id={"value": instance.id},
            service={"value": instance.service},
            namespace={"value": instance.namespace},
            host={"value": instance.host},
            port={"value": instance.port},
            protocol={"value": instance.protocol},
            version={"value": instance.version},
            priority={"value": instance.priority},
            weight={"value": instance.weight},
            enable_health_check={"value": instance.health_check},
            healthy={"value": instance.healthy},
            isolate={"value": instance.isolated},
            metadata=instance.metadata,
            ctime={"value": _ts(instance.created)},
            mtime={"value": _ts(instance.updated)},
            revision={"value": instance.revision},
        )
        if instance.health_check:
            msg.health_check.type = pb.service.HealthCheck.HEARTBEAT
            msg.health_check.heartbeat.ttl.value = max(1, round(instance.ttl))
        if instance.location:
            for key in ("region", "zone", "campus"):
                if instance.location.get(key):
                    getattr(msg.location, key).value = instance.location[key]
        if "logic_set" in instance.metadata:
            msg.logic_set.value = instance.metadata["logic_set"]
        return msg

    def service_to_pb(self, svc: Service, *, revision: str | None = None) -> Any:
        instances = self.registry.instances(svc.namespace, svc.name)
        return self.pb.service.Service(
            name={"value": svc.name},
            namespace={"value": svc.namespace},
            metadata=svc.metadata,
            owners={"value": svc.owners},
            comment={"value": svc.comment},
            business={"value": svc.business},
            department={"value": svc.department},
            ctime={"value": _ts(svc.created)},
            mtime={"value": _ts(svc.updated)},
            revision={"value": svc.revision if revision is None else revision},
            total_instance_count={"value": len(instances)},
            healthy_instance_count={"value": sum(1 for i in instances if i.healthy)},
        )

    def register_args(self, msg: Any) -> dict[str, Any]:
        """Keyword arguments for :meth:`Registry.register` from a ``v1.Instance``; raises NamingError."""
        namespace = msg.namespace.value if msg.HasField("namespace") else ""
        if not namespace:
            raise NamingError(Code.InvalidNamespaceName, "instance.namespace is required")
        service = msg.service.value
        if not service:
            raise NamingError(Code.InvalidServiceName, "instance.service is required")
        if not msg.host.value:
            raise NamingError(Code.InvalidInstanceHost, "instance.host is required")
        if not msg.HasField("port") or not msg.port.value:
            raise NamingError(Code.InvalidInstancePort, "instance.port is required and must be in [1, 65535]")
        ttl: float | None = None
        health_check = msg.HasField("health_check") and msg.health_check.type == self.pb.service.HealthCheck.HEARTBEAT
        if msg.HasField("enable_health_check"):
            health_check = msg.enable_health_check.value
        if health_check and msg.health_check.heartbeat.HasField("ttl"):
            ttl = float(msg.health_check.heartbeat.ttl.value)
            if ttl <= 0:
                ttl = None
        location = None
        if msg.HasField("location"):
            fields = {k: getattr(msg.location, k).value for k in ("region", "zone", "campus")}
            location = {k: v for k, v in fields.items() if v}
        metadata = dict(msg.metadata)
        if msg.logic_set.value:
            metadata.setdefault("logic_set", msg.logic_set.value)
        return {
            "namespace": namespace,
            "service": service,
            "host": msg.host.value,
            "port": msg.port.value,
            "protocol": msg.protocol.value if msg.HasField("protocol") else "",
            "version": msg.version.value if msg.HasField("version") else "",
            "weight": msg.weight.value if msg.HasField("weight") else 100,
            "priority": msg.priority.value,
            "metadata": metadata,
            "ttl": ttl,
            "health_check": health_check,
            "location": location or None,
            "isolated": msg.isolate.value if msg.HasField("isolate") else False,
            "healthy": msg.healthy.value if (msg.HasField("healthy") and not health_check) else None,
            "id": msg.id.value or None,
        }

    def _find(self, msg: Any, header_token: str | None) -> Instance:
        """The instance a Deregister/Heartbeat/update names (by id, else by namespace/service/host/port),
        once the token (``service_token`` of the message, else the header's) checks out."""
        if msg.id.value:
            found = self.registry.require_instance(msg.id.value)
        else:
            namespace, service = msg.namespace.value, msg.service.value
            if not namespace or not service or not msg.host.value or not msg.port.value:
                raise NamingError(
                    Code.InvalidInstanceID, "give instance.id, or namespace, service, host and port of the instance"
                )
            at = self.registry.find(namespace, service, msg.host.value, msg.port.value)
            if at is None:
                raise NamingError(
                    Code.NotFoundResource,
                    f"no instance {msg.host.value}:{msg.port.value} in service {namespace}/{service}",
                )
            found = at
        return self.service.owned(found, self._token(msg, header_token))

    @staticmethod
    def _token(msg: Any, header_token: str | None) -> str | None:
        return msg.service_token.value or header_token or None

    def _answer(self, msg: Any, op: Callable[[], Instance | None]) -> Any:
        """Polaris's answer to one instance operation: the instance (or ``msg`` echoed) or the refusal."""
        try:
            instance = op()
        except NamingError as exc:
            return self.error(exc, instance=msg)
        return self.response(Code.ExecuteSuccess, instance=msg if instance is None else self.instance_to_pb(instance))

    # --- operations ------------------------------------------------------------------------

    def register(self, msg: Any, token: str | None = None) -> Any:
        return self._answer(msg, lambda: self.service.register(self._token(msg, token), **self.register_args(msg)))

    def deregister(self, msg: Any, token: str | None = None) -> Any:
        def deregister() -> Instance:
            instance = self._find(msg, token)
            self.registry.deregister(instance.id)
            return instance

        return self._answer(msg, deregister)

    def heartbeat(self, msg: Any, token: str | None = None) -> Any:
        return self._answer(msg, lambda: self.registry.heartbeat(self._find(msg, token).id))

    def update(self, msg: Any, token: str | None = None) -> Any:
        """Apply the set fields of ``msg`` (isolate, weight, metadata, healthy) to an existing instance."""

        def update() -> Instance:
            instance = self._find(msg, token)
            if msg.HasField("isolate"):
                self.registry.isolate(instance.id, msg.isolate.value)
            if msg.HasField("weight"):
                self.registry.set_weight(instance.id, msg.weight.value)
            if msg.metadata:
                self.registry.set_metadata(instance.id, dict(msg.metadata))
            if msg.HasField("healthy"):
                self.registry.set_healthy(instance.id, msg.healthy.value)
            return instance

        return self._answer(msg, update)

    def report_client(self, msg: Any) -> Any:
        client = self.pb.client.Client(
            host=msg.host, type=msg.type, version=msg.version, id=msg.id, location=msg.location
        )
        return self.response(Code.ExecuteSuccess, client=client)

    # --- discover --------------------------------------------------------------------------

    def discover(self, request: Any) -> Any:
        """One DiscoverResponse for one DiscoverRequest (never raises for bad input)."""
        pb = self.pb
        types = pb.request.DiscoverRequest.DiscoverRequestType
        kind = request.type
        name = request.service.name.value
        namespace = request.service.namespace.value
        asked = request.service.revision.value
        echo = pb.service.Service(name={"value": name}, namespace={"value": namespace})

        def answer(code: Code, info: str = "", revision: str | None = None, **payload: Any) -> Any:
            if revision is not None:
                echo.revision.value = revision
            payload.setdefault("service", echo)
            return pb.response.DiscoverResponse(
                code={"value": int(code)}, info={"value": info or _INFO.get(code, code.name)}, type=kind, **payload
            )

        try:
            if kind == types.UNKNOWN or types.Name(kind) is None:
                return answer(Code.InvalidDiscoverResource, f"discover type {kind} is not supported")
        except ValueError:
            return answer(Code.InvalidDiscoverResource, f"discover type {kind} is not supported")

        if kind == types.SERVICES:
            services = self.registry.services(namespace or None)
            revision = content_revision("services", [[s.namespace, s.name, s.revision] for s in services])
            if asked == revision:
                return answer(Code.DataNoChange, revision=revision)
            return answer(
                Code.ExecuteSuccess,
                revision=revision,
                services=[self.service_to_pb(s) for s in services],
            )
        if kind == types.NAMESPACES:
            spaces = self.registry.namespaces()
            revision = content_revision("namespaces", [n.name for n in spaces])
            if asked == revision:
                return answer(Code.DataNoChange, revision=revision)
            return answer(
                Code.ExecuteSuccess,
                revision=revision,
                namespaces=[pb.namespace.Namespace(name={"value": n.name}) for n in spaces],
            )

        if not name:
            return answer(Code.InvalidServiceName, "service.name is required")
        if not namespace:
            return answer(Code.InvalidNamespaceName, "service.namespace is required")
        svc = self.registry.service(namespace, name)

        if kind == types.INSTANCE:
            if svc is None and namespace == SYSTEM_NAMESPACE and name in SYSTEM_SERVICES:
                address = self.system_address()
                if address is not None:
                    return self._system_instances(answer, namespace, name, address, asked)
            if svc is None:
                return answer(Code.NotFoundResource, f"service {namespace}/{name} not found")
            if asked == svc.revision:
                return answer(Code.DataNoChange, revision=svc.revision)
            return answer(
                Code.ExecuteSuccess,
                service=self.service_to_pb(svc),
                instances=[self.instance_to_pb(i) for i in self.registry.instances(namespace, name)],
            )
        if kind == types.ROUTING:
            rules = self.registry.rules(namespace, name)
            revision = content_revision("routing", rules)
            if asked == revision:
                return answer(Code.DataNoChange, revision=revision)
            routing = self.routing_to_pb(namespace, name, rules, revision)
            return answer(Code.ExecuteSuccess, revision=revision, routing=routing)
        if kind == types.CIRCUIT_BREAKER:
            revision = content_revision("circuit_breaker", None)
            if asked == revision:
                return answer(Code.DataNoChange, revision=revision)
            breaker = pb.circuitbreaker.CircuitBreaker(
                name={"value": name},
                namespace={"value": namespace},
                service={"value": name},
                service_namespace={"value": namespace},
                revision={"value": revision},
            )
            return answer(Code.ExecuteSuccess, revision=revision, circuitBreaker=breaker)
        if kind == types.FAULT_DETECTOR:
            revision = content_revision("fault_detector", None)
            if asked == revision:
                return answer(Code.DataNoChange, revision=revision)
            return answer(
                Code.ExecuteSuccess, revision=revision, faultDetector=pb.fault_detector.FaultDetector(revision=revision)
            )
        if kind == types.RATE_LIMIT:
            revision = content_revision("rate_limit", None)
            if asked == revision:
                return answer(Code.DataNoChange, revision=revision)
            limits = pb.ratelimit.RateLimit(revision={"value": revision})
            return answer(Code.ExecuteSuccess, revision=revision, rateLimit=limits)
        # LANE, NEARBY_ROUTE_RULE, CUSTOM_ROUTE_RULE, LOSSLESS, CLUSTER, ...: nothing configured.
        revision = content_revision(types.Name(kind), None)
        if asked == revision:
            return answer(Code.DataNoChange, revision=revision)
        return answer(Code.ExecuteSuccess, revision=revision)

    def _system_instances(
        self, answer: Callable[..., Any], namespace: str, name: str, address: tuple[str, int], asked: str
    ) -> Any:
        host, port = address
        revision = content_revision("system", [namespace, name, host, port])
        if asked == revision:
            return answer(Code.DataNoChange, revision=revision)
        instance = self.pb.service.Instance(
            id={"value": hashlib.sha1(f"{namespace}##{name}##{host}##{port}".encode()).hexdigest()},
            service={"value": name},
            namespace={"value": namespace},
            host={"value": host},
            port={"value": port},
            protocol={"value": "grpc"},
            weight={"value": 100},
            healthy={"value": True},
            isolate={"value": False},
            metadata={"protocol": "grpc"},  # polaris-go picks system instances by this label
            revision={"value": revision},
        )
        return answer(Code.ExecuteSuccess, revision=revision, instances=[instance])

    def routing_to_pb(self, namespace: str, service: str, rules: list[dict[str, Any]], revision: str) -> Any:
        """``v1.Routing`` carrying the service's rules as v2 ``RouteRule`` messages."""
        from google.protobuf import json_format

        msg = self.pb.routing.Routing(
            service={"value": service}, namespace={"value": namespace}, revision={"value": revision}
        )
        for data in rules:
            try:
                rule = routing_rules.RoutingRule.model_validate(data)
                converted = routing_rules.to_polaris(rule, service=service, revision=revision)
                target = self.pb.routing.RouteRule()
                json_format.ParseDict(converted, target, ignore_unknown_fields=True)
                for inbound in v1_routes(rule, namespace, service):
                    json_format.ParseDict(inbound, msg.inbounds.add())
            except Exception:
                LOG.exception("rule %s of %s/%s cannot be sent to Polaris", data.get("name"), namespace, service)
                continue
            msg.rules.append(target)
        return msg


def v1_routes(rule: routing_rules.RoutingRule, namespace: str, service: str) -> list[dict[str, Any]]:
    """The rule as v1 inbound ``Route``s, one per sub-rule in order (polaris-go tries them top to
    bottom), or none at all if v1 cannot say one of them."""
    routes = [v1_route(rule, sub, namespace, service) for sub in rule.subrules()]
    return [r for r in routes if r is not None] if all(r is not None for r in routes) else []


def v1_route(
    rule: routing_rules.RoutingRule, sub: routing_rules.SubRule, namespace: str, service: str
) -> dict[str, Any] | None:
    """One sub-rule as a v1 inbound ``Route`` (what polaris-go 1.6 evaluates), or None if v1 cannot say it.

    v1 matches only caller metadata (devbox ``CUSTOM`` arguments, which polaris-go takes from
    ``SourceService.Metadata``) and has no IN/NOT_IN on destinations; ``IN "base,"`` (one value
    or untagged) becomes ``EXACT base`` — untagged instances are then not part of that group.
    """
    if not rule.enable:
        return None

    def match(m: routing_rules.MatchString) -> dict[str, Any]:
        return {"type": m.type, "value": m.value, "value_type": m.value_type}

    sources = []
    for src in sub.sources or [routing_rules.RuleSource()]:
        if any(a.type != "CUSTOM" for a in src.arguments):
            return None
        metadata = {a.key: a.to_polaris(sub) for a in src.arguments}
        sources.append({"service": src.service, "namespace": src.namespace, "metadata": metadata})
    destinations = []
    for group in sub.destinations:
        labels: dict[str, Any] = {}
        for key, m in group.labels.items():
            if m.type in ("IN", "NOT_IN"):
                values = [v.strip() for v in m.value.split(",") if v.strip()]
                if m.type == "NOT_IN" or m.value_type != "TEXT" or len(values) != 1:
                    return None
                labels[key] = {"type": "EXACT", "value": values[0], "value_type": "TEXT"}
            else:
                labels[key] = match(m)
        destinations.append(
            {"service": service, "namespace": namespace, "metadata": labels, "priority": group.priority,
             "weight": group.weight, "isolate": group.isolate, "name": group.label()}
        )
    return {"sources": sources, "destinations": destinations}
