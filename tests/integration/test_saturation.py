"""Issue 14 item 3.7: with ingest saturated, the API stays responsive and back-pressure is honest.

64 OTLP/HTTP exporters (pre-encoded 512-span batches, in a child process so their client work does
not share the platform's interpreter) send for ~10 s, while a 52 MiB OTLP/gRPC export and a
20,000-alert Alertmanager POST arrive, and a prober times ``/healthz`` on the api listener. Asserted:
/healthz p99 <= max(100 ms, 3x the p99 measured on the idle platform in the same test — a busy CI
machine must not fail it spuriously), every export answered 200 or 503 with Retry-After (no other
5xx, no hang past the client timeout), and every acknowledged span stored afterwards.

The p99 limit also allows 3x the p99 of a control — a bare stdlib HTTP server in a process of its
own, probed the same way in the same seconds: beside a CPU hog the scheduler alone delays a probe
by hundreds of ms now and then (hog18: devbox 198 ms), which says nothing about devbox; a stall of
devbox's own (its loop or the GIL held by ingest) shows as devbox's p99 far above the control's.
"""

from __future__ import annotations

import concurrent.futures
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import httpx
import pytest
from devbox.mocks.tracing.convert import to_otlp_request
from devbox.mocks.tracing.models import Span

from devbox.testing import PlatformThread, running_platform, wait_for
from tests import httpc

pytestmark = pytest.mark.slow

EXPORTERS = 64
BATCH = 512
LOAD_SECONDS = 10.0
CLIENT_TIMEOUT = 30.0
MARKER = 0x5A7A5A7A  # the first 4 bytes of every trace and span id in the template batch
EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"

# The exporters: asyncio + httpx in a child process. Each sends its pre-encoded batch in a loop until
# the deadline (each time with its own ids, written over MARKER) and reports per answer: status,
# retry-after present, rejected spans, seconds.
EXPORTER_SCRIPT = r"""
import asyncio, json, os, sys, time
import httpx
os.nice(10)  # the load generator yields the CPU to the platform it measures: the test's client is not under test
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

url, count, seconds, timeout, body_path, marker = sys.argv[1:7]
count, seconds, timeout, marker = int(count), float(seconds), float(timeout), bytes.fromhex(marker)
template = open(body_path, "rb").read()

async def exporter(client, i, deadline, out):
    # ids start with MARKER; exporter i's n-th export writes (i + 1, n) over it
    n = 0
    while time.monotonic() < deadline:
        n += 1  # every export carries new trace and span ids: a re-sent span would be stored once
        body = template.replace(marker, (((i + 1) << 24) | n).to_bytes(4, "big"))
        t = time.monotonic()
        try:
            r = await client.post(url, content=body, headers={"content-type": "application/x-protobuf"})
        except httpx.TimeoutException:
            out.append(["timeout", False, 0, time.monotonic() - t])
            continue
        except httpx.HTTPError as exc:
            out.append([f"error {type(exc).__name__}", False, 0, time.monotonic() - t])
            continue
        rejected = 0
        if r.status_code == 200:
            rejected = trace_service_pb2.ExportTraceServiceResponse.FromString(r.content).partial_success.rejected_spans
        out.append([r.status_code, bool(r.headers.get("retry-after")), rejected, time.monotonic() - t])
        if r.status_code == 503:  # an OTLP exporter waits the Retry-After (capped, so the test stays short)
            await asyncio.sleep(min(float(r.headers.get("retry-after") or 1), 0.5))

async def main():
    out = []
    limits = httpx.Limits(max_connections=count, max_keepalive_connections=count)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
        print("ready", flush=True)
        sys.stdin.readline()
        deadline = time.monotonic() + seconds
        await asyncio.gather(*(exporter(client, i, deadline, out) for i in range(count)))
    print(json.dumps(out), flush=True)

asyncio.run(main())
"""


def _spans(seed: int, count: int, now_us: int, *, tag: str = "") -> list[Span]:
    return [Span(trace_id=f"{seed:08x}{i // 16:024x}", span_id=f"{seed:08x}{i:08x}", parent_id=None, name=f"op{i % 7}",
                 kind="SERVER", service=f"sat{seed % 4}", start_us=now_us - 1000 - i, duration_us=50,
                 attributes={"blob": tag} if tag else {})
            for i in range(count)]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Prober:
    """Times ``GET /healthz`` back to back (one keep-alive connection) until stopped."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.times: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="healthz-prober", daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=CLIENT_TIMEOUT) as client:
            while not self._stop.is_set():
                t = time.perf_counter()
                assert client.get(self.url).status_code == 200
                self.times.append(time.perf_counter() - t)
                self._stop.wait(0.01)

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(CLIENT_TIMEOUT)

    def summary(self) -> dict[str, float]:
        return {"n": len(self.times), "p50_ms": _percentile(self.times, 0.5) * 1000,
                "p99_ms": _percentile(self.times, 0.99) * 1000, "max_ms": max(self.times) * 1000}


# The control: a bare HTTP server on port 0 (its port on the first line), answering 200 to any GET.
CONTROL_SCRIPT = """
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK wait
    def do_GET(self):
        self.send_response(200); self.send_header("content-length", "2"); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *a): pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


