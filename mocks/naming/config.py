"""The ``naming:`` section of devbox.yaml."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from devbox.polaris.routing import RoutingRule


class NamingServiceConfig(BaseModel):
    """A service declared up front (it is also created on first registration without this)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., min_length=1, max_length=128, description="Service name.")
    namespace: str = Field("default", min_length=1, max_length=128, description="Namespace of the service.")
    require_token: bool = Field(
        False, description="Polaris register/deregister/heartbeat must carry the service token (Polaris behaviour)."
    )
    token: str | None = Field(
        None, min_length=8, description="Fixed service token (default: a random one, shown by `naming show --json`)."
    )
    metadata: dict[str, str] = Field(default_factory=dict, description="Service metadata.")


class NamingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    namespace: str = Field("default", description="Namespace devbox-started services register in.")
    heartbeat_ttl: float = Field(5.0, gt=0, le=60, description="Default heartbeat TTL in seconds.")
    expire_after: float = Field(
        60.0,
        gt=0,
        description="Seconds without a heartbeat after which an instance is removed (it is unhealthy "
        "after 3 TTLs already).",
    )
    sweep_interval: float = Field(
        0.5, gt=0, le=10, description="How often the heartbeat clock is checked, in seconds."
    )
    services: list[NamingServiceConfig] = Field(
        default_factory=list, description="Services to create at start (tokens, metadata)."
    )
    rules: list[RoutingRule] = Field(
        default_factory=list,
        description="Routing rules applied at start (created or replaced by namespace/service/name; rules "
        "added through the API stay too). E.g. the multi-env rule: service '*', sources "
        "[{arguments: [{key: env, value: '*'}]}], destinations [{labels: {env: $env}}, "
        "{labels: {env: {type: IN, value: 'base,'}}, priority: 1}].",
    )
