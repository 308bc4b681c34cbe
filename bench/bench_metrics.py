"""Metrics figures, each as a ratio against a baseline measured in the same run.

1. Points/s ingested through OTLP/HTTP protobuf batches and through the custom-report API,
   against a bare endpoint (same framework, same route) that reads and discards the request.
2. Query latency for 1 h of 1 s data (60 series) grouped by two dimensions, against reading the
   same samples out of SQLite without evaluating anything.
2b. CPU per OTLP point in process (protobuf parse, conversion, store), the part of ingest that is
   devbox's own: HTTP figures on a shared 2-core machine swing by 3x between runs, CPU time less.
3. Issue 15's query, ``sum by (a,b)(rate(x_total[1m]))`` over 1 h of 1 s data from 20 series, through
   the Prometheus HTTP API of devbox and of a real Prometheus (Debian's ``prometheus``; the same
   samples loaded with ``promtool tsdb create-blocks-from openmetrics``), interleaved, p50 each and
   the ratio. Skipped when prometheus/promtool are not installed. The two answers have the same
   points but not the same values, by design: Debian's Prometheus 2.42 selects ``[t-1m, t]``, devbox
   (as Prometheus 3) ``(t-1m, t]``, so on samples that fall on the second 2.42 sees 61 where devbox
   sees 60 and extrapolates (tests/integration/test_metrics_promql_oracle.py avoids the boundary).

    python bench/bench_metrics.py [--batches 40] [--only-prometheus]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import httpx
from devbox.mocks.metrics.config import MetricsConfig
from devbox.mocks.metrics.core import MetricsCore, StructuredQuery
from devbox.mocks.metrics.promql import LabelMatcher
from devbox.mocks.metrics.store import Point
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

POINTS_PER_BATCH = 1000
REPORTS_PER_BATCH = 200


def _otlp_batch(batch: int) -> bytes:
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    attr = rm.resource.attributes.add()
    attr.key, attr.value.string_value = "service.name", "bench"
    sm = rm.scope_metrics.add()
    now = time.time_ns()
    for series in range(POINTS_PER_BATCH // 10):
        metric = sm.metrics.add(name=f"bench_gauge_{series % 10}")
        for i in range(10):
            dp = metric.gauge.data_points.add()
            dp.as_double = float(batch * 10 + i)
            dp.time_unix_nano = now - (10 - i) * 1_000_000_000
            kv = dp.attributes.add()
            kv.key, kv.value.string_value = "shard", str(series)
    return req.SerializeToString()


def _custom_batch(batch: int) -> dict:
    return {
        "reports": [
            {
                "name": "bench_pay",
                "dimensions": [["region", f"r{i % 20}"], ["channel", f"c{i % 5}"]],
                "values": [
                    {"name": "amount", "value": i + batch, "policy": "SUM"},
                    {"name": "peak", "value": i, "policy": "MAX"},
                ],
            }
            for i in range(REPORTS_PER_BATCH)
        ]
    }


#: Servers run in their own processes, as in real use (in-process threads would measure GIL handoffs).
_PLATFORM = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from devbox.testing import running_platform
    metrics = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
    with running_platform(Path(sys.argv[1]), components=["metrics"], metrics=metrics) as p:
        urls = {"api": p.url("api"), "otlp": p.url("otlp_http"), "prometheus": p.url("prometheus")}
        print(json.dumps(urls), flush=True)
        sys.stdin.read()
    """
)
_BARE = textwrap.dedent(
    """
    import json, socket, sys, threading
    import uvicorn
    from fastapi import FastAPI, Request, Response
    app = FastAPI()

    @app.post("/v1/metrics")
    async def otlp(request: Request) -> Response:
        await request.body()
        return Response(b"", media_type="application/x-protobuf")

    @app.post("/api/metrics/custom")
    async def custom(request: Request) -> dict:
        await request.json()
        return {"accepted": 0}

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = "http://127.0.0.1:%d" % sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    while not server.started:
        pass
    print(json.dumps({"api": url, "otlp": url}), flush=True)
    sys.stdin.read()
    """
)


class _Server:
    def __init__(self, script: str, *args: str) -> None:
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", script, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )
        assert self.proc.stdout is not None
        self.urls = json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def _rate(http: httpx.Client, url: str, bodies: list, points: int, *, proto: bool) -> float:
    started = time.perf_counter()
    for body in bodies:
        if proto:
            r = http.post(url, content=body, headers={"Content-Type": "application/x-protobuf"})
        else:
            r = http.post(url, json=body)
        r.raise_for_status()
    return points * len(bodies) / (time.perf_counter() - started)


