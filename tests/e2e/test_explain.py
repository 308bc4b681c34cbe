"""A failing checkout on the running shop, seen two ways. `devbox explain request` on it names the root
cause and each hop's instance and routing reason, and `devbox explain service` says who calls a service,
its instances, rules and deploys. The dashboard's Logs and Load runs pages, logs around a span, trace
search by operation/tags and the alert history's context show it in Debian's headless Chromium
(Playwright), with no console error; screenshots go to tests/artifacts/ for a person to look at.

The dashboard's trace comparison, naming's "explain a pick", services that send spans but are not in
devbox.yaml, and the alert history's "traces & deploys around" link on an alert that really fired, in the
same browser.

All three start from the same state (a fresh copy of the shop, one good checkout, one that fails in
payment): one shop serves them (they were three modules that each started one), in this order: the CLI's,
which only reads; the logs and load pages, which add a checkout; the comparison, which adds spans, a
routing rule, and fires an alert."""

from __future__ import annotations

import json
import shutil
import time
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


@pytest.mark.slow
@pytest.mark.timeout(420)
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed")
def test_compare_explain_strangers_and_a_fired_alerts_context(failed_checkout: FailedCheckout) -> None:
    """Last of the module: it adds spans (a variant checkout, a stranger calling orders), a routing rule, and
    makes payment fail until ShopSuccessRateLow fires."""
    playwright = pytest.importorskip("playwright.sync_api")
    ARTIFACTS.mkdir(exist_ok=True)
    state, url = failed_checkout.state, failed_checkout.url
    listeners = state["platform"]["listeners"]
    base = f"http://127.0.0.1:{listeners['api']['port']}"

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
            # "only differences" hides exactly the rows whose change is under the threshold (their Δ is
            # muted); how many that is depends on the machine's timing, the rows that failed in B stay
            rows = page.locator("#cmpTable tr.cmp").count()
            same = page.locator("#cmpTable tr.cmp td.muted").count()
            page.check("#cmpChanged")
            page.wait_for_function("document.querySelectorAll('#cmpTable tr.cmp').length === "
                                   f"{rows - same} && !document.querySelector('#cmpTable tr.cmp td.muted')")
            assert page.locator("#cmpTable tr.cmp", has_text="✗").count() >= 1
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
