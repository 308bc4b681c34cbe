"""Zero-code tracing (issue 13): the proxy in front of an instance makes the SERVER span of each
HTTP request it forwards, continuing W3C or B3 context (or starting a trace) and injecting its own
span as the parent downstream; an uninstrumented stdlib ``http.server`` then appears in traces and
in the RED metrics devbox derives from spans."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from devbox.mocks.faults.proxy import FaultProxy
from devbox.mocks.faults.rules import Decision

from devbox.platform.ports import MetricsQueryPort
from devbox.testing import running_platform, wait_for
from tests import httpc


class _Plain(BaseHTTPRequestHandler):
    """A service with no tracing at all; it remembers the headers it was sent."""

    seen: list[dict[str, str]] = []

    def do_GET(self) -> None:
        _Plain.seen.append({k.lower(): v for k, v in self.headers.items()})
        status = 500 if self.path.startswith("/fail") else 200
        self.send_response(status)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def plain() -> Iterator[tuple[str, int]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Plain)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[:2]  # type: ignore[misc]
    server.shutdown()
    server.server_close()


async def _no_fault(*_: object) -> Decision:
    return Decision()


def _through_proxy(upstream: tuple[str, int], calls: list[tuple[str, dict[str, str]]], *,
                   provisional: bool = False) -> list[dict[str, Any]]:
    spans: list[dict[str, Any]] = []

    async def run() -> None:
        proxy = FaultProxy(service="plain", instance_id="plain-1", upstream=upstream, mode="http",
                           decide=_no_fault, on_span=lambda service, iid, span: spans.append(span))
        proxy.provisional = lambda service: provisional
        host, port = await proxy.start()
        async with httpx.AsyncClient() as client:
            for path, headers in calls:
                await client.get(f"http://{host}:{port}{path}", headers=headers)
        await proxy.stop()

    asyncio.run(run())
    return spans


def test_proxy_makes_server_spans_and_propagates(plain: tuple[str, int]) -> None:
    _Plain.seen.clear()
    trace, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    spans = _through_proxy(plain, [
        ("/orders?id=1", {"traceparent": f"00-{trace}-{parent}-01"}),
        ("/fail", {}),
        ("/b3", {"X-B3-TraceId": "463ac35c9f6413ad", "X-B3-SpanId": "a2fb4a1d1a96d312", "X-B3-Sampled": "1"}),
    ])
    w3c, failed, b3 = spans
    # W3C: continued; the service is told the proxy's span is its parent (its own spans nest under it)
    assert w3c["traceId"] == trace and w3c["parentSpanId"] == parent and w3c["kind"] == 2
    assert w3c["name"] == "GET /orders" and w3c["status"] == {"code": 0}
    assert _Plain.seen[0]["traceparent"] == f"00-{trace}-{w3c['spanId']}-01"
    # no context: a new trace, a root span, the 500 an error
    assert "parentSpanId" not in failed and failed["traceId"] != trace and failed["status"]["code"] == 2
    assert {"key": "http.response.status_code", "value": {"intValue": "500"}} in failed["attributes"]
    # B3 (64-bit trace id): continued and answered in B3 as well as W3C
    assert b3["traceId"] == "0000000000000000463ac35c9f6413ad" and b3["parentSpanId"] == "a2fb4a1d1a96d312"
    assert _Plain.seen[2]["x-b3-spanid"] == b3["spanId"]
    assert _Plain.seen[2]["traceparent"].split("-")[2] == b3["spanId"]


def test_a_span_that_may_be_dropped_is_not_made_the_services_parent(plain: tuple[str, int]) -> None:
    """trace: auto, before devbox knows whether the service sends its own spans: its proxy's span may
    be dropped, so a caller's context goes through unchanged (the service's spans stay the caller's
    children, its call stays in the tree); with no caller context the proxy's span still starts the trace."""
    _Plain.seen.clear()
    trace, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    spans = _through_proxy(plain, [("/orders", {"traceparent": f"00-{trace}-{parent}-01"}), ("/orders", {})],
                           provisional=True)
    continued, started = spans
    assert continued["parentSpanId"] == parent
    assert _Plain.seen[0]["traceparent"] == f"00-{trace}-{parent}-01"
    assert _Plain.seen[1]["traceparent"] == f"00-{started['traceId']}-{started['spanId']}-01"


def test_uninstrumented_service_shows_in_traces_and_red_metrics(plain: tuple[str, int], tmp_path: Any) -> None:
    spans = _through_proxy(plain, [("/orders", {})] * 3 + [("/fail", {})])
    with running_platform(tmp_path, components=["tracing", "metrics"]) as platform:
        body = {"resourceSpans": [{
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "plain"}},
                                        {"key": "service.instance.id", "value": {"stringValue": "plain-1"}}]},
            "scopeSpans": [{"scope": {"name": "devbox.proxy"}, "spans": spans}],
        }]}
        r = httpc.post(platform.url("otlp_http") + "/v1/traces", json=body)
        assert r.status_code == 200, r.text
        zipkin = platform.url("zipkin")
        services = wait_for(lambda: "plain" in httpc.get(zipkin + "/api/v2/services").json(), what="plain in services")
        assert services
        metrics = platform.platform.ctx.lookup(MetricsQueryPort)  # type: ignore[union-attr]
        assert metrics is not None

        def red() -> dict[str, float] | None:
            got = metrics.query_instant('sum by (status) (rpc_server_requests_total{callee="plain"})', time.time())
            counts = {lb.get("status", ""): v for lb, v in got}
            return counts if sum(counts.values()) == 4 else None

        assert wait_for(red, what="RED counts of plain") == {"ok": 3, "error": 1}
