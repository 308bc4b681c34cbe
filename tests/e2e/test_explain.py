"""A failing checkout on the running shop, seen two ways. `devbox explain request` on it names the root
cause and each hop's instance and routing reason, and `devbox explain service` says who calls a service,
its instances, rules and deploys. The dashboard's Logs and Load runs pages, logs around a span, trace
search by operation/tags and the alert history's context show it in Debian's headless Chromium
(Playwright), with no console error; screenshots go to tests/artifacts/ for a person to look at.

Both start from the same state (a fresh copy of the shop, one good checkout, one that fails in payment):
one shop serves both tests (they were two modules that each started one), the CLI's first, which reads it
and changes nothing, then the browser's."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from devbox.testing import wait_for
from tests import httpc
from tests.browser import ARGS, ARTIFACTS, CHROMIUM, watched_page
from tests.e2e.learn_shop import devbox, running_shop

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

RUN = Path(__file__).parents[1] / "integration" / "data" / "load-run"  # a kept `devbox load` run of the shop


@dataclass
class FailedCheckout:
    shop: Path  # the running copy's folder
    state: dict[str, Any]  # its `devbox status --json` once every instance was ready
    url: str  # the gateway's checkout for alice; it answered 200, then 5xx with ?fail=payment


@pytest.fixture(scope="module")
def failed_checkout(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FailedCheckout]:
    with running_shop(tmp_path_factory.mktemp("explain")) as (shop, state):
        [gateway] = next(s for s in state["services"] if s["service"] == "gateway")["instances"]
        url = f"http://127.0.0.1:{gateway['port']}/checkout/alice"
        assert httpc.get(url, timeout=15).status_code == 200
        assert httpc.get(url + "?fail=payment", timeout=15).status_code >= 500
        yield FailedCheckout(shop, state, url)


def test_explain_a_failing_checkout_and_a_service(failed_checkout: FailedCheckout) -> None:
    shop = failed_checkout.shop
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


@pytest.mark.slow
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed")
def test_logs_load_and_trace_search_pages(failed_checkout: FailedCheckout) -> None:
    playwright = pytest.importorskip("playwright.sync_api")
    ARTIFACTS.mkdir(exist_ok=True)
    shop, state, url = failed_checkout.shop, failed_checkout.state, failed_checkout.url
    run_id = json.loads((RUN / "run.json").read_text())["id"]
    shutil.copytree(RUN, shop / ".devbox" / "load" / run_id)
    base = f"http://127.0.0.1:{state['platform']['listeners']['api']['port']}"
    def failed_trace() -> dict[str, Any] | None:
        failed = httpc.get(base + "/api/traces?errors=true").json()["traces"]
        return failed[0] if failed and failed[0]["spans"] >= 11 else None

    trace_id = wait_for(failed_trace, timeout=30, what="the failed checkout's whole trace (11 spans)")["trace_id"]
    # the SDK's request log carries the trace id: the logs API finds the failed checkout in payment's log
    # each service's log is flushed on its own: wait for both services' lines, payment's 503 among them
    def logged() -> list[dict[str, Any]] | None:
        hits = httpc.get(base + "/api/deploy/logs", params={"trace_id": trace_id}).json()["lines"]
        return hits if {"gateway", "payment"} <= {h["service"] for h in hits} and any(
            "status=503" in h["line"] for h in hits if h["service"] == "payment") else None

    hits = wait_for(logged, timeout=15, what="gateway's and payment's (status=503) lines of the failed trace")
    assert {"gateway", "payment"} <= {h["service"] for h in hits}
    assert any("status=503" in h["line"] for h in hits if h["service"] == "payment")
    assert httpc.get(base + "/api/deploy/logs", params={"trace_id": "xyz"}).status_code == 400

    with playwright.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page, errors = watched_page(browser)

            page.goto(f"{base}/#/logs/payment")
            page.wait_for_selector("#loglines a[href^='#/traces/']")
            assert "method=POST path=/authorize" in page.inner_text("#loglines")
            before = page.locator("#loglines tr").count()
            httpc.get(url, timeout=15)  # follow: the new request's line appears without a reload
            page.wait_for_function(f"document.querySelectorAll('#loglines tr').length > {before}")
            page.screenshot(path=str(ARTIFACTS / "dashboard-logs.png"), full_page=True)
            page.fill("#logTrace", trace_id)
            page.press("#logTrace", "Enter")
            page.wait_for_selector("#loglines tr.hit")
            page.locator(f"#loglines a[href='#/traces/{trace_id}']").first.click()
            page.wait_for_function(f"location.hash === '#/traces/{trace_id}'")
            page.wait_for_selector("#waterfall tr.span")

            page.locator("#waterfall tr.span", has_text="POST /authorize").last.click()
            page.wait_for_selector("#spanlogs tr.hit")
            assert "status=503" in page.inner_text("#spanlogs")
            page.screenshot(path=str(ARTIFACTS / "dashboard-span-logs.png"), full_page=True)

            page.goto(f"{base}/#/traces")
            page.fill("#traceService", "payment")
            page.fill("#traceTags", "http.status_code=503")
            page.press("#traceTags", "Enter")
            page.wait_for_selector(f"#tracelist a[data-trace='{trace_id}']")
            page.fill("#traceMax", "0.001")
            page.press("#traceMax", "Enter")
            page.wait_for_selector("#tracelist td.muted")  # nothing lasts under a microsecond
            page.screenshot(path=str(ARTIFACTS / "dashboard-trace-search.png"), full_page=True)

            page.goto(f"{base}/#/load")
            page.wait_for_selector(f"#loadruns a[href='#/load/{run_id}']")
            page.click(f"#loadruns a[href='#/load/{run_id}']")
            page.wait_for_selector("#loadRps path")
            assert "gateway" in page.inner_text("#loadCapacity")
            assert "requests/s" in page.inner_text("#loadRpsLegend")
            page.screenshot(path=str(ARTIFACTS / "dashboard-load.png"), full_page=True)

            page.goto(f"{base}/#/alerts")
            page.wait_for_selector("#history")
            if page.locator("#history [data-around]").count():
                page.locator("#history [data-around]").first.click()
                page.wait_for_selector("#histctx:not([hidden]) #ctxEvents")
            page.screenshot(path=str(ARTIFACTS / "dashboard-alerts-context.png"), full_page=True)
            assert page.inner_text("#error") == ""
        finally:
            browser.close()
        assert errors == [], errors
