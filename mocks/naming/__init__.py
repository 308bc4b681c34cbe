"""The naming mock (Polaris): registry, health, routing rules; Polaris gRPC and HTTP APIs."""

from __future__ import annotations

from devbox.mocks.naming.config import NamingConfig

from devbox.platform.component import ComponentSpec, Listener

SPEC = ComponentSpec(
    name="naming",
    factory="devbox.mocks.naming.component:NamingComponent",
    config_key="naming",
    config_model=NamingConfig,
    listeners=(
        Listener("polaris_grpc", 8091, "grpc", "Polaris gRPC API."),
        Listener("polaris_http", 8090, "http", "Polaris HTTP API.",
                 errors="devbox.mocks.naming.polaris_http:render_error"),
    ),
)
