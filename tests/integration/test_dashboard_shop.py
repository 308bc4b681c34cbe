"""Every dashboard page on the running shop's real data, in Debian's headless Chromium (Playwright):
the page renders, its interactions work, the browser logs no console error. Screenshots go to
tests/artifacts/ (gitignored) for a person to look at. One shop serves the whole module: it is
started once, sent good checkouts and then failing ones until ShopSuccessRateLow fires for payment
(plus a rule of this test's that stays pending), so every page has real edges, errors and alerts."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from devbox.testing import wait_for
from tests import httpc
from tests.browser import ARGS, ARTIFACTS, CHROMIUM
from tests.e2e.learn_shop import running_shop

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300),
              pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed")]

#: pending as soon as payment fails once, firing only after an hour: the Alerts page's "pending" row
PENDING_RULE = {"name": "dashboard-test", "rules": [{
    "alert": "ShopPaymentFailuresSeen", "for": "1h", "labels": {"severity": "ticket"},
    "expr": 'sum by (callee) (increase(rpc_server_requests_total{callee="payment", status="error"}[5m])) > 0',
    "annotations": {"summary": "payment failed calls in the last 5 minutes"}}]}


@dataclass
class Shop:
    base: str  # devbox's API (and the dashboard)
    checkout: str  # the gateway's checkout URL
    alertmanager: str
    zipkin: str


def _with_pending_rule(config: dict[str, Any]) -> None:
    config.setdefault("alerting", {}).setdefault("groups", []).append(PENDING_RULE)


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    with running_shop(tmp_path_factory.mktemp("dashboard"), edit=_with_pending_rule) as (_shop, state):
        listeners = state["platform"]["listeners"]
        base = f"http://127.0.0.1:{listeners['api']['port']}"
        [gateway] = next(s for s in state["services"] if s["service"] == "gateway")["instances"]
        url = f"http://127.0.0.1:{gateway['port']}/checkout/alice"
        for _ in range(3):
            assert httpc.get(url, timeout=15).status_code == 200
        assert httpc.get(url + "?fail=payment", timeout=15).status_code >= 500

        # payment fails until ShopSuccessRateLow fires for it (>= 5 calls in 1 m, below 95 % for 10 s)
        def fired() -> dict[str, Any] | None:
            httpc.get(url + "?fail=payment", timeout=15)
            rows = httpc.get(base + "/api/alerts/history", params={"rule": "ShopSuccessRateLow"}).json()["transitions"]
            return next((r for r in rows if r["to"] == "firing" and r["labels"].get("callee") == "payment"), None)

        wait_for(fired, timeout=120, every=0.5, what="ShopSuccessRateLow firing for payment in the history")
        yield Shop(base, url, f"http://127.0.0.1:{listeners['alertmanager']['port']}",
                   f"http://127.0.0.1:{listeners['zipkin']['port']}")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    playwright = pytest.importorskip("playwright.sync_api")
    ARTIFACTS.mkdir(exist_ok=True)
    with playwright.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


def _page(browser: Any, allow: str | None = None) -> tuple[Any, list[str]]:
    """A fresh page and the console errors it logs; ``allow``: a URL part whose failed loads are expected."""
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.set_default_timeout(30_000)
    errors: list[str] = []

    def console(m: Any) -> None:
        if m.type == "error" and not (allow and allow in (m.location or {}).get("url", "")):
            errors.append(m.text)

    page.on("console", console)
    page.on("pageerror", lambda e: errors.append(str(e)))
    return page, errors


def _ms(us: float) -> str:
    """The dashboard's duration format (app.js ms())."""
    if us >= 1e6:
        return f"{us / 1e6:.2f} s"
    return f"{us / 1000:.{2 if us < 10000 else 0}f} ms"


def test_every_page_on_the_shop(shop: Shop, browser: Any) -> None:
    base = shop.base
    failed = wait_for(lambda: [t for t in httpc.get(base + "/api/traces?errors=true").json()["traces"][:1]
                               if t["spans"] >= 11], timeout=30, what="the newest failed checkout's 11 spans")
    trace_id = failed[0]["trace_id"]
    page, errors = _page(browser)
    try:
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
        # the history lists each transition with its labels: payment's alert went pending, then firing
        fired = page.locator("#history tr", has_text="ShopSuccessRateLow").filter(
            has_text="callee=payment").filter(has_text="pending → firing")
        fired.first.wait_for()
        assert "severity=page" in fired.first.inner_text()
        page.locator("#history tr", has_text="ShopPaymentFailuresSeen").filter(
            has_text="inactive → pending").first.wait_for()
        assert [h.strip() for h in page.locator("#history th").all_inner_texts()][:4] == [
            "time", "alert", "labels", "from → to"]
        page.screenshot(path=str(ARTIFACTS / "dashboard-alerts.png"), full_page=True)
        assert errors == []
    finally:
        page.close()


