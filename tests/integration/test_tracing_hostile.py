"""Issue 14 (items 6 and 7) on the tracing listeners: malformed input is a 4xx / INVALID_ARGUMENT
naming the problem, never a 5xx; a saturated store answers OTLP's retryable signals."""

from __future__ import annotations

import concurrent.futures
import json
import time
from collections.abc import Iterator

import grpc
import httpx
import pytest
from devbox.mocks.tracing.convert import to_otlp_request
from devbox.mocks.tracing.models import Span

from devbox.platform.ports import TracesPort
from devbox.testing import PlatformThread, running_platform, wait_for
from tests import httpc

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatformThread]:
    with running_platform(tmp_path_factory.mktemp("hostile"), components=["tracing"],
                          platform={"max_body_bytes": 20_000_000}) as p:
        yield p


def _otlp_json(platform: PlatformThread, body: bytes) -> httpx.Response:
    return httpc.post(platform.url("otlp_http") + "/v1/traces", content=body,
                      headers={"content-type": "application/json"})


def test_deeply_nested_json_is_a_400(platform: PlatformThread) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    r = _otlp_json(platform, b'{"resourceSpans":' + deep + b"}")
    assert r.status_code == 400, r.text
    r = httpc.post(platform.url("zipkin") + "/api/v2/spans", content=deep, headers={"content-type": "application/json"})
    assert r.status_code == 400 and "nested too deeply" in r.text


def test_wrong_typed_otlp_json_fields_are_refused_not_500(platform: PlatformThread) -> None:
    now = time.time_ns()
    span = {"traceId": "1" * 32, "spanId": "2" * 16, "name": "typed", "startTimeUnixNano": str(now - 1000),
            "endTimeUnixNano": str(now)}
    for body, status in (
        ({"resourceSpans": [{"scopeSpans": 5}]}, 400),
        ({"resourceSpans": [{"scopeSpans": [{"spans": 5}]}]}, 400),
        ({"resourceSpans": 5}, 400),
        ({"resourceSpans": [5]}, 400),
        ({"resourceSpans": [{"resource": {"attributes": "x"}, "scopeSpans": [{"spans": [span]}]}]}, 200),
        ({"resourceSpans": [{"scopeSpans": [{"spans": [{**span, "attributes": "x"}]}]}]}, 200),
        ({"resourceSpans": [{"scopeSpans": [{"spans": [{**span, "events": [{"attributes": 7}]}]}]}]}, 200),
        ({"resourceSpans": [{"scopeSpans": [{"scope": 5, "spans": [{**span, "links": "x"}]}]}]}, 200),
    ):
        r = _otlp_json(platform, json.dumps(body).encode())
        assert r.status_code == status, (body, r.text)
        if status == 200:  # the bad span is rejected and counted, the export itself is answered
            assert int(r.json()["partialSuccess"]["rejectedSpans"]) == 1, (body, r.text)


def test_poison_zipkin_span_is_a_400_not_a_503(platform: PlatformThread) -> None:
    now = time.time_ns() // 1000
    base = {"traceId": "3" * 32, "id": "4" * 16, "name": "poison", "timestamp": now, "duration": 5,
            "localEndpoint": {"serviceName": "p"}}
    for bad in ({"remoteEndpoint": {"serviceName": {"x": 1}}}, {"localEndpoint": {"port": "80"}},
                {"annotations": [{"timestamp": "x", "value": 1}]}, {"tags": {"k": {"x": 1}}}, {"name": ["x"]}):
        r = httpc.post(platform.url("zipkin") + "/api/v2/spans", json=[{**base, **bad}])
        assert r.status_code == 400, (bad, r.text)
        assert "1 span(s) rejected" in r.text


