"""Span: the one shape every tracing ingest path is normalised to.

Metrics builds caller/callee RPC reports from it (``events.spans_ingested``), the store persists
it and the Zipkin query API renders it back. It holds the full Zipkin v2 model and what OTLP adds
to it (events, links, scope, status code), so nothing a client sent is lost between formats.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

KINDS = ("SERVER", "CLIENT", "PRODUCER", "CONSUMER", "INTERNAL")


@dataclass(slots=True)
class Span:
    """One finished span.

    trace_id is 32 lowercase hex chars, span_id/parent_id 16; times are microseconds since the
    epoch; ``service`` is the local service (OTel ``service.name`` / Zipkin localEndpoint), in the
    case it was sent; ``remote_service`` is the peer for CLIENT/PRODUCER spans when known
    (``peer.service`` / Zipkin remoteEndpoint.serviceName).

    Fidelity fields (empty when the format has no such thing):

    - ``annotations``: Zipkin annotations as sent, ``[(timestamp_us, value), ...]``.
    - ``events``: OTel span events, ``[{"name", "time_us", "attributes"}, ...]`` (exception.* kept).
    - ``links``: OTel links, ``[{"trace_id", "span_id", "attributes"}, ...]``.
    - ``local_endpoint`` / ``remote_endpoint``: Zipkin endpoint fields besides the service name
      (``ipv4``, ``ipv6``, ``port``; ``remote_endpoint`` may hold only an address).
    - ``shared`` / ``debug``: Zipkin's flags. ``scope``: the OTel instrumentation scope
      (``name``, ``version``). ``status_code``: OTel's ``OK``/``ERROR`` ("" when unset or Zipkin).
    - ``timestamp_missing``: Zipkin accepts a span without ``timestamp`` (late or partial); it is
      placed at its first annotation or its arrival, and rendered back without one.
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
    annotations: list[tuple[int, str]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    links: list[dict[str, Any]] = field(default_factory=list)
    local_endpoint: dict[str, Any] = field(default_factory=dict)
    remote_endpoint: dict[str, Any] = field(default_factory=dict)
    shared: bool = False
    debug: bool = False
    scope: dict[str, str] = field(default_factory=dict)
    status_code: str = ""
    timestamp_missing: bool = False

    @property
    def end_us(self) -> int:
        return self.start_us + self.duration_us

    def detail(self) -> dict[str, Any]:
        """The fidelity fields that are set, as one JSON-able dict (the store's ``detail`` column)."""
        out: dict[str, Any] = {}
        for key in ("annotations", "events", "links", "local_endpoint", "remote_endpoint", "scope"):
            value = getattr(self, key)
            if value:
                out[key] = value
        for key in ("shared", "debug", "timestamp_missing"):
            if getattr(self, key):
                out[key] = True
        if self.status_code:
            out["status_code"] = self.status_code
        return out

    def set_detail(self, detail: dict[str, Any]) -> None:
        """Restore what :meth:`detail` saved."""
        for key, value in detail.items():
            if key == "annotations":
                self.annotations = [(int(t), str(v)) for t, v in value]
            elif key in Span.__slots__:
                setattr(self, key, value)
