"""Issue 13 (tracing): what real exporters send comes back whole, and the Zipkin API answers as
the Zipkin server would — annotations/events, links, endpoints, ``shared``, lower-cased names,
the OTel→Zipkin status and scope tags, spans without a timestamp."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.exporter.zipkin.json import ZipkinExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from devbox.testing import PlatformThread, running_platform
from tests import httpc


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatformThread]:
    with running_platform(tmp_path_factory.mktemp("fidelity"), components=["tracing"]) as p:
        yield p


def _emit(exporter: SpanExporter, service: str) -> tuple[str, str, str]:
    """A SERVER span with an event, a recorded exception, a link and an error status; returns
    (trace id, span name as sent, linked trace id)."""
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("Shop.Handlers", "2.1.0")
    with tracer.start_as_current_span("Linked Producer") as other:
        linked = other.get_span_context()
    name = f"POST /Authorize-{time.time_ns()}"
    with tracer.start_as_current_span(name, kind=SpanKind.SERVER, links=[Link(linked, {"link.kind": "batch"})]) as span:
        span.add_event("handler.start")
        try:
            raise KeyError("card 42")
        except KeyError as exc:
            span.record_exception(exc)
        span.set_status(Status(StatusCode.ERROR, "card declined"))
        trace_id = format(span.get_span_context().trace_id, "032x")
    provider.shutdown()
    return trace_id, name, format(linked.trace_id, "032x")


def _zipkin(p: PlatformThread, path: str, **params: object) -> object:
    r = httpc.get(f"{p.url('zipkin')}/api/v2{path}", params=params)  # type: ignore[arg-type]
    assert r.status_code == 200, r.text
    return r.json()


def _by_name(spans: object, name: str) -> dict:
    assert isinstance(spans, list)
    return next(s for s in spans if s.get("name") == name)


@pytest.mark.parametrize("kind", ["otlp", "zipkin"])
def test_events_status_scope_and_names_as_zipkin_answers_them(platform: PlatformThread, kind: str) -> None:
    service = f"Checkout-{kind.upper()}"
    if kind == "otlp":
        exporter: SpanExporter = HttpExporter(endpoint=platform.url("otlp_http") + "/v1/traces")
    else:
        exporter = ZipkinExporter(endpoint=platform.url("zipkin") + "/api/v2/spans", local_node_ipv4="10.1.2.3",
                                  local_node_ipv6="2001:db8::c001", local_node_port=31313)
    trace_id, name, linked_trace = _emit(exporter, service)
    span = _by_name(_zipkin(platform, f"/trace/{trace_id}"), name.lower())
    # names lower-cased, as the Zipkin server stores them
    assert span["localEndpoint"]["serviceName"] == service.lower()
    values = [a["value"] for a in span["annotations"]]
    # OTLP events are mapped to annotations by devbox (the event name when it has no attributes);
    # a Zipkin reporter's annotations are kept as it wrote them (the Python exporter writes JSON)
    start = "handler.start" if kind == "otlp" else '{"handler.start": {}}'
    assert start in values
    exception = next(v for v in values if "exception.type" in v)
    assert "KeyError" in exception and "card 42" in exception and "exception.stacktrace" in exception
    tags = span["tags"]
    assert tags["error"] == "card declined" and tags["otel.status_code"] == "ERROR"
    assert tags["otel.scope.name"] == "Shop.Handlers" and tags["otel.scope.version"] == "2.1.0"
    assert "host.ip" not in tags  # nothing that was not sent
    if kind == "otlp":
        assert tags["otel.status_description"] == "card declined"
        assert span["localEndpoint"] == {"serviceName": service.lower()}
    else:
        assert span["localEndpoint"] == {"serviceName": service.lower(), "ipv4": "10.1.2.3",
                                         "ipv6": "2001:db8::c001", "port": 31313}
    # queries are case-insensitive
    for svc, span_name in ((service.upper(), name.upper()), (service.lower(), name.lower())):
        found = _zipkin(platform, "/traces", serviceName=svc, spanName=span_name)
        assert [t[0]["traceId"] for t in found] == [trace_id]  # type: ignore[index]
    assert service.lower() in _zipkin(platform, "/services")  # type: ignore[operator]
    assert name.lower() in _zipkin(platform, "/spans", serviceName=service.upper())  # type: ignore[operator]
    # annotationQuery finds an annotation value (a bare word) and a tag
    found = _zipkin(platform, "/traces", serviceName=service, annotationQuery=f"{start} and otel.status_code=ERROR")
    assert [t[0]["traceId"] for t in found] == [trace_id]  # type: ignore[index]
    # devbox's own API keeps the case and the structured events (and, from OTLP, the links)
    own = httpc.get(f"{platform.url('api')}/api/traces/{trace_id}").json()["spans"]
    mine = next(s for s in own if s["name"] == name)
    assert mine["service"] == service
    if kind == "otlp":
        event = next(e for e in mine["events"] if e["name"] == "exception")
        assert event["attributes"]["exception.type"] == "KeyError" and event["time_us"] > 0
        assert mine["links"][0]["trace_id"] == linked_trace
        assert mine["links"][0]["attributes"] == {"link.kind": "batch"}
    else:
        assert any(v == start for _, v in mine["annotations"])


def test_zipkin_model_comes_back_whole(platform: PlatformThread) -> None:
    now = time.time_ns() // 1000
    tid = "5af7183fb1d4cf5f" * 2
    client = {"traceId": tid, "id": "6b221d5bc9e6496c", "kind": "CLIENT", "name": "GET /Users",
              "timestamp": now - 500, "duration": 300,
              "localEndpoint": {"serviceName": "Frontend", "ipv4": "192.168.99.1", "port": 3306},
              "remoteEndpoint": {"ipv4": "172.19.0.2", "port": 58648},
              "annotations": [{"timestamp": now - 450, "value": "wire.send"}], "tags": {"http.path": "/users"}}
    server = {"traceId": tid, "id": "6b221d5bc9e6496c", "kind": "SERVER", "name": "get /users", "shared": True,
              "timestamp": now - 400, "duration": 100,
              "localEndpoint": {"serviceName": "backend", "ipv6": "2001:db8::1"},
              "remoteEndpoint": {"serviceName": "frontend", "ipv4": "192.168.99.1"}}
    late = {"traceId": tid, "id": "7b221d5bc9e6496c", "parentId": "6b221d5bc9e6496c", "name": "late",
            "localEndpoint": {"serviceName": "backend"}, "annotations": [{"timestamp": now - 300, "value": "ws"}]}
    r = httpc.post(platform.url("zipkin") + "/api/v2/spans", json=[client, server, late])
    assert r.status_code == 202, r.text
    got = _zipkin(platform, f"/trace/{tid}")
    assert isinstance(got, list) and len(got) == 3
    c = next(s for s in got if s.get("kind") == "CLIENT")
    assert c["name"] == "get /users"
    assert c["localEndpoint"] == {"serviceName": "frontend", "ipv4": "192.168.99.1", "port": 3306}
    assert c["remoteEndpoint"] == {"ipv4": "172.19.0.2", "port": 58648}
    assert c["annotations"] == [{"timestamp": now - 450, "value": "wire.send"}]
    assert c["tags"] == {"http.path": "/users"}
    assert "shared" not in c
    s = next(s for s in got if s.get("kind") == "SERVER")
    assert s["shared"] is True and s["localEndpoint"] == {"serviceName": "backend", "ipv6": "2001:db8::1"}
    assert s["remoteEndpoint"] == {"serviceName": "frontend", "ipv4": "192.168.99.1"}
    assert "tags" not in s
    lt = next(s for s in got if s["name"] == "late")
    assert "timestamp" not in lt and lt["annotations"] == [{"timestamp": now - 300, "value": "ws"}]
    found = _zipkin(platform, "/traces", annotationQuery="wire.send")
    assert [t[0]["traceId"] for t in found] == [tid]  # type: ignore[index]
