"""Trace collector figures, as ratios against baselines measured in the same run.

    python bench/bench_tracing.py [--spans 1000000] [--requests 120]

1. Ingest: spans/s over OTLP/HTTP (protobuf, 512 spans per request) and OTLP/gRPC, against a bare
   endpoint on the same server that accepts the same requests and discards them (the ceiling).
   Acknowledged is not queryable yet (the WAL is indexed behind the answers): the indexing rate
   and how long after the last answer every span was queryable are printed too.
2. Query: p50/p99 of ``GET /api/v2/trace/{id}`` for a 1,000-span trace with ``--spans`` stored,
   against the same request for a 1-span trace on the same server; of a Zipkin search (service,
   last hour, limit 20); and of ``/dependencies`` over the last hour.
3. Memory: RSS of the platform process with ``--spans`` stored, against a fresh one.

The platform runs in a child process (``--serve``), hosting the tracing and metrics components (as
any project does: metrics derives RPC counters from every span the indexer commits; ``--components
tracing`` leaves it out) plus the bench's discard endpoint, so the client's work does not share its
interpreter. ``--profile DIR`` records py-spy profiles (collapsed stacks) of the platform and of the indexer
process during the OTLP/HTTP ingest (py-spy must be on PATH and allowed to attach).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import httpx
import psutil
from fastapi import APIRouter, Request, Response

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from devbox.mocks.tracing.convert import to_otlp_request  # noqa: E402
from devbox.mocks.tracing.models import Span  # noqa: E402

from devbox.platform.component import Component  # noqa: E402

BATCH = 512
TRACE_SIZE = 16
OTLP_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
DISCARD_METHOD = "/bench.Discard/Export"


class DiscardComponent(Component):
    """The ceiling: reads each request whole and answers an empty export response."""

    name = "bench_discard"

    def http_routes(self) -> list[tuple[str, Any]]:
        router = APIRouter()

        @router.post("/discard/v1/traces")
        async def discard(request: Request) -> Response:
            await request.body()
            return Response(b"", media_type="application/x-protobuf")

        return [("otlp_http", router)]

    def grpc_services(self) -> list[tuple[str, Any]]:
        async def export(request: bytes, context: Any) -> bytes:
            return b""

        handler = grpc.method_handlers_generic_handler(
            "bench.Discard", {"Export": grpc.unary_unary_rpc_method_handler(export)}
        )
        return [("otlp_grpc", lambda server: server.add_generic_rpc_handlers((handler,)))]


def serve(state: Path, components: list[str], tracing: dict[str, Any] | None = None) -> None:
    """Child process: a platform with ``components`` + discard; prints its addresses and the
    indexer's pid, stops on stdin EOF."""
    from devbox.platform import registry
    from devbox.platform.ports import TracesPort
    from devbox.testing import running_platform

    registry.COMPONENTS["bench_discard"] = "__main__:DiscardComponent"
    with running_platform(state, components=[*components, "bench_discard"],
                          platform={"max_body_bytes": 64 * 1024 * 1024},
                          **({"tracing": tracing} if tracing else {})) as p:
        traces: Any = p.platform.ctx.lookup(TracesPort)  # type: ignore[union-attr]
        traces.collector.start_indexer()  # else started by the first export: its pid is wanted now
        print(json.dumps({"http": p.url("otlp_http"), "grpc": p.target("otlp_grpc"), "zipkin": p.url("zipkin"),
                          "api": p.url("api"), "indexer_pid": traces.collector.indexer.pid}), flush=True)
        sys.stdin.read()


