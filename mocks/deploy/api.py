"""The deploy pipeline's HTTP API on the ``api`` listener (``/api/deploy``).

- ``GET /api/deploy/services`` — every deployment with its instances (state, port, pid, restarts)
- ``GET /api/deploy/services/{svc}`` — the deployments of one service
- ``GET /api/deploy/events?service=&instance=&kind=&since=&limit=`` — lifecycle events
- ``POST /api/deploy/services/{svc}/instances/{id}/kill|stop|start|signal`` — instance actions
  (``signal`` takes ``{"signal": "SIGSTOP"}``); ``id`` is the devbox name (orders-2) or naming id
- ``POST /api/deploy/services/{svc}/scale`` ``{"replicas": n}``; ``.../start`` with overrides
  ``{"replicas", "tags", "env", "group"}``; ``.../stop``; ``.../reload``

Handlers raise :mod:`devbox.platform.errors` exceptions (the operations' own
:mod:`devbox.mocks.deploy.errors` are such); the listener renders them as
``{"error": code, "reason": reason}``.
"""

from __future__ import annotations

from typing import Any, Protocol

from devbox.mocks.deploy.errors import NotDeployed
from devbox.mocks.deploy.models import DeployEvent, EventKind
from fastapi import APIRouter, Body, Query
from pydantic import BaseModel, ConfigDict, Field

from devbox.platform.errors import BadRequest


class StartRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    replicas: int | None = Field(None, ge=0, le=64)
    tags: dict[str, str] = Field(default_factory=dict)
    env: dict[str, str] = Field(default_factory=dict)
    group: str = Field("default", pattern=r"^[a-z0-9][a-z0-9.-]{0,62}$")


class ScaleRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    replicas: int = Field(ge=0, le=64)
    group: str = "default"


class GroupRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    group: str = "default"


class SignalRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    signal: str = Field(description="Signal name, e.g. SIGSTOP, SIGCONT, SIGTERM, SIGHUP.")


class DeployOperations(Protocol):
    """What the API needs of the deploy component: its public operations and progress."""

    errors: list[str]
    phase: dict[str, str]

    @property
    def deploying(self) -> bool: ...
    def services(self) -> list[dict[str, Any]]: ...
    def events(self, **filters: Any) -> list[DeployEvent]: ...
    async def kill_instance(self, service: str, instance: str) -> dict[str, Any]: ...
    async def signal_instance(self, service: str, instance: str, signal: str) -> dict[str, Any]: ...
    async def stop_instance(self, service: str, instance: str) -> dict[str, Any]: ...
    async def start_instance(self, service: str, instance: str) -> dict[str, Any]: ...
    async def scale(self, service: str, replicas: int, *, group: str = "default") -> dict[str, Any]: ...
    async def reload(self, service: str, *, reason: str = "requested") -> list[dict[str, Any]]: ...
    async def start_service(self, service: str, *, replicas: int | None = None, tags: dict[str, str] | None = None,
                            env: dict[str, str] | None = None, group: str = "default") -> dict[str, Any]: ...
    async def stop_service(self, service: str, *, group: str = "default") -> dict[str, Any]: ...


class DeployApi:
    """The ``/api/deploy`` handlers, each a method over the deploy operations."""

    def __init__(self, ops: DeployOperations) -> None:
        self.ops = ops

    def router(self) -> APIRouter:
        router = APIRouter(prefix="/api/deploy", tags=["deploy"])
        router.add_api_route("/services", self.list_services, methods=["GET"])
        router.add_api_route("/services/{service}", self.show_service, methods=["GET"])
        router.add_api_route("/events", self.list_events, methods=["GET"])
        instance = "/services/{service}/instances/{instance}"
        router.add_api_route(f"{instance}/kill", self.kill, methods=["POST"])
        router.add_api_route(f"{instance}/stop", self.stop_instance, methods=["POST"])
        router.add_api_route(f"{instance}/start", self.start_instance, methods=["POST"])
        router.add_api_route(f"{instance}/signal", self.send_signal, methods=["POST"])
        router.add_api_route("/services/{service}/scale", self.scale, methods=["POST"])
        router.add_api_route("/services/{service}/start", self.start_service, methods=["POST"])
        router.add_api_route("/services/{service}/stop", self.stop_service, methods=["POST"])
        router.add_api_route("/services/{service}/reload", self.reload, methods=["POST"])
        return router

    async def list_services(self) -> dict[str, Any]:
        return {"services": self.ops.services(), "phase": self.ops.phase, "deploying": self.ops.deploying,
                "errors": self.ops.errors}

    async def show_service(self, service: str) -> dict[str, Any]:
        found = self._deployments_of(service)
        return {"service": service, "deployments": found}

    async def list_events(
        self,
        service: str | None = None,
        instance: str | None = None,
        kind: str | None = None,
        since: int = Query(0, ge=0, description="Only events with an id above this."),
        limit: int = Query(200, ge=1, le=5000),
    ) -> dict[str, Any]:
        if kind is not None and kind not in EventKind.__members__.values():
            allowed = ", ".join(k.value for k in EventKind)
            raise BadRequest(f"kind {kind!r} is not one of: {allowed}", code="invalid kind")
        events = self.ops.events(service=service, instance=instance, kind=kind, since_id=since, limit=limit)
        return {"events": [e.to_json() for e in events]}

    async def kill(self, service: str, instance: str) -> dict[str, Any]:
        return await self.ops.kill_instance(service, instance)

    async def stop_instance(self, service: str, instance: str) -> dict[str, Any]:
        return await self.ops.stop_instance(service, instance)

    async def start_instance(self, service: str, instance: str) -> dict[str, Any]:
        return await self.ops.start_instance(service, instance)

    async def send_signal(self, service: str, instance: str, body: SignalRequest) -> dict[str, Any]:
        return await self.ops.signal_instance(service, instance, body.signal)

    async def scale(self, service: str, body: ScaleRequest) -> dict[str, Any]:
        return await self.ops.scale(service, body.replicas, group=body.group)

    async def start_service(self, service: str,
                            body: StartRequest = Body(default_factory=StartRequest)) -> dict[str, Any]:
        return await self.ops.start_service(service, replicas=body.replicas, tags=body.tags or None,
                                            env=body.env or None, group=body.group)

    async def stop_service(self, service: str,
                           body: GroupRequest = Body(default_factory=GroupRequest)) -> dict[str, Any]:
        return await self.ops.stop_service(service, group=body.group)

    async def reload(self, service: str) -> dict[str, Any]:
        self._deployments_of(service)
        return {"deployments": await self.ops.reload(service)}

    def _deployments_of(self, service: str) -> list[dict[str, Any]]:
        found = [d for d in self.ops.services() if d["service"] == service]
        if not found:
            raise NotDeployed(f"no deployment of service {service!r}")
        return found
