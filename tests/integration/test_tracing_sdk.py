"""The SDK bootstrap in a real service process: FastAPI + httpx + grpc.aio traced into devbox,
B3 accepted, baggage carried, DEVBOX_SAMPLING honoured, the deploy pipeline's probes not traced. Each
case runs in a subprocess because OpenTelemetry's provider is process-global."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from devbox.mocks.deploy.config import Readiness
from devbox.mocks.deploy.readiness import probe
from grpc_health.v1 import health_pb2, health_pb2_grpc

from devbox.testing import PlatformThread, running_platform, wait_for
from tests import httpc

SERVICE = r'''
import asyncio, json, socket, sys, urllib.request
import httpx, uvicorn
from fastapi import FastAPI, Request
from opentelemetry import baggage, trace
from devbox.sdk.tracing import instrument

app = FastAPI()
provider = instrument(app)
provider2 = instrument(app)  # idempotent
assert provider is provider2
import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

PORT = free_port()
GRPC_PORT = free_port()

@app.get("/inner")
async def inner():
    return {"baggage": dict(baggage.get_all())}

@app.get("/outer")
async def outer():
    async with httpx.AsyncClient() as client:
        seen = (await client.get(f"http://127.0.0.1:{PORT}/inner")).json()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{GRPC_PORT}") as channel:
        await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    return seen

async def main():
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    server.add_insecure_port(f"127.0.0.1:{GRPC_PORT}")
    await server.start()
    web = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=PORT, log_level="warning"))
    task = asyncio.create_task(web.serve())
    while not web.started:
        await asyncio.sleep(0.01)
    out = {}
    for name, headers in json.loads(sys.argv[1]).items():
        # urllib, not httpx: the caller must not be traced itself (it would start its own trace)
        path = "outer" if name != "unparented" else "inner"
        req = urllib.request.Request(f"http://127.0.0.1:{PORT}/{path}", headers=headers)
        body = await asyncio.to_thread(lambda: urllib.request.urlopen(req, timeout=10).read())
        out[name] = json.loads(body)
    trace.get_tracer_provider().force_flush()
    web.should_exit = True
    await task
    await server.stop(None)
    print(json.dumps(out))

asyncio.run(main())
'''


#: A service that serves /healthz and grpc health until its stdin closes, then flushes its spans.
PROBED = r'''
import asyncio, json, socket, sys
import grpc, uvicorn
from fastapi import FastAPI
from opentelemetry import trace
from devbox.sdk.tracing import instrument

app = FastAPI()
instrument(app)
from grpc_health.v1 import health, health_pb2_grpc

@app.get("/healthz")
async def healthz():
    return {"status": "ok"}

async def main():
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    grpc_port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    web = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(web.serve())
    while not web.started:
        await asyncio.sleep(0.01)
    print(json.dumps({"http": port, "grpc": grpc_port}), flush=True)
    await asyncio.to_thread(sys.stdin.read)
    trace.get_tracer_provider().force_flush()
    web.should_exit = True
    await task
    await server.stop(None)

asyncio.run(main())
'''


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatformThread]:
    with running_platform(tmp_path_factory.mktemp("tracing-sdk"), components=["tracing"]) as p:
        yield p


def _service_env(platform: PlatformThread, **env: str) -> dict[str, str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "DEVBOX_"))}
    full_env.update({
        "OTEL_SERVICE_NAME": "shop-web", "OTEL_EXPORTER_OTLP_ENDPOINT": platform.url("otlp_http"),
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_RESOURCE_ATTRIBUTES": "devbox.env=feature-x",
        **env,
    })
    return full_env


def _run_service(platform: PlatformThread, tmp_path: Path, requests: dict, **env: str) -> dict:
    script = tmp_path / "service.py"
    script.write_text(SERVICE)
    done = subprocess.run([sys.executable, str(script), json.dumps(requests)], env=_service_env(platform, **env),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_one_trace_through_fastapi_httpx_and_grpc_with_b3_and_baggage(platform: PlatformThread,
                                                                        tmp_path: Path) -> None:
    trace_id, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    out = _run_service(platform, tmp_path, {
        "b3": {"b3": f"{trace_id}-{parent}-1", "baggage": "env=feature-x"},
    })
    assert out["b3"]["baggage"] == {"env": "feature-x"}
    spans = platform.trace(trace_id, 4)
    by_id = {s["id"]: s for s in spans}
    outer = [s for s in spans if s.get("kind") == "SERVER" and s.get("parentId") == parent]
    assert len(outer) == 1, spans
    inner = [s for s in spans if s.get("kind") == "SERVER" and "/inner" in s["name"]]
    assert inner and by_id[inner[0]["parentId"]].get("kind") == "CLIENT"
    grpc_server = [s for s in spans if s.get("kind") == "SERVER" and "health" in s["name"]]  # Zipkin lower-cases
    assert grpc_server, [s["name"] for s in spans]
    assert by_id[grpc_server[0]["parentId"]].get("kind") == "CLIENT"
    assert all(s["localEndpoint"]["serviceName"] == "shop-web" for s in spans)
    assert spans[0]["tags"]["devbox.env"] == "feature-x"


def test_sampling_fraction_zero_drops_new_traces_but_follows_a_sampled_parent(platform: PlatformThread,
                                                                             tmp_path: Path) -> None:
    sampled = "5bf92f3577b34da6a3ce929d0e0e4736"
    out = _run_service(platform, tmp_path, {
        "unparented": {},
        "parented": {"traceparent": f"00-{sampled}-00f067aa0ba902b7-01"},
    }, DEVBOX_SAMPLING="0", OTEL_SERVICE_NAME="sampled-web")
    assert "parented" in out
    assert len(platform.trace(sampled, 4)) >= 4
    inner = httpc.get(f"{platform.url('zipkin')}/api/v2/traces",
                      params={"serviceName": "sampled-web", "spanName": "GET /inner", "limit": 100}).json()
    # the unparented call to /inner was dropped; the one under the sampled parent was kept
    assert {t[0]["traceId"] for t in inner} == {sampled}


async def _grpc_health_check(port: int) -> None:
    """A health check as any gRPC client makes it (this process is not instrumented: no span of its own)."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)