def _stored(p: PlatformThread) -> int:
    return int(httpc.get(p.url("api") + "/api/platform", timeout=CLIENT_TIMEOUT).json()
               ["components"]["tracing"]["spans_stored"])


def _all_stored(p: PlatformThread, acked: int) -> bool:
    """Whether every acknowledged span is stored (False when the wait for it timed out)."""
    try:
        wait_for(lambda: _stored(p) >= acked, 120, f"the {acked} acknowledged spans to be stored", every=0.2)
    except AssertionError:
        return False
    return True


def test_api_stays_responsive_while_ingest_is_saturated(tmp_path: Path) -> None:
    now = time.time_ns() // 1000
    batch = to_otlp_request(_spans(MARKER, BATCH, now)).SerializeToString()
    body_file = tmp_path / "batches.bin"
    body_file.write_bytes(batch)
    big = to_otlp_request(_spans(1000, 5000, now, tag="x" * 10_900)).SerializeToString()
    assert 52 * 2**20 <= len(big) < 60 * 2**20, len(big)
    alerts = json.dumps([{"labels": {"alertname": "Saturated", "instance": f"i{i}"},
                          "annotations": {"summary": "load"}} for i in range(20_000)]).encode()

    with running_platform(tmp_path / "state", components=["tracing", "alerting"],
                          platform={"max_body_bytes": 64 * 2**20}) as p:
        health = p.url("api") + "/healthz"
        with Prober(health) as idle:
            wait_for(lambda: len(idle.times) >= 200, 30, "200 /healthz probes of the idle platform")
        baseline = idle.summary()

        control_server = subprocess.Popen([sys.executable, "-c", CONTROL_SCRIPT], stdout=subprocess.PIPE, text=True)
        assert control_server.stdout is not None
        control_url = f"http://127.0.0.1:{control_server.stdout.readline().strip()}/"
        load = subprocess.Popen([sys.executable, "-c", EXPORTER_SCRIPT, p.url("otlp_http") + "/v1/traces",
                                 str(EXPORTERS), str(LOAD_SECONDS), str(CLIENT_TIMEOUT), str(body_file),
                                 f"{MARKER:08x}"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert load.stdout is not None and load.stdin is not None
            assert load.stdout.readline().strip() == "ready"

            def grpc_export() -> tuple[str, float]:
                t = time.monotonic()
                with grpc.insecure_channel(p.target("otlp_grpc"), options=[
                        ("grpc.max_send_message_length", 64 * 2**20)]) as channel:
                    try:
                        channel.unary_unary(EXPORT)(big, timeout=CLIENT_TIMEOUT)
                        return "OK", time.monotonic() - t
                    except grpc.RpcError as exc:
                        return exc.code().name, time.monotonic() - t

            def post_alerts() -> tuple[int, float]:
                t = time.monotonic()
                r = httpc.post(p.url("alertmanager") + "/api/v2/alerts", content=alerts,
                               headers={"content-type": "application/json"}, timeout=CLIENT_TIMEOUT)
                return r.status_code, time.monotonic() - t

            with Prober(health) as busy, Prober(control_url) as control, \
                    concurrent.futures.ThreadPoolExecutor(2) as pool:
                load.stdin.write("go\n")
                load.stdin.flush()
                # the exporters are under way
                wait_for(lambda: len(busy.times) >= 20, 30, "20 /healthz probes under load")
                grpc_answer = pool.submit(grpc_export)
                alert_answer = pool.submit(post_alerts)
                out, _ = load.communicate(timeout=LOAD_SECONDS + 2 * CLIENT_TIMEOUT)
                grpc_code, grpc_seconds = grpc_answer.result(CLIENT_TIMEOUT * 2)
                alert_code, alert_seconds = alert_answer.result(CLIENT_TIMEOUT * 2)
        finally:
            control_server.kill()
            if load.poll() is None:
                load.kill()
        saturated, machine = busy.summary(), control.summary()
        answers = json.loads(out)
        codes: dict[str, int] = {}
        for code, *_ in answers:
            codes[str(code)] = codes.get(str(code), 0) + 1
        acked = sum(BATCH - rejected for code, _, rejected, _ in answers if code == 200)
        acked += 5000 if grpc_code == "OK" else 0
        settled = _all_stored(p, acked)
        stored = _stored(p)
        export_p99 = _percentile([a[3] for a in answers], 0.99)
        report = (f"/healthz idle {baseline} saturated {saturated}; control server meanwhile {machine}; "
                  f"exports {codes} (p99 {export_p99:.2f}s); "
                  f"gRPC 52 MiB {grpc_code} in {grpc_seconds:.2f}s; 20k alerts {alert_code} in {alert_seconds:.2f}s; "
                  f"acknowledged {acked} stored {stored}")
        print(report)

        assert set(codes) <= {"200", "503"}, report
        assert all(has_retry for code, has_retry, _, _ in answers if code == 503), report
        assert codes.get("200", 0) > 0, report
        assert grpc_code in ("OK", "UNAVAILABLE"), report
        assert alert_code == 200, report
        assert settled and stored == acked, report
        limit_ms = max(100.0, 3 * baseline["p99_ms"], 3 * machine["p99_ms"])
        assert saturated["p99_ms"] <= limit_ms, f"/healthz p99 over {limit_ms:.0f} ms: {report}"
