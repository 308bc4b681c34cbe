"""devbox next to a real Alertmanager (Debian prometheus-alertmanager): devbox forwards its alerts
upstream (POST /api/v2/alerts), and both send webhooks to the same receiver — so devbox's webhook
payload is compared field by field with the real one, for firing and for resolved."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from devbox.testing import running_platform
from tests import httpc
from tests.integration.test_alerting_platform import WebhookSink, wait_for

BINARY = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(BINARY is None, reason="Alertmanager not installed (apt prometheus-alertmanager)"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def real_alertmanager(tmp_path: Path, webhook: str) -> Iterator[str]:
    config = tmp_path / "alertmanager.yml"
    config.write_text(
        "route:\n  receiver: real\n  group_by: [alertname]\n  group_wait: 0s\n  group_interval: 1s\n"
        "  repeat_interval: 1h\n"
        f"receivers:\n  - name: real\n    webhook_configs:\n      - url: {webhook}\n        send_resolved: true\n"
    )
    port = free_port()
    assert BINARY is not None
    proc = subprocess.Popen(
        [
            BINARY,
            f"--config.file={config}",
            f"--storage.path={tmp_path / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _ready(url), timeout=20, what="the real Alertmanager to start")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _ready(url: str) -> bool:
    try:
        return httpc.get(url + "/-/ready", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _by_receiver(sink: WebhookSink, receiver: str, status: str) -> list[dict[str, Any]]:
    return [p for p in sink.payloads if p["receiver"] == receiver and p["status"] == status]


def test_forwarding_and_webhook_payload_match_a_real_alertmanager(tmp_path: Path) -> None:
    with WebhookSink() as sink, real_alertmanager(tmp_path, sink.url) as upstream:
        alerting = {
            "interval": 0.2,
            "alertmanager_url": upstream,
            "receivers": [{"name": "devbox-hook", "url": sink.url}],
        }
        with running_platform(tmp_path, components=["metrics", "alerting"], alerting=alerting) as p:
            rules = p.url("api") + "/api/alerts/rules"
            body = {
                "alert": "Forwarded",
                "expr": 'label_replace(vector(3), "service", "orders", "", "")',
                "labels": {"severity": "page"},
                "annotations": {"summary": "value {{ $value }}"},
            }
            created = httpc.post(rules, json=body)
            if created.status_code == 400 and "label_replace" in created.text:
                body["expr"] = "vector(3) > 0"
                created = httpc.post(rules, json=body)
            assert created.status_code == 201, created.text

            def upstream_alerts() -> list[dict[str, Any]]:
                return httpc.get(upstream + "/api/v2/alerts").json()

            [forwarded] = wait_for(upstream_alerts, what="the alert at the real Alertmanager")
            assert forwarded["labels"]["alertname"] == "Forwarded"
            assert forwarded["labels"]["severity"] == "page"
            assert forwarded["annotations"] == {"summary": "value 3"}
            assert forwarded["generatorURL"].startswith(p.url("prometheus"))

            wait_for(lambda: _by_receiver(sink, "real", "firing"), what="the real Alertmanager's webhook")
            wait_for(lambda: _by_receiver(sink, "devbox-hook", "firing"), what="devbox's webhook")
            assert httpc.delete(rules + "/devbox/Forwarded").status_code == 200
            wait_for(lambda: _by_receiver(sink, "devbox-hook", "resolved"), what="devbox's resolved webhook")
            wait_for(lambda: _by_receiver(sink, "real", "resolved"), timeout=30, what="the real resolved webhook")

    for status in ("firing", "resolved"):
        real = _by_receiver(sink, "real", status)[0]
        ours = _by_receiver(sink, "devbox-hook", status)[0]
        assert set(ours) == set(real), (status, set(ours) ^ set(real))
        assert ours["version"] == real["version"] == "4"
        assert ours["groupKey"] == real["groupKey"].replace("{}/", "")  # the real key names the route
        for key in ("groupLabels", "commonLabels", "commonAnnotations"):
            assert ours[key] == real[key], key
        [real_alert], [our_alert] = real["alerts"], ours["alerts"]
        assert set(our_alert) == set(real_alert)
        for key in ("status", "labels", "annotations", "fingerprint"):
            assert (key, our_alert[key]) == (key, real_alert[key])
        assert (our_alert["endsAt"] == "0001-01-01T00:00:00Z") == (status == "firing")
