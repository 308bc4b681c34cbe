"""`make bench`: devbox against the peers a user would pick instead, in one run, each figure with its ratio.

Peers (bench/peers.py builds or fetches them once into ~/.cache/devbox-bench; one that cannot be
had is skipped with the reason): Jaeger all-in-one v1 (in-memory), Zipkin server (in-memory),
Prometheus (Debian), plus a bare discard endpoint on devbox's own server (the parse ceiling).

1. OTLP/HTTP ingest, spans/s: the same pre-encoded batches (bench_tracing's generator) to devbox,
   Jaeger and the discard endpoint; Zipkin JSON of the same spans to devbox and Zipkin.
   Acknowledged ingest over a fixed time (bench_ingest: fresh systems, N connections, 503s waited
   out) against Jaeger is the ``ack`` section.
2. Queries on what each stored in 1.: trace by id (a 1,000-span and a 16-span trace) and a search
   (service, limit 20), p50 over --queries.
3. Metrics: the same samples ingested by devbox (OTLP/HTTP) and by Prometheus's own write path
   (promtool tsdb create-blocks-from openmetrics); then bench_metrics' query comparison
   (``sum by (a,b)(rate(x_total[1m]))``, 1 h x 1 s, 20 series) against Prometheus on those samples.
4. Start to healthy (every listener answering) for an empty project, and idle RSS, vs Jaeger and Zipkin.

    python bench/run_all.py [--requests 60] [--workers 4] [--queries 40] [--only ingest,query,metrics,start]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

import bench_metrics  # noqa: E402
import bench_tracing  # noqa: E402
import peers  # noqa: E402
from bench_start import GRPC_LISTENERS, LISTENERS, free_port, http2_answers, up_empty  # noqa: E402
from bench_tracing import BATCH, blast, http_sender, make_spans  # noqa: E402
from devbox.mocks.tracing.convert import to_otlp_request, to_zipkin  # noqa: E402


def wait_until(check: Callable[[], bool], timeout: float, what: str, *, every: float = 0.01) -> float:
    """Seconds until ``check()`` holds, asked every ``every`` seconds; RuntimeError past ``timeout``."""
    started = time.monotonic()
    while True:
        try:
            if check():
                return time.monotonic() - started
        except (OSError, httpx.HTTPError):
            pass
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"{what}: not within {timeout:.0f} s")
        time.sleep(every)


#: One client for the readiness polls: a new one per poll would load the CA bundle each time.
POLL = httpx.Client(timeout=2, verify=False)


def http_ok(url: str) -> bool:
    return POLL.get(url).status_code == 200


def tree_rss_mb(pid: int) -> tuple[float, float]:
    """(the process's RSS, with its children) in MB."""
    proc = psutil.Process(pid)
    own = proc.memory_info().rss
    children = sum(c.memory_info().rss for c in proc.children(recursive=True))
    return own / 1e6, (own + children) / 1e6


class Proc:
    """A peer process on free ports, stopped on exit."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> None:
        self.started = time.monotonic()
        self.proc = subprocess.Popen(argv, env={**os.environ, **(env or {})}, cwd=cwd, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


@contextlib.contextmanager
def jaeger(peer: peers.Peer) -> Iterator[dict[str, Any]]:
    ports = {k: free_port() for k in ("otlp_http", "otlp_grpc", "query", "admin", "grpc", "http", "qgrpc")}
    assert peer.argv is not None
    proc = Proc([*peer.argv, f"--collector.otlp.http.host-port=127.0.0.1:{ports['otlp_http']}",
                 f"--collector.otlp.grpc.host-port=127.0.0.1:{ports['otlp_grpc']}",
                 f"--collector.grpc-server.host-port=127.0.0.1:{ports['grpc']}",
                 f"--collector.http-server.host-port=127.0.0.1:{ports['http']}",
                 f"--query.http-server.host-port=127.0.0.1:{ports['query']}",
                 f"--query.grpc-server.host-port=127.0.0.1:{ports['qgrpc']}",
                 f"--admin.http.host-port=127.0.0.1:{ports['admin']}"], env={"SPAN_STORAGE_TYPE": "memory"})
    try:
        healthy = wait_until(lambda: http_ok(f"http://127.0.0.1:{ports['admin']}/")
                             and http_ok(f"http://127.0.0.1:{ports['query']}/api/services"), 60, "jaeger")
        yield {"pid": proc.proc.pid, "healthy_s": healthy,
               "otlp": f"http://127.0.0.1:{ports['otlp_http']}/v1/traces",
               "trace": f"http://127.0.0.1:{ports['query']}/api/traces/{{}}",
               "search": f"http://127.0.0.1:{ports['query']}/api/traces?service={{}}&limit=20&lookback=1h",
               "count": lambda body: sum(len(t["spans"]) for t in body["data"])}
    finally:
        proc.stop()


@contextlib.contextmanager
def zipkin(peer: peers.Peer) -> Iterator[dict[str, Any]]:
    port = free_port()
    assert peer.argv is not None
    proc = Proc(peer.argv, env={"QUERY_PORT": str(port), "STORAGE_TYPE": "mem", "MEM_MAX_SPANS": "2000000"})
    base = f"http://127.0.0.1:{port}"
    try:
        healthy = wait_until(lambda: http_ok(base + "/health"), 120, "zipkin")
        yield {"pid": proc.proc.pid, "healthy_s": healthy, "zipkin": base + "/api/v2/spans",
               "trace": base + "/api/v2/trace/{}", "search": base + "/api/v2/traces?serviceName={}&limit=20",
               "count": lambda body: len(body)}
    finally:
        proc.stop()


@contextlib.contextmanager
def devbox_tracing(tmp: Path) -> Iterator[dict[str, Any]]:
    server = bench_tracing.Server(tmp / "devbox-tracing")
    zipkin_base = server.addr["zipkin"]
    try:
        yield {"server": server, "otlp": server.addr["http"] + "/v1/traces",
               "discard": server.addr["http"] + "/discard/v1/traces", "zipkin": zipkin_base + "/api/v2/spans",
               "trace": zipkin_base + "/api/v2/trace/{}",
               "search": zipkin_base + "/api/v2/traces?serviceName={}&limit=20",
               "count": lambda body: len(body)}
    finally:
        server.stop()


# --- 1 + 2: spans ---------------------------------------------------------------------------


def span_batches(requests: int) -> tuple[list[bytes], list[bytes], str, str]:
    """The same spans as OTLP protobuf and as Zipkin JSON; the ids of a 1,000-span and a 16-span trace."""
    now = time.time_ns() // 1000 - 600_000_000
    batches = [make_spans(BATCH, seed=7000 + r, start_us=now + r * 100_000) for r in range(requests)]
    big = make_spans(1000, seed=0xB16, start_us=now, trace_size=1000)
    batches += [big[:500], big[500:]]
    otlp = [to_otlp_request(b).SerializeToString() for b in batches]
    zjson = [json.dumps([to_zipkin(s) for s in b]).encode() for b in batches]
    return otlp, zjson, big[0].trace_id, batches[0][0].trace_id


def json_sender(url: str) -> Callable[[bytes], None]:
    import threading

    local = threading.local()

    def send(body: bytes) -> None:
        if not hasattr(local, "client"):
            local.client = httpx.Client(timeout=60)
        local.client.post(url, content=body, headers={"content-type": "application/json"}).raise_for_status()

    return send


def p50_ms(url: str, n: int, count: Callable[[Any], int], expect: int) -> float:
    with httpx.Client(timeout=60) as client:
        wait_until(lambda: count(client.get(url).json()) >= expect, 120, f"{url}: {expect} spans queryable")
        for _ in range(5):  # warm-up (a JVM peer compiles its query path on the first ones)
            client.get(url)
        times = []
        for _ in range(n):
            t = time.perf_counter()
            client.get(url).raise_for_status()
            times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def queries(target: dict[str, Any], args: argparse.Namespace, big: str, small: str) -> dict[str, float]:
    return {"trace 1000 p50 ms": p50_ms(target["trace"].format(big), args.queries, target["count"], 1000),
            "trace 16 p50 ms": p50_ms(target["trace"].format(small), args.queries, target["count"], 16),
            "search p50 ms": p50_ms(target["search"].format("orders"), args.queries, lambda b: 1, 1)}


def bench_spans(args: argparse.Namespace, found: dict[str, peers.Peer], tmp: Path, out: Report) -> None:
    otlp, zjson, big, small = span_batches(args.requests)
    spans = (len(otlp) - 2) * BATCH + 1000
    out.head(f"spans: {spans:,} in {len(otlp)} requests, {args.workers} connections (same bytes to each)")
    with devbox_tracing(tmp) as dbx:
        warm = bench_tracing.otlp_bodies(4, seed=1)  # first requests pay imports and JIT-like warm-up
        blast(http_sender(dbx["discard"]), warm, args.workers)
        blast(http_sender(dbx["otlp"]), warm, args.workers)
        ceiling = spans / blast(http_sender(dbx["discard"]), otlp, args.workers)
        ours = spans / blast(http_sender(dbx["otlp"]), otlp, args.workers)
        wait_until(lambda: bench_tracing._info(dbx["server"]).get("wal_lag_spans", 0) == 0, 300, "devbox indexing")
        ours_z = spans / blast(json_sender(dbx["zipkin"]), zjson, args.workers)
        dq = queries(dbx, args, big, small)
    figures: dict[str, dict[str, float]] = {"devbox": {"otlp": ours, "zipkin": ours_z, **dq}}
    for name, run in (("jaeger", jaeger), ("zipkin", zipkin)):
        peer = found[name]
        if not peer.ok:
            out.skip(name, peer.missing)
            continue
        with run(peer) as target:
            kind, data, sender = ("otlp", otlp, http_sender) if name == "jaeger" else ("zipkin", zjson, json_sender)
            figures[name] = {kind: spans / blast(sender(target[kind]), data, args.workers), **queries(target, args, big,
                                                                                                     small)}
    out.row("OTLP/HTTP ingest, spans/s", ours, {"discard ceiling": ceiling,
                                                 **({"jaeger": figures["jaeger"]["otlp"]} if "jaeger" in figures
                                                    else {})}, higher=True)
    if "zipkin" in figures:
        out.row("Zipkin JSON ingest, spans/s", ours_z, {"zipkin": figures["zipkin"]["zipkin"]}, higher=True)
    for key in ("trace 1000 p50 ms", "trace 16 p50 ms", "search p50 ms"):
        out.row(key.replace(" p50 ms", "") + f" p50 ms ({spans:,} stored)", figures["devbox"][key],
                {n: f[key] for n, f in figures.items() if n != "devbox"}, higher=False)


def bench_ack(args: argparse.Namespace, found: dict[str, peers.Peer], tmp: Path, out: Report) -> None:
    """bench_ingest's comparison: acknowledged spans/s for --ack-seconds per run, fresh systems, interleaved."""
    import bench_ingest

    if not found["jaeger"].ok:
        out.skip("jaeger", found["jaeger"].missing)
        return
    runs = argparse.Namespace(seconds=args.ack_seconds, connections=[4, 16], rounds=1, profile=None)
    for conns, ours, theirs in bench_ingest.throughput(runs, bench_ingest.batches(400), tmp, found["jaeger"], {}):
        out.row(f"acknowledged OTLP/HTTP, {conns} conns, spans/s", ours, {"jaeger": theirs}, higher=True)


# --- 3: metrics -------------------------------------------------------------------------------


def otlp_metric_batches(points: list[Any], per_batch: int = 6000) -> list[bytes]:
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

    bodies = []
    for start in range(0, len(points), per_batch):
        req = ExportMetricsServiceRequest()
        rm = req.resource_metrics.add()
        kv = rm.resource.attributes.add()
        kv.key, kv.value.string_value = "service.name", "bench"
        metric = rm.scope_metrics.add().metrics.add(name="x_total")
        metric.sum.is_monotonic = True
        metric.sum.aggregation_temporality = 2  # cumulative
        for p in points[start:start + per_batch]:
            dp = metric.sum.data_points.add(as_double=p.value, time_unix_nano=int(p.ts * 1e9))
            for key, value in p.labels:
                attr = dp.attributes.add()
                attr.key, attr.value.string_value = key, value
        bodies.append(req.SerializeToString())
    return bodies


def bench_metrics_vs_prometheus(args: argparse.Namespace, found: dict[str, peers.Peer], tmp: Path,
                                out: Report) -> None:
    end = int(time.time()) // 60 * 60 - 60
    points = bench_metrics._issue15_points(end)
    bodies = otlp_metric_batches(points)
    server = bench_metrics._Server(bench_metrics._PLATFORM, str(tmp / "devbox-metrics"))
    try:
        with httpx.Client(timeout=120) as http:
            started = time.perf_counter()
            for body in bodies:
                http.post(server.urls["otlp"] + "/v1/metrics", content=body,
                          headers={"Content-Type": "application/x-protobuf"}).raise_for_status()
            ours = len(points) / (time.perf_counter() - started)
    finally:
        server.close()
    peer = found["prometheus"]
    if not peer.ok:
        out.skip("prometheus", peer.missing)
        return
    promtool = shutil.which("promtool")
    assert promtool is not None
    (tmp / "data.om").write_text(bench_metrics._openmetrics(points))
    started = time.perf_counter()
    subprocess.run([promtool, "tsdb", "create-blocks-from", "openmetrics", str(tmp / "data.om"), str(tmp / "tsdb")],
                   check=True, capture_output=True)
    theirs = len(points) / (time.perf_counter() - started)
    out.row(f"metrics ingest, {len(points):,} samples, points/s", ours, {"prometheus (promtool)": theirs},
            higher=True)
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):
        bench_metrics.prometheus_comparison(runs=args.metric_runs)
    out.line("  bench_metrics.prometheus_comparison (its ratio is devbox's latency / Prometheus's: <1 is devbox "
             "better):")
    for line in captured.getvalue().splitlines():
        if "ratio" in line:
            out.line("    " + line.strip())


