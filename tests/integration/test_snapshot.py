"""Snapshots against a real platform (no services): save through the HTTP APIs, load into a fresh
service-less platform, and the registry, rules, spans, alert rules and silences are back."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx

from devbox.diff.core import diff
from devbox.diff.profile import profile
from devbox.snapshot.collect import Platform, collect
from devbox.snapshot.format import read, write
from devbox.snapshot.serve import start
from devbox.testing import running_platform, wait_for
from tests import httpc
from tests.unit.evidence_traces import shop_rows

RULE = {"service": "orders", "name": "feature-x", "destinations": [{"labels": {"env": "feature-x"}}]}


def test_save_then_load_restores_state_and_evidence(tmp_path: Path) -> None:
    with running_platform(tmp_path / "a") as p:
        api = httpx.Client(base_url=p.url("api"), timeout=30)
        assert api.post("/api/naming/instances", json={
            "service": "users", "host": "127.0.0.1", "port": 7001, "metadata": {"env": "base"},
            "health_check": False}).status_code == 201
        assert api.post("/api/naming/rules", json=RULE).status_code == 201
        assert api.post("/api/alerts/silences", json={"matchers": ["alertname=X"],
                                                       "duration": "1h", "comment": "t"}).status_code == 201
        rows = shop_rows(20, seed=1, t0=time.time() * 1e6 - 30e6, gap_us=100_000)
        assert httpc.post(p.url("zipkin") + "/api/v2/spans", content=json.dumps(rows),
                          headers={"Content-Type": "application/json"}).status_code == 202
        wait_for(lambda: len(api.get("/api/traces", params={"limit": 100}).json()["traces"]) == 20, 30,
                 "the 20 traces stored")
        ev = collect(Platform(p.url("api")), start=time.time() - 120, name="t")
    assert len({r["traceId"] for r in ev.spans}) == 20 and len(ev.instances) == 1
    path = write(tmp_path / "t.db", ev)
    back = read(path)
    thread, done = start(back, tmp_path / "t.view")
    try:
        assert done["refused"] == [] and done["spans"] == len(ev.spans), done
        api = httpx.Client(base_url=thread.url("api"), timeout=30)
        assert [i["port"] for i in api.get("/api/naming/instances").json()] == [7001]
        assert [r["name"] for r in api.get("/api/naming/rules").json()] == ["feature-x"]
        assert len(api.get("/api/alerts/silences").json()["silences"]) == 1
        wait_for(lambda: len(api.get("/api/traces", params={"limit": 100, "lookback": 600_000}).json()["traces"])
                 == 20, 30, "the 20 traces restored")
        again = collect(Platform(thread.url("api")), start=time.time() - 120, name="again", with_metrics=False)
    finally:
        thread.stop()
    # the restored platform's evidence diffs to nothing against what was saved
    result = diff(profile(back), profile(again))
    assert result.findings == [], [f.text for f in result.findings]