def test_garbage_and_truncated_grpc_exports_are_invalid_argument(platform: PlatformThread) -> None:
    now = time.time_ns() // 1000
    good = to_otlp_request([Span(trace_id="5" * 32, span_id="6" * 16, parent_id=None, name="g", kind="SERVER",
                                 service="grpc-hostile", start_us=now - 10, duration_us=5)]).SerializeToString()
    with grpc.insecure_channel(platform.target("otlp_grpc")) as channel:
        call = channel.unary_unary(EXPORT)
        for body in (b"\xff\xff\xff\xff", good[: len(good) // 2]):
            with pytest.raises(grpc.RpcError) as err:
                call(body, timeout=10)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
        assert call(good, timeout=10) == b""


def test_a_2000_term_annotation_query_is_a_400(platform: PlatformThread) -> None:
    query = " and ".join(f"k{i}=v{i}" for i in range(2000))
    r = httpc.get(platform.url("zipkin") + "/api/v2/traces", params={"annotationQuery": query})
    assert r.status_code == 400 and "terms" in r.text
    ok = httpc.get(platform.url("zipkin") + "/api/v2/traces", params={"annotationQuery": 'a and b=c and "q\\'})
    assert ok.status_code == 200


def test_big_zipkin_body_is_decoded_off_the_loop(platform: PlatformThread) -> None:
    now = time.time_ns() // 1000
    spans = [{"traceId": f"{i + 1:032x}", "id": f"{i + 1:016x}", "name": "big", "timestamp": now - 1000,
              "duration": 5, "localEndpoint": {"serviceName": "bulk"}, "tags": {"k": "v" * 100}}
             for i in range(60_000)]
    body = json.dumps(spans).encode()
    assert len(body) > 14_000_000
    health = platform.url("api") + "/healthz"
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        posted = pool.submit(httpx.post, platform.url("zipkin") + "/api/v2/spans", content=body,
                             headers={"content-type": "application/json"}, timeout=120)
        worst = 0.0
        with httpx.Client() as client:
            while not posted.done():
                t = time.perf_counter()
                client.get(health, timeout=30)
                worst = max(worst, time.perf_counter() - t)
        assert posted.result().status_code in (202, 503)
    assert worst < 1.0, f"/healthz stalled {worst:.2f}s while a big body was decoded"


@pytest.mark.slow  # 5-8 s of real processes: left out of make test-quick
def test_saturated_ingest_answers_retryable_busy_and_keeps_every_acknowledged_span(tmp_path: object) -> None:
    import pathlib

    assert isinstance(tmp_path, pathlib.Path)
    with running_platform(tmp_path, components=["tracing"], tracing={"max_pending_spans": 1000}) as p:
        now = time.time_ns() // 1000

        def body(i: int) -> bytes:
            return to_otlp_request([Span(trace_id=f"{i + 1:032x}", span_id=f"{j + 1:016x}", parent_id=None,
                                         name="s", kind="SERVER", service="busy", start_us=now - 100, duration_us=5)
                                    for j in range(2000)]).SerializeToString()

        def send(i: int) -> httpx.Response:
            return httpc.post(p.url("otlp_http") + "/v1/traces", content=body(i), timeout=60,
                              headers={"content-type": "application/x-protobuf"})

        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(send, range(48)))
        codes = [r.status_code for r in answers]
        assert set(codes) <= {200, 503}, codes
        assert 503 in codes, codes
        assert all(r.headers.get("retry-after") for r in answers if r.status_code == 503)
        acked = codes.count(200) * 2000
        stored = httpc.get(p.url("api") + "/api/platform").json()["components"]["tracing"]["spans_stored"]
        assert stored == acked


def test_exports_are_refused_with_the_reason_while_the_wal_disk_is_short_of_room(tmp_path: object) -> None:
    import pathlib

    assert isinstance(tmp_path, pathlib.Path)
    # more room asked for than any disk has: every export is refused before it is written
    with running_platform(tmp_path, components=["tracing"], tracing={"wal_min_free_mb": 2**40}) as p:
        now = time.time_ns() // 1000
        body = to_otlp_request([Span(trace_id=f"{1:032x}", span_id=f"{1:016x}", parent_id=None, name="s",
                                     kind="SERVER", service="full", start_us=now - 100, duration_us=5)
                                ]).SerializeToString()
        answer = httpc.post(p.url("otlp_http") + "/v1/traces", content=body, timeout=30,
                            headers={"content-type": "application/x-protobuf"})
        assert answer.status_code == 503, answer.text
        assert answer.headers.get("retry-after")
        assert "wal_min_free_mb" in answer.text and "free some space" in answer.text
        info = httpc.get(p.url("api") + "/api/platform").json()["components"]["tracing"]
        assert info["spans_stored"] == 0 and info["exports_refused_busy"] == 1


def test_exports_are_refused_while_too_many_wait_in_the_wal_however_few_spans_they_hold(
        tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import pathlib
    import signal

    from devbox.mocks.tracing import core

    assert isinstance(tmp_path, pathlib.Path)
    monkeypatch.setattr(core, "MAX_PENDING_RECORDS", 2)
    with running_platform(tmp_path, components=["tracing"]) as p:
        collector = p.platform.ctx.lookup(TracesPort).collector  # type: ignore[union-attr]
        now = time.time_ns() // 1000

        def export(i: int) -> httpx.Response:
            body = to_otlp_request([Span(trace_id=f"{i + 1:032x}", span_id=f"{1:016x}", parent_id=None, name="s",
                                         kind="SERVER", service="small", start_us=now - 100, duration_us=5)
                                    ]).SerializeToString()
            return httpc.post(p.url("otlp_http") + "/v1/traces", content=body, timeout=30,
                              headers={"content-type": "application/x-protobuf"})

        assert export(0).status_code == 200
        wait_for(lambda: collector.info()["wal_lag_spans"] == 0, timeout=30, what="the indexer running")
        pid = collector.indexer.pid
        os.kill(pid, signal.SIGSTOP)  # nothing is reported indexed: exports wait in the WAL
        try:
            assert [export(i).status_code for i in (1, 2)] == [200, 200]
            refused = export(3)
            assert refused.status_code == 503 and refused.headers.get("retry-after"), refused.text
            assert "2 exports waiting to be indexed" in refused.text
        finally:
            os.kill(pid, signal.SIGCONT)
        wait_for(lambda: collector.info()["wal_lag_spans"] == 0, timeout=30, what="the lag indexed")
        assert collector.info()["spans_stored"] == 3


def test_services_sending_their_own_spans_are_known_at_acknowledgement_with_the_indexer_stopped(
        tmp_path: object) -> None:
    """`trace: auto` (faults) decides whether a service traces itself from services_seen(); that is
    known when an export is acknowledged, not once indexed — the index may lag by minutes."""
    import os
    import pathlib
    import signal

    assert isinstance(tmp_path, pathlib.Path)
    with running_platform(tmp_path, components=["tracing"]) as p:
        tracing = p.platform.ctx.lookup(TracesPort)
        collector = tracing.collector  # type: ignore[union-attr]
        assert tracing is not None and tracing.services_seen() == set()  # the watch starts
        now = time.time_ns() // 1000
        url = p.url("otlp_http") + "/v1/traces"

        def span(i: int, service: str, **attributes: object) -> Span:
            return Span(trace_id=f"{i + 1:032x}", span_id=f"{i + 1:016x}", parent_id=None, name="s", kind="SERVER",
                        service=service, start_us=now - 100, duration_us=5, attributes=dict(attributes))

        assert httpc.post(url, content=to_otlp_request([span(0, "warm")]).SerializeToString(), timeout=30,
                          headers={"content-type": "application/x-protobuf"}).status_code == 200
        wait_for(lambda: collector.info()["wal_lag_spans"] == 0, timeout=30, what="the indexer running")
        pid = collector.indexer.pid
        os.kill(pid, signal.SIGSTOP)  # nothing is indexed from here on
        try:
            big = [span(1 + i, "billing") for i in range(400)]  # past the inline size: the check process reads it
            own = httpc.post(url, content=to_otlp_request(big).SerializeToString(), timeout=30,
                             headers={"content-type": "application/x-protobuf"})
            proxy = httpc.post(url, timeout=30, json={"resourceSpans": [{
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "ledger"}}]},
                "scopeSpans": [{"scope": {"name": "devbox.proxy"}, "spans": [{
                    "traceId": f"{999:032x}", "spanId": f"{999:016x}", "name": "get", "kind": 2,
                    "startTimeUnixNano": str(now * 1000), "endTimeUnixNano": str(now * 1000 + 5000),
                    "attributes": [{"key": "devbox.span.source", "value": {"stringValue": "proxy"}}]}]}]}]})
            assert own.status_code == 200 and proxy.status_code == 200, (own.text, proxy.text)
            assert tracing.services_seen() == {"warm", "billing"}  # not ledger: its span is a proxy's
            assert collector.info()["wal_lag_spans"] == 401
        finally:
            os.kill(pid, signal.SIGCONT)
