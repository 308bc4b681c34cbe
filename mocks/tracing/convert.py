"""Wire formats <-> :class:`Span`: OTLP (protobuf and JSON), Zipkin v2 (JSON and proto3).

Pure functions, no sockets. Each decoder returns a :class:`Decoded`: the good spans and one reason
per rejected span, so a partially bad batch keeps its good spans and the rejections are counted
(OTLP ``partial_success``). A body that cannot be read at all raises :class:`BadPayload`.

What is kept: Zipkin annotations, endpoints (ipv4, ipv6, port), ``shared`` and ``debug``; OTel
events (name, time, attributes — ``exception.*`` included), links, scope and status code. Going
out to Zipkin (:func:`to_zipkin`) follows the OTel→Zipkin mapping: events become annotations
(the event name, or ``name: {attributes as JSON}``), the status becomes ``otel.status_code`` /
``otel.status_description`` (and ``error``), the scope ``otel.scope.name``/``otel.scope.version``;
span and service names are lower-cased there, as the Zipkin server does.

LIMITATIONS: trace ids of 64 bits are widened to 128 bits with leading zeros; OTel links have no
Zipkin form (they are on devbox's own API only).
"""

from __future__ import annotations

import base64
import ipaddress
import json
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from devbox.mocks.tracing import zipkin_proto
from devbox.mocks.tracing.models import Span

if TYPE_CHECKING:  # protobuf and its C++ runtime (~3 MB) load with the first protobuf or OTLP/JSON body
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.common.v1 import common_pb2
    from opentelemetry.proto.trace.v1 import trace_pb2

#: 2000-01-01T00:00:00Z in microseconds: anything earlier is a unit mistake (ms or s sent as µs).
MIN_START_US = 946_684_800_000_000
#: A span lasting more than a week is a clock or unit mistake.
MAX_DURATION_US = 7 * 24 * 3600 * 1_000_000
UNKNOWN_SERVICE = "unknown_service"
#: The attribute devbox's own span makers (the tracing proxy, faults) put on their spans.
SOURCE_KEY = "devbox.span.source"

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
                    span.resource, span.detail()], ensure_ascii=False, default=str).encode("utf-8")
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


_STATUS_NAMES = {1: "OK", 2: "ERROR"}