def otlp_cpu(batches: int = 40) -> None:
    """CPU microseconds per point of each OTLP ingest step, in process (process_time, not wall)."""
    from devbox.mocks.metrics import otlp

    bodies = [_otlp_batch(i) for i in range(batches + 1)]
    spent = {"parse": 0.0, "convert": 0.0, "store": 0.0}
    with tempfile.TemporaryDirectory() as tmp:
        core = MetricsCore(Path(tmp) / "metrics.db", MetricsConfig())
        for i, body in enumerate(bodies):
            t0 = time.process_time()
            request = ExportMetricsServiceRequest()
            request.ParseFromString(body)
            t1 = time.process_time()
            points, deltas, meta, _, _ = otlp.convert(request, time.time())
            t2 = time.process_time()
            core.ingest_points(points, meta, deltas=deltas)
            t3 = time.process_time()
            if i:  # the first batch creates the series
                spent["parse"] += t1 - t0
                spent["convert"] += t2 - t1
                spent["store"] += t3 - t2
        core.close()
    count = batches * POINTS_PER_BATCH
    split = ", ".join(f"{k} {v / count * 1e6:.2f} us" for k, v in spent.items())
    print(f"OTLP ingest CPU per point (in process): {split}; {count / sum(spent.values()):,.0f} points/s of CPU")


def _seed_hour(core: object, end: int) -> int:
    points = []
    callees, methods, codes = [f"svc{i}" for i in range(5)], [f"m{i}" for i in range(4)], ["0", "1", "2"]
    for callee in callees:
        for method in methods:
            for code in codes:
                labels = (("callee", callee), ("code", code), ("method", method))
                points.extend(
                    Point("bench_requests_total", labels, t, float(t - end + 3600)) for t in range(end - 3600, end)
                )
    for start in range(0, len(points), 50_000):
        core.store.write(points[start : start + 50_000])  # type: ignore[attr-defined]
    return len(points)


ISSUE15_QUERY = "sum by (a,b)(rate(x_total[1m]))"


def _issue15_points(end: int) -> list[Point]:
    """20 counters (a: 4 values, b: 5 values), one sample a second for the hour before ``end``."""
    points = []
    for s in range(20):
        labels = (("a", f"a{s % 4}"), ("b", f"b{s // 4}"), ("i", str(s)))
        value = 0.0
        for t in range(end - 3600, end + 1):
            value += (s + 1) * (1 + t % 7)
            points.append(Point("x_total", labels, float(t), value))
    return points


def _openmetrics(points: list[Point]) -> str:
    lines = ["# TYPE x counter"]
    by_series: dict[tuple[tuple[str, str], ...], list[Point]] = {}
    for point in points:
        by_series.setdefault(point.labels, []).append(point)
    for labels, pts in by_series.items():
        text = ",".join(f'{k}="{v}"' for k, v in labels)
        lines.extend(f"x_total{{{text}}} {p.value!r} {int(p.ts)}" for p in pts)
    return "\n".join([*lines, "# EOF", ""])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _p50_range(http: httpx.Client, url: str, params: dict[str, str | float]) -> tuple[float, int]:
    started = time.perf_counter()
    r = http.get(url + "/api/v1/query_range", params=params)
    r.raise_for_status()
    took = time.perf_counter() - started
    return took, sum(len(s["values"]) for s in r.json()["data"]["result"])


