"""The dashboard's Logs and Load runs pages, logs around a span, trace search by operation/tags and
the alert history's context, on the running shop in Debian's headless Chromium (Playwright), with no
console error. Screenshots go to tests/artifacts/ for a person to look at."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from devbox.testing import wait_for
from tests import httpc
from tests.browser import ARGS, ARTIFACTS, CHROMIUM, watched_page
from tests.e2e.learn_shop import running_shop

RUN = Path(__file__).parent / "data" / "load-run"  # a kept `devbox load` run of the shop

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300),
              pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed")]


def test_logs_load_and_trace_search_pages(tmp_path: Path) -> None:
    playwright = pytest.importorskip("playwright.sync_api")
    ARTIFACTS.mkdir(exist_ok=True)
    with running_shop(tmp_path) as (shop, state):
        run_id = json.loads((RUN / "run.json").read_text())["id"]
        shutil.copytree(RUN, shop / ".devbox" / "load" / run_id)
        base = f"http://127.0.0.1:{state['platform']['listeners']['api']['port']}"
        [gateway] = next(s for s in state["services"] if s["service"] == "gateway")["instances"]
        url = f"http://127.0.0.1:{gateway['port']}/checkout/alice"
        assert httpc.get(url, timeout=15).status_code == 200
        assert httpc.get(url + "?fail=payment", timeout=15).status_code >= 500
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
