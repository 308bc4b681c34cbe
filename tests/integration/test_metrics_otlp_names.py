"""OTLP metrics come back under the names Prometheus's own OTLP receiver gives them (issue 13).

The real OTel Python SDK exports counters, up-down counters, gauges and histograms with units and
a resource (service.namespace/name/instance.id plus other attributes) to devbox; ``promtool query
instant`` against devbox's Prometheus API reads them back as a real Prometheus would show them:
unit suffixes, ``_total``, ``_ratio``, ``job``/``instance`` and ``target_info``.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator

import pytest
from devbox.mocks.metrics.otlp import metric_name
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource

from devbox.config import ProjectConfig
from devbox.testing import PlatformThread, running_platform, wait_for


@pytest.mark.parametrize(
    ("name", "unit", "kind", "expected"),
    [  # the examples of prometheus/otlptranslator's own docs and tests
        ("http.server.request.duration", "s", "histogram", "http_server_request_duration_seconds"),
        ("checkout", "ms", "histogram", "checkout_milliseconds"),
        ("requests.count", "1", "counter", "requests_count_total"),
        ("memory.usage", "By", "gauge", "memory_usage_bytes"),
        ("cpu.utilization", "1", "gauge", "cpu_utilization_ratio"),
        ("cpu.utilization", "1", "updown", "cpu_utilization"),  # _ratio is for gauges only
        ("net.io", "By/s", "counter", "net_io_bytes_per_second_total"),
        ("rate", "1/s", "gauge", "rate_per_second"),
        ("requests", "{request}", "counter", "requests_total"),  # annotations add nothing
        ("requests_total", "", "counter", "requests_total"),  # not requests_total_total
        ("latency_seconds", "s", "histogram", "latency_seconds"),  # unit already a token
        ("a__b..c", "", "gauge", "a_b_c"),
        ("5xx", "", "gauge", "_5xx"),
        ("temp", "Cel", "updown", "temp_celsius"),
    ],
)
def test_metric_names_follow_prometheus(name: str, unit: str, kind: str, expected: str) -> None:
    assert metric_name(name, unit, kind) == expected


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatformThread]:
    config = ProjectConfig.for_tests(tmp_path_factory.mktemp("otlpnames"))
    with running_platform(config=config, components=["naming", "metrics"]) as p:
        yield p


def _promtool(server: str, expr: str) -> str:
    out = subprocess.run(["promtool", "query", "instant", server, expr], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian prometheus) is not installed")
def test_sdk_metrics_read_back_under_prometheus_names(platform: PlatformThread) -> None:
    resource = Resource.create(
        {
            "service.name": "checkout",
            "service.namespace": "shop",
            "service.instance.id": "checkout-1",
            "deployment.environment": "dev",
        }
    )
    exporter = OTLPMetricExporter(endpoint=platform.url("otlp_http") + "/v1/metrics")
    provider = MeterProvider(
        metric_readers=[PeriodicExportingMetricReader(exporter, export_interval_millis=60_000)], resource=resource
    )
    meter = provider.get_meter("otlp-names-test")
    meter.create_histogram("checkout.duration", unit="ms").record(20, {"route": "/pay"})
    meter.create_counter("orders.placed", unit="{order}").add(3)
    meter.create_counter("payload.size", unit="By").add(512)
    meter.create_up_down_counter("queue.length", unit="{item}").add(4)
    meter.create_gauge("cpu.utilization", unit="1").set(0.25)
    assert provider.force_flush(10_000)
    provider.shutdown()
    server = platform.url("prometheus")

    def read(expr: str) -> str | None:
        out = _promtool(server, expr)
        return out if "=>" in out else None

    out = wait_for(lambda: read('checkout_duration_milliseconds_count{job="shop/checkout"}'), what="histogram count")
    assert 'instance="checkout-1"' in out and 'route="/pay"' in out and "=> 1 @" in out
    assert 'service="checkout"' in out  # devbox's own label stays beside job/instance
    assert "=> 20 @" in _promtool(server, "checkout_duration_milliseconds_sum")
    assert 'le="25.0"' in _promtool(server, 'checkout_duration_milliseconds_bucket{le="25.0"}')
    assert "=> 3 @" in _promtool(server, 'orders_placed_total{job="shop/checkout",instance="checkout-1"}')
    assert "=> 512 @" in _promtool(server, "payload_size_bytes_total")
    assert "=> 4 @" in _promtool(server, "queue_length")
    assert "=> 0.25 @" in _promtool(server, "cpu_utilization_ratio")
    # what Prometheus names differently is not there under devbox's old names
    for old in ("checkout_duration_count", "orders_placed", "cpu_utilization", "payload_size_total"):
        assert "=>" not in _promtool(server, old), old
    info = _promtool(server, "target_info")
    assert 'job="shop/checkout"' in info and 'instance="checkout-1"' in info and "=> 1 @" in info
    assert 'deployment_environment="dev"' in info and 'telemetry_sdk_language="python"' in info
    assert "service_name" not in info and "service_instance_id" not in info
    # the usual join of a real Prometheus: resource attributes onto a series through target_info
    joined = _promtool(
        server,
        "orders_placed_total * on (job, instance) group_left (deployment_environment) target_info",
    )
    assert 'deployment_environment="dev"' in joined and "=> 3 @" in joined
