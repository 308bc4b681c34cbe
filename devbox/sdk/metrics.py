"""Metrics for user services: counters, gauges and histograms over OpenTelemetry, plus 007 custom reports.

    from devbox.sdk import metrics

    metrics.counter("orders_placed").incr()                 # -> orders_placed_total in devbox
    metrics.counter("orders_placed").incr(2, region="sh")   # attributes become dimensions
    metrics.gauge("queue_depth").set(1.2)
    metrics.histogram("checkout_seconds").observe(0.031)
    metrics.report("orders", {"region": "sh", "channel": "app"},
                   amount=(12.5, "SUM"), latency_ms=(31, "MAX"))  # custom multi-dimensional report

Counters, gauges and histograms go through the OpenTelemetry metrics API; :func:`setup` (called
on first use) installs an SDK ``MeterProvider`` whose OTLP exporter reads the standard
``OTEL_EXPORTER_OTLP_*`` variables the deploy pipeline injects, unless the process already has
one. Custom reports are POSTed to devbox's ``/api/metrics/custom`` (``DEVBOX_API_URL``).

LIMITATIONS: the OTel SDK exports periodically (``export_interval`` seconds, default 5), so a
value shows up in devbox after that delay; :func:`flush` forces an export. Custom reports are
sent synchronously, one request per call (use :meth:`MetricsClient.report_many` to batch).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from devbox import envvars
from devbox.httpcore_loader import load_httpcore

LOG = logging.getLogger(__name__)

METER_NAME = "devbox.sdk"
POLICIES = ("SUM", "AVG", "MAX", "MIN", "SET", "LAST", "COUNT")


class MetricsClient:
    """One service's metrics: OTel instruments (created once per name) and the custom-report client."""

    def __init__(
        self,
        *,
        meter_provider: Any = None,
        api_url: str | None = None,
        export_interval: float = 5.0,
    ) -> None:
        self._provider = meter_provider
        self._owns_provider = False
        self._export_interval = export_interval
        self.api_url = (api_url or os.environ.get(envvars.DEVBOX_API_URL) or "http://127.0.0.1:7070").rstrip("/")
        self._instruments: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()
        self._http: httpx.Client | None = None

    # --- OpenTelemetry side -------------------------------------------------------------------

    def _meter(self) -> Any:
        from opentelemetry import metrics as otel_metrics

        if self._provider is None:
            current = otel_metrics.get_meter_provider()
            if type(current).__name__ in ("ProxyMeterProvider", "NoOpMeterProvider", "_ProxyMeterProvider"):
                self._provider = _otlp_provider(self._export_interval)
                self._owns_provider = True
                otel_metrics.set_meter_provider(self._provider)
            else:
                self._provider = current
        return self._provider.get_meter(METER_NAME)

    def _instrument(self, kind: str, name: str, description: str, unit: str) -> Any:
        with self._lock:
            found = self._instruments.get((kind, name))
            if found is None:
                meter = self._meter()
                create = {
                    "counter": meter.create_counter,
                    "gauge": meter.create_gauge,
                    "histogram": meter.create_histogram,
                    "updown": meter.create_up_down_counter,
                }[kind]
                found = self._instruments[(kind, name)] = create(name, unit=unit, description=description)
            return found

    def counter(self, name: str, description: str = "", unit: str = "") -> Counter:
        """A monotonic counter; devbox stores it as ``<name>_total``."""
        return Counter(self._instrument("counter", name, description, unit))

    def updown_counter(self, name: str, description: str = "", unit: str = "") -> Counter:
        """A counter that may go down (stored as a gauge)."""
        return Counter(self._instrument("updown", name, description, unit), monotonic=False)

    def gauge(self, name: str, description: str = "", unit: str = "") -> Gauge:
        return Gauge(self._instrument("gauge", name, description, unit))

    def histogram(self, name: str, description: str = "", unit: str = "") -> Histogram:
        return Histogram(self._instrument("histogram", name, description, unit))

    def flush(self, timeout_ms: int = 10_000) -> bool:
        """Export what the instruments hold now (before exit, or in tests)."""
        provider = self._provider
        if provider is not None and hasattr(provider, "force_flush"):
            return bool(provider.force_flush(timeout_ms))
        return True

    def shutdown(self) -> None:
        if self._owns_provider and self._provider is not None:
            self._provider.shutdown()
        if self._http is not None:
            self._http.close()
            self._http = None

    # --- custom reports -----------------------------------------------------------------------

    def report(
        self,
        name: str,
        dimensions: Mapping[str, str] | Sequence[tuple[str, str]],
        values: Mapping[str, tuple[float, str] | float] | None = None,
        *,
        timestamp: float | None = None,
        **value_kw: tuple[float, str] | float,
    ) -> dict[str, Any]:
        """One 007 custom report: ordered ``dimensions`` and values ``name=(value, policy)``.

        A bare number means policy SUM. Raises :class:`ReportRejected` with devbox's reason on 4xx.
        """
        return self.report_many([self.build(name, dimensions, {**(values or {}), **value_kw}, timestamp=timestamp)])

    @staticmethod
    def build(
        name: str,
        dimensions: Mapping[str, str] | Sequence[tuple[str, str]],
        values: Mapping[str, tuple[float, str] | float],
        *,
        timestamp: float | None = None,
    ) -> dict[str, Any]:
        dims = list(dimensions.items()) if isinstance(dimensions, Mapping) else [tuple(d) for d in dimensions]
        items = []
        for vname, spec in values.items():
            value, policy = spec if isinstance(spec, tuple) else (spec, "SUM")
            items.append({"name": vname, "value": value, "policy": str(policy).upper()})
        body: dict[str, Any] = {"name": name, "dimensions": [[k, str(v)] for k, v in dims], "values": items}
        if timestamp is not None:
            body["timestamp"] = timestamp
        return body

    def report_many(self, reports: list[dict[str, Any]]) -> dict[str, Any]:
        if self._http is None:
            load_httpcore()  # without trio up front (see devbox.httpcore_loader)
            token = os.environ.get(envvars.DEVBOX_TOKEN)  # injected when platform.token is set
            self._http = httpx.Client(timeout=10.0, headers={"Authorization": f"Bearer {token}"} if token else {})
        response = self._http.post(f"{self.api_url}/api/metrics/custom", json={"reports": reports})
        if response.status_code >= 400:
            try:
                reason = response.json().get("reason", response.text)
            except ValueError:
                reason = response.text
            raise ReportRejected(f"{response.status_code}: {reason}")
        return response.json()


