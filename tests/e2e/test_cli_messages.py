"""CLI answers to normal situations against a running platform: an unknown metric, probe entries
in fan-out, span senders that are not in devbox.yaml."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from devbox.mocks.deploy.config import ServiceConfig

from devbox.testing import running_platform, wait_for
from tests import httpc
from tests.deploy_fakes import write_service

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
    # a project that declares a service: a sender that is not one of its services is a stranger
    write_service(tmp_path / "web")
    web = ServiceConfig(name="web", path="web", readiness={"http": "/healthz"}, reload=False)
    with running_platform(tmp_path, components=["metrics", "tracing", "deploy"], services=[web]) as p:
        assert p.call(p.component("deploy").wait_deployed(60), timeout=70) == []  # type: ignore[attr-defined]
        api = p.url("api")
        out = _devbox(api, "metrics", "query", "nosuch")
        assert out.returncode == 1 and "no metric or indicator named 'nosuch'" in out.stderr, out

        spans = [_span("a" * 32, "1" * 16, None, "probe-target", "GET /healthz", "SERVER"),
                 _span("b" * 32, "2" * 16, None, "stranger", "GET /work", "SERVER"),
                 _span("b" * 32, "3" * 16, "2" * 16, "stranger", "GET db", "CLIENT")]
        r = httpc.post(p.url("zipkin") + "/api/v2/spans", json=spans)
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


def test_a_project_without_services_has_no_unknown_senders(tmp_path: Path) -> None:
    """A devbox.yaml with no services is the backend for services started elsewhere: as on the
    dashboard, every span sender is the project's, none is listed as not in devbox.yaml."""
    with running_platform(tmp_path, components=["tracing", "deploy"]) as p:
        api = p.url("api")
        spans = [_span("c" * 32, "4" * 16, None, "elsewhere", "GET /work", "SERVER")]
        assert httpc.post(p.url("zipkin") + "/api/v2/spans", json=spans).status_code == 202
        wait_for(lambda: "elsewhere" in httpc.get(api + "/api/traces/services").json()["services"], 30,
                 "elsewhere among the span senders")
        out = _devbox(api, "status")
        assert out.returncode == 0 and "not in devbox.yaml" not in out.stdout, out
        assert json.loads(_devbox(api, "status", "--json").stdout)["unknown_senders"] == []
