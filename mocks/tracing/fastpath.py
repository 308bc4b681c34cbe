"""OTLP protobuf straight into storage rows: the indexer's hot path, no :class:`Span` per span.

:func:`otlp_rows` reads an ``ExportTraceServiceRequest`` into the :data:`~devbox.mocks.tracing.store.Row`
tuples the store writes: attributes read once per span (inline, into one dict: the JSON column, the
indexed tag values, the RPC call), per-scope work (the ``detail`` JSON of each status) done once
per scope, and each span's Zipkin JSON joined from per-resource and per-scope fragments (the
``localEndpoint``, the resource's, scope's and status's tags; the attributes' JSON is the tags' when
every value is a string) rather than rendered from a dict per span. The result is the one
:func:`convert.from_otlp_request` + :func:`store.row_of` give (``tests/unit/test_tracing_store.py``
compares them). Spans with events or links, and batches
with a span the decoder would reject, are left to that general path (``None``).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Collection
from json.encoder import encode_basestring as _enc
from typing import Any

from devbox.mocks.tracing import convert
from devbox.mocks.tracing.convert import (
    _OTLP_KINDS,
    _RESOURCE_NOT_TAGS,
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
        res_tags = {k: _tag_text(v) for k, v in resource.items() if k not in _RESOURCE_NOT_TAGS and v is not None}
        res_part = dumps(res_tags)[1:-1] if res_tags else ""
        # an attribute with one of these keys changes a tag rendered from elsewhere: such a span's
        # tags are put together as a dict (rare), the others by joining fragments
        taken = _DERIVED_TAG_KEYS | res_tags.keys()
        local = f',"localEndpoint":{{"serviceName":{_enc(service.lower())}}}'
        for ss in rs.scope_spans:
            scope: dict[str, str] = {}
            if ss.scope.name:
                scope["name"] = ss.scope.name
            if ss.scope.version:
                scope["version"] = ss.scope.version
            scope_tags = {f"otel.scope.{k}": v for k, v in scope.items()}
            scope_part = dumps(scope_tags)[1:-1] if scope_tags else ""
            details: dict[int, str | None] = {code: _detail_json(scope, status)
                                              for code, status in _STATUS_NAMES.items()}
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
                # read inline, not through convert.attributes (a call per attribute); every value a
                # string is the common case, where the tags' JSON is the attributes' own
                attrs: dict[str, Any] = {}
                plain = True
                for kv in sp.attributes:
                    v = kv.value
                    which = v.WhichOneof("value")
                    if which == "string_value":
                        attrs[kv.key] = v.string_value
                    else:
                        plain = False
                        read = _SCALAR.get(which) if which is not None else None
                        attrs[kv.key] = read(v) if read is not None else any_value(v)
                kind = _OTLP_KINDS.get(sp.kind, "INTERNAL")
                status = sp.status
                code = status.code
                error = code == 2
                message = status.message
                remote = remote_service_of(attrs) if kind in _CALLERS else None
                duration = end - start
                if attrs:
                    attrs_json = dumps(attrs)
                    texts = attrs if plain else {k: _tag_text(v) for k, v in attrs.items() if v is not None}
                    pairs = [(k, texts[k]) for k in attrs if k in indexed_keys and k in texts
                             and not isinstance(attrs[k], (list, dict)) and len(texts[k]) <= 256]
                else:
                    attrs_json, texts, pairs = "{}", attrs, []
                if taken.isdisjoint(texts):
                    tags = ",".join(part for part in (
                        res_part, attrs_json[1:-1] if plain else dumps(texts)[1:-1], scope_part,
                        _STATUS_TAGS.get(code, ""),
                        f'"otel.status_description":{_enc(message)}' if error and message else "",
                        f'"error":{_enc(message or "true")}' if error else "") if part)
                    tags = f',"tags":{{{tags}}}' if tags else ""
                else:
                    tags = _tags_json(res_tags, texts, scope_tags, code, error, message)
                if error:
                    pairs.append(("error", message or "true"))
                zipkin = (f'{{"traceId":"{trace_id}"' + (f',"parentId":"{parent_id}"' if parent_id else "")
                          + f',"id":"{span_id}"' + _KIND_PARTS[kind]
                          + (f',"name":{_enc(sp.name.lower())}' if sp.name else "")
                          + f',"timestamp":{start},"duration":{duration if duration > 1 else 1}{local}'
                          + (f',"remoteEndpoint":{{"serviceName":{_enc(remote.lower())}}}' if remote else "")
                          + tags + "}")
                append((trace_id, span_id, parent_id, sp.name, kind, service, remote, start, duration,
                        1 if error else 0, message, attrs_json, rkey, details.get(code, details[0]), None, zipkin,
                        pairs))
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


#: How an AnyValue's scalar member is read (any_value reads the others).
_SCALAR: dict[str, Callable[[Any], Any]] = {
    "bool_value": operator.attrgetter("bool_value"), "int_value": operator.attrgetter("int_value"),
    "double_value": operator.attrgetter("double_value"),
}
#: Tags a span gets from its scope and status (convert.to_zipkin): an attribute of the same key is overwritten.
_DERIVED_TAG_KEYS = frozenset({"otel.scope.name", "otel.scope.version", "otel.status_code", "otel.status_description",
                               "error"})
_STATUS_TAGS = {code: f'"otel.status_code":"{name}"' for code, name in _STATUS_NAMES.items()}
_KIND_PARTS = {kind: "" if kind == "INTERNAL" else f',"kind":"{kind}"' for kind in _OTLP_KINDS.values()}


def _detail_json(scope: dict[str, str], status_code: str) -> str:
    detail: dict[str, Any] = {}
    if scope:
        detail["scope"] = scope
    detail["status_code"] = status_code
    return dumps(detail)


def _tags_json(res_tags: dict[str, str], texts: dict[str, Any], scope_tags: dict[str, str], code: int, error: bool,
               message: str) -> str:
    """The ``"tags"`` member as :func:`convert.to_zipkin` puts it together, key by key."""
    tags = dict(res_tags)
    tags.update(texts)
    tags.update(scope_tags)
    status_code = _STATUS_NAMES.get(code, "")
    if status_code:
        tags["otel.status_code"] = status_code
        if error and message:
            tags["otel.status_description"] = message
    if error:
        tags["error"] = message or tags.get("error") or "true"
    return f',"tags":{dumps(tags)}' if tags else ""