class ReportRejected(Exception):
    """devbox refused a custom report; ``str()`` is its reason."""


@dataclass
class Counter:
    instrument: Any
    monotonic: bool = True

    def incr(self, amount: float = 1, **attributes: str) -> None:
        self.instrument.add(amount, attributes=attributes or None)

    add = incr


@dataclass
class Gauge:
    instrument: Any

    def set(self, value: float, **attributes: str) -> None:
        self.instrument.set(value, attributes=attributes or None)


@dataclass
class Histogram:
    instrument: Any

    def observe(self, value: float, **attributes: str) -> None:
        self.instrument.record(value, attributes=attributes or None)

    record = observe


def _otlp_provider(export_interval: float) -> Any:
    """An SDK MeterProvider exporting OTLP to where ``OTEL_EXPORTER_OTLP_*`` points (devbox)."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource

    protocol = os.environ.get(envvars.OTEL_EXPORTER_OTLP_PROTOCOL, "http/protobuf")
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
    else:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter  # type: ignore[assignment]
    reader = PeriodicExportingMetricReader(OTLPMetricExporter(), export_interval_millis=export_interval * 1000)
    return MeterProvider(metric_readers=[reader], resource=Resource.create())


class _Default:
    """The process-wide client behind the module functions, created on first use."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.client: MetricsClient | None = None

    def get(self) -> MetricsClient:
        with self.lock:
            if self.client is None:
                self.client = MetricsClient()
            return self.client


_default = _Default()


def setup(client: MetricsClient | None = None) -> MetricsClient:
    """Install ``client`` (or a default one from the environment) behind the module functions."""
    with _default.lock:
        _default.client = client or MetricsClient()
        return _default.client


def counter(name: str, description: str = "", unit: str = "") -> Counter:
    return _default.get().counter(name, description, unit)


def gauge(name: str, description: str = "", unit: str = "") -> Gauge:
    return _default.get().gauge(name, description, unit)


def histogram(name: str, description: str = "", unit: str = "") -> Histogram:
    return _default.get().histogram(name, description, unit)


def report(
    name: str,
    dimensions: Mapping[str, str] | Sequence[tuple[str, str]],
    values: Mapping[str, tuple[float, str] | float] | None = None,
    *,
    timestamp: float | None = None,
    **value_kw: tuple[float, str] | float,
) -> dict[str, Any]:
    return _default.get().report(name, dimensions, values, timestamp=timestamp, **value_kw)


def flush(timeout_ms: int = 10_000) -> bool:
    return _default.get().flush(timeout_ms)
