"""``platform.token`` holds on every listener, and devbox itself works with one set (issue 14, §3
items 2 and 5): gRPC calls without it are UNAUTHENTICATED, HTTP calls 401; the CLI, the injected
service environment (SDK exporters) and a browser (a ``?token=`` link) all get through."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import grpc
import httpx
import pytest
from devbox.mocks.deploy import core as deploy_core
from devbox.mocks.deploy.config import ServiceConfig
from devbox.mocks.naming.polaris_pb import protos
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from devbox.testing import PlatformThread, running_platform
from tests import httpc

TOKEN = "s3cret-token"
pb = protos()


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatformThread]:
    root = tmp_path_factory.mktemp("token")
    with running_platform(root, components=["naming", "tracing"], platform={"token": TOKEN}) as p:
        yield p


def _instance(port: int) -> Any:
    return pb.service.Instance(service={"value": "rogue"}, namespace={"value": "default"},
                               host={"value": "127.0.0.1"}, port={"value": port})


def _register(platform: PlatformThread, metadata: list[tuple[str, str]], port: int) -> Any:
    with grpc.insecure_channel(platform.target("polaris_grpc")) as channel:
        return pb.grpcapi.PolarisGRPCStub(channel).RegisterInstance(_instance(port), metadata=metadata, timeout=10)


@pytest.mark.parametrize("metadata", [[], [("x-polaris-token", "wrong")], [("authorization", "Bearer wrong")]],
                         ids=["none", "wrong-polaris-token", "wrong-bearer"])
def test_polaris_grpc_refuses_calls_without_the_token(platform: PlatformThread, metadata: list[Any]) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        _register(platform, metadata, 9100)
    assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert "token" in (refused.value.details() or "")
    with grpc.insecure_channel(platform.target("polaris_grpc")) as channel:
        stub = pb.grpcapi.PolarisGRPCStub(channel)
        request = pb.request.DiscoverRequest(type=pb.request.DiscoverRequest.INSTANCE,
                                             service={"name": {"value": "rogue"}, "namespace": {"value": "default"}})
        with pytest.raises(grpc.RpcError) as discover:
            list(stub.Discover(iter([request]), metadata=metadata, timeout=10))
        assert discover.value.code() is grpc.StatusCode.UNAUTHENTICATED
    listed = httpc.get(platform.url("api") + "/api/naming/services", headers={"Authorization": f"Bearer {TOKEN}"})
    assert listed.status_code == 200
    assert "rogue" not in listed.text  # nothing was registered


@pytest.mark.parametrize("metadata", [[("x-polaris-token", TOKEN)], [("authorization", f"Bearer {TOKEN}")]],
                         ids=["polaris-token", "bearer"])
def test_polaris_grpc_serves_clients_that_send_the_token(platform: PlatformThread, metadata: list[Any]) -> None:
    answer = _register(platform, metadata, 9101 if metadata[0][0] == "authorization" else 9102)
    assert answer.code.value == 200000


def test_otlp_grpc_export_needs_the_token(platform: PlatformThread) -> None:
    with grpc.insecure_channel(platform.target("otlp_grpc")) as channel:
        stub = trace_service_pb2_grpc.TraceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.Export(ExportTraceServiceRequest(), timeout=10)
        assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
        stub.Export(ExportTraceServiceRequest(), metadata=[("authorization", f"Bearer {TOKEN}")], timeout=10)


def test_http_listeners_need_the_token(platform: PlatformThread) -> None:
    for listener, path in [("api", "/api/platform"), ("polaris_http", "/v1/Discover"), ("otlp_http", "/v1/traces")]:
        answer = httpc.post(platform.url(listener) + path) if listener == "otlp_http" else \
            httpc.get(platform.url(listener) + path)
        assert answer.status_code == 401, (listener, answer.status_code)
    assert httpc.get(platform.url("api") + "/healthz").status_code == 200
    ok = httpc.get(platform.url("api") + "/api/platform", headers={"X-Devbox-Token": TOKEN})
    assert ok.status_code == 200


def test_a_token_link_logs_a_browser_in(platform: PlatformThread) -> None:
    base = platform.url("api")
    html = {"Accept": "text/html,application/xhtml+xml"}
    with httpx.Client(base_url=base) as browser:
        assert browser.get("/api/platform", headers=html).status_code == 401
        assert browser.get("/?token=wrong", headers=html).status_code == 401
        landed = browser.get("/?token=" + TOKEN + "&tab=traces", headers=html)
        assert landed.status_code == 303
        assert landed.headers["location"] == "/?tab=traces"  # the token does not stay in the address bar
        cookie = landed.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        # the browser now carries the cookie on every request of the dashboard
        assert browser.get("/api/platform").status_code == 200
    # a script may also pass the token in the query (no redirect for non-browsers)
    assert httpc.get(base + "/api/platform", params={"token": TOKEN}).status_code == 200


def test_the_cli_sends_the_token_from_devbox_yaml(platform: PlatformThread, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from devbox.cli.common import Api

    (tmp_path / "devbox.yaml").write_text(f"project: tok\nplatform:\n  token: {TOKEN}\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DEVBOX_TOKEN", raising=False)
    monkeypatch.setenv("DEVBOX_API", platform.url("api"))
    assert Api(str(tmp_path / "devbox.yaml")).get("/api/platform")["project"]


def test_services_are_given_the_token_in_the_standard_variables(tmp_path: Path) -> None:
    facts = deploy_core.PlatformFacts(api_url="http://127.0.0.1:7070", otlp_http="http://127.0.0.1:4318", token=TOKEN)
    record = deploy_core.InstanceRecord(name="orders-1", service="orders", group="default", port=4567)
    env = deploy_core.instance_env(ServiceConfig(name="orders"), record=record, instance_id="x", tags={},
                                   platform=facts, config_file=tmp_path / "x.yaml")
    assert env["DEVBOX_TOKEN"] == TOKEN
    # OTel SDKs parse OTEL_EXPORTER_OTLP_HEADERS as key=percent-encoded-value pairs
    key, _, value = env["OTEL_EXPORTER_OTLP_HEADERS"].partition("=")
    assert (key, unquote(value)) == ("Authorization", f"Bearer {TOKEN}")
    without = deploy_core.PlatformFacts(api_url="http://127.0.0.1:7070")
    env = deploy_core.instance_env(ServiceConfig(name="orders"), record=record, instance_id="x", tags={},
                                   platform=without, config_file=tmp_path / "x.yaml")
    assert "DEVBOX_TOKEN" not in env and "OTEL_EXPORTER_OTLP_HEADERS" not in env


def test_an_otel_sdk_exporter_configured_by_the_injected_env_gets_through(platform: PlatformThread) -> None:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    facts = deploy_core.PlatformFacts(api_url=platform.url("api"), token=TOKEN)
    record = deploy_core.InstanceRecord(name="tok-1", service="tokensvc", group="default", port=4567)
    env = deploy_core.instance_env(ServiceConfig(name="tokensvc"), record=record, instance_id="x", tags={},
                                   platform=facts, config_file=Path("x.yaml"))
    saved = os.environ.get("OTEL_EXPORTER_OTLP_HEADERS")
    os.environ["OTEL_EXPORTER_OTLP_HEADERS"] = env["OTEL_EXPORTER_OTLP_HEADERS"]
    try:
        exporter = OTLPSpanExporter(endpoint=platform.target("otlp_grpc"), insecure=True)
    finally:
        if saved is None:
            os.environ.pop("OTEL_EXPORTER_OTLP_HEADERS")
        else:
            os.environ["OTEL_EXPORTER_OTLP_HEADERS"] = saved
    provider = TracerProvider()
    results: list[Any] = []

    class Recording(SimpleSpanProcessor):
        def on_end(self, span: Any) -> None:
            results.append(exporter.export([span]))

    provider.add_span_processor(Recording(exporter))
    with provider.get_tracer("t").start_as_current_span("with-token"):
        pass
    provider.shutdown()
    assert [r.name for r in results] == ["SUCCESS"]