def _otlp_span(sp: trace_pb2.Span, service: str, resource: dict[str, Any], *, now_us: int,
               max_future_us: int, scope: dict[str, str] | None = None) -> Span:
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
    events = [{"name": ev.name, "time_us": ev.time_unix_nano // 1000, "attributes": attributes(ev.attributes)}
              for ev in sp.events]
    links = []
    for link in sp.links:
        entry: dict[str, Any] = {"trace_id": _bytes_id(link.trace_id, "link traceId", (16,)),
                                 "span_id": _bytes_id(link.span_id, "link spanId", (8,))}
        if link.attributes:
            entry["attributes"] = attributes(link.attributes)
        links.append(entry)
    return Span(
        trace_id=trace_id, span_id=span_id, parent_id=parent_id, name=sp.name, kind=kind, service=service,
        start_us=start_us, duration_us=end_us - start_us, error=error, status_message=message,
        attributes=attrs, remote_service=remote_service_of(attrs) if kind in ("CLIENT", "PRODUCER") else None,
        resource=resource, events=events, links=links, scope=scope or {},
        status_code=_STATUS_NAMES.get(sp.status.code, ""),
    )


def _scope_of(name: str, version: str) -> dict[str, str]:
    out = {}
    if name:
        out["name"] = name
    if version:
        out["version"] = version
    return out


def service_of(resource: dict[str, Any]) -> str:
    name = resource.get("service.name")
    return name if isinstance(name, str) and name else UNKNOWN_SERVICE


def service_of_keyvalues(attributes: Iterable[Any]) -> str:
    """:func:`service_of` of a protobuf resource's attributes as they are (the check reads one a scope
    on the acknowledge path; converting them all first cost ~2 % of it): the last ``service.name``,
    unknown when it is not a non-empty string (a value of another type has ``string_value`` "")."""
    name = ""
    for attribute in attributes:
        if attribute.key == "service.name":
            name = attribute.value.string_value
    return name or UNKNOWN_SERVICE


def from_otlp_request(req: ExportTraceServiceRequest, *, now_us: int, max_future_us: int) -> Decoded:
    out = Decoded()
    for rs in req.resource_spans:
        resource = attributes(rs.resource.attributes)
        service = service_of(resource)
        for ss in rs.scope_spans:
            scope = _scope_of(ss.scope.name, ss.scope.version)
            for sp in ss.spans:
                try:
                    out.spans.append(_otlp_span(sp, service, resource, now_us=now_us, max_future_us=max_future_us,
                                                scope=scope))
                except ValueError as exc:
                    out.rejected.append(f"span {sp.name!r}: {exc}")
    return out


def from_otlp_protobuf(body: bytes, *, now_us: int, max_future_us: int) -> Decoded:
    from google.protobuf.message import DecodeError
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

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
    except RecursionError:  # JSON nested deeper than the parser's stack
        raise BadPayload("body is not JSON we read: nested too deeply") from None


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


def _parse_dict(data: Any, message: Any, what: str) -> None:
    """``json_format.ParseDict`` that fails only with ValueError (wrong-typed fields raise many kinds)."""
    if not isinstance(data, dict):
        raise ValueError(f"{what} must be an object")
    from google.protobuf import json_format

    try:
        json_format.ParseDict(data, message, ignore_unknown_fields=True)
    except (json_format.ParseError, TypeError, ValueError, AttributeError, KeyError, RecursionError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"{what} is malformed: {first}") from None


def _list_of(data: dict[str, Any], camel: str, snake: str, where: str) -> list[Any]:
    value = data.get(camel, data.get(snake))
    if value is None:
        return []
    if not isinstance(value, list):
        raise BadPayload(f"{where}{camel} must be a list")
    return value


def from_otlp_json(body: bytes, *, now_us: int, max_future_us: int) -> Decoded:
    """OTLP/JSON: hex ids, enums as integers or names, int64 as numbers or strings. A wrong shape
    above the spans (``resourceSpans``/``scopeSpans``/``spans`` not lists) makes the body
    unreadable (400); each span is parsed alone so one bad span does not sink its batch."""
    from opentelemetry.proto.common.v1 import common_pb2
    from opentelemetry.proto.resource.v1 import resource_pb2
    from opentelemetry.proto.trace.v1 import trace_pb2

    data = _loads(body)
    if not isinstance(data, dict):
        raise BadPayload("body must be a JSON object with resourceSpans")
    out = Decoded()
    for i, rs in enumerate(_list_of(data, "resourceSpans", "resource_spans", "")):
        if not isinstance(rs, dict):
            raise BadPayload(f"resourceSpans[{i}] must be an object")
        scope_spans = _list_of(rs, "scopeSpans", "scope_spans", f"resourceSpans[{i}].")
        groups = []
        for j, ss in enumerate(scope_spans):
            if not isinstance(ss, dict):
                raise BadPayload(f"resourceSpans[{i}].scopeSpans[{j}] must be an object")
            groups.append((ss, _list_of(ss, "spans", "spans", f"resourceSpans[{i}].scopeSpans[{j}].")))
        resource_msg = resource_pb2.Resource()
        try:
            _parse_dict(rs.get("resource") or {}, resource_msg, "resource")
        except ValueError as exc:
            out.rejected.extend([str(exc)] * max(sum(len(spans) for _, spans in groups), 1))
            continue
        resource = attributes(resource_msg.attributes)
        service = service_of(resource)
        for ss, spans in groups:
            scope_msg = common_pb2.InstrumentationScope()
            try:
                _parse_dict(ss.get("scope") or {}, scope_msg, "scope")
            except ValueError:
                scope_msg = common_pb2.InstrumentationScope()
            scope = _scope_of(scope_msg.name, scope_msg.version)
            for raw in spans:
                name = raw.get("name", "") if isinstance(raw, dict) else ""
                try:
                    if not isinstance(raw, dict):
                        raise ValueError("span is not an object")
                    fixed = dict(raw)
                    for key in ("traceId", "spanId", "parentSpanId"):
                        _b64_id(fixed, key)
                    links = fixed.get("links")
                    if isinstance(links, list):
                        fixed["links"] = [dict(link) for link in links if isinstance(link, dict)]
                        for link in fixed["links"]:
                            _b64_id(link, "traceId")
                            _b64_id(link, "spanId")
                    msg = trace_pb2.Span()
                    _parse_dict(fixed, msg, "span")
                    out.spans.append(check_text(_otlp_span(msg, service, resource, now_us=now_us,
                                                           max_future_us=max_future_us, scope=scope)))
                except ValueError as exc:
                    out.rejected.append(f"span {str(name)[:100]!r}: {exc}")
    return out


def to_otlp_request(spans: Iterable[Span]) -> ExportTraceServiceRequest:
    """Spans back into OTLP (used by tests and the bench to build realistic payloads)."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

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
                 timestamp: int | None, duration: int | None, local: dict[str, Any], remote: dict[str, Any],
                 tags: dict[str, str], annotations: list[tuple[int, str]], shared: bool, debug: bool, now_us: int,
                 max_future_us: int) -> Span:
    missing = timestamp is None or timestamp == 0
    if missing:
        # Zipkin keeps a span without a timestamp (late or partial): place it at its first
        # annotation, else at its arrival, and render it back without one.
        timestamp = min((t for t, _ in annotations), default=now_us)
    assert timestamp is not None
    reason = check_times(timestamp, duration or 0, now_us, max_future_us)
    if reason:
        raise ValueError(reason)
    error = "error" in tags
    message = tags.get("error", "") if error else ""
    if message.lower() in ("true", "1"):
        message = ""
    local_name = local.pop("serviceName", None)
    remote_name = remote.pop("serviceName", None)
    if not remote_name and kind in ("CLIENT", "PRODUCER"):
        remote_name = remote_service_of(tags)  # the OTel Zipkin exporter leaves peer.service in the tags
    service = local_name or UNKNOWN_SERVICE
    return Span(
        trace_id=trace_id, span_id=span_id, parent_id=parent_id, name=name or "", kind=kind or "INTERNAL",
        service=service, start_us=timestamp, duration_us=duration or 0, error=error,
        status_message=message, attributes=dict(tags), remote_service=remote_name or None,
        resource={"service.name": service}, annotations=annotations, local_endpoint=local,
        remote_endpoint=remote, shared=shared, debug=debug, timestamp_missing=missing,
    )


def _json_endpoint(raw: Any, what: str) -> dict[str, Any]:
    """A Zipkin JSON endpoint, checked field by field (a poison span is refused, never stored)."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ValueError(f"{what} must be an object")
    out: dict[str, Any] = {}
    for key in ("serviceName", "ipv4", "ipv6"):
        value = raw.get(key)
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            raise ValueError(f"{what}.{key} must be a string")
        out[key] = value
    port = raw.get("port")
    if port is not None:
        if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
            raise ValueError(f"{what}.port must be an integer from 0 to 65535")
        if port:
            out["port"] = port
    return out


def _json_annotations(raw: Any) -> list[tuple[int, str]]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ValueError("annotations must be a list")
    out = []
    for a in raw:
        if not isinstance(a, dict):
            raise ValueError("an annotation is not an object")
        ts, value = a.get("timestamp"), a.get("value")
        if not isinstance(ts, int) or isinstance(ts, bool) or ts < 0 or not isinstance(value, str):
            raise ValueError("an annotation needs an integer timestamp (µs) and a string value")
        out.append((ts, value))
    return out


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
    timestamp, duration = raw.get("timestamp"), raw.get("duration")
    for value in (timestamp, duration):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise ValueError("timestamp and duration must be integers (microseconds)")
    tags = raw.get("tags") or {}
    if not isinstance(tags, dict):
        raise ValueError("tags must be an object")
    for key, value in tags.items():
        if isinstance(value, (dict, list)):
            raise ValueError(f"tag {key!r} must be a string")
    name = raw.get("name") or ""
    if not isinstance(name, str):
        raise ValueError("name must be a string")
    return _zipkin_span(
        trace_id=trace_id, span_id=span_id, parent_id=parent_id, kind=kind, name=name,
        timestamp=timestamp, duration=duration, local=_json_endpoint(raw.get("localEndpoint"), "localEndpoint"),
        remote=_json_endpoint(raw.get("remoteEndpoint"), "remoteEndpoint"),
        tags={str(k): _tag_text(v) for k, v in tags.items() if v is not None},
        annotations=_json_annotations(raw.get("annotations")), shared=raw.get("shared") is True,
        debug=raw.get("debug") is True, now_us=now_us, max_future_us=max_future_us,
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
            out.rejected.append(f"span {str(ident)[:40]!r}: {exc}")
    return out


def _proto_endpoint(ep: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if ep.service_name:
        out["serviceName"] = ep.service_name
    if len(ep.ipv4) == 4:
        out["ipv4"] = str(ipaddress.IPv4Address(ep.ipv4))
    if len(ep.ipv6) == 16:
        out["ipv6"] = str(ipaddress.IPv6Address(ep.ipv6))
    if ep.port:
        out["port"] = ep.port
    return out


def from_zipkin_proto(body: bytes, *, now_us: int, max_future_us: int) -> Decoded:
    from google.protobuf.message import DecodeError

    msgs = zipkin_proto.messages()
    try:
        lst = msgs.ListOfSpans.FromString(body)
    except DecodeError as exc:
        raise BadPayload(f"body is not a zipkin.proto3.ListOfSpans: {exc}") from None
    out = Decoded()
    for sp in lst.spans:
        try:
            out.spans.append(check_text(_zipkin_span(
                trace_id=_trace_id(_bytes_id(sp.trace_id, "trace_id", (8, 16))),
                span_id=_bytes_id(sp.id, "id", (8,)),
                parent_id=_bytes_id(sp.parent_id, "parent_id", (8,)) if sp.parent_id else None,
                kind=zipkin_proto.KINDS.get(sp.kind), name=sp.name, timestamp=sp.timestamp or None,
                duration=sp.duration or None, local=_proto_endpoint(sp.local_endpoint),
                remote=_proto_endpoint(sp.remote_endpoint), tags=dict(sp.tags),
                annotations=[(a.timestamp, a.value) for a in sp.annotations], shared=sp.shared, debug=sp.debug,
                now_us=now_us, max_future_us=max_future_us,
            )))
        except ValueError as exc:
            out.rejected.append(f"span {sp.id.hex()!r}: {exc}")
    return out


def _tag_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def event_annotation(event: dict[str, Any]) -> str:
    """An OTel event as a Zipkin annotation value: the name, or ``name: {attributes as JSON}``."""
    attrs = event.get("attributes") or {}
    if not attrs:
        return str(event.get("name", ""))
    return f"{event.get('name', '')}: {json.dumps(attrs, separators=(',', ':'), sort_keys=True, default=str)}"


def annotation_values(span: Span) -> list[str]:
    """The annotation values Zipkin shows (and ``annotationQuery`` matches) for a span."""
    return [v for _, v in span.annotations] + [event_annotation(e) for e in span.events]


def to_zipkin(span: Span) -> dict[str, Any]:
    """A stored span as Zipkin v2 JSON, as the Zipkin server returns it: names lower-cased,
    endpoints as sent, OTel events as annotations, resource attributes, status and scope as tags
    (the OTel→Zipkin mapping)."""
    out: dict[str, Any] = {"traceId": span.trace_id}
    if span.parent_id:
        out["parentId"] = span.parent_id
    out["id"] = span.span_id
    if span.kind != "INTERNAL":
        out["kind"] = span.kind
    if span.name:
        out["name"] = span.name.lower()
    if not span.timestamp_missing:
        out["timestamp"] = span.start_us
        out["duration"] = max(span.duration_us, 1)
    elif span.duration_us:
        out["duration"] = span.duration_us
    out["localEndpoint"] = {"serviceName": span.service.lower(), **span.local_endpoint}
    remote = dict(span.remote_endpoint)
    if span.remote_service:
        remote = {"serviceName": span.remote_service.lower(), **remote}
    if remote:
        out["remoteEndpoint"] = remote
    annotations = sorted([*span.annotations, *((int(e.get("time_us", 0)), event_annotation(e)) for e in span.events)])
    if annotations:
        out["annotations"] = [{"timestamp": t, "value": v} for t, v in annotations]
    tags = {k: _tag_text(v) for k, v in span.resource.items() if k not in _RESOURCE_NOT_TAGS and v is not None}
    tags.update({k: _tag_text(v) for k, v in span.attributes.items() if v is not None})
    if span.scope.get("name"):
        tags["otel.scope.name"] = span.scope["name"]
    if span.scope.get("version"):
        tags["otel.scope.version"] = span.scope["version"]
    if span.status_code:
        tags["otel.status_code"] = span.status_code
        if span.status_code == "ERROR" and span.status_message:
            tags["otel.status_description"] = span.status_message
    if span.error:
        tags["error"] = span.status_message or tags.get("error") or "true"
    if tags:
        out["tags"] = tags
    if span.debug:
        out["debug"] = True
    if span.shared:
        out["shared"] = True
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


def index_tags(span: Span, keys: Collection[str] | None = None, max_len: int = 256) -> list[tuple[str, str]]:
    """The (key, value) pairs of a span's own attributes that get index rows (autocomplete, fast
    search) — only ``keys`` when given; the resource's are indexed once per resource
    (:func:`resource_tags`)."""
    source = span.attributes if keys is None else {k: v for k, v in span.attributes.items() if k in keys}
    pairs = _searchable(source, max_len)
    if span.error:
        pairs.append(("error", span.status_message or "true"))
    return pairs


def resource_tags(resource: dict[str, Any], max_len: int = 256) -> list[tuple[str, str]]:
    """The searchable (key, value) pairs of a resource (service.name is searched as the service)."""
    return _searchable(resource, max_len)