class Server:
    def __init__(self, state: Path, components: str = "tracing,metrics", tracing: dict[str, Any] | None = None) -> None:
        self.proc = subprocess.Popen([sys.executable, __file__, "--serve", str(state), "--components", components,
                                      "--tracing", json.dumps(tracing or {})],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.addr = json.loads(self.proc.stdout.readline())

    def rss_mb(self) -> float:
        return psutil.Process(self.proc.pid).memory_info().rss / 1e6

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def make_spans(count: int, *, seed: int, start_us: int, trace_size: int = TRACE_SIZE) -> list[Span]:
    """Realistic spans: traces of ``trace_size`` spans over 4 services, 4 attributes each and an
    SDK-like resource (6 attributes)."""
    services = ("gateway", "orders", "inventory", "payment")
    resources = {svc: {"service.name": svc, "service.instance.id": f"{svc}-1", "devbox.env": "base",
                       "telemetry.sdk.language": "python", "telemetry.sdk.name": "opentelemetry",
                       "telemetry.sdk.version": "1.45.2"} for svc in services}
    spans = []
    for i in range(count):
        t, k = divmod(i, trace_size)
        trace_id = f"{seed:08x}{t:024x}"
        spans.append(Span(
            trace_id=trace_id, span_id=f"{seed:04x}{i:012x}",
            parent_id=None if k == 0 else f"{seed:04x}{i - k + (k - 1) // 2:012x}",
            name=f"op-{k % 7}", kind="SERVER" if k % 2 == 0 else "CLIENT", service=services[k % 4],
            start_us=start_us + i * 10, duration_us=1000 + (i * 7919) % 50_000, error=(i % 97 == 0),
            status_message="boom" if i % 97 == 0 else "",
            attributes={"http.route": f"/api/{k % 5}", "http.response.status_code": 200, "rpc.method": "Get",
                        "user": f"u{i % 100}"},
            resource=resources[services[k % 4]],
        ))
    return spans


def otlp_bodies(requests: int, *, seed: int) -> list[bytes]:
    now = time.time_ns() // 1000 - 600_000_000
    return [to_otlp_request(make_spans(BATCH, seed=seed + r, start_us=now + r * 100_000)).SerializeToString()
            for r in range(requests)]


def blast(send: Any, bodies: list[bytes], workers: int) -> float:
    """Send every body once over ``workers`` threads; returns seconds."""
    chunks = [bodies[i::workers] for i in range(workers)]
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda chunk: [send(b) for b in chunk], chunks))
    return time.perf_counter() - started


def http_sender(url: str) -> Any:
    local = threading.local()

    def send(body: bytes) -> None:
        if not hasattr(local, "client"):
            local.client = httpx.Client(timeout=60)
        r = local.client.post(url, content=body, headers={"content-type": "application/x-protobuf"})
        r.raise_for_status()

    return send


def grpc_sender(target: str, method: str) -> Any:
    channel = grpc.insecure_channel(target, options=[("grpc.max_send_message_length", 64 * 1024 * 1024)])
    call = channel.unary_unary(method)  # bytes in, bytes out: the client does no protobuf work

    def send(body: bytes) -> None:
        call(body, timeout=60)

    return send


