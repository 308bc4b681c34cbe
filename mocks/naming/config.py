"""The ``naming:`` section of devbox.yaml."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class NamingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    namespace: str = Field("default", description="Namespace devbox-started services register in.")
    heartbeat_ttl: float = Field(5.0, gt=0, le=60, description="Default heartbeat TTL in seconds.")
    expire_after: float = Field(
        60.0,
        gt=0,
        description="Seconds without a heartbeat after which an instance is removed (it is unhealthy "
        "after 3xTTL already).",
    )
    sweep_interval: float = Field(
        0.5, gt=0, le=10, description="How often the heartbeat clock is checked, in seconds."
    )
