"""Queries with a large store (issue 15): the same spans loaded into devbox, Jaeger all-in-one
(in-memory) and Zipkin (in-memory), one after the other in one run, then p50/p99 of

  1. trace by id, a 1,000-span trace (target p99 <= 50 ms) and a 10-span trace;
  2. search: one service, last hour, limit 20 (target p99 <= 100 ms);
  3. dependencies over the last hour (target <= 200 ms).

Loading: --spans unique spans as 512-span OTLP/HTTP protobuf batches (bench_ingest's generator: one
template, each batch its own trace ids) to devbox and Jaeger, the same spans as Zipkin JSON to
Zipkin. A 503/429 answer is waited out (Retry-After) and the batch sent again, so every span is
acknowledged; before measuring, devbox's WAL lag must be 0 and every system must return the
1,000-span trace whole. devbox's indexer is far slower than its acknowledgement (~5k spans/s on a
busy 2-core VM): --load-timeout bounds the wait; past it the figures are taken at what is indexed
and the output says so.

    python bench/bench_queries.py [--spans 1000000] [--queries 200] [--peers jaeger,zipkin]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import queue
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psutil

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import bench_ingest  # noqa: E402
import bench_tracing  # noqa: E402
import peers  # noqa: E402
import run_all  # noqa: E402
from bench_tracing import BATCH, make_spans  # noqa: E402
from devbox.mocks.tracing.convert import to_otlp_request, to_zipkin  # noqa: E402

HOUR_MS = 3_600_000


def special_traces() -> tuple[list[Any], list[Any]]:
    """A 1,000-span and a 10-span trace, 5 minutes old, ids outside bench_ingest's range."""
    now = time.time_ns() // 1000 - 300_000_000
    return (make_spans(1000, seed=0xB16, start_us=now, trace_size=1000),
            make_spans(10, seed=0x5A11, start_us=now + 1000, trace_size=10))


def zipkin_bodies(count: int) -> list[bytes]:
    """The Zipkin JSON twins of ``bench_ingest.batches(count)``: same template, same trace-id prefixes."""
    now = time.time_ns() // 1000 - 600_000_000
    template = json.dumps([to_zipkin(s) for s in make_spans(BATCH, seed=0x1D, start_us=now)])
    marker = f'"traceId": "{0x1D:08x}'
    assert template.count(marker) == BATCH, "to_zipkin's JSON layout changed"
    return [template.replace(marker, f'"traceId": "{0x10000000 + k:08x}').encode() for k in range(count)]


def load_all(url: str, bodies: list[bytes], connections: int, content_type: str) -> dict[str, float]:
    """Post every body once over ``connections``; a 429/503 is waited out and the body sent again."""
    parts = urlsplit(url)
    todo: queue.Queue[bytes] = queue.Queue()
    for body in bodies:
        todo.put(body)
    stats = {"busy": 0, "acked": 0}
    lock = threading.Lock()

    def worker() -> None:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
        while True:
            try:
                body = todo.get_nowait()
            except queue.Empty:
                return
            while True:
                conn.request("POST", parts.path, body, {"Content-Type": content_type})
                r = conn.getresponse()
                r.read()
                if r.status in (200, 202):
                    with lock:
                        stats["acked"] += 1
                    break
                if r.status not in (429, 503):
                    raise RuntimeError(f"{url}: {r.status}")
                with lock:
                    stats["busy"] += 1
                time.sleep(min(float(r.headers.get("retry-after") or 1), 2.0))

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(connections)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"seconds": time.monotonic() - started, **stats}


def timings(client: httpx.Client, url: str, n: int, check: Callable[[Any], bool], budget: float) -> dict[str, float]:
    """p50/p99/max in ms of ``n`` GETs after 2 warm-ups, fewer (at least 3) if they pass ``budget``
    seconds (a peer answering in tens of seconds would hold the run for hours); every answer must
    pass ``check``. With fewer than 100 samples p99 is the maximum."""
    for _ in range(2):
        client.get(url)
    times: list[float] = []
    began = time.monotonic()
    for _ in range(n):
        if len(times) >= 3 and time.monotonic() - began > budget:
            break
        t = time.perf_counter()
        r = client.get(url)
        times.append((time.perf_counter() - t) * 1000)
        r.raise_for_status()
        body = r.json()
        if not check(body):
            raise RuntimeError(f"{url}: unexpected answer {r.text[:200]}")
    size = len(body) if isinstance(body, list) else len(body.get("data") or [])
    times.sort()
    return {"p50": statistics.median(times), "p99": times[min(len(times) - 1, int(len(times) * 0.99))],
            "max": times[-1], "items": size, "n": len(times)}