def profile(pid: int, out: Path, seconds: float) -> subprocess.Popen[bytes]:
    """py-spy recording ``pid`` for ``seconds`` into ``out``.txt (collapsed stacks: flamegraph.pl
    input, and readable as text)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(["py-spy", "record", "--pid", str(pid), "--duration", str(int(seconds) + 1),
                             "--rate", "200", "--format", "raw", "--output", str(out.with_suffix(".txt")),
                             "--nonblocking"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def bench_ingest(args: argparse.Namespace, tmp: Path) -> dict[str, float]:
    server = Server(tmp / "ingest", args.components)
    try:
        warm = otlp_bodies(4, seed=1)
        for body in warm:
            http_sender(server.addr["http"] + "/v1/traces")(body)
        out: dict[str, float] = {}
        for proto in ("http", "grpc"):
            bodies = otlp_bodies(args.requests, seed=1000 * (2 if proto == "http" else 3))
            if proto == "http":
                real = http_sender(server.addr["http"] + "/v1/traces")
                bare = http_sender(server.addr["http"] + "/discard/v1/traces")
            else:
                real = grpc_sender(server.addr["grpc"], OTLP_METHOD)
                bare = grpc_sender(server.addr["grpc"], DISCARD_METHOD)
            bare_s = blast(bare, bodies, args.workers)
            spies = []
            if args.profile is not None and proto == "http":
                # the burst plus the indexing behind it: about spans / 8k spans/s at worst
                seconds = min(60.0, len(bodies) * BATCH / 8000)
                spies = [profile(server.proc.pid, args.profile / "platform", seconds),
                         profile(server.addr["indexer_pid"], args.profile / "indexer", seconds)]
            cpu_before = _cpu(server)
            started = time.perf_counter()
            real_s = blast(real, bodies, args.workers)
            spans = len(bodies) * BATCH
            out[f"{proto}_spans_per_s"] = spans / real_s
            out[f"{proto}_ceiling_spans_per_s"] = spans / bare_s
            # acknowledged is not yet queryable: the indexer works from the WAL behind the answers
            while _info(server).get("wal_lag_spans", 0) > 0 and time.perf_counter() - started < 600:
                time.sleep(0.05)
            out[f"{proto}_indexed_per_s"] = spans / (time.perf_counter() - started)
            out[f"{proto}_queryable_after_s"] = time.perf_counter() - started - real_s
            # CPU per span of each process: steadier than rates on a shared machine
            cpu_after = _cpu(server)
            out[f"{proto}_platform_cpu_us"] = (cpu_after[0] - cpu_before[0]) / spans * 1e6
            out[f"{proto}_indexer_cpu_us"] = (cpu_after[1] - cpu_before[1]) / spans * 1e6
            for spy in spies:
                spy.wait()
        out["stored"] = _stored(server)
        return out
    finally:
        server.stop()


def _cpu(server: Server) -> tuple[float, float]:
    """CPU seconds (user + system) so far of the platform process and of the indexer process."""
    times = [psutil.Process(pid).cpu_times() for pid in (server.proc.pid, server.addr["indexer_pid"])]
    return times[0].user + times[0].system, times[1].user + times[1].system


#: One client for the info polls: ``httpx.get`` makes a client per call (~20 ms of CPU loading the CA
#: bundle), and a drain polled every 10 ms so took ~0.7 of a core from the indexer it was timing.
_POLL = httpx.Client(timeout=10, verify=False)


def _info(server: Server) -> dict[str, Any]:
    return dict(_POLL.get(server.addr["api"] + "/api/platform").json()["components"]["tracing"])


def _stored(server: Server) -> int:
    return int(_info(server)["spans_stored"])


def fill(state: Path, total: int) -> str:
    """Store ``total`` spans directly (as the writer would), including one 1,000-span trace."""
    from devbox.mocks.tracing.store import SpanStore

    state.mkdir(parents=True, exist_ok=True)
    store = SpanStore(state / ".devbox" / "tracing.db")
    now = time.time_ns() // 1000 - 3_000_000_000
    big = make_spans(1000, seed=0xB16, start_us=now, trace_size=1000)
    store.insert(big)
    store.insert(make_spans(1, seed=0x5A11, start_us=now, trace_size=1))
    chunk = 20_000
    done = 1000
    started = time.perf_counter()
    while done < total:
        n = min(chunk, total - done)
        store.insert(make_spans(n, seed=done // chunk + 7, start_us=now + done * 10))
        done += n
        if done % 200_000 < chunk:
            print(f"  filled {done} spans ({done / (time.perf_counter() - started):.0f}/s)", file=sys.stderr)
    store.close()
    return big[0].trace_id


def bench_query(args: argparse.Namespace, tmp: Path) -> dict[str, float]:
    fresh = Server(tmp / "fresh", args.components)
    try:
        httpx.get(fresh.addr["api"] + "/healthz")
        rss_fresh = fresh.rss_mb()
    finally:
        fresh.stop()
    state = tmp / "full"
    started = time.perf_counter()
    trace_id = fill(state, args.spans)
    fill_s = time.perf_counter() - started
    server = Server(state, args.components)
    try:
        client = httpx.Client(timeout=60)

        def timed(url: str, n: int) -> list[float]:
            out = []
            for _ in range(n):
                t = time.perf_counter()
                r = client.get(url)
                out.append(time.perf_counter() - t)
                assert r.status_code == 200, r.text
            return out

        url = f"{server.addr['zipkin']}/api/v2/trace/{trace_id}"
        assert len(client.get(url).json()) == 1000
        timed(url, 5)
        trace_times = sorted(timed(url, args.queries))
        small = make_spans(1, seed=0x5A11, start_us=0, trace_size=1)[0].trace_id
        health = sorted(timed(f"{server.addr['zipkin']}/api/v2/trace/{small}", args.queries))
        search_url = (f"{server.addr['zipkin']}/api/v2/traces?serviceName=orders&limit=20"
                      f"&endTs={int(time.time() * 1000)}&lookback=3600000")
        search = sorted(timed(search_url, args.queries))
        deps_url = f"{server.addr['zipkin']}/api/v2/dependencies?endTs={int(time.time() * 1000)}&lookback=3600000"
        deps = sorted(timed(deps_url, max(args.queries // 20, 5)))
        return {
            "stored": _stored(server), "fill_spans_per_s": args.spans / fill_s,
            "trace_p50_ms": statistics.median(trace_times) * 1000,
            "trace_p99_ms": trace_times[int(len(trace_times) * 0.99) - 1] * 1000,
            "health_p50_ms": statistics.median(health) * 1000,
            "health_p99_ms": health[int(len(health) * 0.99) - 1] * 1000,
            "search_p50_ms": statistics.median(search) * 1000,
            "search_p99_ms": search[int(len(search) * 0.99) - 1] * 1000,
            "deps_p50_ms": statistics.median(deps) * 1000, "deps_max_ms": deps[-1] * 1000,
            "rss_fresh_mb": rss_fresh, "rss_full_mb": server.rss_mb(),
            "db_mb": sum(f.stat().st_size for f in (state / ".devbox").glob("tracing.db*")) / 1e6,
        }
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--spans", type=int, default=1_000_000, help="spans stored for the query figures")
    parser.add_argument("--requests", type=int, default=120, help="ingest requests of 512 spans per protocol")
    parser.add_argument("--workers", type=int, default=4, help="concurrent client connections")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--components", default="tracing,metrics", help="platform components besides the discard")
    parser.add_argument("--profile", type=Path, help="record py-spy profiles of the ingest into this directory")
    parser.add_argument("--ingest-only", action="store_true", help="skip the query and memory figures")
    parser.add_argument("--tracing", type=json.loads, default={}, help="devbox tracing config overrides (JSON)")
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.components.split(","), args.tracing)
        return
    with tempfile.TemporaryDirectory(prefix="bench-tracing-") as tmp:
        ingest = bench_ingest(args, Path(tmp))
        print(f"ingest ({args.requests} requests x {BATCH} spans, {args.workers} connections, "
              f"{os.cpu_count()} CPUs):")
        for proto in ("http", "grpc"):
            real, ceiling = ingest[f"{proto}_spans_per_s"], ingest[f"{proto}_ceiling_spans_per_s"]
            print(f"  OTLP/{proto:<4} {real:>9,.0f} spans/s acknowledged   ceiling {ceiling:>10,.0f} spans/s   "
                  f"ratio {real / ceiling:.2f}   indexed {ingest[f'{proto}_indexed_per_s']:,.0f} spans/s "
                  f"(all queryable {ingest[f'{proto}_queryable_after_s']:.1f} s after the last answer)   "
                  f"CPU/span: platform {ingest[f'{proto}_platform_cpu_us']:.1f} us, "
                  f"indexer {ingest[f'{proto}_indexer_cpu_us']:.1f} us")
        print(f"  spans stored after the run: {ingest['stored']:,}   components: {args.components}")
        if args.ingest_only:
            return
        q = bench_query(args, Path(tmp))
        print(f"query with {q['stored']:,} spans stored (filled at {q['fill_spans_per_s']:,.0f} spans/s, "
              f"db {q['db_mb']:.0f} MB):")
        print(f"  GET /api/v2/trace/{{id}} (1000 spans): p50 {q['trace_p50_ms']:.1f} ms  p99 {q['trace_p99_ms']:.1f} ms"
              f"   vs a 1-span trace p50 {q['health_p50_ms']:.2f} ms p99 {q['health_p99_ms']:.2f} ms"
              f"   ratio p50 {q['trace_p50_ms'] / q['health_p50_ms']:.0f}x")
        print(f"  GET /api/v2/traces (service, limit 20): p50 {q['search_p50_ms']:.1f} ms  "
              f"p99 {q['search_p99_ms']:.1f} ms")
        print(f"  GET /api/v2/dependencies (1 h): p50 {q['deps_p50_ms']:.1f} ms  max {q['deps_max_ms']:.1f} ms")
        print(f"  RSS {q['rss_full_mb']:.0f} MB with the spans stored vs {q['rss_fresh_mb']:.0f} MB fresh "
              f"(ratio {q['rss_full_mb'] / q['rss_fresh_mb']:.2f})")


if __name__ == "__main__":
    main()
