"""devbox's own naming API on the ``api`` listener, under ``/api/naming`` (JSON, in OpenAPI).

Services, instances (register / deregister / heartbeat / isolate / weight), routing rules CRUD,
circuit-breaker settings, the long-poll ``watch`` the Python SDK keeps its cache fresh with, and
``explain`` (which rule and filters decide a pick). Errors are ``{"error", "reason", "code"}``
with a 4xx status; ``code`` is the Polaris code behind it.

LIMITATIONS: ``explain`` evaluates the server's view (no caller-side circuit-breaker state).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from devbox.mocks.naming.models import DEFAULT_TTL, MAX_TTL, MAX_WEIGHT, Code, Instance, NamingError
from fastapi import APIRouter, Body, Query
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from devbox.polaris import routing as routing_rules
from devbox.polaris.circuit import BreakerConfig

if TYPE_CHECKING:
    from devbox.mocks.naming.component import NamingComponent

LOG = logging.getLogger(__name__)

_STATUS = {
    Code.NotFoundResource: 404,
    Code.NotFoundService: 404,
    Code.NotFoundInstance: 404,
    Code.NotFoundRouting: 404,
    Code.NotFoundNamespace: 404,
    Code.ExistedResource: 409,
    Code.ServiceExistedInstances: 409,
    Code.Unauthorized: 401,
}


def error_response(exc: NamingError) -> JSONResponse:
    status = _STATUS.get(exc.code, exc.http_status)
    if not 400 <= status < 500:
        status = 400 if status < 400 else status
    return JSONResponse({"error": exc.code.name, "reason": exc.reason, "code": int(exc.code)}, status_code=status)


def invalid(reason: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": "invalid request", "reason": reason}, status_code=status)


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


def watch_instance(instance: Instance) -> dict[str, Any]:
    return {
        "id": instance.id,
        "host": instance.host,
        "port": instance.port,
        "protocol": instance.protocol,
        "version": instance.version,
        "weight": instance.weight,
        "healthy": instance.healthy,
        "isolated": instance.isolated,
        "metadata": dict(instance.metadata),
        "location": dict(instance.location) if instance.location else None,
    }


def router(component: NamingComponent) -> APIRouter:
    registry = component.registry
    api = APIRouter(prefix="/api/naming", tags=["naming"])

    # --- services ------------------------------------------------------------------------

    @api.get("/services")
    async def list_services(namespace: str | None = None) -> list[dict[str, Any]]:
        out = []
        for svc in registry.services(namespace):
            instances = registry.instances(svc.namespace, svc.name)
            out.append(
                {
                    **svc.to_json(),
                    "instances": len(instances),
                    "healthy": sum(1 for i in instances if i.healthy and not i.isolated),
                }
            )
        return out

    @api.post("/services", status_code=201)
    async def create_service(body: ServiceIn) -> Any:
        """Create a service; the answer includes its token (shown only here and in ``show``)."""
        try:
            svc = registry.create_service(
                body.namespace,
                body.name,
                require_token=body.require_token,
                owners=body.owners,
                comment=body.comment,
                metadata=body.metadata,
            )
        except NamingError as exc:
            return error_response(exc)
        return JSONResponse(svc.to_json(with_token=True), status_code=201)

    @api.get("/services/{namespace}/{service}")
    async def show_service(namespace: str, service: str) -> Any:
        """A service with its instances, the rules that apply to it and its circuit-breaker settings."""
        svc = registry.service(namespace, service)
        if svc is None:
            return error_response(NamingError(Code.NotFoundService, f"service {namespace}/{service} does not exist"))
        return {
            **svc.to_json(with_token=True),
            "instances": [instance_json(i) for i in registry.instances(namespace, service)],
            "routing": registry.rules(namespace, service),
            "circuit_breaker": svc.circuit_breaker,
        }

    @api.delete("/services/{namespace}/{service}", status_code=204, response_model=None)
    async def delete_service(namespace: str, service: str) -> Any:
        try:
            registry.delete_service(namespace, service)
        except NamingError as exc:
            return error_response(exc)
        return Response(status_code=204)

    # --- instances -----------------------------------------------------------------------

    @api.get("/instances", response_model=list[InstanceOut])
    async def list_instances(namespace: str = "default", service: str | None = None) -> Any:
        if service:
            return [instance_json(i) for i in registry.instances(namespace, service)]
        return [instance_json(i) for i in sorted(registry.all_instances(), key=lambda i: (i.service, i.host, i.port))]

    @api.post("/instances", status_code=201, response_model=InstanceOut)
    async def register(body: RegisterIn) -> Any:
        try:
            registry.check_token(body.namespace, body.service, body.token)
            instance = registry.register(
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
        except NamingError as exc:
            return error_response(exc)
        return JSONResponse(instance_json(instance), status_code=201)

    @api.get("/instances/{ref}", response_model=InstanceOut)
    async def get_instance(ref: str) -> Any:
        try:
            return instance_json(component.resolve_instance(ref))
        except NamingError as exc:
            return error_response(exc)

    def as_owner(ref: str, token: str | None, action: Callable[[str], Any]) -> Response:
        """``action(instance_id)`` on the instance ``ref`` names, once its service's token checks out."""
        try:
            instance = component.resolve_instance(ref)
            registry.check_token(instance.namespace, instance.service, token)
            action(instance.id)
        except NamingError as exc:
            return error_response(exc)
        return Response(status_code=204)

    @api.delete("/instances/{ref}", status_code=204, response_model=None)
    async def deregister(ref: str, token: str | None = Query(None)) -> Any:
        return as_owner(ref, token, registry.deregister)

    @api.post("/instances/{ref}/heartbeat", status_code=204, response_model=None)
    async def heartbeat(ref: str, token: str | None = Query(None)) -> Any:
        return as_owner(ref, token, registry.heartbeat)

    @api.put("/instances/{ref}/isolate", response_model=InstanceOut)
    async def isolate(ref: str, body: IsolateIn) -> Any:
        try:
            instance = component.resolve_instance(ref)
            return instance_json(registry.isolate(instance.id, body.isolated))
        except NamingError as exc:
            return error_response(exc)

    @api.put("/instances/{ref}/weight", response_model=InstanceOut)
    async def weight(ref: str, body: WeightIn) -> Any:
        try:
            instance = component.resolve_instance(ref)
            return instance_json(registry.set_weight(instance.id, body.weight))
        except NamingError as exc:
            return error_response(exc)

    # --- routing rules -------------------------------------------------------------------

    @api.get("/rules")
    async def list_rules(namespace: str | None = None, service: str | None = None) -> list[dict[str, Any]]:
        """Rules; with ``service``, those that apply to it (its own and namespace-wide ``*`` ones)."""
        return registry.rules(namespace, service)

    @api.post("/rules", status_code=201)
    async def put_rule(rule: routing_rules.RoutingRule) -> Any:
        """Create or replace one rule (keyed by namespace, service, name). Matchers also take the
        shorthands of :mod:`devbox.polaris.routing`: ``"base"`` (EXACT), ``"*"`` (any), ``"$env"`` (PARAMETER)."""
        try:
            stored = registry.put_rule(rule.model_dump(mode="json"))
        except NamingError as exc:
            return error_response(exc)
        return JSONResponse(stored, status_code=201)

    @api.put("/rules/{namespace}/{service}")
    async def replace_rules(
        namespace: str,
        service: str,
        body: list[routing_rules.RoutingRule] = Body(..., description="The whole rule set; the path's names win."),
    ) -> Any:
        """Make the body the whole rule set of ``namespace/service`` (``*``: the namespace-wide rules)."""
        rules = [r.model_copy(update={"namespace": namespace, "service": service}) for r in body]
        names = [r.name for r in rules]
        if len(set(names)) != len(names):
            return invalid("rule names must be unique within a service")
        try:
            return registry.replace_rules(namespace, service, [r.model_dump(mode="json") for r in rules])
        except NamingError as exc:
            return error_response(exc)

    @api.delete("/rules/{namespace}/{service}/{name}", status_code=204, response_model=None)
    async def delete_rule(namespace: str, service: str, name: str) -> Any:
        try:
            registry.delete_rule(namespace, service, name)
        except NamingError as exc:
            return error_response(exc)
        return Response(status_code=204)

    # --- circuit breaker -----------------------------------------------------------------

    @api.put("/circuit-breakers/{namespace}/{service}")
    async def set_breaker(namespace: str, service: str, body: BreakerIn) -> Any:
        """Circuit-breaker settings SDK clients of the service apply (sent in the watch answer)."""
        settings = body.model_dump(exclude_none=True)
        try:
            BreakerConfig.from_mapping(settings)
        except (ValueError, TypeError) as exc:
            return invalid(str(exc))
        try:
            svc = registry.set_circuit_breaker(namespace, service, settings)
        except NamingError as exc:
            return error_response(exc)
        return {"namespace": namespace, "service": service, "circuit_breaker": svc.circuit_breaker}

    @api.delete("/circuit-breakers/{namespace}/{service}", status_code=204, response_model=None)
    async def clear_breaker(namespace: str, service: str) -> Any:
        if registry.service(namespace, service) is None:
            return error_response(NamingError(Code.NotFoundService, f"service {namespace}/{service} does not exist"))
        registry.set_circuit_breaker(namespace, service, None)
        return Response(status_code=204)

    # --- watch and explain ---------------------------------------------------------------

    @api.get("/watch", response_model=WatchOut)
    async def watch(
        service: str = Query(..., min_length=1),
        namespace: str = Query("default", min_length=1),
        revision: str = Query("", description="The revision the client has; '' for none."),
        timeout: float = Query(30.0, ge=0, le=120, description="Seconds to wait for a change."),
    ) -> Any:
        """Long-poll: answers at once when the service's revision differs from ``revision``."""
        await component.wait_changed(namespace, service, revision, timeout)
        return component.snapshot(namespace, service)

    @api.post("/explain")
    async def explain(body: ExplainIn) -> Any:
        """Which rule matches a request with these labels, what each filter removes, and the subset."""
        return component.explain(
            namespace=body.namespace,
            service=body.service,
            request=routing_rules.RouteRequest(
                labels=body.labels,
                caller_service=body.caller_service,
                headers=body.headers,
                method=body.method,
                path=body.path,
            ),
        )

    @api.get("/explain")
    async def explain_get(
        service: str = Query(..., min_length=1),
        namespace: str = "default",
        label: list[str] = Query([], description="k=v, repeatable"),
        caller: str = "",
    ) -> Any:
        labels: dict[str, str] = {}
        for item in label:
            key, sep, value = item.partition("=")
            if not sep or not key:
                return invalid(f"label {item!r} must be key=value")
            labels[key] = value
        return component.explain(
            namespace=namespace,
            service=service,
            request=routing_rules.RouteRequest(labels=labels, caller_service=caller),
        )

    return api
