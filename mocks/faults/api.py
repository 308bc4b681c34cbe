"""The faults component's HTTP API on the ``api`` listener (``/api/faults``).

``GET|POST|DELETE /api/faults``, ``GET|DELETE /api/faults/{id}``, ``GET /api/faults/proxies``,
``PUT /api/faults/heartbeats/{instance_id}`` ``{"drop": bool}``, ``PUT /api/faults/circuits/{instance_id}``
``{"drop": bool}`` (refuse its connections: callers' circuit breakers open while naming still lists
it healthy).

Handlers raise :mod:`devbox.platform.errors` exceptions (:mod:`devbox.mocks.faults.errors`); the
listener renders them as ``{"error": code, "reason": reason}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from devbox.mocks.faults.errors import UnknownFault
from devbox.mocks.faults.proxy import FaultProxy
from devbox.mocks.faults.rules import Rule
from fastapi import APIRouter, Body
from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from devbox.mocks.faults.grpc_proxy import GrpcProxy


class HeartbeatDrop(BaseModel):
    model_config = ConfigDict(extra="forbid")

    drop: bool = True


class FaultOperations(Protocol):
    """What the API needs of the faults component."""

    enabled: bool
    rules: dict[str, Rule]
    proxies: dict[tuple[str, int], FaultProxy | GrpcProxy]
    dropped: set[str]

    def add_rule(self, spec: Mapping[str, Any]) -> Mapping[str, Any]: ...
    def remove_rule(self, rule_id: str) -> None: ...
    async def reset(self) -> None: ...
    def drop_heartbeats(self, instance_id: str, drop: bool = True) -> None: ...
    async def open_circuit(self, instance_id: str, opened: bool = True) -> None: ...


class FaultsApi:
    """The ``/api/faults`` handlers, each a method over the faults operations."""

    def __init__(self, ops: FaultOperations) -> None:
        self.ops = ops

    def router(self) -> APIRouter:
        router = APIRouter(prefix="/api/faults", tags=["faults"])
        router.add_api_route("", self.list_faults, methods=["GET"])
        router.add_api_route("", self.add_fault, methods=["POST"], status_code=201)
        router.add_api_route("", self.clear_faults, methods=["DELETE"])
        router.add_api_route("/proxies", self.list_proxies, methods=["GET"])
        router.add_api_route("/heartbeats/{instance_id}", self.drop_heartbeats, methods=["PUT"])
        router.add_api_route("/circuits/{instance_id}", self.open_circuit, methods=["PUT"])
        router.add_api_route("/{rule_id}", self.get_fault, methods=["GET"])
        router.add_api_route("/{rule_id}", self.delete_fault, methods=["DELETE"])
        return router

    async def list_faults(self) -> dict[str, Any]:
        return {"enabled": self.ops.enabled, "faults": [r.to_json() for r in self.ops.rules.values()],
                "dropped_heartbeats": sorted(self.ops.dropped)}

    async def add_fault(self, body: dict[str, Any] = Body(...)) -> Mapping[str, Any]:
        return self.ops.add_rule(body)

    async def clear_faults(self) -> dict[str, Any]:
        count = len(self.ops.rules)
        await self.ops.reset()
        return {"removed": count}

    async def list_proxies(self) -> list[dict[str, Any]]:
        return [
            {"service": p.service, "instance_id": p.instance_id, "mode": p.mode,
             "listen": f"{p.address[0]}:{p.address[1]}" if p.address else None,
             "upstream": f"{p.upstream[0]}:{p.upstream[1]}", "connections": p.connections}
            for p in self.ops.proxies.values()
        ]

    async def drop_heartbeats(self, instance_id: str, body: HeartbeatDrop) -> dict[str, Any]:
        self.ops.drop_heartbeats(instance_id, body.drop)
        return {"instance_id": instance_id, "dropped": instance_id in self.ops.dropped}

    async def open_circuit(self, instance_id: str, body: HeartbeatDrop) -> dict[str, Any]:
        await self.ops.open_circuit(instance_id, body.drop)
        return {"instance_id": instance_id, "open": body.drop}

    async def get_fault(self, rule_id: str) -> dict[str, Any]:
        rule = self.ops.rules.get(rule_id)
        if rule is None:
            raise UnknownFault(f"no fault {rule_id!r}")
        return rule.to_json()

    async def delete_fault(self, rule_id: str) -> dict[str, Any]:
        self.ops.remove_rule(rule_id)
        return {"removed": rule_id}
