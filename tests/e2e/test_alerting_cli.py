"""``devbox alerts ...`` as a subprocess against a running platform: silences, rules, history, backtest."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from devbox.testing import running_platform, wait_for
from tests import httpc

pytestmark = pytest.mark.e2e


def devbox(api: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEVBOX_API": api, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "devbox", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=cwd,
        check=False,
    )


def as_json(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_alerts_cli(tmp_path: Path) -> None:
    rules = [
        {
            "name": "ShopDown",
            "indicator": "shop_up",
            "filter": {"service": "orders"},
            "comparison": "<",
            "threshold": 1,
            "duration": "0.4s",
        }
    ]
    with running_platform(
        tmp_path, components=["metrics", "alerting"], alerting={"interval": 0.2, "rules": rules}
    ) as p:
        api = p.url("api")
        listed = as_json(devbox(api, "alerts", "rules", "--json", cwd=tmp_path))
        assert [r["id"] for r in listed["rules"]] == ["devbox/ShopDown"]
        assert listed["rules"][0]["expr"] == 'shop_up{service="orders"} < 1.0'

        added = as_json(
            devbox(
                api,
                "alerts",
                "silence",
                "add",
                "service=orders",
                "alertname=ShopDown",
                "--duration",
                "10m",
                "--comment",
                "deploying",
                "--json",
                cwd=tmp_path,
            )
        )
        assert added["state"] == "active" and added["comment"] == "deploying"
        report = {
            "name": "shop",
            "dimensions": {"service": "orders"},
            "values": [{"name": "up", "policy": "SET", "value": 0}],
        }
        assert httpc.post(api + "/api/metrics/custom", json=report).status_code == 200
        wait_for(lambda: httpc.get(api + "/api/alerts", params={"state": "firing"}).json()["alerts"], timeout=60,
                 what="the rule ShopDown to fire")
        [firing] = as_json(devbox(api, "alerts", "ls", "--json", cwd=tmp_path))["alerts"]
        assert firing["state"] == "firing" and firing["silenced_by"] == [added["id"]]

        history = as_json(devbox(api, "alerts", "history", "--rule", "ShopDown", "--json", cwd=tmp_path))
        fired = [t for t in history["transitions"] if t["to"] == "firing"]
        assert fired and fired[0]["silenced"] and not fired[0]["notified"]

        expired = devbox(api, "alerts", "silence", "expire", added["id"], cwd=tmp_path)
        assert expired.returncode == 0 and added["id"] in expired.stdout
        silences = as_json(devbox(api, "alerts", "silence", "ls", "--all", "--json", cwd=tmp_path))["silences"]
        assert [(s["id"], s["state"]) for s in silences] == [(added["id"], "expired")]

        tested = as_json(
            devbox(api, "alerts", "test", "ShopDown", "--since", "1m", "--step", "1s", "--json", cwd=tmp_path)
        )
        assert tested["would_fire"] and tested["evaluations"] == 61
        (tmp_path / "draft.yml").write_text(
            "groups:\n  - name: drafts\n    rules:\n      - alert: NeverLow\n        expr: shop_up < -1\n"
        )
        draft = devbox(api, "alerts", "test", "--rule-file", "draft.yml", "--since", "1m", cwd=tmp_path)
        assert draft.returncode == 0 and "would not have fired" in draft.stdout
        wrong = devbox(api, "alerts", "test", "--expr", "shop_up <", cwd=tmp_path)
        assert wrong.returncode == 1 and "PromQL" in wrong.stderr
