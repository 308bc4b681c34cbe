"""devbox's own naming API on the ``api`` listener, under ``/api/naming`` (JSON, in OpenAPI).

Services, instances (register / deregister / heartbeat / isolate / weight), routing rules CRUD,
circuit-breaker settings, the long-poll ``watch`` the Python SDK keeps its cache fresh with, and
``explain`` (which rule and filters decide a pick). Handlers raise; the ``api`` listener renders
devbox's ``{"error", "reason"}`` (``error`` is the Polaris code's name, e.g. ``NotFoundService``,
and the number is the error's ``detail["code"]``) with a 4xx status.

LIMITATIONS: ``explain`` evaluates the server's view (no caller-side circuit-breaker state).
"""

from __future__ import annotations

import logging
from typing import Any

from devbox.mocks.naming.models import DEFAULT_TTL, MAX_TTL, MAX_WEIGHT, Instance
from devbox.mocks.naming.routes import durable_routes
from devbox.mocks.naming.service import NamingService
from fastapi import APIRouter, Body, Query
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from devbox.platform.errors import BadRequest
from devbox.polaris import routing as routing_rules
from devbox.polaris.circuit import BreakerConfig

LOG = logging.getLogger(__name__)


def invalid(reason: str) -> BadRequest:
    """A request the models accept but devbox refuses (same ``error`` word as a validation failure)."""
    return BadRequest(reason, code="invalid request")


# --- models --------------------------------------------------------------------------------


class Location(BaseModel):
    model_config = ConfigDict(extra="forbid")
    region: str = ""
    zone: str = ""
    campus: str = ""


class InstanceOut(BaseModel):
    id: str = Field(description="sha1 hex of namespace##service##host##port unless given at register.")
    namespace: str
    service: str
    host: str
    port: int
    protocol: str
    version: str
    weight: int
    healthy: bool
    isolated: bool
    metadata: dict[str, str]
    ttl: float
    health_check: bool
    location: dict[str, str] | None
    priority: int
    last_heartbeat: float | None = Field(description="Unix seconds of the last heartbeat, null before the first.")
    created: float
    updated: float
    revision: str


class RegisterIn(BaseModel):
    """Register (or update, same host:port) an instance."""

    model_config = ConfigDict(extra="forbid")
    namespace: str = Field("default", min_length=1, max_length=128)
    service: str = Field(..., min_length=1, max_length=128)
    host: str = Field(..., min_length=1, max_length=128)
    port: int = Field(..., ge=1, le=65535)
    protocol: str = Field("http", max_length=128)
    version: str = Field("", max_length=128)
    weight: int = Field(100, ge=0, le=MAX_WEIGHT, description="Relative share; 0 takes no traffic.")
    metadata: dict[str, str] = Field(default_factory=dict, description="e.g. env, set, version.")
    ttl: float = Field(DEFAULT_TTL, gt=0, le=MAX_TTL, description="Heartbeat TTL; unhealthy after 3xTTL silent.")
    health_check: bool = Field(True, description="Heartbeat-checked (unhealthy until the first heartbeat).")
    location: Location | None = None
    isolated: bool = False
    id: str | None = Field(None, description="Instance id to use instead of the computed one.")
    token: str | None = Field(None, description="Service token, when the service requires it.")


class ServiceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    namespace: str = Field("default", min_length=1, max_length=128)
    name: str = Field(..., min_length=1, max_length=128)
    require_token: bool = Field(False, description="Polaris APIs must then carry the service token.")
    owners: str = "devbox"
    comment: str = ""
    metadata: dict[str, str] = Field(default_factory=dict)


class IsolateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    isolated: bool = True


class WeightIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    weight: int = Field(..., ge=0, le=MAX_WEIGHT)


class BreakerIn(BaseModel):
    """Circuit-breaker settings the SDK applies per instance of the service (all optional)."""

    model_config = ConfigDict(extra="forbid")
    consecutive_errors: int | None = Field(None, ge=1)
    error_rate: float | None = Field(None, gt=0, le=1)
    min_requests: int | None = Field(None, ge=1)
    window: float | None = Field(None, gt=0)
    sleep_window: float | None = Field(None, gt=0)
    max_sleep_window: float | None = Field(None, gt=0)
    half_open_probes: int | None = Field(None, ge=1)
    success_to_close: int | None = Field(None, ge=1)
    max_ejection_percent: float | None = Field(None, ge=0, le=100)


class WatchOut(BaseModel):
    namespace: str
    service: str
    revision: str = Field(description="Pass back as ?revision= to wait for the next change.")
    instances: list[dict[str, Any]]
    routing: list[dict[str, Any]]
    circuit_breaker: dict[str, Any] | None


class ExplainIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    namespace: str = "default"
    service: str = Field(..., min_length=1)
    labels: dict[str, str] = Field(default_factory=dict, description="Request labels, e.g. env=feature-x.")
    caller_service: str = ""
    headers: dict[str, str] = Field(default_factory=dict)
    method: str = ""
    path: str = ""


def instance_json(instance: Instance) -> dict[str, Any]:
    return instance.to_json()


class NamingHandlers:
    """The ``/api/naming`` handlers over one :class:`NamingService` (routes in :func:`router`)."""

    def __init__(self, service: NamingService) -> None:
        self.service = service
        self.registry = service.registry

    # --- services ------------------------------------------------------------------------

    async def list_services(self, namespace: str | None = None) -> list[dict[str, Any]]:
        return self.service.service_summaries(namespace)

    async def create_service(self, body: ServiceIn) -> Any:
        """Create a service; the answer includes its token (shown only here and in ``show``)."""
        svc = self.registry.create_service(
            body.namespace,
            body.name,
            require_token=body.require_token,
            owners=body.owners,
            comment=body.comment,
            metadata=body.metadata,
        )
        return JSONResponse(svc.to_json(with_token=True), status_code=201)

    async def show_service(self, namespace: str, service: str) -> Any:
        """A service with its instances, the rules that apply to it and its circuit-breaker settings."""
        return self.service.service_detail(namespace, service)

    async def delete_service(self, namespace: str, service: str) -> Any:
        self.registry.delete_service(namespace, service)
        return Response(status_code=204)

    # --- instances -----------------------------------------------------------------------

    async def list_instances(self, namespace: str = "default", service: str | None = None) -> Any:
        if service:
            return [instance_json(i) for i in self.registry.instances(namespace, service)]
        everything = sorted(self.registry.all_instances(), key=lambda i: (i.service, i.host, i.port))
        return [instance_json(i) for i in everything]

    async def register(self, body: RegisterIn) -> Any:
        instance = self.service.register(
            body.token,
            namespace=body.namespace,
            service=body.service,
            host=body.host,
            port=body.port,
            protocol=body.protocol,
            version=body.version,
            weight=body.weight,
            metadata=body.metadata,
            ttl=body.ttl,
            health_check=body.health_check,
            location=body.location.model_dump(exclude_defaults=True) if body.location else None,
            isolated=body.isolated,
            id=body.id,
        )
        return JSONResponse(instance_json(instance), status_code=201)

    async def get_instance(self, ref: str) -> Any:
        return instance_json(self.service.resolve_instance(ref))

    async def deregister(self, ref: str, token: str | None = Query(None)) -> Any:
        self.registry.deregister(self.service.owned(self.service.resolve_instance(ref), token).id)
        return Response(status_code=204)

    async def heartbeat(self, ref: str, token: str | None = Query(None)) -> Any:
        self.registry.heartbeat(self.service.owned(self.service.resolve_instance(ref), token).id)
        return Response(status_code=204)

    async def isolate(self, ref: str, body: IsolateIn) -> Any:
        return instance_json(self.registry.isolate(self.service.resolve_instance(ref).id, body.isolated))

    async def weight(self, ref: str, body: WeightIn) -> Any:
        return instance_json(self.registry.set_weight(self.service.resolve_instance(ref).id, body.weight))

    # --- routing rules -------------------------------------------------------------------

    async def list_rules(self, namespace: str | None = None, service: str | None = None) -> list[dict[str, Any]]:
        """Rules; with ``service``, those that apply to it (its own and namespace-wide ``*`` ones)."""
        return self.registry.rules(namespace, service)

    async def put_rule(self, rule: routing_rules.RoutingRule) -> Any:
        """Create or replace one rule (keyed by namespace, service, name). Matchers also take the
        shorthands of :mod:`devbox.polaris.routing`: ``"base"`` (EXACT), ``"*"`` (any), ``"$env"`` (PARAMETER)."""
        return JSONResponse(self.registry.put_rule(rule.model_dump(mode="json")), status_code=201)

    async def replace_rules(
        self,
        namespace: str,
        service: str,
        body: list[routing_rules.RoutingRule] = Body(..., description="The whole rule set; the path's names win."),
    ) -> Any:
        """Make the body the whole rule set of ``namespace/service`` (``*``: the namespace-wide rules)."""
        rules = [r.model_copy(update={"namespace": namespace, "service": service}) for r in body]
        names = [r.name for r in rules]
        if len(set(names)) != len(names):
            raise invalid("rule names must be unique within a service")
        return self.registry.replace_rules(namespace, service, [r.model_dump(mode="json") for r in rules])

    async def delete_rule(self, namespace: str, service: str, name: str) -> Any:
        self.registry.delete_rule(namespace, service, name)
        return Response(status_code=204)

    # --- circuit breaker -----------------------------------------------------------------

    async def set_breaker(self, namespace: str, service: str, body: BreakerIn) -> Any:
        """Circuit-breaker settings SDK clients of the service apply (sent in the watch answer)."""
        settings = body.model_dump(exclude_none=True)
        try:
            BreakerConfig.from_mapping(settings)
        except (ValueError, TypeError) as exc:  # the SDK's own check of the combination
            raise invalid(str(exc)) from None
        svc = self.registry.set_circuit_breaker(namespace, service, settings)
        return {"namespace": namespace, "service": service, "circuit_breaker": svc.circuit_breaker}

    async def clear_breaker(self, namespace: str, service: str) -> Any:
        self.registry.require_service(namespace, service)
        self.registry.set_circuit_breaker(namespace, service, None)
        return Response(status_code=204)

    # --- watch and explain ---------------------------------------------------------------

    async def watch(
        self,
        service: str = Query(..., min_length=1),
        namespace: str = Query("default", min_length=1),
        revision: str = Query("", description="The revision the client has; '' for none."),
        timeout: float = Query(30.0, ge=0, le=120, description="Seconds to wait for a change."),
    ) -> Any:
        """Long-poll: answers at once when the service's revision differs from ``revision``."""
        await self.service.wait_changed(namespace, service, revision, timeout)
        return self.service.snapshot(namespace, service)

    async def explain(self, body: ExplainIn) -> Any:
        """Which rule matches a request with these labels, what each filter removes, and the subset."""
        request = routing_rules.RouteRequest(
            labels=body.labels, caller_service=body.caller_service, headers=body.headers, method=body.method,
            path=body.path,
        )
        return self.service.explain(namespace=body.namespace, service=body.service, request=request)

    async def explain_get(
        self,
        service: str = Query(..., min_length=1),
        namespace: str = "default",
        label: list[str] = Query([], description="k=v, repeatable"),
        caller: str = "",
    ) -> Any:
        labels: dict[str, str] = {}
        for item in label:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise invalid(f"label {item!r} must be key=value")
            labels[key] = value
        request = routing_rules.RouteRequest(labels=labels, caller_service=caller)
        return self.service.explain(namespace=namespace, service=service, request=request)


