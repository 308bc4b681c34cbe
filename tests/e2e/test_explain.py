"""`devbox explain request` on a failing checkout names the root cause and each hop's instance and
routing reason; `devbox explain service` says who calls a service, its instances, rules and deploys."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from devbox.testing import wait_for
from tests import httpc
from tests.e2e.learn_shop import devbox, running_shop

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


def test_explain_a_failing_checkout_and_a_service(tmp_path: Path) -> None:
    with running_shop(tmp_path) as (shop, state):
        [gateway] = next(s for s in state["services"] if s["service"] == "gateway")["instances"]
        url = f"http://127.0.0.1:{gateway['port']}/checkout/alice"
        assert httpc.get(url, timeout=15).status_code == 200
        assert httpc.get(url + "?fail=payment", timeout=15).status_code >= 500
        def failed_trace() -> dict[str, Any] | None:
            listed = devbox("traces", "ls", "--errors", "--json", cwd=shop)
            failed = [t for t in json.loads(listed.stdout)["traces"] if "payment" in t["services"]]
            return failed[0] if failed and failed[0]["spans"] >= 11 else None

        # each check is a CLI process: polled at a CLI's pace
        found = wait_for(failed_trace, timeout=30, what="the failed checkout's whole trace (11 spans)", every=0.3)
        trace_id = found["trace_id"]

        text = devbox("explain", "request", trace_id, cwd=shop)
        assert text.returncode == 0, text.stderr
        assert "Root cause: payment · POST /authorize failed with 503" in text.stdout
        assert "via orders" in text.stdout

        story = json.loads(devbox("explain", "request", trace_id, "--json", cwd=shop).stdout)
        assert [c["service"] for c in story["root_causes"]] == ["payment"]
        hops = {(h["caller"], h["callee"]): h for h in story["hops"]}
        assert {("gateway", "orders"), ("gateway", "users"), ("orders", "payment")} <= set(hops)
        for pair in (("gateway", "orders"), ("orders", "payment")):
            hop = hops[pair]
            assert hop["instance"].startswith(pair[1] + "-"), hop
            assert "balancer" in hop["why"] and hop["pick"]["reason"] in hop["why"], hop
        assert hops[("orders", "payment")]["error"] and "503" in hops[("orders", "payment")]["status"]
        if any(h["pick_source"] == "event" for h in story["hops"]):
            # once the store keeps span events, every HTTP hop has its own recorded pick
            http_hops = [h for h in story["hops"] if not h["operation"].startswith("/")]
            assert all(h["pick_source"] == "event" for h in http_hops), http_hops
        assert story["critical_path"] and any("critical path" in s for s in story["sentences"])

        service = json.loads(devbox("explain", "service", "orders", "--json", cwd=shop).stdout)
        assert service["callers"] == ["gateway"]
        assert set(service["callees"]) == {"users", "inventory", "payment"}
        assert len(service["instances"]) == 2 and all(i["tags"] == {"env": "base"} for i in service["instances"])
        assert "ShopSuccessRateLow" in [r["name"] for r in service["alert_rules"]]
        assert any(d["kind"] == "ready" for d in service["deploys"])
        assert service["indicators"]["success_rate"] < 100
