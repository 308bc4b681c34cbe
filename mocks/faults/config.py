"""The ``faults:`` section of devbox.yaml."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class FaultsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        False,
        description="Put a fault proxy in front of every instance (scenario runs turn this on), so "
        "faults can be injected into any service's inbound traffic.",
    )
