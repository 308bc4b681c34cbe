"""The evaluation core with a fake query function and a fake clock: state machine, silences, backtest."""

from __future__ import annotations

import pytest
from devbox.mocks.alerting.engine import AlertingCore, backtest, run_queries
from devbox.mocks.alerting.matchers import parse_matchers
from devbox.mocks.alerting.models import AlertState, Rule


class FakeMetrics:
    """expr -> samples, changed by the test between evaluations."""

    def __init__(self) -> None:
        self.samples: dict[str, list[tuple[dict[str, str], float]]] = {}
        self.fail: str | None = None

    def query(self, expr: str, at: float) -> list[tuple[dict[str, str], float]]:
        if self.fail:
            raise ValueError(self.fail)
        return self.samples.get(expr, [])


RULE = Rule(
    name="LowSuccess",
    expr="success_rate < 99",
    group="shop",
    for_s=3,
    labels={"severity": "page"},
    annotations={"summary": "{{ $labels.service }} at {{ $value }}%"},
)


def tick(core: AlertingCore, metrics: FakeMetrics, now: float) -> list[tuple[str, str, str]]:
    out = core.evaluate(run_queries(core.rules, metrics.query, now), now)
    return [(t.labels.get("service", ""), t.from_state.value, t.to_state.value) for t in out]


def test_inactive_pending_firing_resolved_per_label_set() -> None:
    core, metrics = AlertingCore(), FakeMetrics()
    core.set_rules([RULE], now=0)
    assert tick(core, metrics, 0) == []
    metrics.samples[RULE.expr] = [({"__name__": "success_rate", "service": "orders"}, 90.0)]
    assert tick(core, metrics, 1) == [("orders", "inactive", "pending")]
    assert tick(core, metrics, 2) == []
    metrics.samples[RULE.expr].append(({"service": "payment"}, 95.0))
    assert tick(core, metrics, 3) == [("payment", "inactive", "pending")]
    assert tick(core, metrics, 4) == [("orders", "pending", "firing")]
    [alert] = core.firing()
    assert alert.labels == {"service": "orders", "severity": "page", "alertname": "LowSuccess"}
    assert alert.annotations["summary"] == "orders at 90%"
    metrics.samples[RULE.expr] = [({"service": "orders"}, 91.0)]
    assert tick(core, metrics, 5) == [("payment", "pending", "inactive")]
    metrics.samples[RULE.expr] = []
    out = core.evaluate(run_queries(core.rules, metrics.query, 6), 6)
    assert [(t.from_state, t.to_state, t.notified, t.value) for t in out] == [
        (AlertState.FIRING, AlertState.RESOLVED, True, 91.0)
    ]
    assert core.firing() == []


def test_for_zero_fires_at_once_and_query_errors_keep_state() -> None:
    core, metrics = AlertingCore(), FakeMetrics()
    rule = Rule(name="Down", expr="up == 0", for_s=0)
    core.set_rules([rule], now=0)
    metrics.samples["up == 0"] = [({"service": "a"}, 0.0)]
    assert tick(core, metrics, 1) == [("a", "inactive", "firing")]
    metrics.fail = "storage unavailable"
    assert tick(core, metrics, 2) == []
    assert core.evaluators[rule.id].health == "err"
    assert core.evaluators[rule.id].last_error == "storage unavailable"
    assert len(core.firing()) == 1


def test_silence_suppresses_notification_and_late_notification_after_expiry() -> None:
    core, metrics = AlertingCore(), FakeMetrics()
    rule = Rule(name="Down", expr="up == 0")
    core.set_rules([rule], now=0)
    silence = core.make_silence(
        matchers=parse_matchers('alertname="Down"'), starts_at=0, ends_at=100, created_by="me", comment="", now=0
    )
    core.silences[silence.id] = silence
    metrics.samples["up == 0"] = [({"service": "a"}, 0.0)]
    [t] = core.evaluate(run_queries(core.rules, metrics.query, 1), 1)
    assert t.to_state is AlertState.FIRING and t.silenced_by == [silence.id] and not t.notified
    assert tick(core, metrics, 2) == []
    core.expire_silence(silence.id, now=3)
    [late] = core.evaluate(run_queries(core.rules, metrics.query, 4), 4)
    assert (late.from_state, late.to_state, late.notified) == (AlertState.FIRING, AlertState.FIRING, True)
    metrics.samples["up == 0"] = []
    [resolved] = core.evaluate(run_queries(core.rules, metrics.query, 5), 5)
    assert resolved.to_state is AlertState.RESOLVED and resolved.notified


def test_resolution_of_a_never_notified_alert_is_not_notified() -> None:
    core, metrics = AlertingCore(), FakeMetrics()
    core.set_rules([Rule(name="Down", expr="up == 0")], now=0)
    s = core.make_silence(
        matchers=parse_matchers("service=a"), starts_at=0, ends_at=100, created_by="me", comment="", now=0
    )
    core.silences[s.id] = s
    metrics.samples["up == 0"] = [({"service": "a"}, 0.0)]
    tick(core, metrics, 1)
    metrics.samples["up == 0"] = []
    [t] = core.evaluate(run_queries(core.rules, metrics.query, 2), 2)
    assert t.to_state is AlertState.RESOLVED and not t.notified and t.silenced_by == [s.id]


