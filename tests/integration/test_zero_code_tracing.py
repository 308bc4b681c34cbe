"""Zero-code tracing wired into devbox (issue 13): services deployed by devbox with no OpenTelemetry
SDK (a stdlib Python http.server, a stdlib Go net/http server) appear in topology and RED metrics
through the spans their proxies make; ``trace: auto`` leaves a service that sends its own spans
alone (one server span per hop), ``trace: on`` nests its spans under the proxy's, ``trace: off``
makes no span."""

from __future__ import annotations

import shutil
import socket
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from devbox.mocks.deploy.config import ServiceConfig

from devbox.platform.ports import MetricsQueryPort
from devbox.testing import PlatformThread, running_platform, traceparent, wait_for
from tests import httpc

COMPONENTS = ["naming", "faults", "deploy", "tracing", "metrics"]

#: A service with no tracing at all. It calls $NEXT_URL (when set) and, like any service that wants
#: whole traces, passes the ``traceparent`` it was sent along — the one line no proxy can write for it.
PLAIN = textwrap.dedent(
    '''
    import os, urllib.request
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            code = 500 if self.path.startswith("/fail") else 200
            if os.environ.get("NEXT_URL") and self.path != "/healthz":
                headers = {"traceparent": self.headers["traceparent"]} if self.headers["traceparent"] else {}
                request = urllib.request.Request(os.environ["NEXT_URL"] + self.path, headers=headers)
                try:
                    urllib.request.urlopen(request, timeout=5).read()
                except OSError:
                    code = 502
            self.send_response(code)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
    '''
)

#: A service that sends a SERVER span of its own for each request (as an OpenTelemetry SDK would),
#: child of the ``traceparent`` it was sent.
INSTRUMENTED = textwrap.dedent(
    '''
    import json, os, secrets, time, urllib.request
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    def export(span):
        body = {"resourceSpans": [{"resource": {"attributes": [
            {"key": "service.name", "value": {"stringValue": os.environ["DEVBOX_SERVICE"]}}]},
            "scopeSpans": [{"scope": {"name": "hand-made"}, "spans": [span]}]}]}
        request = urllib.request.Request(os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] + "/v1/traces",
                                         data=json.dumps(body).encode(), headers={"content-type": "application/json"})
        urllib.request.urlopen(request, timeout=5).read()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            start = time.time_ns()
            self.send_response(200)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"ok")
            parts = (self.headers["traceparent"] or "").split("-")
            if self.path == "/healthz" or len(parts) < 4:
                return
            export({"traceId": parts[1], "spanId": secrets.token_hex(8), "parentSpanId": parts[2],
                    "name": "GET " + self.path, "kind": 2, "startTimeUnixNano": str(start),
                    "endTimeUnixNano": str(time.time_ns() + 1000)})

        def log_message(self, *args):
            pass

    ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
    '''
)

GO_SERVER = textwrap.dedent(
    '''
    package main

    import (
    \t"fmt"
    \t"net/http"
    \t"os"
    )

    func main() {
    \thttp.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
    \t\tif len(r.URL.Path) >= 5 && r.URL.Path[:5] == "/fail" {
    \t\t\tw.WriteHeader(500)
    \t\t}
    \t\tfmt.Fprintln(w, "ok")
    \t})
    \tif err := http.ListenAndServe("127.0.0.1:"+os.Getenv("PORT"), nil); err != nil {
    \t\tpanic(err)
    \t}
    }
    '''
)


def _python_service(folder: Path, source: str) -> Path:
    folder.mkdir(parents=True)
    (folder / "server.py").write_text(source)
    start = folder / "start.sh"
    start.write_text(f"#!/bin/sh\nexec {sys.executable} server.py\n")
    start.chmod(0o755)
    return folder


def _go_service(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "main.go").write_text(GO_SERVER)
    start = folder / "start.sh"
    start.write_text("#!/bin/sh\nexec ./server\n")
    start.chmod(0o755)
    return folder


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _deployed(p: PlatformThread) -> None:
    assert p.call(p.component("deploy").wait_deployed(120), timeout=130) == []  # type: ignore[attr-defined]


def _entry(p: PlatformThread, service: str) -> str:
    services = {d["key"]: d for d in httpc.get(p.url() + "/api/deploy/services").json()["services"]}
    return str(services[service]["url"])


