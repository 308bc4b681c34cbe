"""The ``tracing:`` section of devbox.yaml."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class TracingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    retention_hours: float = Field(24.0, gt=0, description="Spans older than this are deleted.")
    max_spans: int = Field(2_000_000, gt=0, description="At most this many spans are kept (oldest go first).")
