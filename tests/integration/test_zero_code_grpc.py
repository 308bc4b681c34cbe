"""Zero-code tracing of gRPC services (issue 13): devbox's gRPC-aware proxy in front of each instance
makes the SERVER span of every call, so a gRPC service with no OpenTelemetry SDK shows in traces,
topology and RED metrics; fault rules answer gRPC statuses; the shop's inventory (instrumented) gets
no second server span under ``trace: auto``."""

from __future__ import annotations

import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from devbox.mocks.deploy.config import ServiceConfig
from grpc_health.v1 import health_pb2, health_pb2_grpc

from devbox.config import Ports, load_config
from devbox.platform.ports import MetricsQueryPort, NamingPort
from devbox.testing import PlatformThread, running_platform, traceparent, wait_for
from tests import httpc

ROOT = Path(__file__).resolve().parents[2]
COMPONENTS = ["naming", "faults", "deploy", "tracing", "metrics"]

#: A gRPC service with no tracing at all: raw-bytes handlers (no .proto) and the standard health service.
PLAIN_GRPC = textwrap.dedent(
    '''
    import asyncio, os
    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    async def say(request, context):
        return request

    async def fail(request, context):
        await context.abort(grpc.StatusCode.INTERNAL, "failed on purpose")

    async def main():
        server = grpc.aio.server()
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("echo.Echo", {
            "Say": grpc.unary_unary_rpc_method_handler(say),
            "Fail": grpc.unary_unary_rpc_method_handler(fail),
        })])
        checker = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(checker, server)
        server.add_insecure_port("127.0.0.1:" + os.environ["PORT"])
        await server.start()
        await checker.set("", health_pb2.HealthCheckResponse.SERVING)
        await server.wait_for_termination()

    asyncio.run(main())
    '''
)


def _deployed(p: PlatformThread) -> None:
    assert p.call(p.component("deploy").wait_deployed(120), timeout=130) == []  # type: ignore[attr-defined]


def _entry(p: PlatformThread, service: str) -> str:
    services = {d["key"]: d for d in httpc.get(p.url() + "/api/deploy/services").json()["services"]}
    return str(services[service]["url"])


def _registered(p: PlatformThread, service: str) -> str:
    naming = p.platform.ctx.lookup(NamingPort)  # type: ignore[union-attr]
    assert naming is not None
    instance = next(iter(naming.instances(naming.namespace, service)))
    return f"{instance.host}:{instance.port}"


def _call(target: str, method: str, metadata: tuple[tuple[str, str], ...] = ()) -> grpc.StatusCode:
    with grpc.insecure_channel(target, options=[("grpc.enable_http_proxy", 0)]) as channel:
        try:
            channel.unary_unary(method)(b"hello", metadata=metadata, timeout=10)
        except grpc.RpcError as exc:
            return exc.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