# --- 4: start and idle RSS ----------------------------------------------------------------------


@contextlib.contextmanager
def _up_empty(tmp: Path, name: str, *, handshake: bool) -> Iterator[tuple[int, dict[str, int], dict[str, float]]]:
    """A `devbox up` of an empty project (bench_start's) serving: (its pid, its ports, its start
    figures); Ctrl-C'd on exit."""
    project = tmp / name
    project.mkdir()
    ports = {listener: free_port() for listener in LISTENERS}
    proc, start = up_empty(project, handshake=handshake, ports=ports)
    try:
        yield proc.pid, ports, start
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def devbox_up_empty(tmp: Path) -> dict[str, float]:
    """`devbox up` of an empty project: seconds until every listener serves (api: /healthz 200;
    HTTP: no longer 'starting'; gRPC: an HTTP/2 handshake). Then, in a second one whose gRPC
    listeners were probed by connecting only (grpc is loaded by a client's first bytes), idle RSS
    after 3 s, and again after an HTTP/2 handshake on each gRPC listener."""
    with _up_empty(tmp, "empty-start", handshake=True) as (_, _, start):
        figures = {"healthy_s": start["serve_s"], "cpu_s": start["cpu_s"]}
    with _up_empty(tmp, "empty-idle", handshake=False) as (pid, ports, _):
        time.sleep(3)
        figures["rss"], figures["rss_tree"] = tree_rss_mb(pid)
        for listener in GRPC_LISTENERS:
            http2_answers(ports[listener])
        time.sleep(3)
        figures["rss_grpc"] = tree_rss_mb(pid)[0]
    return figures


