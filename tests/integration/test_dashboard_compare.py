"""The dashboard's trace comparison, naming's "explain a pick", services that send spans but are not
in devbox.yaml, and the alert history's "traces & deploys around" link on an alert that really
fired — on the running shop in Debian's headless Chromium (Playwright), with no console error.
Screenshots go to tests/artifacts/ for a person to look at."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from devbox.testing import wait_for
from tests import httpc
from tests.browser import ARGS, ARTIFACTS, CHROMIUM, watched_page
from tests.e2e.learn_shop import running_shop

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420),
              pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed")]

FEATURE_RULE = {  # the tour's feature-environment rule: env=$env first, base as the fallback
    "name": "feature-env", "service": "*",
    "destinations": [{"labels": {"env": "$env"}}, {"labels": {"env": {"type": "IN", "value": "base,"}}, "priority": 1}],
}


def _stranger_spans() -> list[dict[str, Any]]:
    """A nightly job that is no service of the shop calls orders (another tool exporting here)."""
    now = int(time.time() * 1e6) - 50_000
    trace = "7bd1e2a4c0f35e6b7bd1e2a4c0f35e6b"
    return [
        {"traceId": trace, "id": "b000000000000001", "name": "nightly sync", "kind": "CLIENT", "timestamp": now,
         "duration": 9000, "localEndpoint": {"serviceName": "batch-job"}, "remoteEndpoint": {"serviceName": "orders"}},
        {"traceId": trace, "id": "b000000000000002", "parentId": "b000000000000001", "name": "get /orders",
         "kind": "SERVER", "timestamp": now + 500, "duration": 7000, "localEndpoint": {"serviceName": "orders"}},
    ]


def _variant(spans: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """The same checkout as a new trace (Zipkin JSON) with one call fewer and one more: gateway's
    users lookup answered without reaching users (a cache, say), and orders retries payment. The
    gateway's two calls, made side by side, start in the other order (as they may in any request)."""
    trace = "c0ffee" + spans[0]["trace_id"][6:]
    [dropped] = [s for s in spans if s["service"] == "users" and
                 next(p for p in spans if p["span_id"] == s["parent_id"])["service"] == "gateway"]
    first, second = sorted((s for s in spans if s["service"] == "gateway" and s["kind"] == "CLIENT"),
                           key=lambda s: s["start_us"])
    starts = {first["span_id"]: second["start_us"], second["span_id"]: first["start_us"]}
    [charge] = [s for s in spans if s["service"] == "orders" and s["kind"] == "CLIENT" and s["name"] == "POST"]
    # span ids of its own (a retry's id must not be its original's)
    fresh = {s["span_id"]: f"{i + 1:016x}" for i, s in enumerate(spans)} | {"retry": f"{len(spans) + 1:016x}"}
    retry = {**charge, "span_id": "retry", "start_us": charge["start_us"] + charge["duration_us"]}
    out = []
    for s in [*(s for s in spans if s is not dropped), retry]:
        z = {"traceId": trace, "id": fresh[s["span_id"]], "name": s["name"], "kind": s["kind"],
             "timestamp": starts.get(s["span_id"], s["start_us"]), "duration": s["duration_us"],
             "localEndpoint": {"serviceName": s["service"]},
             "tags": {k: str(v) for k, v in (s.get("attributes") or {}).items()}}
        if s["parent_id"]:
            z["parentId"] = fresh[s["parent_id"]]
        out.append(z)
    return trace, out


def _whole(base: str, trace_id: str, spans: int) -> bool:
    answer = httpc.get(f"{base}/api/traces/{trace_id}")
    return answer.status_code == 200 and len(answer.json()["spans"]) >= spans


