"""The tracing mock (Tianjige): OTLP and Zipkin ingest, trace queries, topology, analysis.

``SPEC`` is built on first access (PEP 562): the indexer and check processes run a module of this
package (``python -m devbox.mocks.tracing.indexer``), which imports the package first, and they need
neither its config model (pydantic) nor the platform layer — ~0.1 s of CPU each, twice a platform start.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from devbox.platform.component import ComponentSpec

    SPEC: ComponentSpec


def _spec() -> ComponentSpec:
    from devbox.mocks.tracing.config import TracingConfig

    from devbox.platform.component import ComponentSpec, Listener

    return ComponentSpec(
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


def __getattr__(name: str) -> Any:
    if name == "SPEC":
        spec = globals()["SPEC"] = _spec()
        return spec
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
