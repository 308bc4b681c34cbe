"""Wire formats <-> :class:`Span`: OTLP (protobuf and JSON), Zipkin v2 (JSON and proto3).

Pure functions, no sockets. Each decoder returns a :class:`Decoded`: the good spans and one reason
per rejected span, so a partially bad batch keeps its good spans and the rejections are counted
(OTLP ``partial_success``). A body that cannot be read at all raises :class:`BadPayload`.

LIMITATIONS: span events, links and Zipkin annotations are not kept (an OTel ``exception`` event
only fills the status message when the status has none); trace ids of 64 bits are widened to
128 bits with leading zeros; spans without a timestamp are rejected (Zipkin would keep them).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from devbox.mocks.tracing import zipkin_proto
from devbox.mocks.tracing.models import Span
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

#: 2000-01-01T00:00:00Z in microseconds: anything earlier is a unit mistake (ms or s sent as µs).
MIN_START_US = 946_684_800_000_000
#: A span lasting more than a week is a clock or unit mistake.
MAX_DURATION_US = 7 * 24 * 3600 * 1_000_000
UNKNOWN_SERVICE = "unknown_service"

_OTLP_KINDS = {0: "INTERNAL", 1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}
_OTLP_KIND_OUT = {"INTERNAL": 1, "SERVER": 2, "CLIENT": 3, "PRODUCER": 4, "CONSUMER": 5}
_STATUS_ERROR = 2
#: Resource attributes that are not worth repeating as Zipkin tags.
_RESOURCE_NOT_TAGS = ("service.name",)


class BadPayload(ValueError):
    """The whole body is unreadable (not the expected encoding). ``str()`` says why."""


@dataclass
class Decoded:
    spans: list[Span] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)

    def error_message(self, limit: int = 5) -> str:
        """A short summary of the rejections for a partial-success answer."""
        if not self.rejected:
            return ""
        shown = "; ".join(self.rejected[:limit])
        more = f" (and {len(self.rejected) - limit} more)" if len(self.rejected) > limit else ""
        return f"{len(self.rejected)} span(s) rejected: {shown}{more}"


# --- checks shared by every format -----------------------------------------------------------


def check_times(start_us: int, duration_us: int, now_us: int, max_future_us: int) -> str | None:
    """A reason when the span's times are absurd, else None."""
    if start_us <= 0:
        return "start timestamp is missing"
    if start_us < MIN_START_US:
        return f"start timestamp {start_us}µs is before the year 2000 (milliseconds or seconds sent as µs?)"
    if start_us > now_us + max_future_us:
        return f"start timestamp {start_us}µs is in the future"
    if duration_us < 0:
        return "span ends before it starts"
    if duration_us > MAX_DURATION_US:
        return f"duration {duration_us}µs is longer than a week"
    return None


def _bytes_id(raw: bytes, name: str, sizes: tuple[int, ...]) -> str:
    """Hex of an id given as bytes; raises ValueError naming the problem."""
    if not raw:
        raise ValueError(f"{name} is missing")
    if len(raw) not in sizes:
        allowed = " or ".join(str(s) for s in sizes)
        raise ValueError(f"{name} has {len(raw)} bytes, expected {allowed}")
    if not any(raw):
        raise ValueError(f"{name} is all zeros")
    return raw.hex()


def _hex_id(value: Any, name: str, lengths: tuple[int, ...]) -> str:
    """Normalised lowercase hex id; raises ValueError naming the problem."""
    if value is None or value == "":
        raise ValueError(f"{name} is missing")
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a hex string")
    text = value.strip().lower()
    if len(text) not in lengths:
        allowed = " or ".join(str(n) for n in lengths)
        raise ValueError(f"{name} {value!r} has {len(text)} hex characters, expected {allowed}")
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise ValueError(f"{name} {value!r} is not hex") from None
    if not any(raw):
        raise ValueError(f"{name} is all zeros")
    return text


