"""``devbox traces`` and ``devbox topology`` as a subprocess against a running platform."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from devbox.mocks.tracing.convert import to_otlp_request

from devbox.testing import PlatformThread, running_platform
from tests import httpc
from tests.integration.test_tracing_api import FAILED, OK, constructed

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatformThread]:
    with running_platform(tmp_path_factory.mktemp("tracing-cli"), components=["tracing"]) as p:
        r = httpc.post(p.url("otlp_http") + "/v1/traces", content=to_otlp_request(constructed()).SerializeToString(),
                       headers={"content-type": "application/x-protobuf"})
        assert r.status_code == 200
        yield p


def devbox(platform: PlatformThread, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEVBOX_API": platform.url("api"), "COLUMNS": "160"}
    return subprocess.run([sys.executable, "-m", "devbox", *args], env=env, capture_output=True, text=True,
                          timeout=60, cwd=platform.config.root)


def test_ls_filters_and_json(platform: PlatformThread) -> None:
    out = devbox(platform, "traces", "ls", "--errors", "--json")
    assert out.returncode == 0, out.stderr
    assert [t["trace_id"] for t in json.loads(out.stdout)["traces"]] == [FAILED]
    out = devbox(platform, "traces", "ls", "--service", "orders", "--min-duration", "90us")
    assert out.returncode == 0 and FAILED in out.stdout and OK in out.stdout
    out = devbox(platform, "traces", "ls", "--min-duration", "soon")
    assert out.returncode == 2 and "not a duration" in out.stderr


def test_show_why_and_topology(platform: PlatformThread) -> None:
    out = devbox(platform, "traces", "show", FAILED)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert any("reserve" in line and "out of stock" in line for line in lines)
    assert "critical path (cyan): inventory 46%, gateway 34%, orders 20%" in out.stdout
    # the waterfall is in tree order: db is nested under reserve, users after the orders branch
    order = [name for name in ("GET /checkout", "call orders", "reserve", "db", "call users")
             for i, line in enumerate(lines) if name in line]
    assert order == ["GET /checkout", "call orders", "reserve", "db", "call users"]
    out = devbox(platform, "traces", "why", FAILED)
    assert out.returncode == 0 and "root cause: inventory · reserve — out of stock" in out.stdout
    assert "has no error span" in devbox(platform, "traces", "why", OK).stdout
    out = devbox(platform, "traces", "show", "f" * 32)
    # an unknown trace is an error that says what is missing, not a raw "GET /api/...: 404" (issue 14)
    assert out.returncode == 1 and f"no span of trace {'f' * 32} is stored" in out.stderr
    out = devbox(platform, "topology", "orders", "--json")
    data = json.loads(out.stdout)
    assert data["service"]["callers"] == ["gateway"] and data["service"]["callees"] == ["inventory"]
    out = devbox(platform, "topology", "inventory")
    assert "called by: orders  (transitively: gateway, orders)" in out.stdout
    out = devbox(platform, "traces", "fanout")
    assert out.returncode == 0 and "gateway · GET /checkout  2 request(s)" in out.stdout
    assert any(line.split() == ["inventory", "reserve", "1", "0.50"] for line in out.stdout.splitlines())
