"""Alerting on a running platform with the real metrics component: an error burst pushed through
the custom-report API fires a success-rate rule, a webhook receiver gets Alertmanager's payload,
a silence suppresses the other service's notification, history shows both, and both resolve.
Also the rule API (validation, CRUD), the backtest and hot reload of rule files."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from devbox.config import ProjectConfig
from devbox.testing import PlatformThread, running_platform, wait_for
from tests import httpc


class WebhookSink:
    """A tiny HTTP server that records the JSON bodies POSTed to it."""

    def __init__(self) -> None:
        self.payloads: list[dict[str, Any]] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                sink.payloads.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> WebhookSink:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()

    def alerts(self, status: str) -> list[dict[str, Any]]:
        return [a for p in self.payloads for a in p["alerts"] if a["status"] == status]


class Traffic:
    """Pushes one 007 custom report per service every 0.1 s: ``calls`` calls, all ok when the service is healthy."""

    def __init__(self, api: str, services: list[str], calls: int = 1) -> None:
        self.api = api
        self.calls = calls
        self.healthy = dict.fromkeys(services, True)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.errors: list[str] = []

    def _run(self) -> None:
        with httpx.Client(timeout=5) as client:
            while not self._stop.is_set():
                reports = [
                    {
                        "name": "shop",
                        "dimensions": {"service": service},
                        "values": [
                            {"name": "calls", "value": self.calls, "policy": "SUM"},
                            {"name": "ok", "value": self.calls if good else 0, "policy": "SUM"},
                        ],
                    }
                    for service, good in list(self.healthy.items())
                ]
                r = client.post(self.api + "/api/metrics/custom", json=reports)
                if r.status_code != 200:
                    self.errors.append(r.text)
                self._stop.wait(0.1)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(5)


METRICS = {
    "indicators": {
        "shop_success_rate": {"formula": "shop_ok_total * 100 / shop_calls_total", "by": ["service"], "window": 2}
    }
}


@contextlib.contextmanager
def platform(tmp_path: Path, **alerting: Any) -> Iterator[PlatformThread]:
    config = ProjectConfig.for_tests(tmp_path, metrics=METRICS, alerting={"interval": 0.2, **alerting})
    with running_platform(config=config, components=["metrics", "alerting"]) as p:
        yield p


def test_error_burst_fires_silence_suppresses_history_shows_both_and_it_resolves(tmp_path: Path) -> None:
    rule = {
        "name": "LowSuccessRate",
        "indicator": "shop_success_rate",
        "comparison": "<",
        "threshold": 90,
        "duration": "0.5s",
        "labels": {"severity": "page"},
        "annotations": {"summary": '{{ $labels.service }} success rate {{ $value | printf "%.0f" }}%'},
    }
    with WebhookSink() as sink, platform(tmp_path, rules=[rule], receivers=[{"name": "ops", "url": sink.url}]) as p:
        api = p.url("api")
        events: list[Any] = []
        p.platform.events.alert_transition.add_listener(lambda transition: events.append(transition))
        with Traffic(api, ["orders", "payment"]) as traffic:
            wait_for(
                lambda: (
                    len(httpc.get(api + "/api/metrics/promql", params={"query": "shop_success_rate"}).json()["result"])
                    == 2
                ),
                what="both services measured",
            )
            silence = httpc.post(
                api + "/api/alerts/silences",
                json={"matchers": ['service="payment"'], "duration": "10m", "comment": "known", "created_by": "t"},
            )
            assert silence.status_code == 201, silence.text
            silence_id = silence.json()["id"]
            traffic.healthy.update(orders=False, payment=False)

            def both_firing() -> bool:
                alerts = httpc.get(api + "/api/alerts", params={"state": "firing"}).json()["alerts"]
                return {a["labels"]["service"] for a in alerts} == {"orders", "payment"}

            wait_for(both_firing, what="both alerts firing")
            wait_for(lambda: sink.alerts("firing"), what="the webhook notification")
            traffic.healthy.update(orders=True, payment=True)
            wait_for(lambda: not httpc.get(api + "/api/alerts").json()["alerts"], what="both alerts resolved")
            wait_for(lambda: sink.alerts("resolved"), what="the resolved notification")
        assert traffic.errors == []

        payload = sink.payloads[0]
        assert payload["version"] == "4" and payload["receiver"] == "ops"
        assert payload["groupKey"] == '{}:{alertname="LowSuccessRate"}'
        assert payload["status"] == "firing"
        firing = sink.alerts("firing")
        # payment's was silenced; orders' may be notified again at a group interval while it still fires
        # (a busy machine took longer than one to resolve it), as Alertmanager re-sends a changed group
        assert {a["labels"]["service"] for a in firing} == {"orders"}
        assert firing[0]["labels"]["severity"] == "page"
        assert firing[0]["annotations"]["summary"].startswith("orders success rate ")
        assert firing[0]["endsAt"] == "0001-01-01T00:00:00Z"
        assert {a["labels"]["service"] for a in sink.alerts("resolved")} == {"orders"}

        history = httpc.get(api + "/api/alerts/history", params={"rule": "LowSuccessRate"}).json()["transitions"]
        fired = {t["service"]: t for t in history if t["to"] == "firing"}
        assert fired["orders"]["notified"] and not fired["orders"]["silenced"]
        assert fired["payment"]["silenced"] and fired["payment"]["silenced_by"] == [silence_id]
        assert not fired["payment"]["notified"]
        assert fired["payment"]["value"] < 90
        resolved = {t["service"] for t in history if t["to"] == "resolved"}
        assert resolved == {"orders", "payment"}
        only_payment = httpc.get(api + "/api/alerts/history", params={"service": "payment"}).json()["transitions"]
        assert {t["service"] for t in only_payment} == {"payment"}
        future = httpc.get(api + "/api/alerts/history", params={"since": str(time.time() + 60)}).json()
        assert future["transitions"] == []
        assert any(t.to_state.value == "firing" for t in events)

        # The backtest replays the stored data: the same rule would have fired for both services.
        report = httpc.post(
            api + "/api/alerts/rules/test", json={"id": "LowSuccessRate", "since": "2m", "step": "0.5s"}
        )
        assert report.status_code == 200, report.text
        assert report.json()["would_fire"]
        assert {e["labels"]["service"] for e in report.json()["episodes"] if e["fired_at"]} == {"orders", "payment"}


def test_a_short_rule_with_min_volume_ignores_a_failing_service_that_saw_too_few_calls(tmp_path: Path) -> None:
    rule = {
        "name": "LowSuccessRate",
        "indicator": "shop_success_rate",
        "by": ["service"],
        "comparison": "<",
        "threshold": 90,
        "duration": "0.5s",
        "min_volume": 100,
        "volume": "shop_calls_total",
        "volume_window": "4s",
        "annotations": {"summary": '{{ $labels.service }} at {{ $value | printf "%.1f" }}%'},
    }
    with platform(tmp_path, rules=[rule]) as p:
        api = p.url("api")

        def alerts() -> dict[str, dict[str, Any]]:
            return {a["labels"]["service"]: a for a in httpc.get(api + "/api/alerts").json()["alerts"]}

        # quiet fails every call but makes only ~40 in 4 s; busy makes ~400 and fails them once unhealthy
        with Traffic(api, ["quiet"]) as quiet, Traffic(api, ["busy"], calls=10) as busy:
            quiet.healthy["quiet"] = False
            query = {"query": 'shop_success_rate{service="quiet"} < 90'}
            wait_for(
                lambda: httpc.get(api + "/api/metrics/promql", params=query).json()["result"],
                what="quiet's success rate below the threshold",
            )
            busy.healthy["busy"] = False
            fired: dict[str, dict[str, Any]] = {}

            def busy_fires_while_quiet_is_below() -> bool:
                # one observation of both: busy firing and quiet's condition holding at that moment
                # (on a busy runner either can flicker when a traffic thread stalls for a poll)
                fired.clear()
                fired.update(alerts())
                return (fired.get("busy", {}).get("state") == "firing"
                        and bool(httpc.get(api + "/api/metrics/promql", params=query).json()["result"]))

            wait_for(busy_fires_while_quiet_is_below, what="busy's alert firing while quiet is below 90 %")
            assert "quiet" not in fired
            summary = fired["busy"]["annotations"]["summary"]
            number = summary.removeprefix("busy at ").removesuffix("%")
            assert number == f"{float(number):.1f}", summary
        history = httpc.get(api + "/api/alerts/history", params={"service": "quiet"}).json()["transitions"]
        assert history == []


def test_rule_api_validates_creates_updates_deletes_and_backtests(tmp_path: Path) -> None:
    with platform(tmp_path) as p:
        rules = p.url("api") + "/api/alerts/rules"
        bad = httpc.post(rules, json={"alert": "Broken", "expr": "sum(", "for": "1m"})
        assert bad.status_code == 400 and "PromQL" in bad.json()["reason"]
        bad = httpc.post(rules, json={"name": "X", "indicator": "x", "comparison": "~", "threshold": 1})
        assert bad.status_code == 400 and "comparison" in bad.json()["reason"]
        assert httpc.post(rules, content=b"{not json").status_code == 400
        assert httpc.get(rules).json()["rules"] == []

        created = httpc.post(rules, json={"alert": "Up", "expr": "vector(1) > 0", "for": "1s", "group": "g"})
        assert created.status_code == 201, created.text
        assert created.json()["id"] == "g/Up"
        assert httpc.post(rules, json={"alert": "Up", "expr": "vector(1)", "group": "g"}).status_code == 409
        updated = httpc.put(rules + "/g/Up", json={"alert": "Up", "expr": "vector(2) > 1", "group": "g"})
        assert updated.status_code == 200 and updated.json()["expr"] == "vector(2) > 1"
        wait_for(lambda: httpc.get(rules + "/Up").json()["state"] == "firing", what="the API rule firing")

        report = httpc.post(
            rules + "/test",
            json={"rule": {"alert": "Never", "expr": "vector(1) > 5"}, "since": "30s", "step": "1s"},
        )
        assert report.status_code == 200 and report.json()["episodes"] == []
        assert report.json()["evaluations"] == 31
        bad = httpc.post(rules + "/test", json={"rule": {"alert": "Q", "expr": "rate(up)"}, "since": "1m"})
        assert bad.status_code == 400, bad.text
        assert httpc.post(rules + "/test", json={"id": "nope"}).status_code == 404

        assert httpc.delete(rules + "/g/Up").status_code == 200
        assert httpc.get(rules + "/g/Up").status_code == 404
        history = httpc.get(p.url("api") + "/api/alerts/history", params={"rule": "g/Up"}).json()["transitions"]
        assert [t["to"] for t in history][:2] == ["resolved", "firing"]


def test_rule_files_hot_reload_and_broken_edits_keep_the_old_rules(tmp_path: Path) -> None:
    rules_file = tmp_path / "alerts.yml"
    rules_file.write_text("groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: vector(1)\n")
    (tmp_path / "devbox.yaml").write_text("project: t\n")
    config = ProjectConfig.for_tests(tmp_path, alerting={"interval": 0.2, "rule_files": ["*.yml"]})
    config.source = tmp_path / "devbox.yaml"
    with running_platform(config=config, components=["metrics", "alerting"]) as p:
        url = p.url("api") + "/api/alerts/rules"

        def ids() -> list[str]:
            return [r["id"] for r in httpc.get(url).json()["rules"]]

        assert ids() == ["g/A"]
        rules_file.write_text(
            "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: vector(1)\n"
            "      - alert: B\n        expr: vector(2)\n        for: 5s\n"
        )
        wait_for(lambda: ids() == ["g/A", "g/B"], what="the edited file to load")
        rules_file.write_text("groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: vector(1) >\n")
        errors = wait_for(lambda: httpc.get(url).json()["errors"], what="the broken edit to be reported")
        assert errors[0].startswith("alerts.yml:5:") and "PromQL" in errors[0]
        assert ids() == ["g/A", "g/B"]
        (tmp_path / "more.yml").write_text("rules:\n  - {name: C, indicator: up, comparison: '<', threshold: 1}\n")
        wait_for(lambda: "devbox/C" in ids(), what="a new file matching the glob")
        forbidden = httpc.delete(url + "/devbox/C")
        assert forbidden.status_code == 409 and "more.yml" in forbidden.json()["reason"]

        def reloads() -> int:
            return httpc.get(p.url("api") + "/api/platform").json()["components"]["alerting"]["rule_reloads"]

        before = reloads()
        for i in range(5):  # e.g. a log file next to the rules: not a rule source, no reload
            (tmp_path / "service.log").write_text(f"line {i}\n")
            time.sleep(0.1)  # a log being written over time (the writer's pace), not a wait
        # "no reload" is what is asserted: a bounded window longer than the reload debounce (0.2 s)
        # plus a reload, in which a wrongly triggered reload would have been counted
        time.sleep(0.5)
        assert reloads() == before


@pytest.mark.parametrize(
    "body",
    [
        {"matchers": ['a=~".*"'], "duration": "1h"},
        {"matchers": ["service=x"], "starts_at": "2030-01-02T00:00:00Z", "ends_at": "2030-01-01T00:00:00Z"},
        {"matchers": ['service=~"("'], "duration": "1h"},
        {"matchers": [], "duration": "1h"},
        {"matchers": ["service=x"], "duration": "soon"},
    ],
)
def test_bad_silences_are_refused_and_nothing_is_stored(tmp_path: Path, body: dict[str, Any]) -> None:
    with platform(tmp_path) as p:
        url = p.url("api") + "/api/alerts/silences"
        r = httpc.post(url, json=body)
        assert r.status_code == 400, r.text
        assert r.json()["reason"]
        assert httpc.get(url).json()["silences"] == []


def test_silences_api_rules_and_history_survive_a_restart(tmp_path: Path) -> None:
    with platform(tmp_path) as p:
        api = p.url("api")
        silence = httpc.post(api + "/api/alerts/silences", json={"matchers": ["service=a"], "duration": "1h"}).json()
        rule = {"alert": "Kept", "expr": "vector(1) > 0", "group": "g"}
        assert httpc.post(api + "/api/alerts/rules", json=rule).status_code == 201
        wait_for(lambda: httpc.get(api + "/api/alerts/history").json()["transitions"], what="a transition")
    with platform(tmp_path) as p:
        api = p.url("api")
        assert [s["id"] for s in httpc.get(api + "/api/alerts/silences").json()["silences"]] == [silence["id"]]
        am = httpc.get(p.url("alertmanager") + f"/api/v2/silence/{silence['id']}").json()
        assert am["status"]["state"] == "active"
        assert [r["id"] for r in httpc.get(api + "/api/alerts/rules").json()["rules"]] == ["g/Kept"]
        history = httpc.get(api + "/api/alerts/history", params={"rule": "g/Kept"}).json()["transitions"]
        assert history[-1]["to"] == "firing"


def test_webhook_is_retried_until_the_receiver_answers(tmp_path: Path) -> None:
    failures = {"left": 2}
    got: list[dict[str, Any]] = []

    class Flaky(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            if failures["left"] > 0:
                failures["left"] -= 1
                self.send_response(503)
            else:
                got.append(json.loads(body))
                self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        with platform(tmp_path, receivers=[{"name": "flaky", "url": url, "max_retries": 3}]) as p:
            am = p.url("alertmanager")
            posted = httpc.post(am + "/api/v2/alerts", json=[{"labels": {"alertname": "Ext", "service": "x"}}])
            assert posted.status_code == 200
            [payload] = wait_for(lambda: got, what="the third attempt to succeed")
            assert payload["alerts"][0]["labels"] == {"alertname": "Ext", "service": "x"}

            def notifications() -> dict[str, Any]:
                return httpc.get(p.url("api") + "/api/platform").json()["components"]["alerting"]["notifications"]

            # the receiver holds the payload before the platform has read its 200 and counted the send
            stats = wait_for(lambda: (s := notifications())["sent"] and s, what="the send counted")
            assert stats["retries"] == 2 and stats["sent"] == 1
    finally:
        server.shutdown()
        server.server_close()


def test_devbox_yaml_inline_rules_hot_reload(tmp_path: Path) -> None:
    source = tmp_path / "devbox.yaml"
    head = "project: t\nalerting:\n  interval: 0.2\n  rules:\n"
    rule = "    - {{name: {name}, indicator: up, comparison: '<', threshold: {threshold}}}\n"
    source.write_text(head + rule.format(name="First", threshold=1))
    from devbox.config import load_config

    config = load_config(source)
    config.platform.ports = ProjectConfig.for_tests(tmp_path).platform.ports
    with running_platform(config=config, components=["metrics", "alerting"]) as p:
        url = p.url("api") + "/api/alerts/rules"
        assert [r["source"] for r in httpc.get(url).json()["rules"]] == ["devbox.yaml:5"]
        source.write_text(head + rule.format(name="Second", threshold=1))
        wait_for(lambda: [r["id"] for r in httpc.get(url).json()["rules"]] == ["devbox/Second"], what="reload")
        source.write_text(head + rule.format(name="Third", threshold="high"))
        errors = wait_for(lambda: httpc.get(url).json()["errors"], what="the bad edit reported")
        assert errors[0].startswith("devbox.yaml:5:") and "threshold" in errors[0]
        assert [r["id"] for r in httpc.get(url).json()["rules"]] == ["devbox/Second"]


def test_alertmanager_port_refuses_bad_input_with_reasons_and_stores_nothing(tmp_path: Path) -> None:
    with platform(tmp_path) as p:
        am = p.url("alertmanager") + "/api/v2"
        good = {"name": "service", "value": "x", "isRegex": False}
        window = {"startsAt": "2030-01-01T00:00:00Z", "endsAt": "2030-01-02T00:00:00Z"}
        bad_silences = [
            {"matchers": [{**good, "value": "(", "isRegex": True}], **window, "createdBy": "t", "comment": ""},
            {
                "matchers": [good],
                "startsAt": "2030-01-02T00:00:00Z",
                "endsAt": "2030-01-01T00:00:00Z",
                "createdBy": "t",
                "comment": "",
            },
            {"matchers": [], **window, "createdBy": "t", "comment": ""},
            {"matchers": [good], **window, "comment": ""},
            {
                "matchers": [good],
                "startsAt": "yesterday",
                "endsAt": "2030-01-01T00:00:00Z",
                "createdBy": "t",
                "comment": "",
            },
        ]
        bad_silences += [  # a probe's: each was stored and then broke the listing (500), or failed to store (500)
            {"matchers": [good], "startsAt": "2030-01-01T00:00:00Z", "endsAt": "9999-12-31T23:59:59-23:59",
             "createdBy": "t", "comment": ""},
            {"matchers": [{**good, "value": "(a)\\1", "isRegex": True}], **window, "createdBy": "t", "comment": ""},
        ]
        for body in bad_silences:
            r = httpc.post(am + "/silences", json=body)
            assert r.status_code == 400 and isinstance(r.json(), str) and r.json(), (body, r.text)
        lone = b'{"matchers": [{"name": "a", "value": "b", "isRegex": false}], "startsAt": "2030-01-01T00:00:00Z",' \
               b' "endsAt": "2030-01-02T00:00:00Z", "createdBy": "\\ud800", "comment": ""}'
        r = httpc.post(am + "/silences", content=lone, headers={"Content-Type": "application/json"})
        assert r.status_code == 400 and "lone UTF-16 surrogate" in r.json(), r.text
        assert "out of range" in httpc.post(am + "/silences", json=bad_silences[-2]).json()
        r = httpc.post(
            am + "/silences",
            json={
                "id": "00000000-0000-0000-0000-000000000000",
                "matchers": [good],
                **window,
                "createdBy": "t",
                "comment": "",
            },
        )
        assert r.status_code == 404
        assert httpc.get(am + "/silences").json() == []

        bad_alerts = [
            [{"labels": {}}],
            [{"labels": {"0bad": "x"}}],
            [{"labels": {"a": 1}}],
            [{"labels": {"a": "b"}, "startsAt": "2030-01-02T00:00:00Z", "endsAt": "2030-01-01T00:00:00Z"}],
            [{"labels": {"alertname": "Fine"}}, "not an object"],
            {"labels": {"a": "b"}},
        ]
        for body in bad_alerts:
            r = httpc.post(am + "/alerts", json=body)
            assert r.status_code == 400 and isinstance(r.json(), str), (body, r.text)
        assert httpc.post(am + "/alerts", content=b"[{").status_code == 400
        assert httpc.get(am + "/alerts").json() == []  # the valid alert of a refused batch was not kept

        for query in ("filter=service%3D~%22(%22", "active=maybe", "receiver=(", "filter=%3Dx"):
            r = httpc.get(am + "/alerts?" + query)
            assert r.status_code == 400 and r.json(), query
        assert httpc.get(am + "/silence/nope").status_code == 404
        assert httpc.delete(am + "/silence/nope").status_code == 404


def test_regex_matchers_run_in_linear_time_on_both_apis(tmp_path: Path) -> None:
    """Python's re took ~10 s for ``(a+)+`` against 27 a's and a '!', with every listener stalled:
    matchers are RE2 (Go's syntax, as Alertmanager's own)."""
    with platform(tmp_path) as p:
        am = p.url("alertmanager") + "/api/v2"
        hostile = "a" * 40 + "!"
        assert httpc.post(am + "/alerts", json=[{"labels": {"alertname": "Redos", "foo": hostile}}]).status_code == 200
        silence = {"matchers": [{"name": "foo", "value": "(a+)+", "isRegex": True}], "createdBy": "t", "comment": "",
                   "startsAt": "2020-01-01T00:00:00Z", "endsAt": "2099-01-01T00:00:00Z"}
        assert httpc.post(am + "/silences", json=silence).status_code == 200
        # with 40 a's a backtracking engine would not answer in years: the client's timeout would fail the test
        found = httpc.get(am + "/alerts", params={"filter": 'foo=~"(a+)+"'}, timeout=30)
        listed = httpc.get(p.url("api") + "/api/alerts", timeout=30)
        assert found.status_code == 200 and found.json() == []  # anchored: the '!' does not match
        assert listed.status_code == 200
        assert httpc.get(am + "/alerts", params={"filter": 'foo=~"a+!"'}).json()[0]["labels"]["foo"] == hostile


def test_nan_and_inf_values_are_served_as_prometheus_strings(tmp_path: Path) -> None:
    with platform(tmp_path) as p:
        api = p.url("api")
        for name, expr in (("Nan", "vector(0) / vector(0)"), ("Inf", "vector(1) / vector(0)")):
            body = {"alert": name, "expr": expr, "group": "g"}
            assert httpc.post(api + "/api/alerts/rules", json=body).status_code == 201

        def values() -> dict[str, Any]:
            r = httpc.get(api + "/api/alerts", params={"state": "firing"})
            assert r.status_code == 200, r.text
            return {a["alertname"]: a["value"] for a in r.json()["alerts"]}

        assert wait_for(lambda: len(values()) == 2 and values(), what="both firing") == {"Nan": "NaN", "Inf": "+Inf"}
        history = httpc.get(api + "/api/alerts/history")
        assert history.status_code == 200
        assert {t["value"] for t in history.json()["transitions"]} <= {None, "+Inf"}  # SQLite keeps NaN as NULL
        prom = httpc.get(p.url("prometheus") + "/api/v1/alerts").json()["data"]["alerts"]
        assert sorted(a["value"] for a in prom) == ["+Inf", "NaN"]
        report = httpc.post(api + "/api/alerts/rules/test", json={"id": "g/Inf", "since": "10s", "step": "1s"})
        assert report.status_code == 200, report.text


def test_a_group_notification_lists_every_firing_alert_of_the_group(tmp_path: Path) -> None:
    with WebhookSink() as sink, platform(tmp_path, receivers=[{"name": "ops", "url": sink.url}]) as p:
        am = p.url("alertmanager") + "/api/v2"

        def post(service: str) -> None:
            body = [{"labels": {"alertname": "Disk", "service": service}}]
            assert httpc.post(am + "/alerts", json=body).status_code == 200

        post("a")
        wait_for(lambda: len(sink.payloads) == 1, what="the first notification")
        silence = {
            "matchers": [{"name": "service", "value": "b", "isRegex": False}],
            "createdBy": "t",
            "comment": "",
            "startsAt": "2020-01-01T00:00:00Z",
            "endsAt": "2099-01-01T00:00:00Z",
        }
        assert httpc.post(am + "/silences", json=silence).status_code == 200
        post("b")  # silenced: no notification of its own
        post("c")
        wait_for(lambda: len(sink.payloads) == 2, what="the second notification")
        # "no third notification" (b's own, silenced) is what is asserted: a bounded window for it to
        # (wrongly) arrive; b was posted before c, so a notification of its own would come first
        time.sleep(0.3)
        assert len(sink.payloads) == 2
        second = sink.payloads[1]
        assert sorted(a["labels"]["service"] for a in second["alerts"]) == ["a", "c"]  # b is silenced
        assert second["commonLabels"] == {"alertname": "Disk"}


@pytest.mark.parametrize(
    "body",
    [
        {"rule": {"alert": "A", "expr": "vector(1)"}, "since": "9" * 400 + "s"},
        {"rule": {"alert": "A", "expr": "vector(1)"}, "start": "nan"},
        {"rule": {"alert": "A", "expr": "vector(1)"}, "since": "1h", "step": "0s"},
        {"rule": {"alert": "A", "expr": "vector(1)"}, "since": "1h", "step": "10ms"},
        {"rule": {"name": "A", "indicator": "x", "comparison": "<", "threshold": float("inf")}},
        {"rule": "vector(1)"},
        ["not", "an", "object"],
    ],
)
def test_bad_backtests_are_refused(tmp_path: Path, body: Any) -> None:
    with platform(tmp_path) as p:
        r = httpc.post(p.url("api") + "/api/alerts/rules/test", content=json.dumps(body))
        assert r.status_code == 400, r.text
        assert r.json()["reason"]
