"""The ``alerting:`` section of devbox.yaml."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class AlertingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    interval: float = Field(1.0, gt=0, description="Seconds between rule evaluations.")