def measure(target: dict[str, Any], args: argparse.Namespace, big: str, small: str) -> dict[str, dict[str, float]]:
    end_ms = int(time.time() * 1000)
    with httpx.Client(timeout=120) as client:
        return {
            "trace 1000": timings(client, target["trace"].format(big), args.queries,
                                  lambda b: target["count"](b) == 1000, args.budget),
            "trace 10": timings(client, target["trace"].format(small), args.queries,
                                lambda b: target["count"](b) == 10, args.budget),
            "search": timings(client, target["search"].format(svc="orders", end=end_ms), args.queries,
                              lambda b: target["traces"](b) >= 1, args.budget),
            "dependencies": timings(client, target["deps"].format(end=end_ms), max(10, args.queries // 4),
                                    lambda b: target["links"](b) > 0, args.budget),
        }


@contextlib.contextmanager
def devbox(tmp: Path) -> Iterator[dict[str, Any]]:
    server = bench_ingest.devbox_server(tmp / "devbox-queries", {})
    z = server.addr["zipkin"] + "/api/v2"
    try:
        yield {"server": server, "pid": server.proc.pid, "otlp": server.addr["http"] + "/v1/traces",
               "trace": z + "/trace/{}", "count": len,
               "search": z + "/traces?serviceName={svc}&endTs={end}&lookback=3600000&limit=20", "traces": len,
               "deps": z + "/dependencies?endTs={end}&lookback=3600000", "links": len}
    finally:
        server.stop()


def jaeger_target(target: dict[str, Any]) -> dict[str, Any]:
    q = target["trace"].split("/api/")[0] + "/api"
    return {**target, "count": lambda b: sum(len(t["spans"]) for t in b["data"]),
            "search": q + "/traces?service={svc}&limit=20&lookback=1h", "traces": lambda b: len(b["data"]),
            "deps": q + "/dependencies?endTs={end}&lookback=3600000", "links": lambda b: len(b["data"])}


def zipkin_target(target: dict[str, Any]) -> dict[str, Any]:
    z = target["trace"].split("/api/")[0] + "/api/v2"
    return {**target, "search": z + "/traces?serviceName={svc}&endTs={end}&lookback=3600000&limit=20",
            "traces": len, "deps": z + "/dependencies?endTs={end}&lookback=3600000", "links": len}


def wait_whole(target: dict[str, Any], big: str, timeout: float) -> float:
    with httpx.Client(timeout=60) as client:
        def whole() -> bool:
            r = client.get(target["trace"].format(big))
            return r.status_code == 200 and target["count"](r.json()) == 1000

        return run_all.wait_until(whole, timeout, "the 1,000-span trace whole")


def tree_rss_mb(pid: int) -> float:
    return run_all.tree_rss_mb(pid)[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spans", type=int, default=1_000_000, help="spans stored (rounded to 512-span batches)")
    parser.add_argument("--queries", type=int, default=200, help="requests per trace/search figure (deps: a quarter)")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--budget", type=float, default=45, help="s of sampling per figure before it stops early")
    parser.add_argument("--peers", default="jaeger,zipkin", help="peers to run (devbox always runs last)")
    parser.add_argument("--load-timeout", type=float, default=900, help="s to wait for devbox to index everything")
    args = parser.parse_args()
    wanted = tuple(p for p in args.peers.split(",") if p)
    found = peers.ensure(wanted) if wanted else {}
    count = max(1, (args.spans - 1010) // BATCH)
    big_spans, small_spans = special_traces()
    big, small = big_spans[0].trace_id, small_spans[0].trace_id
    made = time.monotonic()
    otlp = bench_ingest.batches(count) + [to_otlp_request(s).SerializeToString()
                                          for s in (big_spans[:500], big_spans[500:], small_spans)]
    zjson = (zipkin_bodies(count) + [json.dumps([to_zipkin(x) for x in s]).encode()
                                     for s in (big_spans[:500], big_spans[500:], small_spans)]
             if "zipkin" in wanted else [])
    total = count * BATCH + 1010
    print(f"bench_queries {time.strftime('%Y-%m-%d %H:%M')}, {platform.node()}: {os.cpu_count()} CPUs, "
          f"{psutil.virtual_memory().total / 2**30:.0f} GiB, load average {os.getloadavg()}; {total:,} spans "
          f"({len(otlp)} requests, made in {time.monotonic() - made:.0f} s), {args.connections} connections",
          flush=True)
    results: dict[str, dict[str, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="devbox-bench-q-") as tmp_name:
        for name in (*wanted, "devbox"):
            if name != "devbox" and not found[name].ok:
                print(f"  SKIPPED {name}: {found[name].missing}", flush=True)
                continue
            cm = (devbox(Path(tmp_name)) if name == "devbox" else
                  run_all.jaeger(found[name]) if name == "jaeger" else run_all.zipkin(found[name]))
            with cm as raw:
                target = raw if name == "devbox" else jaeger_target(raw) if name == "jaeger" else zipkin_target(raw)
                if name == "zipkin":
                    got = load_all(target["zipkin"], zjson, args.connections, "application/json")
                else:
                    got = load_all(target["otlp"], otlp, args.connections, "application/x-protobuf")
                note = ""
                if name == "devbox":
                    server = target["server"]
                    began = time.monotonic()
                    info = bench_tracing._info(server)
                    while info.get("wal_lag_spans", 0) > 0 and time.monotonic() - began < args.load_timeout:
                        time.sleep(2)
                        info = bench_tracing._info(server)
                    stored = int(info.get("spans_stored", 0))
                    note = (f"; indexed {time.monotonic() - began + got['seconds']:.0f} s after the first post, "
                            f"stored {stored:,}, WAL lag {info.get('wal_lag_spans', 0):,}")
                try:
                    whole = wait_whole(target, big, 120)
                except RuntimeError as exc:  # a peer that loses spans is reported, not measured
                    print(f"{name}: {got['acked']:,.0f} requests acknowledged in {got['seconds']:.1f} s, then {exc}"
                          " -- not measured", flush=True)
                    continue
                print(f"{name}: {got['acked'] * 1:,.0f} requests acknowledged in {got['seconds']:.1f} s "
                      f"({total / got['seconds']:,.0f} spans/s, {got['busy']:.0f} busy answers waited out){note}; "
                      f"1,000-span trace whole {whole:.1f} s later; load average {os.getloadavg()[0]:.1f}",
                      flush=True)
                results[name] = measure(target, args, big, small)
                for key, r in results[name].items():
                    print(f"  {key:<13} p50 {r['p50']:8.1f} ms   p99 {r['p99']:8.1f} ms   max {r['max']:8.1f} ms   "
                          f"(n={r['n']:.0f}, {r['items']:.0f} items in the answer)",
                          flush=True)
                print(f"  RSS with the spans stored: {tree_rss_mb(target['pid']):,.0f} MB (with child processes); "
                      f"load average {os.getloadavg()[0]:.1f}", flush=True)
    print("\nratios (peer's time / devbox's: >1 devbox faster)")
    for key in ("trace 1000", "trace 10", "search", "dependencies"):
        ours = results.get("devbox", {}).get(key)
        if not ours:
            continue
        parts = [f"{n} p50 {r[key]['p50'] / ours['p50']:.2f}x p99 {r[key]['p99'] / ours['p99']:.2f}x"
                 for n, r in results.items() if n != "devbox"]
        print(f"  {key:<13} devbox p50 {ours['p50']:.1f} / p99 {ours['p99']:.1f} ms   " + "; ".join(parts))


if __name__ == "__main__":
    main()
