"""Every dashboard page on the running shop's real data, in Debian's headless Chromium (Playwright):
the page renders, its interactions work, the browser logs no console error. Screenshots go to
tests/artifacts/ (gitignored) for a person to look at."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.learn_shop import running_shop

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300),
              pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed")]


def test_every_page_on_the_shop(tmp_path: Path) -> None:
    playwright = pytest.importorskip("playwright.sync_api")
    ARTIFACTS.mkdir(exist_ok=True)
    with running_shop(tmp_path) as (_shop, state):
        api = state["platform"]["listeners"]["api"]
        base = f"http://127.0.0.1:{api['port']}"
        [gateway] = next(s for s in state["services"] if s["service"] == "gateway")["instances"]
        url = f"http://127.0.0.1:{gateway['port']}/checkout/alice"
        for _ in range(3):
            assert httpx.get(url, timeout=15).status_code == 200
        assert httpx.get(url + "?fail=payment", timeout=15).status_code >= 500
        deadline = time.monotonic() + 30
        while not (failed := httpx.get(base + "/api/traces?errors=true").json()["traces"]) or failed[0]["spans"] < 11:
            assert time.monotonic() < deadline
            time.sleep(0.3)
        trace_id = failed[0]["trace_id"]
        with playwright.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
            errors: list[str] = []
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.goto(base + "/")
                page.wait_for_selector("#services td a")
                assert "orders" in page.inner_text("#services")
                page.screenshot(path=str(ARTIFACTS / "dashboard-overview.png"), full_page=True)

                page.click("nav a[data-tab=topology]")
                page.wait_for_selector("#graph g.node")
                assert page.locator("#graph g.node").count() == 5
                page.click("#graph g.node[data-node=orders]")
                page.wait_for_function("location.hash === '#/topology/orders'")
                page.wait_for_selector("#nodeinfo h3")
                assert "gateway" in page.inner_text("#nodeinfo") and "payment" in page.inner_text("#nodeinfo")
                page.screenshot(path=str(ARTIFACTS / "dashboard-topology.png"), full_page=True)

                page.goto(f"{base}/#/traces/{trace_id}")  # a deep link
                page.wait_for_selector("#waterfall tr.span")
                assert "Root cause: payment · POST /authorize failed with 503" in page.inner_text("#cause")
                assert page.locator("#waterfall .bar span.err").count() >= 1
                assert page.locator("#waterfall .bar span.crit").count() >= 1
                rows = page.locator("#waterfall tr.span").count()
                page.locator("#waterfall [data-tog]").nth(1).click()
                assert page.locator("#waterfall tr.span").count() < rows
                page.locator("#waterfall tr.span").first.click()
                assert "http.route" in page.inner_text("#spandetail")
                page.screenshot(path=str(ARTIFACTS / "dashboard-trace.png"), full_page=True)

                page.click("nav a[data-tab=metrics]")
                page.wait_for_selector("#legend .leg")
                assert "callee=orders" in page.inner_text("#legend")
                page.screenshot(path=str(ARTIFACTS / "dashboard-metrics.png"), full_page=True)

                page.go_back()  # back to the trace, by the URL
                page.wait_for_function(f"location.hash === '#/traces/{trace_id}'")
                page.wait_for_selector("#trace:not([hidden])")

                page.click("nav a[data-tab=naming]")
                page.click("#namingServices a:text('orders')")
                page.wait_for_selector("#namingInstances td")
                assert page.locator("#namingInstances tr").count() == 3
                page.screenshot(path=str(ARTIFACTS / "dashboard-naming.png"), full_page=True)

                page.click("nav a[data-tab=deploys]")
                page.wait_for_selector("#events td")
                assert "ready" in page.inner_text("#events")
                page.screenshot(path=str(ARTIFACTS / "dashboard-deploys.png"), full_page=True)

                page.click("nav a[data-tab=alerts]")
                page.wait_for_selector("#history")
                page.screenshot(path=str(ARTIFACTS / "dashboard-alerts.png"), full_page=True)
                assert errors == []
            finally:
                browser.close()
