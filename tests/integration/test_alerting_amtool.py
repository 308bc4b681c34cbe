"""The real ``amtool`` (Debian prometheus-alertmanager) managing silences and reading alerts from
devbox's Alertmanager API, including alerts fired by a rule evaluated against the metrics store."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from devbox.testing import running_platform, wait_for
from tests import httpc

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("amtool") is None, reason="amtool not installed (apt prometheus-alertmanager)"),
]


def amtool(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["amtool", f"--alertmanager.url={url}", *args], capture_output=True, text=True, timeout=30, check=False
    )


def test_amtool_silences_and_alerts(tmp_path: Path) -> None:
    rules = [{"name": "AlwaysOn", "indicator": "shop_up", "comparison": "<", "threshold": 1}]
    with running_platform(
        tmp_path, components=["metrics", "alerting"], alerting={"interval": 0.2, "rules": rules}
    ) as p:
        am = p.url("alertmanager")
        api = p.url("api")
        report = {
            "name": "shop",
            "dimensions": {"service": "orders"},
            "values": [{"name": "up", "policy": "SET", "value": 0}],
        }
        assert httpc.post(api + "/api/metrics/custom", json=report).status_code == 200

        def queried() -> subprocess.CompletedProcess[str] | None:
            out = amtool(am, "alert", "query", "-o", "json")
            assert out.returncode == 0, out.stderr
            alerts = json.loads(out.stdout)
            return out if any(a["labels"].get("alertname") == "AlwaysOn" for a in alerts) else None

        out = wait_for(queried, timeout=60, every=0.2, what="the rule's alert AlwaysOn to reach amtool")
        assert "version" not in out.stderr  # no version-mismatch warning

        added = amtool(am, "alert", "add", "alertname=FromAmtool", "service=payment", "--annotation=summary=hello")
        assert added.returncode == 0, added.stderr
        out = amtool(am, "alert", "query", "alertname=FromAmtool", "-o", "extended")
        assert out.returncode == 0 and 'service="payment"' in out.stdout and 'summary="hello"' in out.stdout

        added = amtool(am, "silence", "add", "service=orders", "--comment=deploying", "--author=ci", "--duration=1h")
        assert added.returncode == 0, added.stderr
        silence_id = added.stdout.strip()
        out = amtool(am, "silence", "query", "-o", "json")
        [silence] = json.loads(out.stdout)
        assert silence["id"] == silence_id and silence["createdBy"] == "ci" and silence["status"]["state"] == "active"
        out = amtool(am, "silence", "query", "service=orders", "-q")
        assert out.stdout.split() == [silence_id]
        assert amtool(am, "silence", "query", "service=nope", "-q").stdout.split() == []

        out = amtool(am, "alert", "query", "-o", "json")
        assert "AlwaysOn" not in out.stdout  # silenced alerts are hidden by default
        out = amtool(am, "alert", "query", "--silenced", "-o", "json")
        [muted] = [a for a in json.loads(out.stdout) if a["labels"]["alertname"] == "AlwaysOn"]
        assert muted["status"]["state"] == "suppressed" and muted["status"]["silencedBy"] == [silence_id]

        expired = amtool(am, "silence", "expire", silence_id)
        assert expired.returncode == 0, expired.stderr
        assert amtool(am, "silence", "query", "-q").stdout.split() == []
        assert amtool(am, "silence", "query", "--expired", "-q").stdout.split() == [silence_id]
        missing = amtool(am, "silence", "expire", "00000000-0000-0000-0000-000000000000")
        assert missing.returncode != 0

        # The devbox side sees the same silences and the notification history.
        listed = httpc.get(api + "/api/alerts/silences").json()["silences"]
        assert [s["state"] for s in listed] == ["expired"]
        history = httpc.get(api + "/api/alerts/history", params={"rule": "AlwaysOn"}).json()["transitions"]
        assert history and history[-1]["to"] == "firing" and history[-1]["notified"]
