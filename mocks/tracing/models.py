"""Span: the one shape every tracing ingest path is normalised to.

Metrics builds caller/callee RPC reports from it (``events.spans_ingested``), the store persists
it and the Zipkin query API renders it back.

LIMITATIONS: span events/annotations and links are not modelled (only the attributes and the
status); Zipkin ``annotations`` are folded into attributes on ingest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

KINDS = ("SERVER", "CLIENT", "PRODUCER", "CONSUMER", "INTERNAL")


@dataclass(slots=True)
class Span:
    """One finished span.

    trace_id is 32 lowercase hex chars, span_id/parent_id 16; times are microseconds since the
    epoch; ``service`` is the local service (OTel ``service.name`` / Zipkin localEndpoint);
    ``remote_service`` is the peer for CLIENT/PRODUCER spans when known
    (``peer.service`` / Zipkin remoteEndpoint.serviceName).
    """

    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    kind: str
    service: str
    start_us: int
    duration_us: int
    error: bool = False
    status_message: str = ""
    attributes: dict[str, Any] = field(default_factory=dict)
    remote_service: str | None = None
    resource: dict[str, Any] = field(default_factory=dict)

    @property
    def end_us(self) -> int:
        return self.start_us + self.duration_us
