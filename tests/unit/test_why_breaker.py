"""devbox why's breaker signal (pure core, synthetic traces): an instance the callers' circuit breakers
kept out of more of the window's picks than before is a suspect, with the counts in its reason; a
breaker that is open as often as before is not a change; one that closed again scores lower.

The breaker state is read as ``devbox explain`` reads it: from the ``devbox.naming.pick`` events the
SDK records on the caller's span (``breaker_open_ids``: instances kept out; ``breaker``: the chosen
instance's state), here as the Zipkin annotations they become.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from devbox.mocks.tracing.models import Span

from devbox.diff.profile import span_of
from devbox.why.rank import PICK, Case, rank, span_events
from tests.unit.evidence_traces import shop_rows

T0 = 1.7e15  # µs
WINDOW = 60.0
N = 300
INSTANCES = [{"id": "users-a", "host": "127.0.0.1", "port": 7001, "metadata": {"devbox.instance": "users-1"}},
             {"id": "users-b", "host": "127.0.0.1", "port": 7002, "metadata": {"devbox.instance": "users-2"}}]
USERS_1 = "users instance users-1 127.0.0.1:7001"


def _with_picks(rows: list[dict[str, Any]], open_share: float, *, state: str = "open") -> list[dict[str, Any]]:
    """Each gateway call to users gets its pick event; in the last ``open_share`` of the requests users-a's
    breaker is not closed: kept out (``state`` open: the call goes to users-b) or half-open (probed)."""
    calls = [r for r in rows if r["kind"] == "CLIENT" and (r.get("remoteEndpoint") or {}).get("serviceName") == "users"]
    server = {r["parentId"]: r for r in rows if r["kind"] == "SERVER" and r.get("parentId")}
    first_open = len(calls) - round(open_share * len(calls))
    for i, call in enumerate(calls):
        tripped = i >= first_open
        chosen = "users-a" if tripped and state == "half_open" else "users-b" if tripped else \
            server[call["id"]]["tags"]["service.instance.id"]
        server[call["id"]]["tags"]["service.instance.id"] = chosen
        pick = {"service": "users", "instance_id": chosen, "breaker": state if tripped else "closed",
                "breaker_open_ids": ["users-a"] if tripped and state == "open" else []}
        call.setdefault("annotations", []).append({"timestamp": call["timestamp"],
                                                   "value": f"{PICK}: {json.dumps(pick)}"})
    return rows


def _case(now_open: float, before_open: float, **kw: Any) -> Case:
    before = [span_of(r) for r in _with_picks(shop_rows(N, seed=1, t0=T0), before_open, **kw)]
    now = [span_of(r) for r in _with_picks(shop_rows(N, seed=2, t0=T0 + WINDOW * 1e6), now_open, **kw)]
    return Case(service="gateway", at=T0 / 1e6 + 2 * WINDOW, window=WINDOW, now=now, before=before,
                instances=INSTANCES)


def _breaker(report: dict[str, Any], subject: str = USERS_1) -> dict[str, Any] | None:
    suspect = next((s for s in report["suspects"] if s["subject"] == subject), None)
    return next((sig for sig in suspect["signals"] if sig["signal"] == "breaker"), None) if suspect else None


def test_a_breaker_that_opened_points_at_its_instance_with_the_counts() -> None:
    case = _case(now_open=0.5, before_open=0.0)
    case.breakers = {"users": {"consecutive_errors": 3}}
    report = rank(case)
    top = report["suspects"][0]
    assert top["subject"] == USERS_1, report["suspects"][:3]
    [signal] = top["signals"]
    assert signal["signal"] == "breaker"
    assert signal["score"] == pytest.approx(0.35)  # 0.7 x the 50-point change
    assert top["reason"] == ("circuit breaker open for it in gateway at 150/300 picks of users (50%) vs 0/300 (0%) "
                             "before; its breaker settings: consecutive_errors 3")


def test_open_for_the_whole_window_scores_below_the_strongest_signals() -> None:
    signal = _breaker(rank(_case(now_open=1.0, before_open=0.0)))
    assert signal is not None and signal["score"] == pytest.approx(0.7)  # under error origin's 0.9, outlier's 0.8


def test_a_breaker_open_as_often_as_before_is_no_change() -> None:
    report = rank(_case(now_open=0.3, before_open=0.3))
    assert _breaker(report) is None, report["suspects"]


def test_a_small_change_in_few_picks_is_noise() -> None:
    report = rank(_case(now_open=2 / N, before_open=0.0))  # open at 2 picks: not a change
    assert _breaker(report) is None, report["suspects"]


def test_a_breaker_that_closed_again_is_a_weaker_suspect() -> None:
    signal = _breaker(rank(_case(now_open=0.0, before_open=0.6)))
    assert signal is not None
    assert signal["score"] == pytest.approx(0.18)  # 0.3 x the 60-point change
    assert signal["text"].startswith("its circuit breaker closed again (back in rotation): open at 0/300 picks")


def test_half_open_probes_count_as_not_closed() -> None:
    signal = _breaker(rank(_case(now_open=0.4, before_open=0.0, state="half_open")))
    assert signal is not None and signal["score"] == pytest.approx(0.28)
    assert "at 120/300 picks of users (40%)" in signal["text"]


def test_pick_events_are_read_from_otel_events_and_zipkin_annotations() -> None:
    pick = {"service": "users", "breaker_open_ids": ["users-a"]}
    otel = Span(trace_id="t", span_id="a", parent_id=None, name="GET", kind="CLIENT", service="gateway",
                start_us=0, duration_us=1, events=[{"name": PICK, "time_us": 0, "attributes": pick}])
    zipkin = Span(trace_id="t", span_id="b", parent_id=None, name="GET", kind="CLIENT", service="gateway",
                  start_us=0, duration_us=1, annotations=[(0, f"{PICK}: {json.dumps(pick)}"), (0, f"{PICK}: {{bad")])
    assert span_events(otel, PICK) == [pick]
    assert span_events(zipkin, PICK) == [pick]
