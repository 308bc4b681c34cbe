"""``devbox metrics ls|query`` as a subprocess against a running platform."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from devbox.testing import running_platform

pytestmark = pytest.mark.e2e


def _devbox(api: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEVBOX_API": api, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "devbox", *args], capture_output=True, text=True, env=env, timeout=60)


def test_metrics_cli_ls_and_query(tmp_path: Path) -> None:
    with running_platform(tmp_path, components=["metrics"]) as p, httpx.Client() as http:
        api = p.url("api")
        for region, amount in (("sh", 10), ("sz", 30), ("sh", 20)):
            r = http.post(
                api + "/api/metrics/custom",
                json={"name": "pay", "dimensions": {"region": region}, "values": [{"name": "amount", "value": amount}]},
            )
            assert r.status_code == 200, r.text
        out = _devbox(api, "metrics", "ls", "--json")
        assert out.returncode == 0, out.stderr
        names = {m["name"]: m for m in json.loads(out.stdout)["metrics"]}
        assert names["pay_amount_total"]["dimensions"] == ["region"] and "success_rate" in names
        out = _devbox(api, "metrics", "query", "pay_amount_total", "--by", "region", "--since", "2m")
        assert out.returncode == 0 and "region=sh" in out.stdout and "region=sz" in out.stdout, out.stderr
        out = _devbox(api, "metrics", "query", "pay_amount_total", "-w", "region ~~ x")
        assert out.returncode == 1 and "filter" in out.stderr