def _old_call(now_us: int) -> list[dict[str, Any]]:
    """users called inventory 10 minutes ago (Zipkin JSON): an edge inside a 1 hour window, outside 5 min."""
    trace, t = "5ea7ed0c1d00000000000000000000aa", now_us - 600_000_000
    return [
        {"traceId": trace, "id": "a000000000000001", "name": "GET", "kind": "CLIENT", "timestamp": t, "duration": 4000,
         "localEndpoint": {"serviceName": "users"}, "remoteEndpoint": {"serviceName": "inventory"}},
        {"traceId": trace, "id": "a000000000000002", "parentId": "a000000000000001", "name": "get /stock",
         "kind": "SERVER", "timestamp": t + 300, "duration": 3000, "localEndpoint": {"serviceName": "inventory"}},
    ]


def _edges(shop: Shop, lookback_ms: int) -> dict[str, dict[str, Any]]:
    topo = httpc.get(shop.base + "/api/topology", params={"lookback": lookback_ms}).json()
    return {f"{e['caller']}>{e['callee']}": e for e in topo["edges"]}


def _label(page: Any, edge: str) -> str:
    return " | ".join(page.locator(f"#graph g.elabel[data-edge='{edge}'] text").all_text_contents())


def test_topology_edges_show_rate_errors_p99_in_health_colours_for_the_chosen_window(shop: Shop, browser: Any) -> None:
    assert httpc.post(shop.zipkin + "/api/v2/spans", json=_old_call(int(time.time() * 1e6))).status_code == 202
    wait_for(lambda: "users>inventory" in _edges(shop, 3_600_000) and "users>inventory" not in _edges(shop, 300_000),
             timeout=30, what="the old users → inventory call in the 1 hour topology only")
    page, errors = _page(browser)
    try:
        page.goto(shop.base + "/#/topology")
        page.wait_for_selector("#graph path.edge[data-edge='users>inventory']")
        edges = _edges(shop, 3_600_000)
        colour = {"red": "#d64545", "amber": "#d69e2e", "green": "#1f9d55"}
        for key, e in edges.items():
            label = _label(page, key)
            # calls/s over the chosen window (1 hour), error % and p99, as the topology API counts them
            assert f"{e['calls']} calls ({e['calls'] / 3600:.2f}/s) · {e['error_rate'] * 100:.0f}% err" in label, label
            assert f"p99 {_ms(e['p99_us'])}" in label, label
            health = "red" if e["error_rate"] > 0.05 else "amber" if e["error_rate"] > 0 else "green"
            assert page.get_attribute(f"#graph path.edge[data-edge='{key}']", "stroke") == colour[health], key
        # the failing payment makes its callers' edges red; an edge without errors is green
        assert edges["orders>payment"]["error_rate"] > 0.05 and edges["users>inventory"]["errors"] == 0
        assert page.get_attribute("#graph path.edge[data-edge='orders>payment']", "stroke") == colour["red"]
        assert page.get_attribute("#graph path.edge[data-edge='users>inventory']", "stroke") == colour["green"]
        page.screenshot(path=str(ARTIFACTS / "dashboard-topology-1h.png"), full_page=True)

        # 5 minutes: the old call is out of the window, the rate is over 300 s
        page.select_option("#window", "300000")
        page.wait_for_selector("#graph path.edge[data-edge='users>inventory']", state="detached")
        recent = _edges(shop, 300_000)
        assert "users>inventory" not in recent
        assert page.locator("#edges tr", has_text="users").filter(has_text="inventory").count() == 0
        pay = recent["orders>payment"]
        label = _label(page, "orders>payment")
        assert f"{pay['calls']} calls ({pay['calls'] / 300:.2f}/s)" in label, label
        assert page.locator("#graph path.edge").count() == len(recent)
        page.screenshot(path=str(ARTIFACTS / "dashboard-topology-5min.png"), full_page=True)
        assert errors == []
    finally:
        page.close()


def _ticks(page: Any) -> list[float]:
    return [float(t) for t in page.eval_on_selector_all("#chart text.tick", "ts => ts.map(t => t.dataset.t)")]


