"""CLI answers to normal situations against a running platform: an unknown metric, probe entries
in fan-out, span senders that are not in devbox.yaml."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from devbox.testing import running_platform

pytestmark = pytest.mark.e2e


def _devbox(api: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEVBOX_API": api, "COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.run([sys.executable, "-m", "devbox", *args], capture_output=True, text=True, env=env, timeout=60)


def _span(trace: str, sid: str, parent: str | None, service: str, name: str, kind: str) -> dict[str, object]:
    out: dict[str, object] = {"traceId": trace, "id": sid, "name": name, "kind": kind,
                              "timestamp": time.time_ns() // 1000 - 1_000_000, "duration": 500,
                              "localEndpoint": {"serviceName": service}}
    if parent:
        out["parentId"] = parent
    return out


def test_unknown_metric_probes_and_strangers(tmp_path: Path) -> None:
    with running_platform(tmp_path, components=["metrics", "tracing", "deploy"]) as p:
        api = p.url("api")
        out = _devbox(api, "metrics", "query", "nosuch")
        assert out.returncode == 1 and "no metric or indicator named 'nosuch'" in out.stderr, out

        spans = [_span("a" * 32, "1" * 16, None, "probe-target", "GET /healthz", "SERVER"),
                 _span("b" * 32, "2" * 16, None, "stranger", "GET /work", "SERVER"),
                 _span("b" * 32, "3" * 16, "2" * 16, "stranger", "GET db", "CLIENT")]
        r = httpx.post(p.url("zipkin") + "/api/v2/spans", json=spans)
        assert r.status_code == 202, r.text
        out = _devbox(api, "traces", "fanout", "--json")
        assert out.returncode == 0, out.stderr
        operations = [e["operation"] for e in json.loads(out.stdout)["entries"]]
        assert "GET /work" in operations and "GET /healthz" not in operations
        with_probes = json.loads(_devbox(api, "traces", "fanout", "--probes", "--json").stdout)
        assert "GET /healthz" in [e["operation"] for e in with_probes["entries"]]

        out = _devbox(api, "status")
        assert "not in devbox.yaml" in out.stdout and "stranger" in out.stdout, out
        assert json.loads(_devbox(api, "status", "--json").stdout)["unknown_senders"] == ["probe-target", "stranger"]
