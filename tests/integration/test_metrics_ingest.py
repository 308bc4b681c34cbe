"""Every ingest path with real clients: the OTel SDK metrics exporters (OTLP HTTP protobuf, gRPC,
JSON), the devbox SDK (counters, gauges, custom reports), prometheus-client exposition scraped by
devbox, spans turned into RPC reports; malformed input refused whole; acknowledged data surviving
``kill -9``."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from devbox.mocks.deploy.config import ServiceConfig
from devbox.mocks.tracing.convert import to_otlp_request
from devbox.mocks.tracing.models import Span
from devbox.mocks.tracing.rpcstats import aggregate_spans
from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetricExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetricExporter
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.sdk.metrics import Counter, MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client import Counter as PromCounter
from prometheus_client import Gauge as PromGauge
from prometheus_client import Histogram as PromHistogram

from devbox.config import ProjectConfig
from devbox.platform.ports import MetricsQueryPort, NamingPort, Registration, TracesPort
from devbox.sdk.metrics import MetricsClient, ReportRejected
from devbox.testing import PlatformThread, running_platform, wait_for
from tests import httpc


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatformThread]:
    root = tmp_path_factory.mktemp("metrics")
    config = ProjectConfig.for_tests(
        root,
        services=[ServiceConfig(name="scraped", scrape="/metrics")],
        metrics={"scrape_interval": 0.3},
    )
    with running_platform(config=config, components=["naming", "metrics"]) as p:
        yield p


def _query(p: PlatformThread, expr: str) -> list[tuple[dict[str, str], float]]:
    metrics = p.platform.ctx.lookup(MetricsQueryPort)  # type: ignore[union-attr]
    assert metrics is not None
    return metrics.query_instant(expr, time.time())


def _wait_total(p: PlatformThread, expr: str, total: float) -> list[tuple[dict[str, str], float]]:
    """The query's result once its values add up to ``total`` (spans may be counted over two flushes)."""

    def check() -> list[tuple[dict[str, str], float]] | None:
        got = _query(p, expr)
        return got if sum(v for _, v in got) == total else None

    return wait_for(check, what=f"{expr} to add up to {total}")


def _provider(exporter: Any, service: str) -> MeterProvider:
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=60_000)
    return MeterProvider(metric_readers=[reader], resource=Resource.create({"service.name": service}))


def test_otel_sdk_http_protobuf_exporter(platform: PlatformThread) -> None:
    exporter = HttpMetricExporter(endpoint=platform.url("otlp_http") + "/v1/metrics")
    provider = _provider(exporter, "checkout")
    client = MetricsClient(meter_provider=provider)
    client.counter("orders.placed", description="orders").incr(3, region="sh")
    client.gauge("queue.depth").set(1.5)
    hist = client.histogram("checkout.ms", unit="ms")
    for value in (3, 20, 300):  # the SDK's default buckets are 0, 5, 10, 25, 50, ...
        hist.observe(value)
    assert client.flush()
    got = {lb["__name__"]: (lb, v) for lb, v in _query(platform, '{service="checkout"}')}
    labels, value = got["orders_placed_total"]
    assert value == 3 and labels["region"] == "sh"
    assert got["queue_depth"][1] == 1.5
    assert got["checkout_ms_milliseconds_count"][1] == 3
    assert got["checkout_ms_milliseconds_sum"][1] == pytest.approx(323)
    median = _query(platform, 'histogram_quantile(0.5, checkout_ms_milliseconds_bucket{service="checkout"})')
    assert median[0][1] == pytest.approx(17.5)  # rank 1.5 of 3, halfway through the (10, 25] bucket
    # cumulative temporality: a second export continues the same counter
    client.counter("orders.placed").incr(2, region="sh")
    client.flush()
    assert _query(platform, 'orders_placed_total{service="checkout"}')[0][1] == 5
    provider.shutdown()


