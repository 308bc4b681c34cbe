"""OTLP protobuf straight into storage rows: the indexer's hot path, no :class:`Span` per span.

:func:`otlp_rows` reads an ``ExportTraceServiceRequest`` into the :data:`~devbox.mocks.tracing.store.Row`
tuples the store writes, with each span's Zipkin JSON put together from per-resource and per-scope
fragments (the service's ``localEndpoint``, the resource's tags) rather than rendered from a dict
per span. The result is the one :func:`convert.from_otlp_request` + :func:`store.row_of` give
(``tests/unit/test_tracing_store.py`` compares them). Spans with events or links, and batches
with a span the decoder would reject, are left to that general path (``None``).
"""

from __future__ import annotations

from collections.abc import Collection
from json.encoder import encode_basestring as _enc
from typing import Any

from devbox.mocks.tracing import convert
from devbox.mocks.tracing.convert import (
    _OTLP_KINDS,
    _RESOURCE_NOT_TAGS,
    _STATUS_NAMES,
    _service_of,
    _tag_text,
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
    for rs in req.resource_spans:
        resource = attributes(rs.resource.attributes)
        service = _service_of(resource)
        rkey = batch.resource(resource)
        res_tags = {k: _tag_text(v) for k, v in resource.items() if k not in _RESOURCE_NOT_TAGS and v is not None}
        local = f',"localEndpoint":{{"serviceName":{_enc(service.lower())}}}'
        for ss in rs.scope_spans:
            scope: dict[str, str] = {}
            if ss.scope.name:
                scope["name"] = ss.scope.name
            if ss.scope.version:
                scope["version"] = ss.scope.version
            scope_tags = {f"otel.scope.{k}": v for k, v in scope.items()}
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
                attrs = attributes(sp.attributes) if sp.attributes else {}
                kind = _OTLP_KINDS.get(sp.kind, "INTERNAL")
                code = sp.status.code
                error = code == 2
                message = sp.status.message
                status_code = _STATUS_NAMES.get(code, "")
                remote = remote_service_of(attrs) if kind in _CALLERS else None
                detail: dict[str, Any] = {}
                if scope:
                    detail["scope"] = scope
                if status_code:
                    detail["status_code"] = status_code
                # Zipkin JSON, in to_zipkin's key order
                tags = dict(res_tags)
                pairs = []
                for k, v in attrs.items():
                    if v is None:
                        continue
                    text = _tag_text(v)
                    tags[k] = text
                    if k in indexed_keys and not isinstance(v, (list, dict)) and len(text) <= 256:
                        pairs.append((k, text))
                tags.update(scope_tags)
                if status_code:
                    tags["otel.status_code"] = status_code
                    if error and message:
                        tags["otel.status_description"] = message
                if error:
                    tags["error"] = message or tags.get("error") or "true"
                    pairs.append(("error", message or "true"))
                parts = [f'{{"traceId":"{trace_id}"']
                if parent_id:
                    parts.append(f',"parentId":"{parent_id}"')
                parts.append(f',"id":"{span_id}"')
                if kind != "INTERNAL":
                    parts.append(f',"kind":"{kind}"')
                if sp.name:
                    parts.append(f',"name":{_enc(sp.name.lower())}')
                parts.append(f',"timestamp":{start},"duration":{max(end - start, 1)}')
                parts.append(local)
                if remote:
                    parts.append(f',"remoteEndpoint":{{"serviceName":{_enc(remote.lower())}}}')
                if tags:
                    parts.append(f',"tags":{dumps(tags)}')
                parts.append("}")
                rows.append((trace_id, span_id, parent_id, sp.name, kind, service, remote, start, end - start,
                             int(error), message, dumps(attrs) if attrs else "{}", rkey,
                             dumps(detail) if detail else None, None, "".join(parts), pairs))
                if calls is not None and (kind == "SERVER" or kind == "CLIENT"):
                    found.append(call_of(kind, span_id, parent_id, service, remote, sp.name, error, attrs, resource,
                                         end - start))
                if own is not None and SOURCE_KEY not in attrs:
                    seen.add(service)
    if calls is not None:
        calls.extend(found)
    if own is not None:
        own.update(seen)
    return batch