def bench_start(args: argparse.Namespace, found: dict[str, peers.Peer], tmp: Path, out: Report) -> None:
    ours = devbox_up_empty(tmp)
    others: dict[str, dict[str, float]] = {}
    for name, run in (("jaeger", jaeger), ("zipkin", zipkin)):
        if not found[name].ok:
            out.skip(name, found[name].missing)
            continue
        with run(found[name]) as target:
            time.sleep(3)
            others[name] = {"healthy_s": target["healthy_s"], "rss": tree_rss_mb(target["pid"])[1]}
    out.row("start to healthy, empty project, s", ours["healthy_s"], {n: f["healthy_s"] for n, f in others.items()},
            higher=False, note=f"devbox CPU to healthy {ours['cpu_s']:.2f} s")
    out.row("idle RSS, MB (devbox: main process)", ours["rss"], {n: f["rss"] for n, f in others.items()},
            higher=False, note=f"with its worker processes {ours['rss_tree']:.0f} MB; after a gRPC "
                                f"client's handshake, grpc loaded: {ours['rss_grpc']:.0f} MB")


# --- report --------------------------------------------------------------------------------------


class Report:
    """Prints as it goes: figure, then each peer's figure and devbox's ratio to it (>1 is devbox better)."""

    def head(self, text: str) -> None:
        print(f"\n{text}", flush=True)

    def line(self, text: str) -> None:
        print(text, flush=True)

    def skip(self, peer: str, why: str) -> None:
        print(f"  SKIPPED {peer}: {why}", flush=True)

    def row(self, what: str, ours: float, theirs: dict[str, float], *, higher: bool, note: str = "") -> None:
        parts = []
        for name, value in theirs.items():
            ratio = ours / value if higher else value / ours
            parts.append(f"{name} {_fmt(value)} (devbox {ratio:.2f}x)")
        print(f"  {what:<44} devbox {_fmt(ours):>9}   " + "; ".join(parts) + (f"   [{note}]" if note else ""),
              flush=True)


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=60, help="OTLP requests of 512 spans per system")
    parser.add_argument("--workers", type=int, default=4, help="client connections")
    parser.add_argument("--queries", type=int, default=40, help="requests per query p50")
    parser.add_argument("--metric-runs", type=int, default=7, help="interleaved PromQL runs per system")
    parser.add_argument("--peers", default="jaeger,zipkin,prometheus", help="peers to build/run (others skipped)")
    parser.add_argument("--ack-seconds", type=float, default=20.0, help="seconds per acknowledged-ingest run")
    parser.add_argument("--only", default="start,ingest,ack,metrics",
                        help="sections: start, ingest (+queries), ack (acknowledged ingest vs Jaeger), metrics")
    args = parser.parse_args()
    began = time.monotonic()
    wanted = tuple(p.strip() for p in args.peers.split(",") if p.strip())
    found = {name: peers.Peer(name, missing="not in --peers") for name in ("jaeger", "zipkin", "prometheus")}
    found.update(peers.ensure(wanted))
    print(f"devbox bench, {time.strftime('%Y-%m-%d %H:%M')}, {platform.node()}: {os.cpu_count()} CPUs, "
          f"{psutil.virtual_memory().total / 2**30:.0f} GiB, load average {os.getloadavg()[0]:.1f}; ratios are "
          "devbox's speed relative to each peer in this run (>1: devbox better)")
    for peer in found.values():
        print(f"  peer {peer.name}: {' '.join(peer.argv) if peer.argv else 'SKIPPED (' + peer.missing + ')'}")
    out = Report()
    sections = {s.strip() for s in args.only.split(",")}
    with tempfile.TemporaryDirectory(prefix="devbox-bench-") as tmp_name:
        tmp = Path(tmp_name)
        if "start" in sections:
            out.head("start and memory")
            bench_start(args, found, tmp, out)
        if "ingest" in sections:
            bench_spans(args, found, tmp, out)
        if "ack" in sections:
            out.head(f"acknowledged OTLP/HTTP ingest, {args.ack_seconds:.0f} s per run (bench/bench_ingest.py)")
            bench_ack(args, found, tmp, out)
        if "metrics" in sections:
            out.head("metrics vs Prometheus")
            bench_metrics_vs_prometheus(args, found, tmp, out)
    print(f"\nmake bench took {time.monotonic() - began:.0f} s")


if __name__ == "__main__":
    main()