def test_otel_sdk_grpc_exporter_with_delta_temporality(platform: PlatformThread) -> None:
    exporter = GrpcMetricExporter(
        endpoint=platform.target("otlp_grpc"),
        insecure=True,
        preferred_temporality={Counter: AggregationTemporality.DELTA},
    )
    provider = _provider(exporter, "billing")
    client = MetricsClient(meter_provider=provider)
    client.counter("invoices").incr(4)
    client.flush()
    client.counter("invoices").incr(6)
    client.flush()
    # deltas are added up into a running total
    assert _query(platform, 'invoices_total{service="billing"}')[0][1] == 10
    provider.shutdown()
    # a malformed request over gRPC is INVALID_ARGUMENT with the reason, and stores nothing
    bad = metrics_pb2.Metric(name="grpc_nan")
    dp = bad.gauge.data_points.add()
    dp.as_double = float("inf")
    with grpc.insecure_channel(platform.target("otlp_grpc")) as channel:
        stub = metrics_service_pb2_grpc.MetricsServiceStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            stub.Export(_request_with(bad), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "finite" in err.value.details()
    assert _query(platform, "grpc_nan") == []


def _request_with(metric: metrics_pb2.Metric, service: str = "json-svc") -> ExportMetricsServiceRequest:
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    attr = rm.resource.attributes.add()
    attr.key, attr.value.string_value = "service.name", service
    rm.scope_metrics.add().metrics.append(metric)
    return req


def test_otlp_json_and_malformed_bodies(platform: PlatformThread) -> None:
    url = platform.url("otlp_http") + "/v1/metrics"
    metric = metrics_pb2.Metric(name="temperature")
    point = metric.gauge.data_points.add()
    point.as_double, point.time_unix_nano = 21.5, time.time_ns()
    body = json_format.MessageToJson(_request_with(metric))
    r = httpc.post(url, content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert _query(platform, 'temperature{service="json-svc"}')[0][1] == 21.5
    point.as_double = 22.5
    packed = gzip.compress(_request_with(metric).SerializeToString())
    r = httpc.post(url, content=packed, headers={"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"})
    assert r.status_code == 200, r.text
    assert _query(platform, 'temperature{service="json-svc"}')[0][1] == 22.5

    before = platform.component("metrics").core.store.stats()  # type: ignore[attr-defined]
    bad = httpc.post(url, content=b"\x0a\xff\xff\xff", headers={"Content-Type": "application/x-protobuf"})
    assert bad.status_code == 400
    bad = httpc.post(url, content=b"{not json", headers={"Content-Type": "application/json"})
    assert bad.status_code == 400 and "malformed" in bad.json()["message"]
    # one NaN point refuses the whole request: the good point next to it is not stored either
    mixed = metrics_pb2.Metric(name="mixed_gauge")
    for value in (1.0, float("nan")):
        dp = mixed.gauge.data_points.add()
        dp.as_double, dp.time_unix_nano = value, time.time_ns()
    bad = httpc.post(
        url, content=_request_with(mixed).SerializeToString(), headers={"Content-Type": "application/x-protobuf"}
    )
    assert bad.status_code == 400
    hist = metrics_pb2.Metric(name="bad_hist")
    dp = hist.histogram.data_points.add()
    dp.explicit_bounds.extend([1.0, 2.0])
    dp.bucket_counts.extend([1])
    bad = httpc.post(
        url, content=_request_with(hist).SerializeToString(), headers={"Content-Type": "application/x-protobuf"}
    )
    assert bad.status_code == 400
    bad = httpc.post(url, content=b"x", headers={"Content-Type": "text/plain"})
    assert bad.status_code == 415
    assert platform.component("metrics").core.store.stats() == before  # type: ignore[attr-defined]
    assert _query(platform, "mixed_gauge") == []


def test_otlp_metrics_refuse_a_decompression_bomb_and_garbage_with_a_reason(platform: PlatformThread) -> None:
    """A 1 MB gzip body that inflates to 1 GB took the platform to 2.16 GB of RSS (a probe found it):
    it is refused past the body limit, as /v1/traces does; gRPC garbage is INVALID_ARGUMENT, not UNKNOWN."""
    url = platform.url("otlp_http") + "/v1/metrics"
    limit = platform.platform.config.platform.max_body_bytes  # type: ignore[union-attr]
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # 64 MiB of zeros, 4x the limit, in ~64 KB (1 GiB took 5 s of CPU)
    bomb = b"".join(packer.compress(bytes(1 << 20)) for _ in range(64)) + packer.flush()
    assert len(bomb) < 1 << 17 and limit < 64 << 20
    for ctype in ("application/x-protobuf", "application/json"):
        r = httpc.post(url, content=bomb, headers={"Content-Type": ctype, "Content-Encoding": "gzip"})
        assert r.status_code == 413, r.text
    assert r.json()["message"] == f"body is over {limit} bytes once decompressed"
    as_json = {"Content-Type": "application/json"}
    r = httpc.post(url, content=gzip.compress(b"x")[:-4], headers={**as_json, "Content-Encoding": "gzip"})
    assert r.status_code == 400 and "truncated gzip" in r.json()["message"]
    r = httpc.post(url, content=b"x", headers={**as_json, "Content-Encoding": "br"})
    assert r.status_code == 415
    assert r.json() == {"code": 3, "message": "Content-Encoding 'br' is not supported (use gzip, deflate or none)"}
    r = httpc.post(url, content=b"x", headers={"Content-Type": "text/plain"})
    assert r.status_code == 415 and r.json()["code"] == 3  # INVALID_ARGUMENT, not INTERNAL
    with grpc.insecure_channel(platform.target("otlp_grpc")) as channel:
        export = channel.unary_unary("/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
                                     request_serializer=lambda b: b, response_deserializer=lambda b: b)
        with pytest.raises(grpc.RpcError) as refused:
            export(b"\x0a\xff\xff\xff\xff\x0f", timeout=10)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "malformed OTLP protobuf ExportMetricsServiceRequest" in (refused.value.details() or "")


def test_custom_reports_through_sdk_and_api(platform: PlatformThread) -> None:
    client = MetricsClient(api_url=platform.url("api"))
    client.report("pay", [("region", "sz"), ("channel", "web")], amount=(12.5, "SUM"), latency_ms=(40, "MAX"))
    client.report("pay", [("region", "sz"), ("channel", "web")], amount=(7.5, "SUM"), latency_ms=(30, "MAX"))
    assert _query(platform, 'pay_amount_total{region="sz"}')[0][1] == 20
    assert _query(platform, 'pay_latency_ms{region="sz"}')[0][1] in (30, 40)
    with pytest.raises(ReportRejected, match="unknown policy"):
        client.report("pay", {"region": "sz"}, amount=(1, "MEDIAN"))
    r = httpc.post(platform.url("api") + "/api/metrics/custom", content=b"{oops")
    assert r.status_code == 400 and r.json()["error"] == "invalid JSON"
    r = httpc.post(
        platform.url("api") + "/api/metrics/custom",
        json={
            "reports": [
                {"name": "pay", "dimensions": {"region": "sz"}, "values": [{"name": "amount", "value": 1}]},
                {"name": "pay", "dimensions": {"bad label": "x"}, "values": [{"name": "amount", "value": 1}]},
            ]
        },
    )
    assert r.status_code == 400 and "label name" in r.json()["reason"]
    assert _query(platform, 'pay_amount_total{region="sz"}')[0][1] == 20  # nothing stored half
    ls = httpc.get(platform.url("api") + "/api/metrics/ls").json()
    pay = next(m for m in ls["metrics"] if m["name"] == "pay_amount_total")
    assert pay["dimensions"] == ["region", "channel"] and pay["type"] == "counter"


def test_prometheus_client_exposition_is_scraped(platform: PlatformThread) -> None:
    registry = CollectorRegistry()
    hits = PromCounter("shop_hits", "hits", ["path"], registry=registry)
    PromGauge("shop_temperature", "temp", registry=registry).set(3.5)
    hist = PromHistogram("shop_latency_seconds", "lat", registry=registry, buckets=(0.1, 1.0))
    hits.labels(path="/a").inc(7)
    hist.observe(0.05)
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        port = server.server_address[1]

        async def register() -> None:
            naming = platform.platform.ctx.lookup(NamingPort)  # type: ignore[union-attr]
            assert naming is not None
            naming.register(
                Registration(namespace="default", service="scraped", host="127.0.0.1", port=port, health_check=False)
            )

        platform.call(register())
        got = wait_for(lambda: _query(platform, 'shop_hits_total{job="scraped"}'), what="the scrape")
        labels, value = got[0]
        assert value == 7 and labels["instance"] == f"127.0.0.1:{port}" and labels["path"] == "/a"
        assert _query(platform, 'up{job="scraped"}')[0][1] == 1
        assert _query(platform, "shop_temperature")[0][1] == 3.5
        assert _query(platform, 'shop_latency_seconds_bucket{le="0.1"}')[0][1] == 1
        hits.labels(path="/a").inc(3)
        wait_for(lambda: _query(platform, "shop_hits_total")[0][1] == 10, what="the second scrape")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    wait_for(lambda: _query(platform, 'up{job="scraped"} == 0'), what="up to go to 0")


def test_spans_become_rpc_reports_and_success_rate(platform: PlatformThread) -> None:
    spans = []
    for i in range(20):
        client_id, server_id = f"{i + 1:016x}", f"{i + 1001:016x}"
        failed = i % 4 == 0
        spans.append(
            Span(
                "b" * 32,
                client_id,
                None,
                "GET /stock",
                "CLIENT",
                "web",
                0,
                30_000,
                error=failed,
                remote_service="stock",
            )
        )
        spans.append(
            Span(
                "b" * 32,
                server_id,
                client_id,
                "GET /stock",
                "SERVER",
                "stock",
                0,
                25_000,
                error=failed,
                attributes={
                    "http.route": "/stock",
                    "http.request.method": "GET",
                    "http.response.status_code": 503 if failed else 200,
                },
            )
        )
    # what the trace indexer ships for these spans (tests/unit/test_tracing_rpcstats.py: from OTLP too)
    aggregates = aggregate_spans(spans, platform.platform.config.metrics.rpc_buckets)  # type: ignore[union-attr]
    platform.platform.events.rpc_aggregates.fire(aggregates=aggregates)  # type: ignore[union-attr]
    got = _wait_total(platform, 'sum by (caller, status) (rpc_server_requests_total{callee="stock"})', 20)
    assert {(lb["caller"], lb["status"]): v for lb, v in got} == {("web", "ok"): 15, ("web", "error"): 5}
    rate = wait_for(lambda: _query(platform, 'success_rate{callee="stock"}'), what="success rate")
    assert rate[0][1] == pytest.approx(75)
    r = httpc.post(
        platform.url("api") + "/api/metrics/query",
        json={"metric": "success_rate", "group_by": ["callee", "caller"], "start": "-1m", "step": 10},
    )
    assert r.status_code == 200, r.text
    (series,) = [s for s in r.json()["series"] if s["labels"].get("callee") == "stock"]
    assert series["labels"] == {"callee": "stock", "caller": "web"} and series["points"][-1][1] == pytest.approx(75)
    r = httpc.get(
        platform.url("api") + "/api/metrics/query",
        params={"metric": "rpc_server_duration_seconds", "aggregate": "p50", "filter": "callee=stock"},
    )
    assert r.status_code == 200 and 0.01 < r.json()["series"][0]["points"][-1][1] <= 0.025
    dims = httpc.get(platform.url("api") + "/api/metrics/dimensions", params={"metric": "success_rate"}).json()
    assert "stock" in dims["dimensions"]["callee"] and "web" in dims["dimensions"]["caller"]
    assert "status" in dims["dimensions"] and "le" not in dims["dimensions"]
    r = httpc.get(platform.url("api") + "/api/metrics/query", params={"metric": "x", "filter": "a ~~ b"})
    assert r.status_code == 400 and "filter" in r.json()["reason"]


_CHILD = textwrap.dedent(
    """
    import sys, time, httpx
    from pathlib import Path
    from devbox.testing import running_platform
    with running_platform(Path(sys.argv[1]), components=["metrics"]) as p, httpx.Client() as http:
        for i in range(50):
            r = http.post(p.url("api") + "/api/metrics/custom",
                           json={"name": "durable", "values": [{"name": "n", "value": 1, "policy": "SUM"}]})
            assert r.status_code == 200, r.text
        print("ACK", flush=True)
        time.sleep(60)
    """
)


def test_acknowledged_reports_survive_kill_9(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(tmp_path)], stdout=subprocess.PIPE, env=env, text=True)
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line.strip() == "ACK"
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
    with running_platform(tmp_path, components=["metrics"]) as p:
        assert _query(p, "durable_n_total")[0][1] == 50
        # the running total continues after the restart instead of starting over
        httpc.post(
            p.url("api") + "/api/metrics/custom", json={"name": "durable", "values": [{"name": "n", "value": 1}]}
        )
        assert _query(p, "durable_n_total")[0][1] == 51


def test_ls_and_query_api_errors(platform: PlatformThread) -> None:
    api = platform.url("api")
    r = httpc.post(api + "/api/metrics/query", content=json.dumps({"metric": "success_rate", "bogus": 1}))
    assert r.status_code == 400 and "unknown field" in r.json()["reason"]
    r = httpc.get(api + "/api/metrics/query", params={"metric": "rpc_server_requests_total", "aggregate": "median"})
    assert r.status_code == 400 and "aggregate" in r.json()["reason"]
    r = httpc.get(api + "/api/metrics/promql", params={"query": "sum("})
    assert r.status_code == 400 and "parse error" in r.json()["reason"]


def test_otel_traces_through_the_collector_become_rpc_reports(tmp_path: Path) -> None:
    """Zero code: a real OTel tracing SDK exports to devbox's collector; metrics measures the calls."""
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.trace import SpanKind, Status, StatusCode

    with running_platform(tmp_path, components=["tracing", "metrics"]) as p:
        providers = {}
        for service in ("web", "orders"):
            providers[service] = TracerProvider(resource=Resource.create({"service.name": service}))
            providers[service].add_span_processor(
                SimpleSpanProcessor(OTLPSpanExporter(endpoint=p.url("otlp_http") + "/v1/traces"))
            )
        web, orders = providers["web"].get_tracer("t"), providers["orders"].get_tracer("t")
        for i in range(4):
            with web.start_as_current_span("GET /orders", kind=SpanKind.CLIENT) as client:
                ctx = trace.set_span_in_context(client)
                with orders.start_as_current_span("GET /orders", context=ctx, kind=SpanKind.SERVER) as server:
                    server.set_attribute("http.route", "/orders")
                    server.set_attribute("http.request.method", "GET")
                    if i == 0:
                        server.set_status(Status(StatusCode.ERROR, "boom"))
        for provider in providers.values():
            provider.shutdown()
        got = _wait_total(p, "sum by (caller, callee, method, status) (rpc_server_requests_total)", 4)
        assert {(lb["caller"], lb["callee"], lb["method"], lb["status"]): v for lb, v in got} == {
            ("web", "orders", "GET /orders", "ok"): 3,
            ("web", "orders", "GET /orders", "error"): 1,
        }
        client_side = _wait_total(p, "sum by (caller, callee) (rpc_client_requests_total)", 4)
        assert {(lb["caller"], lb["callee"]): v for lb, v in client_side} == {("web", "orders"): 4}


_SDK_CHILD = textwrap.dedent(
    """
    from devbox.sdk import metrics
    metrics.counter("jobs_done").incr()
    metrics.counter("jobs_done").incr(2, queue="fast")
    metrics.gauge("pool_size").set(1.2)
    metrics.report("upload", {"bucket": "img"}, size=(2048, "SUM"), seconds=(0.5, "MAX"))
    assert metrics.flush()
    """
)


def test_sdk_module_functions_from_the_injected_environment(platform: PlatformThread) -> None:
    """What a service started by devbox does: the module functions, configured only by env vars."""
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
        "OTEL_EXPORTER_OTLP_ENDPOINT": platform.url("otlp_http"),
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_SERVICE_NAME": "worker",
        "OTEL_RESOURCE_ATTRIBUTES": "service.instance.id=worker-1,devbox.env=feature-x",
        "DEVBOX_API_URL": platform.url("api"),
    }
    out = subprocess.run([sys.executable, "-c", _SDK_CHILD], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    got = {(lb["__name__"], lb.get("queue", "")): v for lb, v in _query(platform, '{service="worker"}')}
    assert got == {("jobs_done_total", ""): 1, ("jobs_done_total", "fast"): 2, ("pool_size", ""): 1.2}
    assert {(lb["instance"], lb["env"]) for lb, _ in _query(platform, '{service="worker"}')} == {
        ("worker-1", "feature-x")
    }
    assert _query(platform, 'upload_size_total{bucket="img"}')[0][1] == 2048
    assert _query(platform, 'upload_seconds{bucket="img"}')[0][1] == 0.5


def test_otlp_spans_become_rpc_reports_with_the_indexer_on_its_fast_path(tmp_path: Path) -> None:
    """A platform with tracing and metrics: RPC reports come from the indexer's aggregates, so no
    span object is shipped back (the indexer keeps decoding OTLP protobuf straight into rows)."""
    now = time.time_ns() // 1000
    spans = []
    for i in range(8):
        client_id, server_id = f"{2 * i + 1:016x}", f"{2 * i + 2:016x}"
        spans.append(Span(f"{i + 1:032x}", client_id, None, "GET /stock", "CLIENT", "web", now - 5000, 3000,
                          error=i == 0, attributes={"http.response.status_code": 503 if i == 0 else 200}))
        spans.append(Span(f"{i + 1:032x}", server_id, client_id, "GET /stock", "SERVER", "stock", now - 4000, 2000,
                          error=i == 0, attributes={"http.route": "/stock", "http.request.method": "GET",
                                                    "http.response.status_code": 503 if i == 0 else 200}))
    with running_platform(tmp_path, components=["tracing", "metrics"]) as p:
        r = httpc.post(p.url("otlp_http") + "/v1/traces", content=to_otlp_request(spans).SerializeToString(),
                       headers={"content-type": "application/x-protobuf"})
        assert r.status_code == 200, r.text
        got = _wait_total(p, 'sum by (caller, method, status) (rpc_server_requests_total{callee="stock"})', 8)
        assert {(lb["caller"], lb["method"], lb["status"]): v for lb, v in got} == {
            ("web", "GET /stock", "ok"): 7, ("web", "GET /stock", "error"): 1}
        got = _wait_total(p, 'sum by (callee, code) (rpc_client_requests_total{caller="web"})', 8)
        assert {(lb["callee"], lb["code"]): v for lb, v in got} == {("stock", "200"): 7, ("stock", "503"): 1}
        assert _query(p, 'rpc_server_duration_seconds_bucket{callee="stock",le="0.005"}')[0][1] == 8
        tracing = p.platform.ctx.lookup(TracesPort)  # type: ignore[union-attr]
        assert not tracing.collector._want_spans  # type: ignore[union-attr]  # nothing asks for Span objects
