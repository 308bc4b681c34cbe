"""Real OpenTelemetry SDK exporters (OTLP HTTP, OTLP gRPC, Zipkin JSON) against the platform;
spans read back through the Zipkin query API."""

from __future__ import annotations

import dataclasses
import gzip
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from devbox.mocks.tracing.convert import to_otlp_request
from devbox.mocks.tracing.models import Span
from devbox.mocks.tracing.zipkin_proto import messages
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.exporter.zipkin.json import ZipkinExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from devbox.testing import PlatformThread, running_platform, wait_for
from tests import httpc


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatformThread]:
    with running_platform(tmp_path_factory.mktemp("tracing"), components=["tracing"],
                          platform={"max_body_bytes": 2_000_000}) as p:
        yield p


def _emit(exporter: SpanExporter, service: str) -> tuple[str, str]:
    """A gateway SERVER span calling a CLIENT span whose child is the callee's SERVER span,
    all exported by ``exporter``; returns (trace id, name prefix)."""
    provider = TracerProvider(resource=Resource.create({"service.name": service, "devbox.env": "base"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    prefix = f"{service}-{time.time_ns()}"
    with tracer.start_as_current_span(f"{prefix} GET /checkout", kind=SpanKind.SERVER) as root:
        root.set_attribute("http.route", "/checkout")
        with tracer.start_as_current_span(f"{prefix} call", kind=SpanKind.CLIENT) as client:
            client.set_attribute("peer.service", "payments")
            client.set_status(Status(StatusCode.ERROR, "card declined"))
        trace_id = format(root.get_span_context().trace_id, "032x")
    provider.shutdown()
    return trace_id, prefix


def _zipkin_trace(p: PlatformThread, trace_id: str, listener: str = "zipkin") -> list[dict]:
    r = httpc.get(f"{p.url(listener)}/api/v2/trace/{trace_id}")
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.parametrize("kind", ["http-protobuf", "http-gzip", "grpc", "zipkin-json"])
def test_real_exporters_round_trip_through_zipkin_api(platform: PlatformThread, kind: str) -> None:
    service = f"svc-{kind}"
    if kind == "grpc":
        exporter: SpanExporter = GrpcExporter(endpoint=platform.target("otlp_grpc"), insecure=True)
    elif kind == "zipkin-json":
        exporter = ZipkinExporter(endpoint=platform.url("zipkin") + "/api/v2/spans")
    else:
        exporter = HttpExporter(endpoint=platform.url("otlp_http") + "/v1/traces",
                                compression=Compression.Gzip if kind == "http-gzip" else Compression.NoCompression)
    trace_id, prefix = _emit(exporter, service)
    spans = _zipkin_trace(platform, trace_id)
    assert len(spans) == 2
    by_name = {s["name"]: s for s in spans}  # the Zipkin API lower-cases names, as the Zipkin server does
    root, client = by_name[f"{prefix} get /checkout"], by_name[f"{prefix} call"]
    assert root["kind"] == "SERVER" and "parentId" not in root
    assert client["parentId"] == root["id"] and client["kind"] == "CLIENT"
    assert client["remoteEndpoint"]["serviceName"] == "payments"
    assert client["tags"]["error"] == "card declined"
    assert root["localEndpoint"]["serviceName"] == service
    assert root["tags"]["http.route"] == "/checkout"
    # the same data through the query endpoints, also on the api listener
    z = platform.url("api") + "/api/v2"
    assert service in httpc.get(z + "/services").json()
    assert f"{prefix} call" in httpc.get(z + "/spans", params={"serviceName": service}).json()
    assert httpc.get(z + "/remoteServices", params={"serviceName": service}).json() == ["payments"]
    found = httpc.get(z + "/traces", params={"serviceName": service, "annotationQuery": "http.route=/checkout"}).json()
    assert [t[0]["traceId"] for t in found] == [trace_id]
    links = httpc.get(z + "/dependencies", params={"endTs": int(time.time() * 1000)}).json()
    assert {"parent": service, "child": "payments", "callCount": 1, "errorCount": 1} in links


def test_otlp_json_answers_in_json_with_partial_success(platform: PlatformThread) -> None:
    now = time.time_ns()
    good = {"traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203331", "name": "good",
            "kind": 2, "startTimeUnixNano": str(now - 1_000_000), "endTimeUnixNano": str(now)}
    bad_len = {**good, "spanId": "b7ad6b71", "name": "short-id"}
    no_id = {k: v for k, v in good.items() if k != "traceId"} | {"name": "no-trace-id"}
    absurd = {**good, "spanId": "c7ad6b7169203331", "name": "ms-as-ns", "startTimeUnixNano": "1700000000000",
              "endTimeUnixNano": "1700000000001"}
    body = {"resourceSpans": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "js"}}]},
                               "scopeSpans": [{"spans": [good, bad_len, no_id, absurd]}]}]}
    r = httpc.post(platform.url("otlp_http") + "/v1/traces", json=body)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    partial = r.json()["partialSuccess"]
    assert int(partial["rejectedSpans"]) == 3
    assert "spanId has 4 bytes" in partial["errorMessage"] and "traceId is missing" in partial["errorMessage"]
    assert "before the year 2000" in partial["errorMessage"]
    assert [s["name"] for s in _zipkin_trace(platform, good["traceId"])] == ["good"]


