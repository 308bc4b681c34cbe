"""What the gRPC listeners' relay costs: the same calls through a listener's port and straight to
the grpc server it relays to (``Platform.grpc_backend``), interleaved, in the same run.

grpc is loaded by a gRPC listener's first client (:mod:`devbox.platform.grpc_front`), so every
gRPC byte passes one asyncio relay in the platform process. Figures, each front ÷ direct:

- Polaris ``Heartbeat`` calls/s (unary, small), 32 concurrent calls on one channel;
- OTLP/gRPC ``Export`` of 512-span batches (~100 KB each), spans/s, 8 concurrent calls;
- one ``Heartbeat``'s round trip, p50, one call at a time.

The platform runs in a child process; the clients here. Run:
``python bench/bench_grpc_relay.py [--seconds 3] [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc

sys.path.insert(0, str(Path(__file__).parent))
import bench_naming_server
import bench_tracing

OTLP_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
HEARTBEAT = "/v1.PolarisGRPC/Heartbeat"


def serve(state: Path) -> None:
    """Child process: naming and tracing; prints each gRPC listener's port and its grpc server's, stops on stdin EOF."""
    from devbox.testing import running_platform

    with running_platform(state, components=["naming", "tracing"]) as p:
        assert p.platform is not None
        out = {}
        for listener in ("polaris_grpc", "otlp_grpc"):
            host, port = p.call(p.platform.grpc_backend(listener))
            out[listener] = {"front": p.target(listener), "direct": f"{host}:{port}"}
        print(json.dumps(out), flush=True)
        sys.stdin.read()


async def heartbeats(target: str, seconds: float) -> float:
    """bench_naming_server's gRPC heartbeats/s, on an instance registered here over ``target``."""
    from devbox.mocks.naming.polaris_pb import protos

    pb = protos()
    async with grpc.aio.insecure_channel(target) as channel:
        register = channel.unary_unary("/v1.PolarisGRPC/RegisterInstance",
                                       request_serializer=pb.service.Instance.SerializeToString,
                                       response_deserializer=pb.response.Response.FromString)
        answer = await register(pb.service.Instance(service={"value": "relay"}, namespace={"value": "default"},
                                                    host={"value": "127.0.0.1"}, port={"value": 9000},
                                                    health_check={"type": 1, "heartbeat": {"ttl": {"value": 30}}}))
    return await bench_naming_server.grpc_heartbeats(target, answer.instance.id.value, seconds)


async def round_trip_ms(target: str, calls: int = 300) -> float:
    from devbox.mocks.naming.polaris_pb import protos

    pb = protos()
    async with grpc.aio.insecure_channel(target) as channel:
        beat = channel.unary_unary(HEARTBEAT, request_serializer=pb.service.Instance.SerializeToString,
                                   response_deserializer=pb.response.Response.FromString)
        msg = pb.service.Instance(id={"value": "nobody"})
        times = []
        for _ in range(calls):
            start = time.perf_counter()
            await beat(msg)
            times.append(time.perf_counter() - start)
        return statistics.median(times) * 1000


async def exports(target: str, bodies: list[bytes], seconds: float, concurrency: int = 8) -> float:
    options = [("grpc.max_send_message_length", 64 * 1024 * 1024)]
    async with grpc.aio.insecure_channel(target, options=options) as channel:
        export = channel.unary_unary(OTLP_METHOD)
        sent, deadline = 0, time.perf_counter() + seconds

        async def worker(k: int) -> None:
            nonlocal sent
            i = k
            while time.perf_counter() < deadline:
                await export(bodies[i % len(bodies)], timeout=60)
                sent += bench_tracing.BATCH
                i += concurrency

        start = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(concurrency)))
        return sent / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved front/direct rounds")
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen([sys.executable, __file__, "--serve", tmp], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            addr: dict[str, Any] = json.loads(proc.stdout.readline())
            bodies = bench_tracing.otlp_bodies(64, seed=7)
            figures: dict[str, dict[str, list[float]]] = {}
            for _ in range(args.rounds):
                for way in ("front", "direct"):
                    polaris, otlp = addr["polaris_grpc"][way], addr["otlp_grpc"][way]
                    row = figures.setdefault(way, {})
                    row.setdefault("heartbeats/s", []).append(asyncio.run(heartbeats(polaris, args.seconds)))
                    row.setdefault("OTLP spans/s", []).append(asyncio.run(exports(otlp, bodies, args.seconds)))
                    row.setdefault("round trip p50 ms", []).append(asyncio.run(round_trip_ms(polaris)))
        finally:
            if proc.stdin is not None:
                proc.stdin.close()
            proc.wait(30)
    print(f"{'':24s}{'through the port':>18s}{'direct':>14s}{'port ÷ direct':>16s}")
    for figure in figures["front"]:
        front = statistics.median(figures["front"][figure])
        direct = statistics.median(figures["direct"][figure])
        print(f"{figure:24s}{front:18,.2f}{direct:14,.2f}{front / direct:16.2f}")


if __name__ == "__main__":
    main()
