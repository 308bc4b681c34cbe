"""The naming SDK against a real platform: fake HTTP/gRPC instances on port 0, the multi-env
rule, failover when an instance dies, and a platform restart the client rides out."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from devbox.config import ProjectConfig
from devbox.sdk.naming import NamingClient, parse_baggage, routing_labels
from devbox.testing import running_platform, wait_for
from tests import httpc

RULE = {
    "name": "feature-env",
    "sources": [{"arguments": [{"key": "env", "value": "*"}]}],
    "destinations": [
        {"labels": {"env": "$env"}},
        {"labels": {"env": {"type": "IN", "value": "base,"}}, "priority": 1},
    ],
}


class FakeInstance:
    """A tiny HTTP server answering ``{"name": ..., "baggage": ...}``; ``kill()`` closes its port."""

    def __init__(self, name: str) -> None:
        self.name = name
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = json.dumps({"name": owner.name, "baggage": self.headers.get("baggage", "")}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def kill(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def instances() -> Iterator[Callable[[str], FakeInstance]]:
    made: list[FakeInstance] = []

    def make(name: str) -> FakeInstance:
        made.append(FakeInstance(name))
        return made[-1]

    yield make
    for inst in made:
        if inst.server.socket.fileno() != -1:
            inst.kill()


def register(api: str, service: str, port: int, env: str, protocol: str = "http") -> None:
    answer = httpc.post(f"{api}/api/naming/instances", json={
        "service": service, "host": "127.0.0.1", "port": port, "protocol": protocol,
        "metadata": {"env": env}, "health_check": False})
    assert answer.status_code == 201, answer.text


def test_feature_routing_base_fallback_and_failover(tmp_path: Path, instances: Callable[[str], FakeInstance]) -> None:
    with running_platform(tmp_path, components=["naming"]) as platform:
        api = platform.url("api")
        fleet = {name: instances(name) for name in ("orders-base", "orders-fx", "users-base")}
        register(api, "orders", fleet["orders-base"].port, "base")
        register(api, "orders", fleet["orders-fx"].port, "feature-x")
        register(api, "users", fleet["users-base"].port, "base")
        answer = httpc.put(f"{api}/api/naming/rules/default/*", json=[RULE])
        assert answer.status_code == 200, answer.text

        with NamingClient(api, service="gateway", watch_timeout=1) as client, client.sync_http_client() as http:
            with routing_labels(env="feature-x"):
                got = {http.get("http://orders/").json()["name"] for _ in range(10)}
                assert got == {"orders-fx"}
                users = http.get("http://users/").json()
                assert users["name"] == "users-base"  # no feature-x users: the base one
                assert parse_baggage(users["baggage"]) == {"env": "feature-x"}  # label passed on
            assert {http.get("http://orders/").json()["name"] for _ in range(30)} == {"orders-base", "orders-fx"}

            why = client.explain("orders", {"env": "feature-x"})
            assert why["rule"] == "feature-env" and why["chosen"] == f"127.0.0.1:{fleet['orders-fx'].port}"

            fleet["orders-fx"].kill()  # still registered (no health check): the client must fail over
            with routing_labels(env="feature-x"):
                assert http.get("http://orders/").json()["name"] == "orders-base"
                assert http.get("http://orders/").json()["name"] == "orders-base"
            breakers = client.explain("orders", {"env": "feature-x"})
            assert breakers["circuit_breakers"][f"127.0.0.1:{fleet['orders-fx'].port}"]["consecutive_errors"] >= 1

            # the platform isolates the dead instance: the watch brings the change
            ref = next(i["id"] for i in httpc.get(f"{api}/api/naming/instances", params={"service": "orders"}).json()
                       if i["port"] == fleet["orders-fx"].port)
            assert httpc.put(f"{api}/api/naming/instances/{ref}/isolate", json={"isolated": True}).status_code < 300
            client.wait_for("orders", lambda insts: any(i.isolated for i in insts), timeout=10)
            why = client.explain("orders", {"env": "feature-x"})
            assert why["filters"][0]["removed"] == [f"127.0.0.1:{fleet['orders-fx'].port}"]
            assert why["failover"] is True and why["candidates"] == [f"127.0.0.1:{fleet['orders-base'].port}"]


def test_client_rides_out_a_platform_restart(tmp_path: Path, instances: Callable[[str], FakeInstance]) -> None:
    first, second = instances("first"), instances("second")
    config = ProjectConfig.for_tests(tmp_path / "a")
    with running_platform(config=config, components=["naming"]) as platform:
        api = platform.url("api")
        register(api, "orders", first.port, "base")
        client = NamingClient(api, watch_timeout=1)
        client.wait_for("orders", lambda insts: len(insts) == 1)
    try:
        assert client.pick("orders", labels={}).port == first.port  # platform gone: cache serves
        with client.sync_http_client() as http:
            assert http.get("http://orders/").json()["name"] == "first"
        again = ProjectConfig.for_tests(tmp_path / "b")
        again.platform.ports.api = int(api.rsplit(":", 1)[1])
        with running_platform(config=again, components=["naming"]) as platform:
            register(platform.url("api"), "orders", second.port, "base")
            client.wait_for("orders", lambda insts: [i.port for i in insts] == [second.port], timeout=15)
            assert client.explain("orders", {})["cache"]["stale"] is False
    finally:
        client.close()


class _Health(health.aio.HealthServicer):
    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.calls = 0
        self.baggage = ""

    async def Check(self, request: Any, context: Any) -> Any:
        self.calls += 1
        self.baggage = dict(context.invocation_metadata()).get("baggage", "")
        if request.service == "boom":
            await context.abort(grpc.StatusCode.INTERNAL, "boom")
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)


def test_grpc_channel_picks_per_call_and_fails_over(tmp_path: Path) -> None:
    async def scenario(api: str) -> None:
        servers, servicers = [], []
        for name in ("a", "b"):
            server = grpc.aio.server()
            servicer = _Health(name)
            health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
            port = server.add_insecure_port("127.0.0.1:0")
            await server.start()
            servers.append(server)
            servicers.append(servicer)
            await asyncio.to_thread(register, api, "inventory", port, "base", "grpc")
        client = NamingClient(api, watch_timeout=1)
        try:
            await asyncio.to_thread(client.wait_for, "inventory", lambda insts: len(insts) == 2)
            channel = client.grpc_channel("polaris://inventory")
            stub = health_pb2_grpc.HealthStub(channel)
            for _ in range(20):
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
            assert servicers[0].calls > 0 and servicers[1].calls > 0  # picked per call
            with routing_labels(env="feature-x"):
                await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert "env=feature-x" in servicers[0].baggage + servicers[1].baggage
            watch = stub.Watch(health_pb2.HealthCheckRequest())  # unary-stream through the same channel
            async for update in watch:
                assert update.status == health_pb2.HealthCheckResponse.SERVING
                break
            watch.cancel()
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Check(health_pb2.HealthCheckRequest(service="boom"), timeout=5)
            assert err.value.code() is grpc.StatusCode.INTERNAL
            await servers[0].stop(None)
            before = servicers[1].calls
            for _ in range(6):
                await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)  # never fails: failover
            assert servicers[1].calls == before + 6
            await channel.close()
            nobody = health_pb2_grpc.HealthStub(client.grpc_channel("nobody"))
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await nobody.Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert err.value.code() is grpc.StatusCode.UNAVAILABLE and "naming" in err.value.details()
        finally:
            client.close()
            for server in servers:
                await server.stop(None)

    with running_platform(tmp_path, components=["naming"]) as platform:
        asyncio.run(scenario(platform.url("api")))


def _serve_asgi(app: Any) -> tuple[Any, threading.Thread, int]:
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    return server, thread, server.servers[0].sockets[0].getsockname()[1]


def test_labels_flow_along_the_chain_without_tracing(tmp_path: Path,
                                                     instances: Callable[[str], FakeInstance]) -> None:
    """caller -(env=feature-x)-> orders (a real ASGI hop using the SDK) -> payment: the middle hop
    passes the label on, so payment's feature-x instance is chosen every time."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from devbox.sdk.naming import RoutingLabelsMiddleware

    with running_platform(tmp_path, components=["naming"]) as platform:
        api = platform.url("api")
        pay_base, pay_fx = instances("payment-base"), instances("payment-fx")
        register(api, "payment", pay_base.port, "base")
        register(api, "payment", pay_fx.port, "feature-x")
        assert httpc.put(f"{api}/api/naming/rules/default/*", json=[RULE]).status_code == 200
        middle = NamingClient(api, service="orders", watch_timeout=1)

        async def handle(request: Any) -> JSONResponse:
            async with middle.http_client(timeout=5) as http:
                downstream = (await http.get("http://payment/")).json()
            return JSONResponse({"name": "orders-fx", "downstream": downstream["name"]})

        app = RoutingLabelsMiddleware(Starlette(routes=[Route("/", handle)]))
        server, thread, port = _serve_asgi(app)
        try:
            register(api, "orders", port, "feature-x")
            with NamingClient(api, service="gateway", watch_timeout=1) as client, client.sync_http_client() as http:
                with routing_labels(env="feature-x"):
                    answers = [http.get("http://orders/").json() for _ in range(8)]
                assert {a["downstream"] for a in answers} == {"payment-fx"}
                plain = {http.get("http://orders/").json()["downstream"] for _ in range(30)}
                assert plain == {"payment-base", "payment-fx"}  # no label: no rule, both
        finally:
            middle.close()
            server.should_exit = True
            thread.join(10)