def test_otlp_protobuf_deflate_and_bad_input(platform: PlatformThread) -> None:
    import zlib

    span = Span(trace_id="1" * 32, span_id="2" * 16, parent_id=None, name="deflated", kind="SERVER",
                service="deflate", start_us=time.time_ns() // 1000 - 10, duration_us=5)
    body = zlib.compress(to_otlp_request([span]).SerializeToString())
    url = platform.url("otlp_http") + "/v1/traces"
    r = httpc.post(url, content=body, headers={"content-type": "application/x-protobuf", "content-encoding": "deflate"})
    assert r.status_code == 200
    assert not ExportTraceServiceResponse.FromString(r.content).HasField("partial_success")
    assert _zipkin_trace(platform, "1" * 32)[0]["name"] == "deflated"
    # malformed protobuf: 400 with a google.rpc.Status in protobuf
    from google.rpc import status_pb2

    r = httpc.post(url, content=b"\xff\xff\xff", headers={"content-type": "application/x-protobuf"})
    assert r.status_code == 400 and "not an OTLP" in status_pb2.Status.FromString(r.content).message
    r = httpc.post(url, content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "not JSON" in r.json()["message"]
    r = httpc.post(url, content=b"hello", headers={"content-type": "text/plain"})
    assert r.status_code == 415 and "Content-Type" in r.json()["message"]
    r = httpc.post(url, content=b"x" * 3_000_000, headers={"content-type": "application/x-protobuf"})
    assert r.status_code == 413
    bomb = gzip.compress(b"\x00" * 5_000_000)
    r = httpc.post(url, content=bomb, headers={"content-type": "application/x-protobuf", "content-encoding": "gzip"})
    assert r.status_code == 413 and "decompressed" in status_pb2.Status.FromString(r.content).message
    r = httpc.post(url, content=bomb[:100], headers={"content-type": "application/x-protobuf",
                                                      "content-encoding": "gzip"})
    assert r.status_code == 400 and "truncated" in status_pb2.Status.FromString(r.content).message
    r = httpc.post(url, content=body, headers={"content-type": "application/x-protobuf", "content-encoding": "br"})
    assert r.status_code == 415
    # the same endpoint is mounted on the api listener
    r = httpc.post(platform.url("api") + "/v1/traces", content=body,
                   headers={"content-type": "application/x-protobuf", "content-encoding": "deflate"})
    assert r.status_code == 200
    # an empty request is a valid (empty) export
    r = httpc.post(url, content=ExportTraceServiceRequest().SerializeToString(),
                   headers={"content-type": "application/x-protobuf"})
    assert r.status_code == 200


def test_zipkin_proto3_and_bad_zipkin_input(platform: PlatformThread) -> None:
    m = messages()
    lst = m.ListOfSpans()
    now = time.time_ns() // 1000
    sp = lst.spans.add(trace_id=bytes.fromhex("ab" * 8), id=bytes.fromhex("cd" * 8), kind=1, name="proto-call",
                       timestamp=now - 100, duration=50)
    sp.local_endpoint.service_name = "zproto"
    sp.remote_endpoint.service_name = "db"
    sp.tags["db.system"] = "sqlite"
    url = platform.url("zipkin") + "/api/v2/spans"
    r = httpc.post(url, content=lst.SerializeToString(), headers={"content-type": "application/x-protobuf"})
    assert r.status_code == 202 and r.content == b""
    got = _zipkin_trace(platform, "ab" * 8)  # a 64-bit id is found by its 16 hex characters
    assert got[0]["traceId"] == "0" * 16 + "ab" * 8 and got[0]["remoteEndpoint"] == {"serviceName": "db"}
    assert got[0]["tags"]["db.system"] == "sqlite"
    assert httpc.post(url, content=b"[]", headers={"content-type": "application/json"}).status_code == 202
    gz = gzip.compress(json.dumps([{"traceId": "ab" * 16, "id": "98" * 8, "name": "gzipped", "timestamp": now,
                                    "duration": 9, "localEndpoint": {"serviceName": "zgzip"}}]).encode())
    r = httpc.post(url, content=gz, headers={"content-type": "application/json", "content-encoding": "gzip"})
    assert r.status_code == 202 and _zipkin_trace(platform, "ab" * 16)[0]["name"] == "gzipped"
    r = httpc.post(url, content=b"{]", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "Cannot decode" in r.text
    good = {"traceId": "ef" * 16, "id": "12" * 8, "name": "kept", "timestamp": now, "duration": 3,
            "localEndpoint": {"serviceName": "zjson"}}
    surrogate = b'{"traceId": "%s", "id": "%s", "name": "bad \\ud800", "timestamp": %d}' % (
        b"ef" * 16, b"56" * 8, now)
    body = b"[" + json.dumps(good).encode() + b"," + json.dumps(
        {"traceId": "ef" * 16, "name": "no-id", "timestamp": now}).encode() + b"," + json.dumps(
        {**good, "id": "34" * 8, "timestamp": 99999999999999999999}).encode() + b"," + surrogate + b"]"
    r = httpc.post(url, content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400 and "stored 1 span" in r.text and "id is missing" in r.text
    assert "3 span(s) rejected" in r.text and "lone surrogate" in r.text
    assert [s["name"] for s in _zipkin_trace(platform, "ef" * 16)] == ["kept"]
    assert httpc.post(url, content=b"<xml/>", headers={"content-type": "application/xml"}).status_code == 415
    # queries with bad ids and unknown ids
    z = platform.url("zipkin") + "/api/v2"
    r = httpc.get(z + "/trace/" + "9" * 32)
    assert r.status_code == 404 and r.text == "9" * 32 + " not found"
    assert httpc.get(z + "/trace/xyz").status_code == 400
    assert httpc.get(z + "/traceMany", params={"traceIds": "ef" * 16}).status_code == 400
    many = httpc.get(z + "/traceMany", params={"traceIds": f"{'ef' * 16},{'ab' * 8},{'9' * 32}"}).json()
    assert sorted(t[0]["name"] for t in many) == ["kept", "proto-call"]
    assert httpc.get(z + "/spans").status_code == 400  # serviceName is required
    assert httpc.get(z + "/traces", params={"limit": "lots"}).status_code == 400
    assert "db.system" not in httpc.get(z + "/autocompleteKeys").json()
    assert httpc.get(z + "/autocompleteValues", params={"key": "db.system"}).json() == ["sqlite"]
    assert httpc.get(platform.url("zipkin") + "/config.json").json()["dependency"]["enabled"] is True


def test_grpc_partial_success_counts_bad_spans(platform: PlatformThread) -> None:
    import grpc
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

    now = time.time_ns() // 1000
    good = Span(trace_id="7" * 32, span_id="8" * 16, parent_id=None, name="grpc-good", kind="SERVER",
                service="grpc-partial", start_us=now - 100, duration_us=50)
    request = to_otlp_request([good, dataclasses.replace(good, span_id="9" * 16, name="grpc-bad")])
    request.resource_spans[0].scope_spans[0].spans[1].trace_id = b"\x01\x02\x03"
    with grpc.insecure_channel(platform.target("otlp_grpc")) as channel:
        response = trace_service_pb2_grpc.TraceServiceStub(channel).Export(request, timeout=10)
    assert response.partial_success.rejected_spans == 1
    assert "traceId has 3 bytes" in response.partial_success.error_message
    assert [s["name"] for s in _zipkin_trace(platform, "7" * 32)] == ["grpc-good"]


SERVE = """
import json, sys, time
from pathlib import Path
from devbox.testing import running_platform
with running_platform(Path(sys.argv[1]), components=["tracing"]) as p:
    print(json.dumps({"otlp": p.url("otlp_http")}), flush=True)
    time.sleep(600)
"""


@pytest.mark.slow  # 5-8 s of real processes: left out of make test-quick
def test_acknowledged_spans_survive_kill_9(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", SERVE, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        url = json.loads(proc.stdout.readline())["otlp"] + "/v1/traces"
        now = time.time_ns() // 1000
        for i in range(20):
            spans = [Span(trace_id=f"{i + 1:032x}", span_id=f"{j + 1:016x}", parent_id=None, name=f"s{j}",
                          kind="SERVER", service="killed", start_us=now - 1000, duration_us=10) for j in range(50)]
            r = httpc.post(url, content=to_otlp_request(spans).SerializeToString(),
                           headers={"content-type": "application/x-protobuf"})
            assert r.status_code == 200
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    with running_platform(tmp_path, components=["tracing"]) as p:
        assert httpc.get(p.url("api") + "/api/platform").json()["components"]["tracing"]["spans_stored"] == 1000
        assert len(_zipkin_trace(p, f"{20:032x}")) == 50


def test_acknowledged_spans_survive_a_restart_and_fire_the_event(tmp_path: Path) -> None:
    seen: list[Span] = []
    with running_platform(tmp_path, components=["tracing"]) as p:
        p.platform.events.spans_ingested.add_listener(lambda spans: seen.extend(spans))
        trace_id, _ = _emit(HttpExporter(endpoint=p.url("otlp_http") + "/v1/traces"), "durable")
        # the event fires once the indexer process committed the spans (after the acknowledgement)
        wait_for(lambda: len(seen) >= 2, timeout=10, what="spans_ingested with the 2 spans")
        assert {s.trace_id for s in seen} == {trace_id} and len(seen) == 2
        assert {s.remote_service for s in seen} == {None, "payments"}
    with running_platform(tmp_path, components=["tracing"]) as p:
        assert len(_zipkin_trace(p, trace_id)) == 2
        assert json.loads(httpc.get(p.url("api") + "/api/platform").text)["components"]["tracing"]["spans_stored"] == 2


def test_the_indexer_starts_with_the_first_export_or_at_start_when_spans_are_stored(tmp_path: Path) -> None:
    """An empty collector runs no indexer process (its start-up and its lanes' memory are spent only once
    a span comes); a query before then answers at once. A platform with spans stored starts it at start:
    their retention runs in it."""
    from devbox.platform.ports import TracesPort

    with running_platform(tmp_path, components=["tracing"]) as p:
        collector = p.platform.ctx.lookup(TracesPort).collector  # type: ignore[union-attr]
        assert collector.indexer.pid is None
        assert httpc.get(p.url("zipkin") + "/api/v2/services", timeout=5).json() == []
        assert collector.indexer.pid is None
        trace_id, _ = _emit(HttpExporter(endpoint=p.url("otlp_http") + "/v1/traces"), "first")
        assert collector.indexer.pid is not None
        assert len(_zipkin_trace(p, trace_id)) == 2
    with running_platform(tmp_path, components=["tracing"]) as p:
        collector = p.platform.ctx.lookup(TracesPort).collector  # type: ignore[union-attr]
        assert collector.indexer.pid is not None
        assert len(_zipkin_trace(p, trace_id)) == 2


EMBEDDING = """
import json, os, sys
from pathlib import Path
import httpx
from devbox.mocks.tracing.convert import to_otlp_request
from devbox.mocks.tracing.models import Span
from devbox.testing import running_platform

root = Path(sys.argv[1])
with open(root / "runs.txt", "a") as f:  # one line per execution of this script's top level
    f.write(f"{os.getpid()}\\n")
with running_platform(root / "state", components=["tracing"]) as p:
    now = 1_000_000 * int(__import__("time").time())
    spans = [Span(trace_id="e" * 32, span_id=f"{j + 1:016x}", parent_id=None, name="x" * 200, kind="SERVER",
                  service="embedded", start_us=now - 1000, duration_us=10) for j in range(12_000)]
    body = to_otlp_request(spans).SerializeToString()  # over 2 MB: checked in the check process
    r = httpx.post(p.url("otlp_http") + "/v1/traces", content=body,
                   headers={"content-type": "application/x-protobuf"}, timeout=60)
    r.raise_for_status()
    # spans are indexed off the request path (a query waits up to 2 s for that): wait for all of them
    trace = p.trace("e" * 32, 12_000, timeout=60)
    print(json.dumps({"spans": len(trace), "body": len(body)}), flush=True)
"""


def test_a_script_without_a_main_guard_starts_and_stops_a_platform(tmp_path: Path) -> None:
    """The indexer and check processes are ``python -m`` subprocesses: nothing re-runs the script
    that embeds the platform (multiprocessing's spawn did, so an unguarded script looped)."""
    script = tmp_path / "embed.py"
    script.write_text(EMBEDDING)
    done = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["body"] > 2 * 1024 * 1024 and answer["spans"] == 12_000
    assert len((tmp_path / "runs.txt").read_text().split()) == 1
