"""Naming server figures, each as a ratio against a baseline measured in the same run.

- heartbeats/s over Polaris gRPC and over Polaris HTTP, against the core's own heartbeat calls/s
  (the transport's cost) and, for HTTP, against a plain ``GET /healthz`` with the same client;
- registering 10k instances through the core and through gRPC, and one sweep over 10k instances;
- time from a register / deregister to a long-polling watcher (``/api/naming/watch``) seeing it,
  against one plain HTTP round trip (``/healthz``) to the same listener.

The platform runs in this process (its own thread and loop), so the client shares the GIL with
the server: transport figures are a floor, not a ceiling.

Run: ``python bench/bench_naming_server.py [--instances 10000] [--seconds 3]``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import httpx
from devbox.mocks.naming.core import Registry
from devbox.mocks.naming.polaris_pb import protos

from devbox.testing import running_platform


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds else float("inf")


def core_heartbeats(seconds: float) -> float:
    registry = Registry()
    inst = registry.register(namespace="default", service="bench", host="127.0.0.1", port=1)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(1000):
            registry.heartbeat(inst.id)
        count += 1000
    return rate(count, time.perf_counter() - start)


async def grpc_heartbeats(target: str, iid: str, seconds: float, concurrency: int = 32) -> float:
    pb = protos()
    async with grpc.aio.insecure_channel(target) as channel:
        heartbeat = channel.unary_unary(
            "/v1.PolarisGRPC/Heartbeat",
            request_serializer=pb.service.Instance.SerializeToString,
            response_deserializer=pb.response.Response.FromString,
        )
        msg = pb.service.Instance(id={"value": iid})
        count = 0
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal count
            while time.perf_counter() < deadline:
                answer = await heartbeat(msg)
                assert answer.code.value == 200000, answer
                count += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return rate(count, time.perf_counter() - start)


async def http_heartbeats(
    base: str, iid: str, seconds: float, concurrency: int = 32, path: str = "/v1/Heartbeat"
) -> float:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, limits=limits) as client:
        count = 0
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal count
            while time.perf_counter() < deadline:
                if path == "/healthz":
                    r = await client.get(path)
                else:
                    r = await client.post(path, json={"id": iid})
                assert r.status_code == 200, r.text
                count += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return rate(count, time.perf_counter() - start)


def core_register(n: int) -> tuple[float, float]:
    registry = Registry()
    start = time.perf_counter()
    for i in range(n):
        host = f"10.{i // 65536}.{i // 256 % 256}.{i % 256}"
        registry.register(namespace="default", service=f"svc{i % 100}", host=host, port=8000)
    took = time.perf_counter() - start
    start = time.perf_counter()
    registry.sweep()
    return took, time.perf_counter() - start


async def grpc_register(target: str, n: int, concurrency: int = 32) -> float:
    pb = protos()
    async with grpc.aio.insecure_channel(target) as channel:
        register = channel.unary_unary(
            "/v1.PolarisGRPC/RegisterInstance",
            request_serializer=pb.service.Instance.SerializeToString,
            response_deserializer=pb.response.Response.FromString,
        )
        queue = list(range(n))

        async def worker() -> None:
            while queue:
                i = queue.pop()
                msg = pb.service.Instance(
                    service={"value": f"svc{i % 100}"}, namespace={"value": "grpc"},
                    host={"value": f"10.{i // 65536}.{i // 256 % 256}.{i % 256}"}, port={"value": 8000},
                    health_check={"type": 1, "heartbeat": {"ttl": {"value": 30}}},
                )
                answer = await register(msg)
                assert answer.code.value == 200000, answer

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - start


def watch_latency(api: str, rounds: int) -> tuple[float, float]:
    """Median seconds from sending a register/deregister to the watcher's answer; and a plain GET."""
    samples: list[float] = []
    with httpx.Client(base_url=api, timeout=30) as client:
        revision = client.get("/api/naming/watch", params={"service": "watched", "timeout": 0}).json()["revision"]
        for i in range(rounds):
            seen: dict[str, Any] = {}
            ready = threading.Event()

            def watcher(
                rev: str = revision, box: dict[str, Any] = seen, ready: threading.Event = ready
            ) -> None:
                with httpx.Client(base_url=api, timeout=30) as wc:
                    ready.set()
                    box["answer"] = wc.get("/api/naming/watch",
                                           params={"service": "watched", "revision": rev, "timeout": 20}).json()
                    box["at"] = time.perf_counter()

            thread = threading.Thread(target=watcher)
            thread.start()
            ready.wait()
            time.sleep(0.05)  # let the long poll reach the server
            start = time.perf_counter()
            if i % 2 == 0:
                r = client.post("/api/naming/instances", json={"service": "watched", "host": "127.0.0.1",
                                                               "port": 9000, "health_check": False})
            else:
                r = client.delete("/api/naming/instances/127.0.0.1:9000")
            assert r.status_code in (201, 204), r.text
            thread.join()
            samples.append(seen["at"] - start)
            revision = seen["answer"]["revision"]
        plain = []
        for _ in range(rounds):
            start = time.perf_counter()
            client.get("/healthz")
            plain.append(time.perf_counter() - start)
    return statistics.median(samples), statistics.median(plain)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()

    base_hb = core_heartbeats(args.seconds)
    reg_core, sweep = core_register(args.instances)
    with tempfile.TemporaryDirectory() as tmp, running_platform(Path(tmp), components=["naming"]) as p:
        registry = p.component("naming").registry  # type: ignore[attr-defined]

        async def setup() -> str:
            return registry.register(namespace="default", service="bench", host="127.0.0.1", port=1).id

        iid = p.call(setup())
        hb_grpc = asyncio.run(grpc_heartbeats(p.target("polaris_grpc"), iid, args.seconds))
        hb_http = asyncio.run(http_heartbeats(p.url("polaris_http"), iid, args.seconds))
        plain_http = asyncio.run(http_heartbeats(p.url("api"), iid, args.seconds, path="/healthz"))
        reg_grpc = asyncio.run(grpc_register(p.target("polaris_grpc"), args.instances))
        watch, plain = watch_latency(p.url("api"), args.rounds)

    print(f"core heartbeats/s (baseline)         {base_hb:12,.0f}")
    print(f"gRPC heartbeats/s                    {hb_grpc:12,.0f}   ratio {hb_grpc / base_hb:.4f} of core")
    print(f"HTTP heartbeats/s                    {hb_http:12,.0f}   ratio {hb_http / base_hb:.4f} of core")
    print(f"plain HTTP GET /healthz/s (baseline) {plain_http:12,.0f}   heartbeat {hb_http / plain_http:.2f}x of it")
    print(f"register {args.instances} via core (baseline)  {reg_core:9.3f} s   {rate(args.instances, reg_core):,.0f}/s")
    print(f"register {args.instances} via gRPC          {reg_grpc:9.3f} s   ratio {reg_grpc / reg_core:.1f}x core")
    print(f"sweep over {args.instances} instances        {sweep * 1000:9.2f} ms")
    print(f"plain GET /healthz (baseline)             {plain * 1000:7.2f} ms median")
    print(f"register/deregister -> watcher sees it    {watch * 1000:7.2f} ms median   ratio {watch / plain:.1f}x GET")


if __name__ == "__main__":
    main()