def router(service: NamingService) -> APIRouter:
    """``/api/naming``: the route table of :class:`NamingHandlers`."""
    h = NamingHandlers(service)
    api = APIRouter(prefix="/api/naming", tags=["naming"], route_class=durable_routes(service.durable))
    no_body: dict[str, Any] = {"status_code": 204, "response_model": None}
    api.add_api_route("/services", h.list_services, methods=["GET"])
    api.add_api_route("/services", h.create_service, methods=["POST"], status_code=201)
    api.add_api_route("/services/{namespace}/{service}", h.show_service, methods=["GET"])
    api.add_api_route("/services/{namespace}/{service}", h.delete_service, methods=["DELETE"], **no_body)
    api.add_api_route("/instances", h.list_instances, methods=["GET"], response_model=list[InstanceOut])
    api.add_api_route("/instances", h.register, methods=["POST"], status_code=201, response_model=InstanceOut)
    api.add_api_route("/instances/{ref}", h.get_instance, methods=["GET"], response_model=InstanceOut)
    api.add_api_route("/instances/{ref}", h.deregister, methods=["DELETE"], **no_body)
    api.add_api_route("/instances/{ref}/heartbeat", h.heartbeat, methods=["POST"], **no_body)
    api.add_api_route("/instances/{ref}/isolate", h.isolate, methods=["PUT"], response_model=InstanceOut)
    api.add_api_route("/instances/{ref}/weight", h.weight, methods=["PUT"], response_model=InstanceOut)
    api.add_api_route("/rules", h.list_rules, methods=["GET"])
    api.add_api_route("/rules", h.put_rule, methods=["POST"], status_code=201)
    api.add_api_route("/rules/{namespace}/{service}", h.replace_rules, methods=["PUT"])
    api.add_api_route("/rules/{namespace}/{service}/{name}", h.delete_rule, methods=["DELETE"], **no_body)
    api.add_api_route("/circuit-breakers/{namespace}/{service}", h.set_breaker, methods=["PUT"])
    api.add_api_route("/circuit-breakers/{namespace}/{service}", h.clear_breaker, methods=["DELETE"], **no_body)
    api.add_api_route("/watch", h.watch, methods=["GET"], response_model=WatchOut)
    api.add_api_route("/explain", h.explain, methods=["POST"])
    api.add_api_route("/explain", h.explain_get, methods=["GET"])
    return api
