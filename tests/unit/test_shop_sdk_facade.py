"""devbox.sdk facade: import is free of side effects and of grpc/OpenTelemetry, identity from env."""

from __future__ import annotations

import subprocess
import sys

import pytest

from devbox import envvars, sdk


def test_import_loads_neither_grpc_nor_opentelemetry() -> None:
    code = (
        "import sys, threading; import devbox.sdk as s; s.identity(); "
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('grpc', 'opentelemetry', 'httpx')]; "
        "assert not heavy, heavy; assert threading.active_count() == 1"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_identity_reads_the_injected_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(envvars.DEVBOX_SERVICE, "orders")
    monkeypatch.setenv(envvars.DEVBOX_INSTANCE_ID, "abc123")
    monkeypatch.setenv(envvars.DEVBOX_TAGS, "env=feature-x, set=sz ,broken,=x")
    me = sdk.identity("fallback")
    assert me == sdk.Identity("orders", "abc123", {"env": "feature-x", "set": "sz"})
    assert me.as_dict() == {"service": "orders", "instance": "abc123", "env": "feature-x"}


def test_identity_without_devbox(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in (envvars.DEVBOX_SERVICE, envvars.DEVBOX_INSTANCE_ID, envvars.DEVBOX_TAGS, envvars.OTEL_SERVICE_NAME):
        monkeypatch.delenv(var, raising=False)
    assert sdk.identity("users") == sdk.Identity("users", "local", {})


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        sdk.nope  # noqa: B018
    assert "bootstrap" in dir(sdk) and "grpc_channel" in dir(sdk)


def test_bootstrap_without_devbox_traces_and_prepares_naming() -> None:
    code = """
import os
for var in list(os.environ):
    if var.startswith(("DEVBOX_", "OTEL_")):
        del os.environ[var]
import httpx
from fastapi import FastAPI
from devbox import sdk
from devbox.sdk.naming import NamingClient, RoutingLabelsMiddleware, default_client
app = FastAPI()
client = sdk.bootstrap(app, service_name="probe")
assert isinstance(client, NamingClient) and default_client() is client
assert any(m.cls is RoutingLabelsMiddleware for m in app.user_middleware)
assert sdk.bootstrap(app) is client  # idempotent: same client, middleware not stacked twice
assert sum(m.cls is RoutingLabelsMiddleware for m in app.user_middleware) == 1
http = sdk.http_client()
assert isinstance(http, httpx.AsyncClient)
assert issubclass(sdk.NoInstanceError, LookupError) and issubclass(sdk.NamingUnavailable, RuntimeError)
client.close()
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
