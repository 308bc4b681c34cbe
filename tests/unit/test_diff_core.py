"""devbox diff's core on synthetic traces: no finding from noise, exactly the deliberate changes
found, the statistics against hand-computed values, budgets, and the snapshot file round trip."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from devbox.diff.budget import BudgetError, check_all, parse
from devbox.diff.core import diff
from devbox.diff.profile import profile
from devbox.diff.stats import mann_whitney, two_proportions
from devbox.snapshot.format import FORMAT_VERSION, Evidence, SnapshotError, read, write
from tests.unit.evidence_traces import shop_rows

BUDGETS = ["fanout(gateway:GET /checkout/{user}, users) <= 1", "p99_regression(gateway:GET /checkout/{user}) <= 20%"]


def _profile(name: str, **kwargs: object) -> object:
    return profile(Evidence(meta={"name": name}, spans=shop_rows(300, **kwargs)))  # type: ignore[arg-type]


def test_mann_whitney_matches_the_normal_approximation_by_hand() -> None:
    # U = 0, mu = 32, sigma = sqrt(8*8*17/12); z = (32 - 0.5)/sigma = 3.308 -> p = 0.00094
    p = mann_whitney(list(range(1, 9)), list(range(9, 17)))
    assert math.isclose(p, 0.000939, rel_tol=0.01)
    assert mann_whitney([1.0] * 20, [1.0] * 20) == 1.0
    assert mann_whitney([1, 2, 3], [4, 5, 6]) == 1.0  # too few to tell


def test_two_proportions_by_hand() -> None:
    # pooled 0.2, se = sqrt(0.2*0.8*0.02) = 0.05657, z = 3.536 -> p = 0.00041
    assert math.isclose(two_proportions(10, 100, 30, 100), 0.000407, rel_tol=0.02)
    assert two_proportions(0, 100, 0, 100) == 1.0


@pytest.mark.parametrize("seed", range(6))
def test_two_runs_of_the_same_system_differ_in_nothing(seed: int) -> None:
    result = diff(_profile("a", seed=seed), _profile("b", seed=seed + 100))
    assert result.findings == [], [f.text for f in result.findings]


@pytest.mark.parametrize("seed", range(3))
def test_one_more_users_call_and_50ms_in_orders_are_exactly_two_findings(seed: int) -> None:
    result = diff(_profile("before", seed=seed), _profile("after", seed=seed + 100, users_calls=2, orders_extra_ms=50))
    kinds = sorted((f.kind, f.subject) for f in result.findings)
    assert kinds == [("fanout", "gateway:get /checkout/{user} → users"), ("latency", "orders:get /quote")], \
        [f.text for f in result.findings]
    fan = next(f for f in result.findings if f.kind == "fanout")
    assert "2.0x per request instead of 1.0x" in fan.text
    # the gateway got slower too, but only by what it waits for: context, not a finding
    assert any(n.kind == "latency_passed_on" and n.subject.startswith("gateway") for n in result.notes)


def test_new_error_type_and_error_rate_start_where_they_start() -> None:
    result = diff(_profile("before", seed=1), _profile("after", seed=2, payment_error=0.3))
    found = {(f.kind, f.subject) for f in result.findings}
    assert ("error_rate", "payment:post /authorize") in found
    assert ("error_type_new", "payment PaymentDeclined") in found
    # orders and gateway fail as a consequence: passed on, not findings
    assert not any(f.kind == "error_rate" and f.subject.startswith(("gateway", "orders")) for f in result.findings)
    assert any(n.kind == "errors_passed_on" and n.subject.startswith("gateway") for n in result.notes)


def test_registry_and_rule_changes_are_findings() -> None:
    inst = {"id": "x1", "namespace": "default", "service": "users", "host": "h", "port": 1, "weight": 100,
            "metadata": {"env": "base", "devbox.instance": "users-1"}}
    a = Evidence(meta={"name": "a"}, instances=[inst])
    b = Evidence(meta={"name": "b"}, instances=[{**inst, "id": "x2", "port": 2, "weight": 50,
                                                 "metadata": {"env": "base", "devbox.instance": "users-9"}}],
                 routing_rules=[{"namespace": "default", "service": "orders", "name": "feature"}])
    texts = [f.text for f in diff(profile(a), profile(b)).findings]
    assert len(texts) == 2, texts
    assert any("weights [100] → [50]" in t for t in texts)
    assert any("routing rules: default/orders/feature added" in t for t in texts)


def test_budgets_pass_unchanged_and_break_on_the_change() -> None:
    base = _profile("base", seed=3)
    assert all(r.ok for r in check_all(BUDGETS, _profile("same", seed=4), base))
    broken = [r for r in check_all(BUDGETS, _profile("changed", seed=5, users_calls=2, orders_extra_ms=50), base)
              if not r.ok]
    assert [r.budget.function for r in broken] == ["fanout", "p99_regression"]
    assert "users is called 2.00x per request" in broken[0].reason


def test_budget_strings_are_checked() -> None:
    assert parse("fanout(gateway:GET /checkout/{user}, users) <= 2").limit == 2
    assert parse("p99_regression(gateway:GET /x) <= 20%").limit == pytest.approx(0.2)
    for bad in ("fanout(gateway, users) <= 2", "speed(gateway:GET /) < 1", "fanout(gateway:GET /) <= 2", "nonsense"):
        with pytest.raises(BudgetError):
            parse(bad)


def test_snapshot_file_round_trip(tmp_path: Path) -> None:
    ev = Evidence(meta={"name": "s", "window_start": 1.0, "window_end": 2.0}, spans=shop_rows(3, seed=1),
                  metrics=[("up", {"job": "x"}, 1.5, 1.0)], transitions=[{"at": 1.2, "alertname": "A", "to": "firing"}])
    path = write(tmp_path / "s.db", ev)
    back = read(path)
    assert back.meta["format_version"] == FORMAT_VERSION and back.window == (1.0, 2.0)
    assert back.spans == ev.spans and back.metrics == ev.metrics and back.transitions == ev.transitions
    (tmp_path / "junk.db").write_text("not sqlite")
    with pytest.raises(SnapshotError):
        read(tmp_path / "junk.db")