def check_text(span: Span) -> Span:
    """Refuses strings SQLite cannot store (JSON can smuggle lone UTF-16 surrogates in)."""
    try:
        json.dumps([span.name, span.service, span.status_message, span.remote_service, span.attributes,
                    span.resource], ensure_ascii=False, default=str).encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("contains text that is not valid Unicode (a lone surrogate)") from None
    return span


def _trace_id(text: str) -> str:
    return text.rjust(32, "0")


# --- OTLP ------------------------------------------------------------------------------------


def any_value(value: common_pb2.AnyValue) -> Any:
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return attributes(value.kvlist_value.values)
    if which == "bytes_value":
        return value.bytes_value.hex()
    return getattr(value, which)


def attributes(kvs: Iterable[common_pb2.KeyValue]) -> dict[str, Any]:
    return {kv.key: any_value(kv.value) for kv in kvs}


def remote_service_of(attrs: dict[str, Any]) -> str | None:
    """The peer's service name when the instrumentation recorded one.

    ``peer.service`` is the convention; otherwise a host name in ``server.address`` /
    ``net.peer.name`` is taken when it is a name rather than an address (services called by
    name through naming, ``http://orders/...``).
    """
    peer = attrs.get("peer.service")
    if isinstance(peer, str) and peer:
        return peer
    for key in ("server.address", "net.peer.name"):
        host = attrs.get(key)
        if isinstance(host, str) and host and _is_service_name(host):
            return host
    return None


def _is_service_name(host: str) -> bool:
    if host in ("localhost",) or ":" in host:
        return False
    return not host.replace(".", "").isdigit()


def _otlp_span(sp: trace_pb2.Span, service: str, resource: dict[str, Any], *, now_us: int,
               max_future_us: int) -> Span:
    trace_id = _bytes_id(sp.trace_id, "traceId", (16,))
    span_id = _bytes_id(sp.span_id, "spanId", (8,))
    parent_id = _bytes_id(sp.parent_span_id, "parentSpanId", (8,)) if sp.parent_span_id else None
    start_us = sp.start_time_unix_nano // 1000
    end_us = sp.end_time_unix_nano // 1000
    if sp.end_time_unix_nano == 0:
        raise ValueError("endTimeUnixNano is missing")
    reason = check_times(start_us, end_us - start_us, now_us, max_future_us)
    if reason:
        raise ValueError(reason)
    attrs = attributes(sp.attributes)
    error = sp.status.code == _STATUS_ERROR
    message = sp.status.message
    if error and not message:
        for event in sp.events:
            if event.name == "exception":
                ev = attributes(event.attributes)
                message = ": ".join(str(p) for p in (ev.get("exception.type"), ev.get("exception.message")) if p)
                break
    kind = _OTLP_KINDS.get(sp.kind, "INTERNAL")
    return Span(
        trace_id=trace_id, span_id=span_id, parent_id=parent_id, name=sp.name, kind=kind, service=service,
        start_us=start_us, duration_us=end_us - start_us, error=error, status_message=message,
        attributes=attrs, remote_service=remote_service_of(attrs) if kind in ("CLIENT", "PRODUCER") else None,
        resource=resource,
    )


def _service_of(resource: dict[str, Any]) -> str:
    name = resource.get("service.name")
    return name if isinstance(name, str) and name else UNKNOWN_SERVICE


def from_otlp_request(req: ExportTraceServiceRequest, *, now_us: int, max_future_us: int) -> Decoded:
    out = Decoded()
    for rs in req.resource_spans:
        resource = attributes(rs.resource.attributes)
        service = _service_of(resource)
        for ss in rs.scope_spans:
            for sp in ss.spans:
                try:
                    out.spans.append(_otlp_span(sp, service, resource, now_us=now_us, max_future_us=max_future_us))
                except ValueError as exc:
                    out.rejected.append(f"span {sp.name!r}: {exc}")
    return out


