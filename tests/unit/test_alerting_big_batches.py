"""Big posted batches (issue 14 §3.7): what was made cheaper still behaves as before.

The element-by-element JSON reading of ``POST /api/v2/alerts`` reads what ``json.loads`` reads; the
evaluation round that no longer walks every posted alert still expires and drops them on time and
still sends a notification a silence held back; a big group is one terminal line.
"""

from __future__ import annotations

import json
import logging

import pytest
from devbox.mocks.alerting.alertmanager import _json_array, _posted_alerts
from devbox.mocks.alerting.engine import RESOLVED_RETENTION, AlertingCore
from devbox.mocks.alerting.matchers import parse_matchers
from devbox.mocks.alerting.models import AlertState, fingerprint
from devbox.mocks.alerting.notify import TERMINAL_LINES, Notifier


@pytest.mark.parametrize("raw", [
    b"[]", b" [ ] ", b'[1, 2 , {"a": [1, 2]}]', b'\n[\n{"labels": {}}\n]\n', b"[[1],[2]]", b'["\\u00e9", null]',
])
def test_the_array_reading_matches_json_loads(raw: bytes) -> None:
    assert _json_array(raw) == json.loads(raw)


@pytest.mark.parametrize("raw", [
    b"[1,]", b"[1 2]", b"[1]x", b"{}", b"", b"[", b'["\xff"]', b"[,1]", b"[" * 100_000 + b"]" * 100_000,
])
def test_anything_else_is_left_to_the_one_json_reading(raw: bytes) -> None:
    assert _json_array(raw) is None


def test_posted_alerts_carry_their_fingerprint() -> None:
    labels = {"alertname": "A", "instance": "i1"}
    [item] = _posted_alerts(json.dumps([{"labels": labels}]).encode(), now=0)
    assert item["fingerprint"] == fingerprint(labels)
    with pytest.raises(ValueError, match="not valid JSON"):
        _posted_alerts(b"[1,", now=0)


def test_posted_alerts_expire_and_are_dropped_on_time_without_a_walk_each_round() -> None:
    core = AlertingCore(resolve_timeout=10)
    core.post_alerts([{"labels": {"alertname": "A", "i": str(i)}} for i in range(3)], now=0)
    core.post_alerts([{"labels": {"alertname": "B"}, "ends_at": 5.0}], now=1)
    assert core.evaluate({}, 4) == []
    [t] = core.evaluate({}, 5)
    assert t.alertname == "B" and t.to_state is AlertState.RESOLVED
    assert {t.labels["i"] for t in core.evaluate({}, 10)} == {"0", "1", "2"}
    core.evaluate({}, 5 + RESOLVED_RETENTION)
    assert len(core.external) == 4  # a resolved alert is kept for RESOLVED_RETENTION, then dropped
    core.evaluate({}, 5 + RESOLVED_RETENTION + 1)
    assert sorted(a.labels["alertname"] for a in core.external.values()) == ["A"] * 3
    core.evaluate({}, 10 + RESOLVED_RETENTION + 1)
    assert core.external == {}


def test_a_held_back_posted_alert_is_notified_once_its_silence_ends() -> None:
    core = AlertingCore()
    s = core.make_silence(matchers=parse_matchers('alertname="A"'), starts_at=0, ends_at=100, created_by="t",
                          comment="", now=0)
    core.silences[s.id] = s
    [t] = core.post_alerts([{"labels": {"alertname": "A"}}], now=1)
    assert not t.notified
    assert core.evaluate({}, 2) == []
    core.expire_silence(s.id, now=3)
    [late] = core.evaluate({}, 4)
    assert late.notified and late.to_state is AlertState.FIRING
    assert core.evaluate({}, 5) == []


def test_a_big_group_is_one_terminal_line(caplog: pytest.LogCaptureFixture) -> None:
    core = AlertingCore()
    transitions = core.post_alerts([{"labels": {"alertname": "Many", "i": str(i)}} for i in range(50)], now=0)
    small = core.post_alerts([{"labels": {"alertname": "Few", "i": str(i)}} for i in range(TERMINAL_LINES)], now=0)
    notifier = Notifier([], terminal=True)
    with caplog.at_level(logging.WARNING, logger="devbox.mocks.alerting.notify"):
        notifier.notify([(t, 0.0, "") for t in transitions + small])
    lines = [r.getMessage() for r in caplog.records]
    assert [line for line in lines if "Many" in line] == [
        "ALERT Many: 50 alerts changed (50 firing, 0 resolved), e.g. {i=0} {i=1} {i=2} (`devbox alerts ls` lists them)"]
    assert len([line for line in lines if "Few" in line]) == TERMINAL_LINES
