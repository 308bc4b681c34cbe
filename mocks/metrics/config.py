"""The ``metrics:`` section of devbox.yaml."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class MetricsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    retention_hours: float = Field(24.0, gt=0, description="Points older than this are deleted.")
