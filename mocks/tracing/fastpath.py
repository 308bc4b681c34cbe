"""OTLP protobuf straight into storage rows: the indexer's hot path, no :class:`Span` per span.

:func:`otlp_rows` reads an ``ExportTraceServiceRequest`` into the :data:`~devbox.mocks.tracing.store.Row`
tuples the store writes: attributes read once per span (inline, into one dict: the JSON column, the
indexed tag values, the RPC call), per-scope work (the ``detail`` JSON of each status) done once
per scope, and no Zipkin JSON (rendered when a trace is read: it was a third of the decode). The
result is the one :func:`convert.from_otlp_request` + :func:`store.row_of` give
(``tests/unit/test_tracing_store.py`` compares them). Spans with events or links, and batches
with a span the decoder would reject, are left to that general path (``None``).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from devbox.mocks.tracing import convert
from devbox.mocks.tracing.convert import (
    _OTLP_KINDS,
    _STATUS_NAMES,
    _service_of,
    _tag_text,
    any_value,
    attributes,
    remote_service_of,
)
from devbox.mocks.tracing.rpcstats import Call, call_of
from devbox.mocks.tracing.store import Rows, dumps
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

_Z16, _Z8 = bytes(16), bytes(8)
_CALLERS = ("CLIENT", "PRODUCER")
#: The attribute devbox's own span makers (the tracing proxy, faults) put on their spans.
SOURCE_KEY = "devbox.span.source"


def otlp_rows(body: bytes, *, now_us: int, max_future_us: int, indexed_keys: Collection[str],
              calls: list[Call] | None = None, own: set[str] | None = None) -> Rows | None:
    """The rows of one OTLP protobuf export, or None when the general decoder must read it. With
    ``calls``, the :data:`~devbox.mocks.tracing.rpcstats.Call` of each CLIENT/SERVER span is
    appended to it; with ``own``, the services of spans that devbox did not make are added to it."""
    req = ExportTraceServiceRequest.FromString(body)
    found: list[Call] = []
    seen: set[str] = set()
    low = convert.MIN_START_US * 1000
    high = (now_us + max_future_us + 1) * 1000
    longest = convert.MAX_DURATION_US
    batch = Rows()
    rows = batch.rows
    append = rows.append
    for rs in req.resource_spans:
        resource = attributes(rs.resource.attributes)
        service = _service_of(resource)
        rkey = batch.resource(resource)
        for ss in rs.scope_spans:
            scope: dict[str, str] = {}
            if ss.scope.name:
                scope["name"] = ss.scope.name
            if ss.scope.version:
                scope["version"] = ss.scope.version
            details = {code: _detail_json(scope, status) for code, status in _STATUS_NAMES.items()}
            details[0] = dumps({"scope": scope}) if scope else None
            for sp in ss.spans:
                t, s, p = sp.trace_id, sp.span_id, sp.parent_span_id
                start_ns, end_ns = sp.start_time_unix_nano, sp.end_time_unix_nano
                start, end = start_ns // 1000, end_ns // 1000
                if not (len(t) == 16 and t != _Z16 and len(s) == 8 and s != _Z8
                        and (not p or (len(p) == 8 and p != _Z8)) and end_ns and low <= start_ns < high
                        and 0 <= end - start <= longest and not sp.links and not sp.events):
                    return None
                trace_id, span_id = t.hex(), s.hex()
                parent_id = p.hex() if p else None
                # read inline, not through convert.attributes: most values are strings, and a call per
                # attribute was a fifth of the decode
                attrs: dict[str, Any] = {}
                for kv in sp.attributes:
                    v = kv.value
                    which = v.WhichOneof("value")
                    if which == "string_value":
                        attrs[kv.key] = v.string_value
                    else:
                        attrs[kv.key] = _SCALAR.get(which, any_value)(v) if which is not None else None
                kind = _OTLP_KINDS.get(sp.kind, "INTERNAL")
                status = sp.status
                code = status.code
                error = code == 2
                message = status.message
                remote = remote_service_of(attrs) if kind in _CALLERS else None
                duration = end - start
                attrs_json = dumps(attrs) if attrs else "{}"
                pairs = [(k, text) for k, v in attrs.items() if k in indexed_keys and v is not None
                         and not isinstance(v, (list, dict))
                         and len(text := v if type(v) is str else _tag_text(v)) <= 256]
                if error:
                    pairs.append(("error", message or "true"))
                append((trace_id, span_id, parent_id, sp.name, kind, service, remote, start, duration,
                        1 if error else 0, message, attrs_json, rkey, details.get(code, details[0]), None, pairs))
                if calls is not None and (kind == "SERVER" or kind == "CLIENT"):
                    found.append(call_of(kind, span_id, parent_id, service, remote, sp.name, error, attrs, resource,
                                         duration))
                if own is not None and SOURCE_KEY not in attrs:
                    seen.add(service)
    if calls is not None:
        calls.extend(found)
    if own is not None:
        own.update(seen)
    return batch


_SCALAR = {"bool_value": lambda v: v.bool_value, "int_value": lambda v: v.int_value,
           "double_value": lambda v: v.double_value}


def _detail_json(scope: dict[str, str], status_code: str) -> str:
    detail: dict[str, Any] = {}
    if scope:
        detail["scope"] = scope
    detail["status_code"] = status_code
    return dumps(detail)
