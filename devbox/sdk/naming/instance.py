"""What the naming cache holds about one instance, and the error when it holds nothing to ask.

Owns :class:`Instance` (the watch API's instance JSON as the client sees it) and
:class:`NamingUnavailable`. A leaf: the client, the transports and the gRPC channel all import it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


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