def from_otlp_protobuf(body: bytes, *, now_us: int, max_future_us: int) -> Decoded:
    try:
        req = ExportTraceServiceRequest.FromString(body)
    except DecodeError as exc:
        raise BadPayload(f"body is not an OTLP ExportTraceServiceRequest protobuf: {exc}") from None
    return from_otlp_request(req, now_us=now_us, max_future_us=max_future_us)


def _loads(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadPayload(f"body is not JSON: {exc}") from None


def _b64_id(span: dict[str, Any], key: str) -> None:
    """OTLP/JSON carries ids as hex; protobuf's JSON mapping wants base64. Invalid hex raises."""
    value = span.get(key)
    if value in (None, ""):
        span.pop(key, None)
        return
    if not isinstance(value, str):
        raise ValueError(f"{key} must be a hex string")
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise ValueError(f"{key} {value!r} is not hex") from None
    span[key] = base64.b64encode(raw).decode()


def from_otlp_json(body: bytes, *, now_us: int, max_future_us: int) -> Decoded:
    """OTLP/JSON: hex ids, enums as integers or names, int64 as numbers or strings; each span is
    parsed alone so one bad span does not sink its batch."""
    data = _loads(body)
    if not isinstance(data, dict):
        raise BadPayload("body must be a JSON object with resourceSpans")
    resource_spans = data.get("resourceSpans", data.get("resource_spans", []))
    if not isinstance(resource_spans, list):
        raise BadPayload("resourceSpans must be a list")
    out = Decoded()
    for rs in resource_spans:
        if not isinstance(rs, dict):
            out.rejected.append("a resourceSpans entry is not an object")
            continue
        resource_msg = resource_pb2.Resource()
        try:
            json_format.ParseDict(rs.get("resource") or {}, resource_msg, ignore_unknown_fields=True)
        except (json_format.ParseError, TypeError, ValueError) as exc:
            count = sum(len(ss.get("spans") or []) for ss in rs.get("scopeSpans") or [] if isinstance(ss, dict))
            out.rejected.extend([f"resource is malformed: {exc}"] * max(count, 1))
            continue
        resource = attributes(resource_msg.attributes)
        service = _service_of(resource)
        scope_spans = rs.get("scopeSpans", rs.get("scope_spans", []))
        for ss in scope_spans if isinstance(scope_spans, list) else []:
            spans = ss.get("spans") if isinstance(ss, dict) else None
            for raw in spans if isinstance(spans, list) else []:
                name = raw.get("name", "") if isinstance(raw, dict) else ""
                try:
                    if not isinstance(raw, dict):
                        raise ValueError("span is not an object")
                    fixed = dict(raw)
                    for key in ("traceId", "spanId", "parentSpanId"):
                        _b64_id(fixed, key)
                    msg = trace_pb2.Span()
                    try:
                        json_format.ParseDict(fixed, msg, ignore_unknown_fields=True)
                    except (json_format.ParseError, TypeError) as exc:
                        raise ValueError(str(exc).splitlines()[0]) from None
                    out.spans.append(check_text(
                        _otlp_span(msg, service, resource, now_us=now_us, max_future_us=max_future_us)))
                except ValueError as exc:
                    out.rejected.append(f"span {name!r}: {exc}")
    return out


def to_otlp_request(spans: Iterable[Span]) -> ExportTraceServiceRequest:
    """Spans back into OTLP (used by tests and the bench to build realistic payloads)."""
    req = ExportTraceServiceRequest()
    by_service: dict[str, Any] = {}
    for span in spans:
        if span.service not in by_service:
            rs = req.resource_spans.add()
            rs.resource.attributes.add(key="service.name").value.string_value = span.service
            for key, value in span.resource.items():
                if key != "service.name":
                    rs.resource.attributes.add(key=key).value.string_value = str(value)
            by_service[span.service] = rs.scope_spans.add()
        sp = by_service[span.service].spans.add(
            trace_id=bytes.fromhex(span.trace_id), span_id=bytes.fromhex(span.span_id), name=span.name,
            kind=_OTLP_KIND_OUT.get(span.kind, 1), start_time_unix_nano=span.start_us * 1000,
            end_time_unix_nano=span.end_us * 1000,
        )
        if span.parent_id:
            sp.parent_span_id = bytes.fromhex(span.parent_id)
        if span.error:
            sp.status.code = _STATUS_ERROR
            sp.status.message = span.status_message
        for key, value in span.attributes.items():
            kv = sp.attributes.add(key=key)
            if isinstance(value, bool):
                kv.value.bool_value = value
            elif isinstance(value, int):
                kv.value.int_value = value
            elif isinstance(value, float):
                kv.value.double_value = value
            else:
                kv.value.string_value = str(value)
        if span.remote_service:
            sp.attributes.add(key="peer.service").value.string_value = span.remote_service
    return req


# --- Zipkin v2 -------------------------------------------------------------------------------


def _zipkin_span(*, trace_id: str, span_id: str, parent_id: str | None, kind: str | None, name: str,
                 timestamp: int, duration: int, local: str, remote: str | None, tags: dict[str, str],
                 local_ip: str | None, now_us: int, max_future_us: int) -> Span:
    reason = check_times(timestamp, duration, now_us, max_future_us)
    if reason:
        raise ValueError(reason)
    error = "error" in tags
    message = tags.get("error", "") if error else ""
    if message.lower() in ("true", "1"):
        message = ""
    if not remote and kind in ("CLIENT", "PRODUCER"):
        remote = remote_service_of(tags)  # the OTel Zipkin exporter leaves peer.service in the tags
    resource: dict[str, Any] = {"service.name": local}
    if local_ip:
        resource["host.ip"] = local_ip
    return Span(
        trace_id=trace_id, span_id=span_id, parent_id=parent_id, name=name or "", kind=kind or "INTERNAL",
        service=local or UNKNOWN_SERVICE, start_us=timestamp, duration_us=duration, error=error,
        status_message=message, attributes=dict(tags), remote_service=remote or None, resource=resource,
    )


def _zipkin_json_span(raw: Any, now_us: int, max_future_us: int) -> Span:
    if not isinstance(raw, dict):
        raise ValueError("span is not an object")
    trace_id = _trace_id(_hex_id(raw.get("traceId"), "traceId", (16, 32)))
    span_id = _hex_id(raw.get("id"), "id", (16,))
    parent = raw.get("parentId")
    parent_id = _hex_id(parent, "parentId", (16,)) if parent not in (None, "") else None
    kind = raw.get("kind")
    if kind is not None and kind not in ("CLIENT", "SERVER", "PRODUCER", "CONSUMER"):
        raise ValueError(f"kind {kind!r} is not CLIENT, SERVER, PRODUCER or CONSUMER")
    timestamp, duration = raw.get("timestamp"), raw.get("duration") or 0
    if timestamp is None:
        raise ValueError("timestamp is missing")
    if not isinstance(timestamp, int) or isinstance(timestamp, bool) or not isinstance(duration, int):
        raise ValueError("timestamp and duration must be integers (microseconds)")
    local = raw.get("localEndpoint") or {}
    remote = raw.get("remoteEndpoint") or {}
    tags = raw.get("tags") or {}
    if not isinstance(local, dict) or not isinstance(remote, dict) or not isinstance(tags, dict):
        raise ValueError("localEndpoint, remoteEndpoint and tags must be objects")
    name = raw.get("name") or ""
    return _zipkin_span(
        trace_id=trace_id, span_id=span_id, parent_id=parent_id, kind=kind, name=str(name),
        timestamp=timestamp, duration=duration, local=str(local.get("serviceName") or UNKNOWN_SERVICE),
        remote=remote.get("serviceName"), tags={str(k): str(v) for k, v in tags.items()},
        local_ip=local.get("ipv4") or local.get("ipv6"), now_us=now_us, max_future_us=max_future_us,
    )


def from_zipkin_json(body: bytes, *, now_us: int, max_future_us: int) -> Decoded:
    data = _loads(body)
    if not isinstance(data, list):
        raise BadPayload("body must be a JSON list of Zipkin v2 spans")
    out = Decoded()
    for raw in data:
        try:
            out.spans.append(check_text(_zipkin_json_span(raw, now_us, max_future_us)))
        except ValueError as exc:
            ident = raw.get("id") if isinstance(raw, dict) else None
            out.rejected.append(f"span {ident!r}: {exc}")
    return out


def from_zipkin_proto(body: bytes, *, now_us: int, max_future_us: int) -> Decoded:
    msgs = zipkin_proto.messages()
    try:
        lst = msgs.ListOfSpans.FromString(body)
    except DecodeError as exc:
        raise BadPayload(f"body is not a zipkin.proto3.ListOfSpans: {exc}") from None
    out = Decoded()
    for sp in lst.spans:
        try:
            ip = None
            if sp.local_endpoint.ipv4:
                ip = ".".join(str(b) for b in sp.local_endpoint.ipv4)
            out.spans.append(_zipkin_span(
                trace_id=_trace_id(_bytes_id(sp.trace_id, "trace_id", (8, 16))),
                span_id=_bytes_id(sp.id, "id", (8,)),
                parent_id=_bytes_id(sp.parent_id, "parent_id", (8,)) if sp.parent_id else None,
                kind=zipkin_proto.KINDS.get(sp.kind), name=sp.name, timestamp=sp.timestamp,
                duration=sp.duration, local=sp.local_endpoint.service_name or UNKNOWN_SERVICE,
                remote=sp.remote_endpoint.service_name or None, tags=dict(sp.tags), local_ip=ip,
                now_us=now_us, max_future_us=max_future_us,
            ))
        except ValueError as exc:
            out.rejected.append(f"span {sp.id.hex()!r}: {exc}")
    return out


def _tag_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def to_zipkin(span: Span) -> dict[str, Any]:
    """A stored span as Zipkin v2 JSON (resource attributes become tags, as the OTel exporter does)."""
    out: dict[str, Any] = {"traceId": span.trace_id, "id": span.span_id}
    if span.parent_id:
        out["parentId"] = span.parent_id
    if span.kind != "INTERNAL":
        out["kind"] = span.kind
    out["name"] = span.name
    out["timestamp"] = span.start_us
    out["duration"] = max(span.duration_us, 1)
    out["localEndpoint"] = {"serviceName": span.service}
    if span.remote_service:
        out["remoteEndpoint"] = {"serviceName": span.remote_service}
    tags = {k: _tag_text(v) for k, v in span.resource.items() if k not in _RESOURCE_NOT_TAGS and v is not None}
    tags.update({k: _tag_text(v) for k, v in span.attributes.items() if v is not None})
    if span.error:
        tags["error"] = span.status_message or tags.get("error") or "true"
    if tags:
        out["tags"] = tags
    return out


def _searchable(source: dict[str, Any], max_len: int) -> list[tuple[str, str]]:
    pairs = []
    for key, value in source.items():
        if value is None or isinstance(value, (list, dict)) or key in _RESOURCE_NOT_TAGS:
            continue
        text = _tag_text(value)
        if len(text) <= max_len:
            pairs.append((key, text))
    return pairs


def index_tags(span: Span, max_len: int = 256) -> list[tuple[str, str]]:
    """The (key, value) pairs of a span's own attributes that are searchable (annotationQuery,
    autocomplete); the resource's are indexed once per resource (:func:`resource_tags`)."""
    pairs = _searchable(span.attributes, max_len)
    if span.error:
        pairs.append(("error", span.status_message or "true"))
    return pairs


def resource_tags(resource: dict[str, Any], max_len: int = 256) -> list[tuple[str, str]]:
    """The searchable (key, value) pairs of a resource (service.name is searched as the service)."""
    return _searchable(resource, max_len)
