"""What the naming registry holds: namespaces, services, instances, and Polaris's result codes.

Plain dataclasses (no pydantic: the core mutates them in place on every heartbeat). The JSON
shapes of the devbox API come from :meth:`Instance.to_json` / :meth:`Service.to_json`.

LIMITATIONS: only the Polaris fields devbox uses are modelled (no CMDB, aliases, logic sets
beyond metadata, or per-instance health-check types other than heartbeat).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from devbox.platform import errors

DEFAULT_NAMESPACE = "default"
DEFAULT_TTL = 5.0
MAX_TTL = 60.0
DEFAULT_WEIGHT = 100
MAX_WEIGHT = 10000
#: An instance is unhealthy after this many TTLs without a heartbeat (Polaris behaviour).
UNHEALTHY_AFTER_TTLS = 3


class Code(enum.IntEnum):
    """Polaris API result codes (``apimodel.Code``); HTTP status is ``code // 1000``."""

    ExecuteSuccess = 200000
    DataNoChange = 200001
    NoNeedUpdate = 200002
    BadRequest = 400000
    ParseException = 400001
    EmptyRequest = 400002
    BatchSizeOverLimit = 400003
    InvalidDiscoverResource = 400004
    InvalidParameter = 400103
    InvalidNamespaceName = 400110
    InvalidServiceName = 400120
    InvalidServiceToken = 400122
    InvalidServiceMetadata = 400123
    InvalidInstanceID = 400130
    InvalidInstanceHost = 400131
    InvalidInstancePort = 400132
    InvalidInstanceProtocol = 400136
    InvalidInstanceVersion = 400137
    InvalidInstanceIsolate = 400139
    HealthCheckNotOpen = 400140
    HeartbeatOnDisabledIns = 400141
    InvalidMetadata = 400150
    InvalidRoutingName = 400180
    ExistedResource = 400201
    NotFoundResource = 400202
    NamespaceExistedServices = 400203
    ServiceExistedInstances = 400204
    NotFoundService = 400301
    NotFoundRouting = 400302
    NotFoundInstance = 400303
    NotFoundNamespace = 400305
    Unauthorized = 401000
    NotAllowedAccess = 401001
    ExecuteException = 500000


class NamingError(Exception):
    """A request the registry refuses; ``code`` is the Polaris code, ``str()`` the reason."""

    def __init__(self, code: Code, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason

    @property
    def http_status(self) -> int:
        return int(self.code) // 1000

    def api_error(self) -> errors.ApiError:
        """The platform's exception for this refusal, for the HTTP listeners to render.

        ``code`` is the Polaris code's name (devbox's ``error`` word) and ``detail["code"]`` its
        number (what Polaris's own shape carries); the class gives devbox's HTTP status: 404 for
        what does not exist, 409 for what exists already or still has instances, 401 for tokens.
        """
        kind = _API_ERRORS.get(self.code) or (errors.Unauthorized if self.http_status == 401 else errors.BadRequest)
        exc = kind(self.reason, code=self.code.name, detail={"code": int(self.code)})
        if kind is errors.BadRequest and self.http_status >= 500:
            exc.status = self.http_status  # ExecuteException: the server's fault, not the request's
        return exc


_API_ERRORS: dict[Code, type[errors.ApiError]] = {
    Code.NotFoundResource: errors.NotFound,
    Code.NotFoundService: errors.NotFound,
    Code.NotFoundInstance: errors.NotFound,
    Code.NotFoundRouting: errors.NotFound,
    Code.NotFoundNamespace: errors.NotFound,
    Code.ExistedResource: errors.Conflict,
    Code.ServiceExistedInstances: errors.Conflict,
    Code.Unauthorized: errors.Unauthorized,
}


@dataclass
class Namespace:
    name: str
    comment: str = ""
    owners: str = "devbox"
    token: str = ""
    created: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "comment": self.comment, "owners": self.owners, "created": self.created}


@dataclass
class Service:
    """A service of a namespace. ``revision`` changes whenever its instances or rules change."""

    namespace: str
    name: str
    token: str = ""
    #: When set, register/deregister/heartbeat through the Polaris APIs must carry ``token``.
    require_token: bool = False
    owners: str = "devbox"
    comment: str = ""
    business: str = ""
    department: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    revision: str = ""
    #: Circuit-breaker settings as a JSON object, or None for the client's defaults.
    circuit_breaker: dict[str, Any] | None = None
    created: float = 0.0
    updated: float = 0.0

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    def to_json(self, *, with_token: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "namespace": self.namespace,
            "name": self.name,
            "owners": self.owners,
            "comment": self.comment,
            "business": self.business,
            "department": self.department,
            "metadata": dict(self.metadata),
            "require_token": self.require_token,
            "revision": self.revision,
            "created": self.created,
            "updated": self.updated,
        }
        if with_token:
            out["token"] = self.token
        return out


@dataclass
class Instance:
    """One registered endpoint of a service.

    ``healthy`` is what discovery reports: for heartbeat-checked instances the registry flips it
    from the heartbeat clock (unhealthy until the first heartbeat and after TTLx3 without one).
    """

    id: str
    namespace: str
    service: str
    host: str
    port: int
    protocol: str = "http"
    version: str = ""
    weight: int = DEFAULT_WEIGHT
    healthy: bool = True
    isolated: bool = False
    metadata: dict[str, str] = field(default_factory=dict)
    ttl: float = DEFAULT_TTL
    health_check: bool = True
    #: ``{"region","zone","campus"}`` or None.
    location: dict[str, str] | None = None
    priority: int = 0
    #: Wall-clock seconds of the last heartbeat (None: never), registration and last change.
    last_heartbeat: float | None = None
    created: float = 0.0
    updated: float = 0.0
    revision: str = ""

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "namespace": self.namespace,
            "service": self.service,
            "host": self.host,
            "port": self.port,
            "protocol": self.protocol,
            "version": self.version,
            "weight": self.weight,
            "healthy": self.healthy,
            "isolated": self.isolated,
            "metadata": dict(self.metadata),
            "ttl": self.ttl,
            "health_check": self.health_check,
            "location": dict(self.location) if self.location else None,
            "priority": self.priority,
            "last_heartbeat": self.last_heartbeat,
            "created": self.created,
            "updated": self.updated,
            "revision": self.revision,
        }