@pytest.mark.skipif(shutil.which("go") is None, reason="no Go toolchain")
@pytest.mark.slow  # 5-8 s of real processes: left out of make test-quick
def test_uninstrumented_python_and_go_services_show_in_topology_and_red(tmp_path: Path) -> None:
    go_port = _free_port()
    _python_service(tmp_path / "py", PLAIN)
    _go_service(tmp_path / "go")
    services = [
        ServiceConfig(name="plain-py", path="py", readiness={"http": "/healthz"},
                      env={"NEXT_URL": f"http://127.0.0.1:{go_port}"}),
        ServiceConfig(name="plain-go", path="go", build="go build -o server main.go", port=go_port,
                      readiness={"http": "/healthz"}),
    ]
    with running_platform(tmp_path, components=COMPONENTS, services=services) as p:
        _deployed(p)
        url = _entry(p, "plain-py")
        with httpx.Client(timeout=10) as http:
            for path in ["/orders"] * 3 + ["/fail"]:
                http.get(url + path)
            # the caller sent no context: the instance proxy's span is the root of the trace
            root = http.get(url + "/orders")
        assert root.status_code == 200

        def linked() -> dict[str, Any] | None:
            end = int(time.time() * 1000) + 1000
            links = httpc.get(p.url("zipkin") + "/api/v2/dependencies", params={"endTs": end, "lookback": 600_000})
            found = {(d["parent"], d["child"]): d for d in links.json()}
            link = found.get(("plain-py", "plain-go"))
            # the link shows with its first call: wait for all five of them (one failed), not its first sign
            return link if link and link["callCount"] >= 5 and link["errorCount"] >= 1 else None

        link = wait_for(linked, what="plain-py -> plain-go in Zipkin dependencies, 5 calls, 1 error")
        assert link is not None
        assert link["callCount"] >= 5 and link["errorCount"] >= 1

        def in_topology() -> dict[str, Any] | None:
            topology: dict[str, Any] = httpc.get(p.url() + "/api/topology").json()
            names = {n["name"] for n in topology["services"]}
            edge = any(e["caller"] == "plain-py" and e["callee"] == "plain-go" for e in topology["edges"])
            return topology if {"plain-py", "plain-go"} <= names and edge else None

        topology = wait_for(in_topology, what="plain-py -> plain-go in /api/topology")
        assert {"plain-py", "plain-go"} <= {n["name"] for n in topology["services"]}
        assert any(e["caller"] == "plain-py" and e["callee"] == "plain-go" for e in topology["edges"])

        metrics = p.platform.ctx.lookup(MetricsQueryPort)  # type: ignore[union-attr]
        assert metrics is not None

        def red() -> dict[tuple[str, str], float] | None:
            got = metrics.query_instant(
                'sum by (callee, status) (rpc_server_requests_total{callee=~"plain-.*", method!="GET /healthz"})',
                time.time())
            counts = {(lb["callee"], lb.get("status", "")): v for lb, v in got}
            return counts if counts == expected else None

        expected = {("plain-py", "ok"): 4, ("plain-py", "error"): 1, ("plain-go", "ok"): 4, ("plain-go", "error"): 1}
        counts = wait_for(red, what=f"RED counts of plain-py and plain-go == {expected}")
        assert counts == expected


def test_trace_modes_one_server_span_per_hop(tmp_path: Path) -> None:
    for name in ("auto", "on"):
        _python_service(tmp_path / name, INSTRUMENTED)
    _python_service(tmp_path / "off", PLAIN)
    services = [ServiceConfig(name=f"inst-{mode}", path=mode, trace=mode, readiness={"http": "/healthz"})
                for mode in ("auto", "on", "off")]
    with running_platform(tmp_path, components=COMPONENTS, services=services) as p:
        _deployed(p)
        with httpx.Client(timeout=10) as http:
            # auto: until tracing has seen the service's own spans the proxy makes one too; then it stops
            url = _entry(p, "inst-auto")

            def alone() -> list[dict[str, Any]] | None:
                trace, parent, header = traceparent()
                http.get(url + "/x", headers={"traceparent": header})
                spans = p.trace(trace, 1)
                own = [s for s in spans if "devbox.span.source" not in s.get("tags", {})]
                return spans if own and own[0]["parentId"] == parent else None

            # the service's own span is the caller's child: the proxy injected nothing, so it made no span
            found = wait_for(alone, what="inst-auto's own span, child of the caller's")
            assert found is not None
            spans = found
            assert len(spans) == 1 and spans[0]["kind"] == "SERVER"

            # on: the service's own span nests under the proxy's (the proxy injected its span as parent)
            trace, parent, header = traceparent()
            http.get(_entry(p, "inst-on") + "/y", headers={"traceparent": header})
            spans = p.trace(trace, 2)
            proxy = next(s for s in spans if s.get("tags", {}).get("devbox.span.source") == "proxy")
            own = next(s for s in spans if s is not proxy)
            assert proxy["parentId"] == parent and own["parentId"] == proxy["id"] and len(spans) == 2

            # off: no span at all for an uninstrumented service
            trace, _, header = traceparent()
            assert http.get(_entry(p, "inst-off") + "/z", headers={"traceparent": header}).status_code == 200
            # a span of a traced service sent after it is indexed after it: once that one is stored, the
            # off service's span would be too, had the proxy made one
            marker, _, marker_header = traceparent()
            http.get(_entry(p, "inst-on") + "/marker", headers={"traceparent": marker_header})
            p.trace(marker, 2)
            assert httpc.get(p.url("zipkin") + f"/api/v2/trace/{trace}").status_code == 404