def test_compare_explain_strangers_and_a_fired_alerts_context(tmp_path: Path) -> None:
    playwright = pytest.importorskip("playwright.sync_api")
    ARTIFACTS.mkdir(exist_ok=True)
    with running_shop(tmp_path) as (_shop, state):
        listeners = state["platform"]["listeners"]
        base = f"http://127.0.0.1:{listeners['api']['port']}"
        [gateway] = next(s for s in state["services"] if s["service"] == "gateway")["instances"]
        url = f"http://127.0.0.1:{gateway['port']}/checkout/alice"
        assert httpc.get(url, timeout=15).status_code == 200

        def ok_checkout() -> dict[str, Any] | None:
            found = httpc.get(base + "/api/traces", params={"service": "gateway"}).json()["traces"]
            return next((t for t in found if t["errors"] == 0 and "checkout" in t["root_name"] and t["spans"] >= 11),
                        None)

        ok = wait_for(ok_checkout, timeout=30, what="a whole successful checkout trace")
        assert httpc.get(url + "?fail=payment", timeout=15).status_code >= 500
        failed = wait_for(lambda: next((t for t in httpc.get(base + "/api/traces?errors=true").json()["traces"]
                                        if t["spans"] >= 11), None), timeout=30, what="the failed checkout's trace")
        assert _whole(base, ok["trace_id"], 11) and _whole(base, failed["trace_id"], 11)

        zipkin = f"http://127.0.0.1:{listeners['zipkin']['port']}/api/v2/spans"
        variant, spans = _variant(httpc.get(f"{base}/api/traces/{ok['trace_id']}").json()["spans"])
        assert httpc.post(zipkin, json=spans).status_code == 202
        want = len(spans)
        wait_for(lambda: _whole(base, variant, want), timeout=60, what=f"the variant checkout's {want} spans")
        assert httpc.post(zipkin, json=_stranger_spans()).status_code == 202
        wait_for(lambda: "batch-job" in httpc.get(base + "/api/traces/services").json()["services"], timeout=30,
                 what="batch-job among the span senders")
        assert httpc.post(base + "/api/naming/rules", json=FEATURE_RULE).status_code in (200, 201)

        # payment fails until ShopSuccessRateLow fires for it (>= 5 calls in 1 m, below 95 % for 10 s)
        def fired() -> dict[str, Any] | None:
            httpc.get(url + "?fail=payment", timeout=15)
            rows = httpc.get(base + "/api/alerts/history", params={"rule": "ShopSuccessRateLow"}).json()["transitions"]
            return next((r for r in rows if r["to"] == "firing" and r["labels"].get("callee") == "payment"), None)

        firing = wait_for(fired, timeout=120, every=0.5, what="ShopSuccessRateLow firing for payment in the history")

        with playwright.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
            try:
                page, errors = watched_page(browser)

                # a span sender that is no service of devbox.yaml: apart on the overview, out of the topology
                page.goto(base + "/")
                page.wait_for_selector("#strangers:not([hidden]) .tag")
                assert page.inner_text("#strangers .tag") == "batch-job"
                assert "batch-job" not in page.inner_text("#services")
                page.screenshot(path=str(ARTIFACTS / "dashboard-overview-strangers.png"), full_page=True)
                page.click("nav a[data-tab=topology]")
                page.wait_for_selector("#strangerToggle:not([hidden])")
                page.wait_for_selector("#graph g.node")
                assert page.locator("#graph g.node").count() == 5
                assert "batch-job" not in page.inner_text("#edges")
                page.check("#showStrangers")
                page.wait_for_selector("#graph g.node.stranger[data-node=batch-job]")
                assert page.locator("#graph g.node").count() == 6
                assert "batch-job" in page.inner_text("#edges")
                page.screenshot(path=str(ARTIFACTS / "dashboard-topology-strangers.png"), full_page=True)

                # compare a good checkout (A) with a failed one (B)
                page.goto(base + "/#/traces")
                page.fill("#traceService", "gateway")
                page.press("#traceService", "Enter")
                page.wait_for_selector(f"#tracelist [data-cmp='{failed['trace_id']}']")
                page.check(f"#tracelist [data-cmp='{ok['trace_id']}']")
                page.check(f"#tracelist [data-cmp='{failed['trace_id']}']")
                page.click("#compareBtn")
                page.wait_for_function(f"location.hash === '#/compare/{ok['trace_id']}..{failed['trace_id']}'")
                page.wait_for_selector("#cmpTable tr.cmp")
                summary = page.inner_text("#cmpSummary")
                assert "spans matched" in summary
                # a failed checkout makes the same calls (payment answers 503): every span matches
                assert summary.startswith("11 spans matched · 0 only in A · 0 only in B"), summary
                assert page.locator("#cmpTable tr[data-status=both]", has_text="POST /authorize").count() == 1
                page.screenshot(path=str(ARTIFACTS / "dashboard-compare.png"), full_page=True)
                rows = page.locator("#cmpTable tr.cmp").count()
                page.check("#cmpChanged")
                page.wait_for_function(f"document.querySelectorAll('#cmpTable tr.cmp').length < {rows}")
                page.uncheck("#cmpChanged")

                # two ids pasted: a checkout with one call fewer (gateway → users) and one more (a payment retry)
                page.fill("#cmpA", ok["trace_id"])
                page.fill("#cmpB", variant)
                page.click("#cmpGo")
                page.wait_for_function(f"location.hash === '#/compare/{ok['trace_id']}..{variant}'")
                page.wait_for_selector("#cmpTable tr[data-status=onlyB]")
                assert page.inner_text("#cmpSummary").startswith("10 spans matched · 1 only in A · 1 only in B")
                [only_a] = page.locator("#cmpTable tr[data-status=onlyA]").all_inner_texts()
                [only_b] = page.locator("#cmpTable tr[data-status=onlyB]").all_inner_texts()
                assert only_a.startswith("users GET /users/{user_id} server") and "only in A" in only_a
                assert only_b.startswith("orders POST client #2") and "only in B" in only_b
                assert "hops only in A: gateway → users · hops only in B: -" in page.inner_text("#cmpOut")
                page.screenshot(path=str(ARTIFACTS / "dashboard-compare-variant.png"), full_page=True)

                # explain a pick for a label set
                page.goto(base + "/#/naming/orders")
                page.wait_for_selector("#explainLabels")
                page.fill("#explainLabels", "env=feature-x")
                page.fill("#explainCaller", "gateway")
                page.click("#explainBtn")
                page.wait_for_selector("#explainOut #explainInstances td")
                out = page.inner_text("#explainOut")
                assert "feature-env" in out and "picked" in out
                assert "env=feature-x" in page.evaluate("decodeURIComponent(location.hash)")
                page.screenshot(path=str(ARTIFACTS / "dashboard-naming-explain.png"), full_page=True)
                page.reload()  # the explanation is in the URL
                page.wait_for_selector("#explainOut #explainInstances td")

                # the fired alert's context: payment's failed traces around the transition
                page.goto(base + "/#/alerts")
                row = page.locator("#history tr", has_text="callee=payment").filter(has_text="→ firing").first
                row.wait_for()
                row.locator("[data-around]").click()
                page.wait_for_selector("#histctx:not([hidden]) #ctxTraces a[href^='#/traces/']")
                assert "ShopSuccessRateLow pending → firing" in page.inner_text("#histctx")
                page.screenshot(path=str(ARTIFACTS / "dashboard-alert-around-fired.png"), full_page=True)
                page.locator("#ctxTraces a[href^='#/traces/']").first.click()
                page.wait_for_selector("#waterfall tr.span")
                assert "payment" in page.inner_text("#cause")
                assert page.inner_text("#error") == ""
            finally:
                browser.close()
            assert errors == [], errors
            assert firing["labels"]["severity"] == "page"