@pytest.mark.slow  # 5-8 s of real processes: left out of make test-quick
def test_uninstrumented_grpc_service_shows_in_traces_topology_and_red(tmp_path: Path) -> None:
    folder = tmp_path / "echo"
    folder.mkdir()
    (folder / "server.py").write_text(PLAIN_GRPC)
    (folder / "start.sh").write_text(f"#!/bin/sh\nexec {sys.executable} server.py\n")
    (folder / "start.sh").chmod(0o755)
    services = [ServiceConfig(name="plain-grpc", path="echo", protocol="grpc", readiness={"grpc": True})]
    with running_platform(tmp_path, components=COMPONENTS, services=services, faults={"enabled": True}) as p:
        _deployed(p)
        entry, registered = _entry(p, "plain-grpc"), _registered(p, "plain-grpc")
        assert [_call(entry, "/echo.Echo/Say") for _ in range(3)] == [grpc.StatusCode.OK] * 3
        assert _call(registered, "/echo.Echo/Say") == grpc.StatusCode.OK
        assert _call(entry, "/echo.Echo/Fail") == grpc.StatusCode.INTERNAL
        with grpc.insecure_channel(entry, options=[("grpc.enable_http_proxy", 0)]) as channel:
            answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING

        # the caller's context is continued: the proxy's span is the child of the caller's
        trace, parent, header = traceparent()
        assert _call(entry, "/echo.Echo/Say", (("traceparent", header),)) == grpc.StatusCode.OK
        [span] = p.trace(trace, 1)
        assert span["name"] == "echo.echo/say" or span["name"] == "echo.Echo/Say"
        assert span["kind"] == "SERVER" and span["parentId"] == parent
        assert span["localEndpoint"]["serviceName"] == "plain-grpc"
        tags = span["tags"]
        assert (tags["rpc.system"], tags["rpc.service"], tags["rpc.method"], tags["rpc.grpc.status_code"]) == (
            "grpc", "echo.Echo", "Say", "0")

        def in_topology() -> set[str] | None:
            names = {n["name"] for n in httpc.get(p.url() + "/api/topology").json()["services"]}
            return names if "plain-grpc" in names else None

        assert wait_for(in_topology, what="plain-grpc in /api/topology") is not None

        metrics = p.platform.ctx.lookup(MetricsQueryPort)  # type: ignore[union-attr]
        assert metrics is not None
        expected = {("echo.Echo/Say", "0", "ok"): 5, ("echo.Echo/Fail", "13", "error"): 1,
                    ("grpc.health.v1.Health/Check", "0", "ok"): 1}

        def red() -> dict[tuple[str, str, str], float] | None:
            got = metrics.query_instant(
                'sum by (method, code, status) (rpc_server_requests_total{callee="plain-grpc"})', time.time())
            counts = {(lb["method"], lb.get("code", ""), lb.get("status", "")): v for lb, v in got}
            return counts if counts == expected else None

        assert wait_for(red, what=f"RED counts of plain-grpc == {expected}") == expected
        # the health probe is left out the way the release gate leaves out GET /healthz
        probes_out = metrics.query_instant(
            'sum(rpc_server_requests_total{callee="plain-grpc", method!~"GET /healthz|grpc.health.v1.Health/Check"})',
            time.time())
        assert [v for _, v in probes_out] == [6]

        # faults apply per call and answer gRPC statuses
        rule = httpc.post(p.url() + "/api/faults", json={"service": "plain-grpc", "path": "/echo.Echo/Say",
                                                         "error_rate": 1, "status": 503}).json()
        assert _call(entry, "/echo.Echo/Say") == grpc.StatusCode.UNAVAILABLE
        assert _call(entry, "/echo.Echo/Fail") == grpc.StatusCode.INTERNAL  # another method: not matched
        httpc.delete(p.url() + f"/api/faults/{rule['id']}")
        httpc.post(p.url() + "/api/faults", json={"service": "plain-grpc", "latency_ms": 300})
        began = time.monotonic()
        assert _call(entry, "/echo.Echo/Say") == grpc.StatusCode.OK
        assert time.monotonic() - began >= 0.3


def test_shop_inventory_gets_one_server_span_under_auto(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "scenarios" / "shop" / "inventory"))
    try:
        import inventory_pb2 as pb
        import inventory_pb2_grpc as pb_grpc
    finally:
        sys.path.pop(0)
    config = load_config(ROOT / "scenarios" / "shop" / "devbox.yaml")
    config.platform.ports = Ports.ephemeral()
    config.platform.state_dir = str(tmp_path)
    config.services = [s for s in config.services if s.name == "inventory"]
    for svc in config.services:
        svc.reload = False
        assert svc.trace == "auto" and svc.protocol == "grpc"
    with running_platform(config=config, components=COMPONENTS) as p:
        _deployed(p)
        target = _entry(p, "inventory")
        with grpc.insecure_channel(target, options=[("grpc.enable_http_proxy", 0)]) as channel:
            stub = pb_grpc.InventoryStub(channel)

            def alone() -> list[dict[str, Any]] | None:
                trace, parent, header = traceparent()
                stub.ListProducts(pb.ListProductsRequest(), metadata=(("traceparent", header),), timeout=10)
                spans = p.trace(trace, 1)
                servers = [s for s in spans if s["kind"] == "SERVER"]
                own = [s for s in servers if "devbox.span.source" not in s.get("tags", {})]
                return spans if own and own[0]["parentId"] == parent else None

            # until tracing has seen inventory's own spans the proxy makes one too; then only the service does
            spans = wait_for(alone, what="inventory's own server span, child of the caller's")
            assert spans is not None
            servers = [s for s in spans if s["kind"] == "SERVER"]
            assert len(servers) == 1 and "devbox.span.source" not in servers[0].get("tags", {})
