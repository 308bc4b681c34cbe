"""The metrics mock (007's multi-dimensional monitoring) and its Prometheus face.

- ``promql.py``: PromQL evaluation over the ``promql-parser`` AST; composite indicators;
- ``store.py``: SQLite series store, 1 s buckets rolled up to 1 min, retention;
- ``core.py``: every ingest path (span RPC reports, custom reports, decoded OTLP, scrapes) and the
  devbox structured query;
- ``otlp.py`` / ``scrape.py``: OTLP metrics ingest (HTTP + gRPC) and Prometheus pull;
- ``api.py`` / ``prom_api.py``: the devbox ``/api/metrics`` API and the Prometheus HTTP API;
- ``component.py``: the platform component (``query_instant`` / ``query_range`` for others).
"""

from __future__ import annotations

from devbox.mocks.metrics.config import MetricsConfig

from devbox.platform.component import ComponentSpec, Listener

SPEC = ComponentSpec(
    name="metrics",
    factory="devbox.mocks.metrics.component:MetricsComponent",
    config_key="metrics",
    config_model=MetricsConfig,
    listeners=(
        Listener("prometheus", 9090, "http", "Prometheus query API.",
                 errors="devbox.mocks.metrics.prom_api:render_error"),
    ),
    after=("naming", "tracing"),
)
