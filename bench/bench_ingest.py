"""Acknowledged OTLP/HTTP ingest: devbox against the in-memory Jaeger all-in-one, in one run.

    python bench/bench_ingest.py [--seconds 10] [--connections 4,16] [--rounds 2] [--kill] [--lag 20000,50000]
                                 [--profile DIR]

1. Throughput: the same pre-encoded batches (512 spans over 4 services, bench_tracing's spans, each
   batch its own trace ids) posted for ``--seconds`` over N keep-alive connections to devbox (a
   fresh platform: tracing + metrics, as a project runs it) and to Jaeger (fresh, in-memory),
   interleaved, alternating which goes first. Counted: spans in answers 200 (acknowledged); 503
   answers (devbox's back-pressure) are counted and waited out as an exporter does (Retry-After).
   The ratio devbox / Jaeger is printed for each pair of runs.
2. ``--kill``: the same load on devbox; after ``--seconds / 2`` the platform process is killed with
   SIGKILL while the connections post. Restarted on the same state, it indexes what the WAL holds;
   then the stored spans are counted per batch in SQLite: every acknowledged batch must be there
   whole (0 lost). Batches in flight at the kill (written, never answered) may be there too.
3. ``--lag R,...``: paced load at R spans/s for ``--seconds``; every 0.25 s a probe posts one span of
   its own trace and asks the query API for it until it is returned: ack-to-queryable lag, p50/max.

The client is plain ``http.client`` over threads in this process (cheap per request, the same for
both systems); it shares the machine's cores with the server under test, as a local exporter does.
``--profile DIR`` records py-spy (raw collapsed stacks) of the platform and the indexer during the
first devbox throughput run and prints the top frames (self and total).
"""

from __future__ import annotations

import argparse
import collections
import http.client
import itertools
import json
import os
import platform
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psutil

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import bench_tracing  # noqa: E402
import peers  # noqa: E402
import run_all  # noqa: E402
from bench_tracing import BATCH  # noqa: E402
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest  # noqa: E402

PROTOBUF = {"Content-Type": "application/x-protobuf"}


def batches(count: int) -> list[bytes]:
    """``count`` OTLP bodies of 512 spans, batch k's trace ids starting with k (4 bytes): unique spans."""
    template = ExportTraceServiceRequest.FromString(bench_tracing.otlp_bodies(1, seed=0x1D)[0])
    out = []
    for k in range(count):
        req = ExportTraceServiceRequest()
        req.CopyFrom(template)
        prefix = (0x10000000 + k).to_bytes(4, "big")
        for rs in req.resource_spans:
            for ss in rs.scope_spans:
                for sp in ss.spans:
                    sp.trace_id = prefix + sp.trace_id[4:]
        out.append(req.SerializeToString())
    return out


def batch_of(trace_id_hex: str) -> int:
    return int(trace_id_hex[:8], 16) - 0x10000000


@dataclass
class Load:
    """What one load run got back."""

    seconds: float = 0.0
    acked: list[int] = field(default_factory=list)  # batch numbers answered 200
    busy: int = 0
    errors: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def spans_per_s(self) -> float:
        return len(self.acked) * BATCH / self.seconds if self.seconds else 0.0


def post_load(url: str, bodies: list[bytes], connections: int, seconds: float, *, rate: float = 0.0,
              unique: bool = False, stop: threading.Event | None = None, load: Load | None = None) -> Load:
    """Post ``bodies`` (cycled, or each once with ``unique``) over ``connections`` for ``seconds``;
    with ``rate`` (spans/s), paced. A connection that fails (the server was killed) stops. ``load``:
    the object to count into (another thread may watch it)."""
    parts = urlsplit(url)
    load = load or Load()
    numbers = itertools.count()
    stop = stop or threading.Event()
    interval = connections * BATCH / rate if rate else 0.0

    def worker() -> None:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
        due = time.monotonic()
        while not stop.is_set():
            k = next(numbers)
            if unique and k >= len(bodies):
                return
            try:
                conn.request("POST", parts.path, bodies[k % len(bodies)], PROTOBUF)
                r = conn.getresponse()
                r.read()
            except (OSError, http.client.HTTPException):
                with load.lock:
                    load.errors += 1
                return
            if r.status == 200:
                with load.lock:
                    load.acked.append(k % len(bodies))
            elif r.status in (429, 503):
                with load.lock:
                    load.busy += 1
                stop.wait(min(float(r.headers.get("retry-after") or 1), 1.0))
            else:
                raise RuntimeError(f"{url}: {r.status}")
            if interval:
                due += interval
                stop.wait(max(0.0, due - time.monotonic()))

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(connections)]
    started = time.monotonic()
    for t in threads:
        t.start()
    deadline = started + seconds
    for t in threads:  # until the time is up, the caller stops it, or (unique) every body was sent
        t.join(max(0.0, deadline - time.monotonic()))
    stop.set()
    for t in threads:
        t.join(70)
    load.seconds = time.monotonic() - started
    return load


