"""The dashboard in a real headless Chromium (Debian's), driven by Playwright."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from devbox.testing import running_platform, wait_for
from tests import httpc
from tests.browser import ARGS, CHROMIUM


def _zipkin_trace(now_us: int) -> list[dict[str, object]]:
    trace = "5af7183fb1d4cf5f5af7183fb1d4cf5f"

    def span(sid: str, parent: str | None, service: str, name: str, kind: str, start: int, dur: int, **tags: str):
        out = {
            "traceId": trace, "id": sid, "name": name, "kind": kind, "timestamp": now_us + start,
            "duration": dur, "localEndpoint": {"serviceName": service}, "tags": tags,
        }
        if parent:
            out["parentId"] = parent
        return out

    return [
        span("a000000000000001", None, "gateway", "GET /checkout", "SERVER", 0, 9000),
        span("a000000000000002", "a000000000000001", "gateway", "GET orders", "CLIENT", 100, 8000),
        span("a000000000000003", "a000000000000002", "orders", "GET /orders", "SERVER", 200, 7600),
        span("a000000000000004", "a000000000000003", "orders", "POST payment", "CLIENT", 300, 5000, error="502"),
        span("a000000000000005", "a000000000000004", "payment", "POST /pay", "SERVER", 400, 4000, error="declined"),
    ]


@pytest.mark.slow
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed (make install)")
def test_dashboard_shows_topology_and_trace(tmp_path: Path) -> None:
    playwright = pytest.importorskip("playwright.sync_api")
    with running_platform(tmp_path) as p:
        spans = _zipkin_trace(int(time.time() * 1e6) - 20_000)
        assert httpc.post(p.url("zipkin") + "/api/v2/spans", json=spans).status_code == 202
        # the first query of a new platform waits for its indexer process to be up (up to 10 s on a busy
        # machine, past httpx's default 5 s)
        wait_for(lambda: httpc.get(p.url("api") + "/api/topology", timeout=30).json()["edges"], timeout=30,
                 what="the trace's edges in /api/topology")
        with playwright.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
            try:
                page = browser.new_page(viewport={"width": 1200, "height": 800})
                page.goto(p.url("api") + "/")
                page.wait_for_selector("#components td")
                assert "tracing" in page.inner_text("#components")
                page.click("nav a[data-tab=topology]")
                page.wait_for_selector("#graph rect")
                graph = page.inner_text("#edges")
                assert "gateway" in graph and "orders" in graph and "payment" in graph
                page.click("nav a[data-tab=traces]")
                page.click("[data-trace]")
                page.wait_for_selector("#waterfall .bar")
                assert page.locator("#waterfall .bar span.err").count() >= 1
                page.wait_for_selector("#cause .cause")
                assert "payment" in page.inner_text("#cause")
                assert page.screenshot(path=str(tmp_path / "dashboard.png"))
            finally:
                browser.close()