def test_the_pipelines_probes_are_not_traced_but_the_same_request_from_anyone_else_is(
        platform: PlatformThread, tmp_path: Path) -> None:
    script = tmp_path / "probed.py"
    script.write_text(PROBED)
    proc = subprocess.Popen([sys.executable, str(script)], env=_service_env(platform, OTEL_SERVICE_NAME="probed"),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdin is not None
        ports = json.loads(proc.stdout.readline() or "{}")
        assert ports, proc.communicate(timeout=30)[1][-3000:]
        for _ in range(3):  # what the pipeline does every second or two, on both kinds of readiness
            assert asyncio.run(probe(Readiness(http="/healthz"), "127.0.0.1", ports["http"], timeout=10))[0]
            assert asyncio.run(probe(Readiness(grpc=True), "127.0.0.1", ports["grpc"], timeout=10))[0]
        # then the same two requests from a user: traced
        assert httpc.get(f"http://127.0.0.1:{ports['http']}/healthz").status_code == 200
        asyncio.run(_grpc_health_check(ports["grpc"]))
        _, err = proc.communicate("", timeout=60)  # stdin closed: the service flushes its spans and exits
        assert proc.returncode == 0, err[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    def names() -> list[str]:
        traces = httpc.get(f"{platform.url('zipkin')}/api/v2/traces",
                           params={"serviceName": "probed", "limit": 100}).json()
        return sorted(span["name"] for t in traces for span in t)

    # the spans were exported in the order they were made, the user's last: once those two are found,
    # any probe's span would have been found too
    found = wait_for(lambda: len(names()) >= 2 and names(), 30, "the user's two health requests traced")
    assert found == ["/grpc.health.v1.health/check", "get /healthz"], found