def test_metrics_indicator_group_by_range_and_a_bad_promql_shown_in_place(shop: Shop, browser: Any) -> None:
    page, errors = _page(browser, allow="/api/dashboard/range")  # the bad expression's 400 is expected
    try:
        page.goto(shop.base + "/#/metrics")
        page.wait_for_selector("#legend .leg")
        options = page.eval_on_selector_all("#indicator option", "os => os.map(o => o.value)")
        assert {"success_rate", "error_rate"} <= set(options), options
        assert page.input_value("#indicator") == "success_rate"
        # the range picker sets the time axis: 15 minutes by default, then an hour
        ticks = _ticks(page)
        assert len(ticks) == 5 and abs(ticks[-1] - ticks[0] - 900) < 1, ticks
        page.select_option("#range", "60")
        page.wait_for_function("() => { const t = [...document.querySelectorAll('#chart text.tick')]"
                               ".map(x => +x.dataset.t); return t.length === 5 && Math.abs(t[4] - t[0] - 3600) < 1; }")

        # error rate by callee: payment's failures show as its own line
        page.select_option("#indicator", "error_rate")
        page.locator("#legend .leg", has_text="callee=payment").wait_for()
        assert page.locator("#chart path").count() == page.locator("#legend .leg").count()
        page.screenshot(path=str(ARTIFACTS / "dashboard-metrics-error-rate.png"), full_page=True)
        # group by caller: every legend names a caller, none a callee
        page.select_option("#groupby", "caller")
        page.wait_for_function("() => { const l = [...document.querySelectorAll('#legend .leg')]"
                               ".map(x => x.textContent); return l.length && l.every(t => t.includes('caller=')); }")
        assert "callee=" not in page.inner_text("#legend") and "caller=orders" in page.inner_text("#legend")
        page.select_option("#groupby", "")
        page.wait_for_function("() => [...document.querySelectorAll('#legend .leg')].map(x => x.textContent.trim())"
                               ".join('|') === '■ (all)'")

        # a bad expression: the error sits under the box, not in the header, and the old chart goes
        page.fill("#promql", "sum(rate(rpc_server_requests_total[1m]")
        page.click("#run")
        page.wait_for_function("() => document.getElementById('metricsError').textContent.length > 0")
        assert "400" in page.inner_text("#metricsError")
        assert page.inner_text("#error") == "" and page.locator("#legend .leg").count() == 0
        page.screenshot(path=str(ARTIFACTS / "dashboard-metrics-bad-promql.png"), full_page=True)
        page.fill("#promql", "sum by (callee) (rate(rpc_server_requests_total[1m]))")
        page.click("#run")
        page.locator("#legend .leg", has_text="callee=payment").wait_for()
        assert page.inner_text("#metricsError") == ""
        assert errors == []
    finally:
        page.close()


def _am_silence(shop: Shop, matchers: dict[str, str], state: str) -> dict[str, Any] | None:
    for s in httpc.get(shop.alertmanager + "/api/v2/silences").json():
        if {m["name"]: m["value"] for m in s["matchers"]} == matchers and s["status"]["state"] == state:
            return s
    return None


def test_alerts_firing_pending_silenced_with_labels_and_a_silence_made_and_expired_from_the_page(
        shop: Shop, browser: Any) -> None:
    page, errors = _page(browser)
    wanted = {"alertname": "ShopSuccessRateLow", "callee": "payment"}
    try:
        page.goto(shop.base + "/#/alerts")
        firing = page.locator("#active tr", has_text="ShopSuccessRateLow").filter(has_text="callee=payment")
        firing.wait_for()
        cells = firing.locator("td").all_inner_texts()
        assert cells[1] == "firing" and "severity=page" in cells[2], cells
        assert re.fullmatch(r"-?\d+(\.\d{1,2})?", cells[3]), cells  # a value for people: rounded
        pending = page.locator("#active tr", has_text="ShopPaymentFailuresSeen")
        pending.wait_for()
        cells = pending.locator("td").all_inner_texts()
        assert cells[1] == "pending" and "callee=payment" in cells[2] and "severity=ticket" in cells[2], cells

        # silence payment's alert from its row: Alertmanager's API has it, the alert is suppressed by it
        assert _am_silence(shop, wanted, "active") is None
        firing.locator("[data-silence]").click()
        silence = wait_for(lambda: _am_silence(shop, wanted, "active"), timeout=15, what="the page's silence")
        assert silence["createdBy"] == "dashboard"
        wait_for(lambda: any(a["labels"].get("alertname") == "ShopSuccessRateLow" and a["labels"].get("callee") ==
                             "payment" and silence["id"] in a["status"]["silencedBy"]
                             for a in httpc.get(shop.alertmanager + "/api/v2/alerts").json()),
                 timeout=15, what="payment's alert suppressed by the silence")
        row = page.locator("#silences tr", has_text=silence["id"][:8])
        row.wait_for()
        assert "callee" in row.inner_text() and "payment" in row.inner_text()
        page.locator("#active tr", has_text="ShopSuccessRateLow").filter(has_text=silence["id"]).wait_for()
        page.screenshot(path=str(ARTIFACTS / "dashboard-alerts-silenced.png"), full_page=True)

        # expire it from the page
        row.locator("[data-expire]").click()
        wait_for(lambda: httpc.get(f"{shop.alertmanager}/api/v2/silence/{silence['id']}").json()["status"]["state"]
                 == "expired", timeout=15, what="the silence expired in Alertmanager")
        row.wait_for(state="detached")
        assert silence["id"] not in firing.inner_text()
        page.screenshot(path=str(ARTIFACTS / "dashboard-alerts-expired.png"), full_page=True)
        assert errors == []
    finally:
        page.close()
