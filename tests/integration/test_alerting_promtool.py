"""Rule files against the real ``promtool check rules``: what devbox accepts and exports is what
Prometheus accepts, and a file devbox refuses is refused by promtool too; and the rules and alerts
devbox evaluates are listed by the Prometheus API's ``/api/v1/rules`` and ``/api/v1/alerts``."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from devbox.mocks.alerting.rules import load_file

from devbox.testing import running_platform, wait_for
from tests import httpc

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (apt prometheus)"),
]

SHORT = {
    "name": "LowSuccess",
    "indicator": "success_rate",
    "filter": {"callee": "orders"},
    "comparison": "<",
    "threshold": 95,
    "duration": "1m30s",
    "labels": {"severity": "page"},
    "annotations": {"summary": "{{ $labels.callee }} at {{ $value | humanize }}%"},
}
GROUPS = [
    {
        "name": "latency",
        "rules": [
            {
                "alert": "Slow",
                "expr": "histogram_quantile(0.99, sum by (le) (rate(rpc_server_duration_seconds_bucket[1m]))) > 1",
                "for": "500ms",
                "annotations": {"summary": "p99 {{ $value }}s"},
            },
            {"alert": "AlwaysOn", "expr": "vector(1) > 0"},
        ],
    }
]


def promtool_check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=30, check=False
    )


def test_exported_rules_pass_promtool_and_load_back(tmp_path: Path) -> None:
    with running_platform(
        tmp_path, components=["metrics", "alerting"], alerting={"interval": 0.2, "rules": [SHORT], "groups": GROUPS}
    ) as p:
        exported = httpc.get(p.url("api") + "/api/alerts/rules/export")
        assert exported.status_code == 200
        path = tmp_path / "exported.yml"
        path.write_text(exported.text)
        checked = promtool_check(path)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert "SUCCESS: 3 rules found" in checked.stdout
        again = load_file(path)
        assert again.errors == []
        assert sorted((r.id, r.expr, r.for_s) for r in again.rules) == [
            ("devbox/LowSuccess", 'success_rate{callee="orders"} < 95.0', 90.0),
            ("latency/AlwaysOn", "vector(1) > 0", 0.0),
            ("latency/Slow", GROUPS[0]["rules"][0]["expr"], 0.5),
        ]

        prom = p.url("prometheus")
        def always_on_first() -> list[dict[str, Any]] | None:
            # other rules may be pending first: wait for the alert asserted, not for any alert
            alerts = httpc.get(prom + "/api/v1/alerts").json()["data"]["alerts"]
            return alerts if alerts and alerts[0]["labels"] == {"alertname": "AlwaysOn"} else None

        alerts = wait_for(always_on_first, timeout=60, what="AlwaysOn in Prometheus' /api/v1/alerts")
        assert alerts[0]["labels"] == {"alertname": "AlwaysOn"} and alerts[0]["state"] == "firing"
        groups = httpc.get(prom + "/api/v1/rules").json()["data"]["groups"]
        by_name = {r["name"]: r for g in groups for r in g["rules"]}
        assert by_name["AlwaysOn"]["state"] == "firing" and by_name["AlwaysOn"]["health"] == "ok"
        assert by_name["Slow"]["duration"] == 0.5 and by_name["Slow"]["type"] == "alerting"


@pytest.mark.parametrize(
    "text",
    [
        "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: sum(\n",
        "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up\n        for: soon\n",
        "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up\n        colour: red\n",
        "groups:\n  - name: g\n    rules:\n      - alert: A\n        record: b\n        expr: up\n",
        "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up\n        labels: {0bad: x}\n",
    ],
)
def test_files_devbox_refuses_promtool_refuses_too(tmp_path: Path, text: str) -> None:
    path = tmp_path / "bad.yml"
    path.write_text(text)
    assert load_file(path).errors
    assert promtool_check(path).returncode != 0
