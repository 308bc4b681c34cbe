"""devbox diff on a busier machine (synthetic traces, no platform): every operation's own time stretched
by the same factor is the machine, not a change — no finding — while a change on top of it is still
found, exactly, even when the operation's total did not move. Between two runs of the unchanged shop
on the loaded 2-core box every operation's own time was 1.3-1.5x the other run's (p < 0.001 each);
an operation doing ~12 ms of its own work was then a false finding."""

from __future__ import annotations

import copy
import random
from typing import Any

import pytest

from devbox.diff.budget import check_all
from devbox.diff.core import diff, run_scale
from devbox.diff.profile import OpStats, Profile, profile
from devbox.snapshot.format import Evidence
from tests.unit.evidence_traces import shop_rows

N = 110  # the budget scenario's checkouts (warm-up included)


def _busy(rows: list[dict[str, Any]], factor: float) -> list[dict[str, Any]]:
    """The same traces on a machine ``factor`` times slower: every span (and its offset in its trace) longer."""
    rows = copy.deepcopy(rows)
    starts: dict[str, int] = {}
    for r in rows:
        starts[r["traceId"]] = min(starts.get(r["traceId"], r["timestamp"]), r["timestamp"])
    for r in rows:
        t0 = starts[r["traceId"]]
        r["timestamp"] = int(t0 + (r["timestamp"] - t0) * factor)
        r["duration"] = max(int(r["duration"] * factor), 1)
    return rows


def _profile(name: str, rows: list[dict[str, Any]]) -> Profile:
    return profile(Evidence(meta={"name": name}, spans=rows))


@pytest.mark.parametrize("factor", [0.6, 1.5, 2.5])
def test_a_busier_or_idler_machine_is_no_finding(factor: float) -> None:
    a = _profile("a", shop_rows(N, seed=1))
    b = _profile("b", _busy(shop_rows(N, seed=2), factor))
    result = diff(a, b)
    assert result.findings == [], [f.text for f in result.findings]
    assert result.summary["own_time_scale"] == pytest.approx(factor, rel=0.1)
    # orders does ~12 ms of its own work: its shift is shown, as the whole run's
    [note] = [n for n in result.notes if n.subject == "orders:get /quote"]
    assert note.kind == "latency_whole_run" and "is the whole run's" in note.text


def test_the_change_on_a_busier_machine_is_exactly_the_two_findings() -> None:
    a = _profile("a", shop_rows(N, seed=1))
    b = _profile("b", _busy(shop_rows(N, seed=2, users_calls=2, orders_extra_ms=50), 1.5))
    result = diff(a, b)
    assert {(f.kind, f.subject) for f in result.findings} == {
        ("fanout", "gateway:get /checkout/{user} → users"), ("latency", "orders:get /quote")}
    [latency] = [f for f in result.findings if f.kind == "latency"]
    # (12 + 50) x 1.5 against 12 x 1.5: 75 ms beyond the machine's share
    assert latency.data["self"]["delta_ms"] == pytest.approx(75, abs=8)
    assert "beyond the whole run's x1.5" in latency.text


def test_too_few_operations_give_no_factor() -> None:
    a = _profile("a", shop_rows(N, seed=1))
    b = _profile("b", _busy(shop_rows(N, seed=2), 2.0))
    for p in (a, b):
        p.ops = {k: v for k, v in p.ops.items() if k[0] in ("gateway", "orders")}
    assert run_scale(a, b) == 1.0


def test_own_time_added_is_found_when_the_total_did_not_move() -> None:
    """On the busy box the time an operation waits on its calls swung by tens of ms between two runs of the
    same code (orders' quote: p50 17.9 → 36.5 ms in all, its own time unchanged), so 50 ms more of its own
    time can come with a total that did not move: still the finding."""
    rnd = random.Random(3)

    def ops(own: float) -> dict[tuple[str, str], OpStats]:
        stats = OpStats()
        for _ in range(N):
            mine = rnd.gauss(own, 1.0)
            stats.self_ms.append(mine)
            stats.durations_ms.append(rnd.gauss(120, 30))  # mostly waiting, and noisy
            stats.calls.append(3)
        return {("orders", "get /quote"): stats}

    a, b = Profile("a", (0, 1), ops=ops(5.0)), Profile("b", (0, 1), ops=ops(55.0))
    result = diff(a, b)
    [finding] = result.findings
    assert (finding.kind, finding.subject) == ("latency", "orders:get /quote")
    assert "in all (not a significant change); its own time +50" in finding.text


P50 = "p50_regression(gateway:GET /checkout/{user}) <= 20%"


def test_a_baseline_from_a_busier_machine_does_not_hide_the_regression() -> None:
    """CI, beside a hog: the baseline's run was the busier one (the whole run x0.76 after), so the change's
    +50 ms in orders read as checkout p50 145.2 → 154.7 ms, +6.5 %, and the p50 budget passed. Taken at
    the run's speed, the baseline is the regression's yardstick again."""
    base = _profile("base", _busy(shop_rows(N, seed=1), 3.5))
    changed = _profile("changed", shop_rows(N, seed=2, users_calls=2, orders_extra_ms=50))
    raw_before = sorted(base.ops[("gateway", "get /checkout/{user}")].durations_ms)[N // 2]
    raw_after = sorted(changed.ops[("gateway", "get /checkout/{user}")].durations_ms)[N // 2]
    assert raw_after / raw_before - 1 < 0.2  # raw p50s alone: within the budget
    [result] = check_all([P50], changed, base)
    assert not result.ok, result.reason
    assert "at this run's x0.29 speed" in result.reason and "own time grew in orders:get /quote" in result.reason


def test_the_same_code_keeps_the_budget_whichever_run_was_busier() -> None:
    # the baseline busier: taken at this run's speed, the same latency
    busier_base = _profile("base", _busy(shop_rows(N, seed=1), 2.5))
    [result] = check_all([P50], _profile("same", shop_rows(N, seed=2)), busier_base)
    assert result.ok and abs(result.value or 0) < 0.1, result.reason
    # this run busier: compared as it is (its waits need not stretch like own time), over the budget, and
    # kept because no operation on the path takes more of its own time than the machine's share
    slower = _profile("slower", _busy(shop_rows(N, seed=2), 1.7))
    [result] = check_all([P50], slower, _profile("base", shop_rows(N, seed=1)))
    assert result.ok and (result.value or 0) > 0.5, result.reason
    assert "the whole run was slower" in result.reason


def test_a_slower_run_is_not_scaled_down_to_hide_a_regression() -> None:
    """Own time stretches with a busy machine, a wait on the network or a sleep need not: scaling a slower
    run's whole latency down by the own-time factor could take a real regression for the machine."""
    base = _profile("base", shop_rows(N, seed=1))
    changed = _profile("changed", _busy(shop_rows(N, seed=2, orders_extra_ms=50), 1.5))
    [result] = check_all([P50], changed, base)
    assert not result.ok and "at this run's" not in result.reason, result.reason
    assert "own time grew in orders:get /quote" in result.reason