def prometheus_comparison(runs: int = 15) -> None:
    """Issue 15's query against a real Prometheus on the same samples, in the same run."""
    prometheus, promtool = shutil.which("prometheus"), shutil.which("promtool")
    if not prometheus or not promtool:
        print("prometheus/promtool not installed (apt-get install prometheus): comparison skipped")
        return
    end = int(time.time()) // 60 * 60 - 60
    points = _issue15_points(end)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "data.om").write_text(_openmetrics(points))
        (root / "prometheus.yml").write_text("global: {}\n")
        subprocess.run(
            [promtool, "tsdb", "create-blocks-from", "openmetrics", str(root / "data.om"), str(root / "tsdb")],
            check=True,
            capture_output=True,
        )
        port = _free_port()
        prom = subprocess.Popen(
            [
                prometheus,
                f"--config.file={root / 'prometheus.yml'}",
                f"--storage.tsdb.path={root / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--storage.tsdb.retention.time=30d",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        project = root / "devbox"
        core = MetricsCore(_state_path(project) / "metrics.db", MetricsConfig())
        started = time.perf_counter()
        for start in range(0, len(points), 50_000):
            core.store.write(points[start : start + 50_000])
        ingest = len(points) / (time.perf_counter() - started)
        core.close()
        # keep the hour raw for the whole run (by default samples older than raw_minutes become 1-minute rollups)
        devbox = _Server(_PLATFORM, str(project), json.dumps({"raw_minutes": 24 * 60}))
        try:
            prom_url = f"http://127.0.0.1:{port}"
            with httpx.Client(timeout=60) as http:
                deadline = time.monotonic() + 60
                while True:
                    try:
                        if http.get(prom_url + "/-/ready").status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    if time.monotonic() > deadline:
                        raise RuntimeError("prometheus did not become ready")
                    time.sleep(0.2)
                figures: dict[str, dict[float, list[float]]] = {"devbox": {}, "prometheus": {}}
                for step in (1.0, 15.0):
                    params: dict[str, str | float] = {
                        "query": ISSUE15_QUERY, "start": end - 3600, "end": end, "step": step
                    }  # fmt: skip
                    counts = {}
                    for name, url in (("devbox", devbox.urls["prometheus"]), ("prometheus", prom_url)):
                        _, counts[name] = _p50_range(http, url, params)  # warm-up (and the answer's size)
                    assert counts["devbox"] == counts["prometheus"], counts
                    for _ in range(runs):  # interleaved, so both see the same machine load
                        for name, url in (("devbox", devbox.urls["prometheus"]), ("prometheus", prom_url)):
                            figures[name].setdefault(step, []).append(_p50_range(http, url, params)[0])
        finally:
            devbox.close()
            prom.terminate()
            prom.wait(30)
    print(f"store.write of the same {len(points)} samples (in process): {ingest:,.0f} points/s")
    for step in (1.0, 15.0):
        ours, theirs = statistics.median(figures["devbox"][step]), statistics.median(figures["prometheus"][step])
        print(
            f"{ISSUE15_QUERY} over 1 h x 1 s x 20 series, step {step:g} s, HTTP query_range p50 of {runs}: "
            f"devbox {ours * 1000:.0f} ms, Prometheus {theirs * 1000:.0f} ms; ratio {ours / theirs:.2f}x "
            f"(devbox's latency / Prometheus's: devbox answers at {theirs / ours:.2f}x Prometheus's speed)"
        )


def _state_path(project: Path) -> Path:
    from devbox.config import ProjectConfig

    return Path(ProjectConfig.for_tests(project).state_path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--only-prometheus", action="store_true", help="run only the Prometheus comparison")
    args = parser.parse_args()
    if args.only_prometheus:
        prometheus_comparison()
        return
    otlp_bodies = [_otlp_batch(i) for i in range(args.batches)]
    custom_bodies = [_custom_batch(i) for i in range(args.batches)]
    with tempfile.TemporaryDirectory() as tmp:
        devbox, bare = _Server(_PLATFORM, tmp), _Server(_BARE)
        try:
            with httpx.Client(timeout=60) as http:
                figures = {}
                for name, server in (("devbox", devbox), ("bare", bare)):
                    _rate(http, server.urls["otlp"] + "/v1/metrics", otlp_bodies[:2], POINTS_PER_BATCH, proto=True)
                    figures[name, "otlp"] = _rate(
                        http, server.urls["otlp"] + "/v1/metrics", otlp_bodies, POINTS_PER_BATCH, proto=True
                    )
                    figures[name, "custom"] = _rate(
                        http,
                        server.urls["api"] + "/api/metrics/custom",
                        custom_bodies,
                        REPORTS_PER_BATCH * 2,
                        proto=False,
                    )
        finally:
            devbox.close()
            bare.close()
    for kind, label in (("otlp", "OTLP/HTTP protobuf"), ("custom", "custom-report API")):
        ours, base = figures["devbox", kind], figures["bare", kind]
        print(f"{label:20} ingest: {ours:9.0f} points/s; bare discard endpoint {base:9.0f}/s; ratio {ours / base:.2f}")
    otlp_cpu(args.batches)

    with tempfile.TemporaryDirectory() as tmp:
        core = MetricsCore(Path(tmp) / "metrics.db", MetricsConfig())
        end = int(time.time())
        seeded = _seed_hour(core, end)
        runs_q, runs_promql, runs_raw = [], [], []
        for _ in range(3):
            t = time.perf_counter()
            result = core.structured_query(
                StructuredQuery(
                    "bench_requests_total", start=end - 3600, end=end, step=15, group_by=["callee", "method"]
                )
            )
            runs_q.append(time.perf_counter() - t)
            t = time.perf_counter()
            core.query_range("sum by (callee, method) (rate(bench_requests_total[1m]))", end - 3600, end, 15)
            runs_promql.append(time.perf_counter() - t)
            t = time.perf_counter()
            raw = core.store.select([LabelMatcher("__name__", "=", "bench_requests_total")], end - 3660, end)
            runs_raw.append(time.perf_counter() - t)
        core.close()
    assert len(result["series"]) == 20 and sum(len(s.ts) for s in raw) == seeded
    q, pq, rw = statistics.median(runs_q), statistics.median(runs_promql), statistics.median(runs_raw)
    print(
        f"1 h of 1 s data ({seeded} points, 60 series) grouped by callee+method, step 15 s: devbox query "
        f"{q * 1000:.0f} ms, PromQL range {pq * 1000:.0f} ms; raw SQLite read of the same points {rw * 1000:.0f} ms; "
        f"ratio {q / rw:.2f} / {pq / rw:.2f}"
    )
    prometheus_comparison()


if __name__ == "__main__":
    main()