_TRACED_CALLER = """
import asyncio, sys
from opentelemetry import baggage, context, trace
from devbox import sdk

sdk.bootstrap(service_name="gateway")
tracer = trace.get_tracer("test")

async def main() -> None:
    async with sdk.http_client(timeout=5) as http:
        token = context.attach(baggage.set_baggage("env", "feature-x"))
        with tracer.start_as_current_span("handler", kind=trace.SpanKind.SERVER) as span:
            answer = await http.get("http://orders/")
            print(answer.json()["name"], format(span.get_span_context().trace_id, "032x"))
        context.detach(token)

asyncio.run(main())
trace.get_tracer_provider().force_flush()
"""


def test_pick_explanation_lands_on_the_callers_span(tmp_path: Path, instances: Callable[[str], FakeInstance]) -> None:
    """Tracing on (the real SDK bootstrap in a child process, OTLP to devbox): the caller's span
    carries the pick's rule, instance and filtered instances, and the watch adds no spans."""
    import os
    import subprocess
    import sys

    with running_platform(tmp_path, components=["naming", "tracing"]) as platform:
        api = platform.url("api")
        base, fx = instances("orders-base"), instances("orders-fx")
        register(api, "orders", base.port, "base")
        register(api, "orders", fx.port, "feature-x")
        assert httpc.put(f"{api}/api/naming/rules/default/*", json=[RULE]).status_code == 200
        env = {**os.environ, "DEVBOX_API_URL": api, "DEVBOX_SERVICE": "gateway",
               "OTEL_EXPORTER_OTLP_ENDPOINT": platform.url("otlp_http"), "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}
        child = subprocess.run([sys.executable, "-c", _TRACED_CALLER], env=env, capture_output=True, text=True,
                               timeout=60)
        assert child.returncode == 0, child.stderr[-2000:]
        name, trace_id = child.stdout.split()
        assert name == "orders-fx"
        def with_handler() -> list[dict[str, Any]] | None:
            # spans come in per-process batches: the trace may be known before the server's span is in
            answer = httpc.get(f"{api}/api/traces/{trace_id}")
            spans = answer.json()["spans"] if answer.status_code == 200 else []
            return spans if any(s["name"] == "handler" for s in spans) else None

        spans = wait_for(with_handler, timeout=30, what=f"trace {trace_id} with the server's 'handler' span")
        (server,) = [s for s in spans if s["name"] == "handler"]
        attrs = server["attributes"]
        assert attrs["devbox.naming.rule"] == "feature-env"
        assert attrs["devbox.naming.instance"] == f"127.0.0.1:{fx.port}"
        assert attrs["devbox.naming.filtered"] == [f"metadata:127.0.0.1:{base.port}"]
        assert not [s for s in spans if "/api/naming/watch" in str(s["attributes"].get("http.url", ""))]
