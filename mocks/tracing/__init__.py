"""The tracing mock (Tianjige): OTLP and Zipkin ingest, trace queries, topology, analysis."""

from __future__ import annotations

from devbox.mocks.tracing.config import TracingConfig

from devbox.platform.component import ComponentSpec, Listener

SPEC = ComponentSpec(
    name="tracing",
    factory="devbox.mocks.tracing.component:TracingComponent",
    config_key="tracing",
    config_model=TracingConfig,
    listeners=(
        Listener("otlp_http", 4318, "http", "OTLP/HTTP ingest.", errors="devbox.mocks.tracing.otlp:render_error"),
        Listener("otlp_grpc", 4317, "grpc", "OTLP/gRPC ingest."),
        Listener("zipkin", 9411, "http", "Zipkin v2 API.", errors="devbox.mocks.tracing.zipkin_api:render_error"),
    ),
)
