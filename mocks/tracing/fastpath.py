"""OTLP protobuf straight into storage rows: the indexer's hot path, no :class:`Span` per span.

:func:`otlp_rows` reads an ``ExportTraceServiceRequest`` into the :data:`~devbox.mocks.tracing.store.Row`
tuples the store writes: attributes read once per span (into one dict: the JSON column, the
indexed tag values, the RPC call), per-scope work (the ``detail`` JSON of each status) done once
per scope, and each span's Zipkin JSON joined from per-resource and per-scope fragments (the
``localEndpoint``, the resource's, scope's and status's tags) and per-export cached ones (a name's,
a remote endpoint's) rather than rendered from a dict per span.

Attributes are the bulk of the work: the request is parsed with each span's attributes left as
serialized ``KeyValue`` bytes (:data:`_LeanRequest`), and what one attribute makes — its key and
value, its ``"key":value`` part of the attributes' JSON and its part of the tags' JSON, its indexed
pair — is worked out once per distinct attribute (:func:`_attribute`, cached by those bytes in the
process, up to :data:`ATTRIBUTE_CACHE` of them): values repeat across spans and exports (routes,
methods, status codes), and a message object per attribute and per value cost more than the rest
of a span. How much this saves depends on that repetition (bench_indexer's exports repeat every
attribute value; exports whose every attribute value is unique measured 14-16 us/span with the RPC
calls, against 16.6 when attributes were read as messages). A value other than a string, int or
bool, or a repeated key, takes the general route for that span.

The result is the one :func:`convert.from_otlp_request` + :func:`store.row_of` give
(``tests/unit/test_tracing_store.py`` compares them, on random exports too). Spans with events or
links, and batches with a span the decoder would reject, are left to that general path (``None``).
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
    SOURCE_KEY,
    _tag_text,
    any_value,
    attributes,
    remote_service_of,
    service_of,
)
from devbox.mocks.tracing.rpcstats import Call, call_of
from devbox.mocks.tracing.store import Rows, dumps
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

_Z16, _Z8 = bytes(16), bytes(8)


def _lean_request() -> Any:
    """``ExportTraceServiceRequest`` with each span's ``attributes`` read as the serialized
    ``KeyValue`` messages (``repeated bytes``: the same wire format) rather than as message objects,
    in a pool of its own. Reading a span's attributes as messages cost ~1 us each (a wrapper object
    per KeyValue and per AnyValue, three attribute reads): most of them repeat within an export, so
    the bytes are a cache key for what each one makes."""
    pool = descriptor_pool.DescriptorPool()
    for module in (common_pb2, resource_pb2, trace_pb2, trace_service_pb2):
        file = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(file)
        for message in file.message_type:
            if module is trace_pb2 and message.name == "Span":
                (field,) = [f for f in message.field if f.name == "attributes"]
                field.type = descriptor_pb2.FieldDescriptorProto.TYPE_BYTES
                field.ClearField("type_name")
        pool.Add(file)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName(trace_service_pb2.ExportTraceServiceRequest.DESCRIPTOR.full_name))


_LeanRequest = _lean_request()

#: What one serialized attribute makes: key, value, its ``"key":value`` JSON, its ``"key":"text"`` tag
#: JSON and its indexed (key, text) pair (None: not indexed) — the first part None (and the tag part
#: empty) for a value that is not a string, int or bool (the span's attributes take the general route).
_Attribute = tuple[str, Any, str | None, str, tuple[str, str] | None]


#: Distinct attributes remembered (:func:`_attribute_cache`): ~300 bytes each, a few MB at most.
ATTRIBUTE_CACHE = 20_000
#: The indexed keys the cache's attributes were worked out for, and the cache.
_cache: tuple[frozenset[str], dict[bytes, _Attribute]] = (frozenset(), {})


def _attribute_cache(indexed_keys: Collection[str]) -> dict[bytes, _Attribute]:
    """The process's serialized KeyValue -> :data:`_Attribute` cache, for these indexed keys (what an
    attribute makes depends on them). Exports repeat each other's attributes (routes, methods, status
    codes, SDK and host values), so it outlives one; it is emptied when it holds
    :data:`ATTRIBUTE_CACHE` attributes, so unique values (ids, URLs) cannot grow it without bound."""
    global _cache
    keys = frozenset(indexed_keys)
    cache = _cache
    if cache[0] != keys or len(cache[1]) > ATTRIBUTE_CACHE:
        cache = _cache = (keys, {})
    return cache[1]


def _attribute(raw: bytes, indexed_keys: Collection[str]) -> _Attribute:
    kv = common_pb2.KeyValue.FromString(raw)
    key, v = kv.key, kv.value
    which = v.WhichOneof("value")
    key_part = _enc(key) + ":"
    if which == "string_value":
        value = v.string_value
        part = key_part + _enc(value)
        return key, value, part, part, (key, value) if key in indexed_keys and len(value) <= 256 else None
    if which == "int_value":
        value = v.int_value
        text = str(value)
    elif which == "bool_value":
        value = v.bool_value
        text = "true" if value else "false"
    else:
        return key, any_value(v), None, "", None
    return key, value, key_part + text, f'{key_part}"{text}"', (key, text) if key in indexed_keys else None
_CALLERS = ("CLIENT", "PRODUCER")


def otlp_rows(body: bytes, *, now_us: int, max_future_us: int, indexed_keys: Collection[str],
              calls: list[Call] | None = None, own: set[str] | None = None) -> Rows | None:
    """The rows of one OTLP protobuf export, or None when the general decoder must read it. With
    ``calls``, the :data:`~devbox.mocks.tracing.rpcstats.Call` of each CLIENT/SERVER span is
    appended to it; with ``own``, the services of spans that devbox did not make are added to it."""
    req = _LeanRequest.FromString(body)
    found: list[Call] = []
    seen: set[str] = set()
    low = convert.MIN_START_US * 1000
    high = (now_us + max_future_us + 1) * 1000
    longest = convert.MAX_DURATION_US
    batch = Rows()
    rows = batch.rows
    append = rows.append
    # fragments of the Zipkin JSON that repeat across spans: a span's name, its remote endpoint
    name_parts: dict[str, str] = {"": ""}
    remote_parts: dict[str, str] = {}
    cache = _attribute_cache(indexed_keys)
    for rs in req.resource_spans:
        resource = attributes(rs.resource.attributes)
        service = service_of(resource)
        rkey = batch.resource(resource)
        res_tags = {k: _tag_text(v) for k, v in resource.items() if k not in _RESOURCE_NOT_TAGS and v is not None}
        res_part = dumps(res_tags)[1:-1] if res_tags else ""
        # an attribute with one of these keys changes a tag rendered from elsewhere: such a span's
        # tags are put together as a dict (rare), the others by joining fragments
        taken = _DERIVED_TAG_KEYS | res_tags.keys()
        local = f',"localEndpoint":{{"serviceName":{_enc(service.lower())}}}'
        head = f',"tags":{{{res_part},' if res_part else ',"tags":{'  # opens the "tags" member before the attributes'
        for ss in rs.scope_spans:
            scope: dict[str, str] = {}
            if ss.scope.name:
                scope["name"] = ss.scope.name
            if ss.scope.version:
                scope["version"] = ss.scope.version
            scope_tags = {f"otel.scope.{k}": v for k, v in scope.items()}
            scope_part = dumps(scope_tags)[1:-1] if scope_tags else ""
            details: dict[int, str | int] = {code: _detail_json(scope, status)
                                             for code, status in _STATUS_NAMES.items()}
            details[0] = dumps({"scope": scope}) if scope else 0
            # by status code, for spans without an error: what closes the "tags" member after the
            # attributes' tags (the scope's and status's), and the whole member of a span with no attributes
            ends: dict[int, tuple[str, str]] = {}
            for code in (0, 1):
                tail = _join(scope_part, _STATUS_TAGS.get(code, ""))
                inner = _join(res_part, tail)
                ends[code] = (f",{tail}}}" if tail else "}", f',"tags":{{{inner}}}' if inner else "")
            for sp in ss.spans:
                t, s, p = sp.trace_id, sp.span_id, sp.parent_span_id
                start_ns, end_ns = sp.start_time_unix_nano, sp.end_time_unix_nano
                start, end = start_ns // 1000, end_ns // 1000
                if not (len(t) == 16 and t != _Z16 and len(s) == 8 and s != _Z8
                        and (not p or (len(p) == 8 and p != _Z8)) and end_ns and low <= start_ns < high
                        and 0 <= end - start <= longest and not sp.links and not sp.events):
                    return None
                trace_id, span_id = t.hex(), s.hex()
                # each attribute read from its serialized KeyValue through the process's cache (see
                # _LeanRequest): its key and value, its part of the attributes' JSON and of the tags'
                # JSON, its indexed (key, text) pair; a value other than a string, int or bool (part
                # None) and a repeated key take the general route (_attribute_json)
                attrs: dict[str, Any] = {}
                parts: list[str] = []
                tag_parts: list[str] = []
                pairs: list[tuple[str, str]] = []
                general = False
                for raw in sp.attributes:
                    attribute = cache.get(raw)
                    if attribute is None:
                        attribute = cache[raw] = _attribute(raw, indexed_keys)
                    key, value, part, tag_part, pair = attribute
                    attrs[key] = value
                    if part is None:
                        general = True
                        continue
                    parts.append(part)
                    tag_parts.append(tag_part)
                    if pair is not None:
                        pairs.append(pair)
                kind, kind_part = _KINDS.get(sp.kind, _INTERNAL)
                status = sp.status
                code = status.code
                remote = remote_service_of(attrs) if kind in _CALLERS else None
                duration = end - start
                texts: dict[str, Any]
                if general or len(parts) != len(attrs):
                    attrs_json, body_part, texts, pairs = _attribute_json(attrs, indexed_keys)
                else:  # the tags' keys are the attributes' (their texts, when needed: _tags_json)
                    attrs_json, body_part, texts = "{" + ",".join(parts) + "}", ",".join(tag_parts), attrs
                message = status.message
                if code == 2 or code not in ends or not taken.isdisjoint(texts):
                    error = code == 2
                    if texts is attrs:
                        texts = {k: _tag_text(v) for k, v in attrs.items()}
                    tags = _tags_json(res_tags, texts, scope_tags, code, error, message)
                    if error:
                        pairs.append(("error", message or "true"))
                else:
                    error = False
                    close, whole = ends[code]
                    tags = f"{head}{body_part}{close}" if body_part else whole
                name = sp.name
                name_part = name_parts.get(name)
                if name_part is None:
                    name_part = name_parts[name] = f',"name":{_enc(name.lower())}'
                if remote:
                    remote_part = remote_parts.get(remote)
                    if remote_part is None:
                        remote_part = f',"remoteEndpoint":{{"serviceName":{_enc(remote.lower())}}}'
                        remote_parts[remote] = remote_part
                else:
                    remote_part = ""
                parent_id = p.hex() if p else None
                parent_part = f',"parentId":"{parent_id}"' if parent_id else ""
                zipkin = (f'{{"traceId":"{trace_id}"{parent_part},"id":"{span_id}"{kind_part}{name_part}'
                          f',"timestamp":{start},"duration":{duration if duration > 1 else 1}{local}{remote_part}'
                          f'{tags}}}')
                append((trace_id, span_id, parent_id or 0, name, kind, service, remote or 0, start, duration,
                        1 if error else 0, message, attrs_json, rkey, details.get(code, details[0]), 0, zipkin,
                        pairs))
                if calls is not None and (kind == "SERVER" or kind == "CLIENT"):
                    found.append(call_of(kind, span_id, parent_id, service, remote, name, error, attrs,
                                         resource, duration))
                if own is not None and SOURCE_KEY not in attrs:
                    seen.add(service)
    if calls is not None:
        calls.extend(found)
    if own is not None:
        own.update(seen)
    return batch


#: Tags a span gets from its scope and status (convert.to_zipkin): an attribute of the same key is overwritten.
_DERIVED_TAG_KEYS = frozenset({"otel.scope.name", "otel.scope.version", "otel.status_code", "otel.status_description",
                               "error"})
_STATUS_TAGS = {code: f'"otel.status_code":"{name}"' for code, name in _STATUS_NAMES.items()}
#: An OTLP span kind's name and the ``"kind"`` member of its Zipkin JSON (none for INTERNAL).
_KINDS = {number: (kind, "" if kind == "INTERNAL" else f',"kind":"{kind}"') for number, kind in _OTLP_KINDS.items()}
_INTERNAL = ("INTERNAL", "")


def _attribute_json(attrs: dict[str, Any], indexed_keys: Collection[str]) -> tuple[
        str, str, dict[str, str], list[tuple[str, str]]]:
    """A span's attributes' JSON, its tags' JSON members, its tag texts and indexed (key, text) pairs,
    as :func:`store.row_of` and :func:`convert.to_zipkin` make them (any value type)."""
    texts = {k: _tag_text(v) for k, v in attrs.items() if v is not None}
    pairs = [(k, text) for k, text in texts.items() if k in indexed_keys and len(text) <= 256
             and not isinstance(attrs[k], (list, dict))]
    return dumps(attrs), dumps(texts)[1:-1], texts, pairs


def _join(a: str, b: str) -> str:
    """Two JSON member lists joined (either may be empty)."""
    return f"{a},{b}" if a and b else a or b


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