# --- the systems ----------------------------------------------------------------------------


def devbox_server(state: Path, tracing: dict[str, Any]) -> bench_tracing.Server:
    return bench_tracing.Server(state, "tracing,metrics", tracing=tracing)


def devbox_info(server: bench_tracing.Server) -> dict[str, Any]:
    return bench_tracing._info(server)


class Spy:
    """py-spy on a process while a run lasts; raw collapsed stacks into ``out``."""

    def __init__(self, pid: int, out: Path, seconds: float) -> None:
        out.parent.mkdir(parents=True, exist_ok=True)
        self.out = out
        self.proc = subprocess.Popen(["py-spy", "record", "--pid", str(pid), "--duration", str(int(seconds)),
                                      "--rate", "250", "--format", "raw", "--output", str(out), "--nonblocking"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def wait(self) -> None:
        self.proc.wait(60)


def top_frames(collapsed: Path, n: int = 15) -> list[str]:
    """The ``n`` functions with the most samples on top of the stack (self) and anywhere in it (total)."""
    self_count: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        c = int(count)
        frames = [f.split(" (")[0] + " (" + f.split(" (")[-1].split(":")[0].rsplit("/", 1)[-1] + ")"
                  if " (" in f else f for f in stack.split(";")]
        samples += c
        self_count[frames[-1]] += c
        for f in set(frames):
            total[f] += c
    lines = [f"  {samples} samples; self:"]
    lines += [f"    {100 * c / samples:5.1f}%  {f}" for f, c in self_count.most_common(n)]
    lines += ["  total (inclusive):"]
    lines += [f"    {100 * c / samples:5.1f}%  {f}" for f, c in total.most_common(n)]
    return lines


def run_devbox(tmp: Path, name: str, bodies: list[bytes], conns: int, args: argparse.Namespace,
               tracing: dict[str, Any], profile: Path | None = None) -> tuple[Load, dict[str, Any]]:
    server = devbox_server(tmp / name, tracing)
    try:
        url = server.addr["http"] + "/v1/traces"
        post_load(url, bodies[:8], 2, 0.5)  # warm-up: first requests pay imports
        before = _cpu(server)
        spies = []
        if profile is not None:
            spies = [Spy(server.proc.pid, profile / "platform.txt", args.seconds),
                     Spy(server.addr["indexer_pid"], profile / "indexer.txt", args.seconds)]
        load = post_load(url, bodies, conns, args.seconds)
        after = _cpu(server)
        for spy in spies:
            spy.wait()
        info = devbox_info(server)
        spans = max(1, len(load.acked) * BATCH)
        for i, name in enumerate(("platform", "indexer", "check")):
            info[f"{name}_cpu_us_per_span"] = (after[i] - before[i]) / spans * 1e6
        info["rss_mb"] = run_all.tree_rss_mb(server.proc.pid)[1]
        return load, info
    finally:
        server.stop()


def _cpu(server: bench_tracing.Server) -> tuple[float, float, float]:
    """CPU seconds so far of the platform process, the indexer's lanes (the lead and the ones it
    forked) and the check processes (one, or two while exports overlap)."""
    main = psutil.Process(server.proc.pid)
    seconds = [0.0, 0.0, 0.0]
    for process in [main, *main.children(recursive=True)]:
        try:
            times, argv = process.cpu_times(), process.cmdline()
        except psutil.Error:  # gone meanwhile
            continue
        seconds[0 if process.pid == main.pid else 2 if "check" in argv else 1] += times.user + times.system
    return seconds[0], seconds[1], seconds[2]


def run_jaeger(peer: peers.Peer, bodies: list[bytes], conns: int, args: argparse.Namespace) -> tuple[Load, dict]:
    with run_all.jaeger(peer) as target:
        post_load(target["otlp"], bodies[:8], 2, 0.5)
        load = post_load(target["otlp"], bodies, conns, args.seconds)
        rss = psutil.Process(target["pid"]).memory_info().rss / 1e6
        return load, {"rss_mb": rss}


def throughput(args: argparse.Namespace, bodies: list[bytes], tmp: Path, peer: peers.Peer,
               tracing: dict[str, Any]) -> list[tuple[int, float, float]]:
    pairs = []
    for rnd in range(args.rounds):
        for conns in args.connections:
            order = ("devbox", "jaeger") if (rnd + len(pairs)) % 2 == 0 else ("jaeger", "devbox")
            got: dict[str, Load] = {}
            for system in order:
                if system == "jaeger":
                    load, extra = run_jaeger(peer, bodies, conns, args)
                else:
                    profile = args.profile if (args.profile is not None and not pairs and "devbox" not in got) else None
                    load, extra = run_devbox(tmp, f"tp-{rnd}-{conns}", bodies, conns, args, tracing, profile)
                got[system] = load
                print(f"  round {rnd + 1}, {conns:>2} connections, {system:<6}: {load.spans_per_s:>9,.0f} spans/s "
                      f"acknowledged ({len(load.acked) * BATCH:,} spans in {load.seconds:.1f} s; "
                      f"503s {load.busy}, errors {load.errors}) "
                      + " ".join(f"{k} {v:,.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in extra.items()
                                 if k in ("wal_lag_spans", "spans_indexed", "platform_cpu_us_per_span",
                                          "check_cpu_us_per_span", "indexer_cpu_us_per_span", "rss_mb")),
                  flush=True)
            ratio = got["devbox"].spans_per_s / got["jaeger"].spans_per_s
            pairs.append((conns, got["devbox"].spans_per_s, got["jaeger"].spans_per_s))
            print(f"  -> devbox / jaeger = {ratio:.2f}x", flush=True)
    return pairs


def kill_test(args: argparse.Namespace, tmp: Path, tracing: dict[str, Any], conns: int) -> dict[str, int]:
    """Load, SIGKILL mid-load (after ``--seconds / 2``, or once 60 % of the unique batches were
    acknowledged: the load is still on), restart, count stored spans per acknowledged batch.
    Retention is set to keep every span sent: spans it deletes would count as lost."""
    bodies = batches(args.kill_batches)
    state = tmp / "kill"
    tracing = {"max_spans": max(2_000_000, 2 * len(bodies) * BATCH), **tracing}
    server = devbox_server(state, tracing)
    url = server.addr["http"] + "/v1/traces"
    indexer = psutil.Process(server.addr["indexer_pid"])
    stop = threading.Event()
    load = Load()

    def kill() -> None:
        deadline = time.monotonic() + args.seconds / 2
        while len(load.acked) < 0.6 * len(bodies) and not stop.wait(max(0.0, min(0.01, deadline - time.monotonic()))):
            if time.monotonic() >= deadline:
                break
        os.kill(server.proc.pid, signal.SIGKILL)
        stop.set()

    killer = threading.Thread(target=kill)
    killer.start()
    post_load(url, bodies, conns, args.seconds, unique=True, stop=stop, load=load)
    killer.join()
    server.proc.wait(30)
    indexer.wait(30)  # it exits on its pipe's EOF: one writer at a time
    acked = sorted(set(load.acked))
    restarted = devbox_server(state, tracing)
    try:
        run_all.wait_until(lambda: devbox_info(restarted).get("wal_lag_spans", 1) == 0, 600, "re-indexing")
        info = devbox_info(restarted)
    finally:
        restarted.stop()
    db = sqlite3.connect(state / ".devbox" / "tracing.db")
    per_batch = collections.Counter({batch_of(t): n for t, n in db.execute(
        "SELECT substr(trace_id, 1, 8), count(*) FROM spans GROUP BY 1")})
    db.close()
    lost = sum(BATCH - min(BATCH, per_batch.get(k, 0)) for k in acked)
    return {"acknowledged": len(acked) * BATCH, "lost": lost, "stored": sum(per_batch.values()),
            "stored_reported": int(info.get("spans_stored", -1)), "rate": int(load.spans_per_s),
            "errors_at_kill": load.errors}


def lag_test(args: argparse.Namespace, tmp: Path, tracing: dict[str, Any], bodies: list[bytes],
             rate: float) -> dict[str, float]:
    from devbox.mocks.tracing.convert import to_otlp_request
    from devbox.mocks.tracing.models import Span

    server = devbox_server(tmp / f"lag-{int(rate)}", tracing)
    lags: list[float] = []
    missing = 0
    try:
        url = server.addr["http"] + "/v1/traces"
        zipkin = server.addr["zipkin"]
        post_load(url, bodies[:8], 2, 0.5)  # warm, unpaced: ~100k spans to index before the paced load
        run_all.wait_until(lambda: devbox_info(server).get("wal_lag_spans", 1) == 0, 120, "the warm-up indexed")
        stop = threading.Event()
        lookups: list[threading.Thread] = []
        lock = threading.Lock()

        def find(trace_id: str, acked: float) -> None:
            """Asks for one probe's trace until the query API returns it. Each probe on its own: one
            lookup after another would add each query's wait (a query waits ≤ 2 s for the spans
            acknowledged before it to be indexed) to the lag of the probes behind it."""
            nonlocal missing
            client = httpx.Client(timeout=30)
            while True:
                try:
                    found = client.get(f"{zipkin}/api/v2/trace/{trace_id}").status_code == 200
                except httpx.HTTPError:  # the server was stopped: the run took too long to catch up
                    return
                with lock:
                    if found:
                        lags.append(time.monotonic() - acked)
                        return
                    if time.monotonic() - acked > 60:
                        missing += 1
                        return
                # asked again in 20 ms (1 % of the 2 s bound): back to back, the queries took CPU from
                # the niced indexer whose lag they time
                time.sleep(0.02)

        def probe() -> None:
            """Every 0.25 s one span of its own trace, looked up from when it was acknowledged."""
            client = httpx.Client(timeout=30)
            i = 0
            while not stop.wait(0.25):
                i += 1
                trace_id = f"{0xFEED0000 + i:032x}"
                now = time.time_ns() // 1000
                span = Span(trace_id=trace_id, span_id=f"{i:016x}", parent_id=None, name="probe", kind="SERVER",
                            service="probe", start_us=now - 1000, duration_us=10)
                r = client.post(url, content=to_otlp_request([span]).SerializeToString(), headers=PROTOBUF)
                if r.status_code == 200:
                    lookup = threading.Thread(target=find, args=(trace_id, time.monotonic()), daemon=True)
                    lookups.append(lookup)
                    lookup.start()

        prober = threading.Thread(target=probe, daemon=True)
        prober.start()
        load = post_load(url, bodies, args.lag_connections, args.seconds, rate=rate, stop=stop)
        prober.join(40)
        for lookup in lookups:
            lookup.join(70)  # each gives up 60 s after its probe was acknowledged
        info = devbox_info(server)
    finally:
        server.stop()
    lags.sort()
    return {"rate": load.spans_per_s, "busy": load.busy, "probes": len(lags), "missing": missing,
            "p50_s": statistics.median(lags) if lags else float("nan"),
            "p99_s": lags[min(len(lags) - 1, -(-len(lags) * 99 // 100) - 1)] if lags else float("nan"),
            "max_s": lags[-1] if lags else float("nan"), "lag_spans_end": info.get("wal_lag_spans", 0)}


def drain_test(tmp: Path, tracing: dict[str, Any], bodies: list[bytes], tag: str) -> dict[str, Any]:
    """The sustained indexing rate: ``bodies`` (each once) posted as fast as they are acknowledged
    (far faster than they are indexed), then the time from the first post until the WAL lag is 0."""
    server = devbox_server(tmp / f"drain-{tag}", tracing)
    try:
        url = server.addr["http"] + "/v1/traces"
        post_load(url, bodies[:4], 2, 0.5)  # warm: imports, the check process, the first index pass
        run_all.wait_until(lambda: devbox_info(server).get("wal_lag_spans", 1) == 0, 60, "the warm-up indexed")
        before = time.monotonic()
        cpu0 = _cpu(server)
        load = post_load(url, bodies, 4, 3600, unique=True)
        acked = time.monotonic() - before
        # every 50 ms (1 % of a 5 s drain): each poll costs the platform and this process CPU the
        # niced indexer would otherwise get
        run_all.wait_until(lambda: devbox_info(server).get("wal_lag_spans", 1) == 0, 600, "the drain indexed",
                           every=0.05)
        took = time.monotonic() - before
        cpu1 = _cpu(server)
    finally:
        server.stop()
    spans = len(load.acked) * BATCH
    return {"spans": spans, "acked_s": acked, "indexed_s": took, "rate": spans / took,
            "cpu": {k: b - a for k, a, b in zip(("platform", "indexer lanes", "check processes"), cpu0, cpu1,
                                                strict=True)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=lambda s: [int(x) for x in s.split(",")], default=[4, 16])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batches", type=int, default=400, help="distinct pre-encoded batches, cycled")
    parser.add_argument("--kill", action="store_true", help="also the kill -9 test under load")
    parser.add_argument("--kill-batches", type=int, default=2000, help="unique batches for the kill test")
    parser.add_argument("--lag", type=lambda s: [float(x) for x in s.split(",")], default=[],
                        help="paced rates (spans/s) for the ack-to-queryable lag")
    parser.add_argument("--lag-connections", type=int, default=4)
    parser.add_argument("--no-throughput", action="store_true")
    parser.add_argument("--drain", type=int, default=0,
                        help="sustained indexing: post this many spans at once and time until all are indexed, "
                             "for each --drain-lanes value (alternating, --rounds times)")
    parser.add_argument("--drain-lanes", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2])
    parser.add_argument("--tracing", type=json.loads, default={},
                        help='devbox tracing config overrides, JSON (e.g. \'{"max_pending_spans": 2000000}\')')
    parser.add_argument("--profile", type=Path, help="py-spy the first devbox run into this directory")
    args = parser.parse_args()
    print(f"bench_ingest, {time.strftime('%Y-%m-%d %H:%M')}, {platform.node()}: {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}; {args.seconds:.0f} s per run, {BATCH}-span OTLP/HTTP batches; "
          f"devbox tracing overrides {args.tracing or 'none'}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp_name:
        tmp = Path(tmp_name)
        bodies = batches(args.batches)
        if not args.no_throughput:
            peer = peers.ensure(("jaeger",))["jaeger"]
            if not peer.ok:
                raise SystemExit(f"jaeger: {peer.missing}")
            pairs = throughput(args, bodies, tmp, peer, args.tracing)
            ratios = [d / j for _, d, j in pairs]
            print("OTLP/HTTP acknowledged ingest, devbox / Jaeger in-memory: ratios "
                  f"{', '.join(f'{r:.2f}' for r in ratios)} (median {statistics.median(ratios):.2f}x)", flush=True)
            if args.profile is not None:
                for name in ("platform", "indexer"):
                    path = args.profile / f"{name}.txt"
                    if path.exists():
                        print(f"py-spy, devbox {name} process, first run:")
                        print("\n".join(top_frames(path)))
        if args.kill:
            k = kill_test(args, tmp, args.tracing, max(args.connections))
            print(f"kill -9 under load ({max(args.connections)} connections, {k['rate']:,} spans/s before the kill): "
                  f"acknowledged {k['acknowledged']:,}, lost {k['lost']}, stored {k['stored']:,} "
                  f"(reported {k['stored_reported']:,}; requests cut by the kill {k['errors_at_kill']})", flush=True)
        if args.drain:
            drain_bodies = batches(args.drain // BATCH)
            rates: dict[int, list[float]] = {lanes: [] for lanes in args.drain_lanes}
            for r in range(args.rounds):
                order = args.drain_lanes if r % 2 == 0 else list(reversed(args.drain_lanes))
                for lanes in order:
                    d = drain_test(tmp, {**args.tracing, "index_lanes": lanes}, drain_bodies, f"{r}-{lanes}")
                    rates[lanes].append(d["rate"])
                    cpu = ", ".join(f"{k} {v:.1f} s" for k, v in d["cpu"].items())
                    print(f"drain, {lanes} lane(s): {d['spans']:,} spans acknowledged in {d['acked_s']:.1f} s, "
                          f"all indexed after {d['indexed_s']:.1f} s: {d['rate']:,.0f} spans/s indexed (CPU {cpu})",
                          flush=True)
            base = statistics.median(rates[args.drain_lanes[0]])
            for lanes, got in rates.items():
                print(f"drain, {lanes} lane(s): median {statistics.median(got):,.0f} spans/s, "
                      f"{statistics.median(got) / base:.2f}x {args.drain_lanes[0]} lane(s)", flush=True)
        for rate in args.lag:
            r = lag_test(args, tmp, args.tracing, bodies, rate)
            print(f"paced {rate:,.0f} spans/s: acknowledged {r['rate']:,.0f} spans/s (503s {r['busy']}); "
                  f"ack -> queryable over {r['probes']} probes: p50 {r['p50_s']:.2f} s, p99 {r['p99_s']:.2f} s, "
                  f"max {r['max_s']:.2f} s, never {r['missing']}; WAL lag at the end {r['lag_spans_end']:,} spans",
                  flush=True)


if __name__ == "__main__":
    main()