def test_silence_validation_and_states() -> None:
    core = AlertingCore()
    ok = parse_matchers("service=a")
    with pytest.raises(ValueError, match="before"):
        core.make_silence(matchers=ok, starts_at=50, ends_at=10, created_by="", comment="", now=0)
    with pytest.raises(ValueError, match="empty string"):
        core.make_silence(matchers=parse_matchers('a=~".*"'), starts_at=0, ends_at=10, created_by="", comment="", now=0)
    with pytest.raises(ValueError, match="matcher"):
        core.make_silence(matchers=[], starts_at=0, ends_at=10, created_by="", comment="", now=0)
    s = core.make_silence(matchers=ok, starts_at=10, ends_at=20, created_by="", comment="", now=0)
    assert [s.state(t).value for t in (5, 10, 20)] == ["pending", "active", "expired"]
    core.silences[s.id] = s
    core.expire_silence(s.id, now=5)
    assert s.state(5).value == "expired"


def test_changed_rule_resets_and_removed_rule_resolves() -> None:
    core, metrics = AlertingCore(), FakeMetrics()
    rule = Rule(name="Down", expr="up == 0")
    core.set_rules([rule], now=0)
    metrics.samples["up == 0"] = [({"service": "a"}, 0.0)]
    tick(core, metrics, 1)
    same = Rule(name="Down", expr="up == 0", annotations={"summary": "new text"})
    assert core.set_rules([same], now=2) == []
    assert len(core.firing()) == 1
    [t] = core.set_rules([], now=3)
    assert t.to_state is AlertState.RESOLVED


def test_external_alerts_fire_and_expire() -> None:
    core = AlertingCore(resolve_timeout=10)
    [t] = core.post_alerts([{"labels": {"alertname": "Ext", "service": "x"}}], now=0)
    assert t.to_state is AlertState.FIRING and t.rule_id is None
    assert core.post_alerts([{"labels": {"alertname": "Ext", "service": "x"}}], now=5) == []
    assert core.evaluate({}, now=14) == []
    [resolved] = core.evaluate({}, now=16)
    assert resolved.to_state is AlertState.RESOLVED


def test_backtest_replays_range_data() -> None:
    rule = Rule(name="LowSuccess", expr="success_rate < 99", for_s=2)
    series = [({"service": "orders"}, [(float(t), 80.0 + t) for t in range(10, 15)])]
    report = backtest(rule, series, start=0, end=30, step=1)
    assert report["evaluations"] == 31
    assert report["would_fire"]
    [episode] = report["episodes"]
    assert (episode["pending_at"], episode["fired_at"], episode["resolved_at"]) == (10, 12, 15)
    assert (episode["min_value"], episode["max_value"]) == (90.0, 94.0)
    quiet = backtest(rule, [({"service": "orders"}, [(10.0, 90.0)])], start=0, end=30, step=1)
    assert not quiet["would_fire"] and quiet["episodes"][0]["resolved_at"] == 11


def test_fingerprint_is_prometheus_fnv() -> None:
    from devbox.mocks.alerting.models import fingerprint

    # Value a real Alertmanager 0.25 gave this label set (see test_alerting_upstream).
    assert fingerprint({"alertname": "Forwarded", "service": "orders", "severity": "page"}) == "2f52fd87c0ff5284"
    assert fingerprint({}) == "cbf29ce484222325"  # FNV-1a offset basis: Prometheus's empty label set


def test_removing_a_rule_whose_alert_was_silenced_does_not_notify_the_resolution() -> None:
    core, metrics = AlertingCore(), FakeMetrics()
    core.set_rules([Rule(name="Down", expr="up == 0")], now=0)
    s = core.make_silence(
        matchers=parse_matchers("alertname=Down"), starts_at=0, ends_at=100, created_by="", comment="", now=0
    )
    core.silences[s.id] = s
    metrics.samples["up == 0"] = [({"service": "a"}, 0.0)]
    tick(core, metrics, 1)
    core.expire_silence(s.id, now=2)
    [t] = core.set_rules([], now=2)
    assert t.to_state is AlertState.RESOLVED and not t.notified


def test_keep_firing_for_holds_an_alert_through_a_short_gap() -> None:
    core, metrics = AlertingCore(), FakeMetrics()
    core.set_rules([Rule(name="Flappy", expr="errors > 0", keep_firing_for_s=3)], now=0)
    metrics.samples["errors > 0"] = [({"service": "a"}, 1.0)]
    assert tick(core, metrics, 1) == [("a", "inactive", "firing")]
    metrics.samples["errors > 0"] = []
    assert tick(core, metrics, 2) == []
    assert tick(core, metrics, 3.5) == []
    metrics.samples["errors > 0"] = [({"service": "a"}, 2.0)]
    assert tick(core, metrics, 4) == []  # back before keep_firing_for ran out: still the same firing
    metrics.samples["errors > 0"] = []
    assert tick(core, metrics, 6) == []
    assert tick(core, metrics, 7) == [("a", "firing", "resolved")]
