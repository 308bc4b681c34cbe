"""Fault rules scoped to one instance of the callee (pure): by deploy name or naming id."""

from __future__ import annotations

from devbox.mocks.faults.rules import FaultSpec, Rule, decide


def test_an_instance_rule_applies_to_that_instance_only() -> None:
    rule = Rule(FaultSpec(service="users", instance="users-2", latency_ms=200))
    assert rule.applies(service="users", caller=None, method="GET", path="/", instance={"id-b", "users-2"})
    assert not rule.applies(service="users", caller=None, method="GET", path="/", instance={"id-a", "users-1"})
    # a caller that cannot say which instance it is (no names): not that instance
    assert not rule.applies(service="users", caller=None, method="GET", path="/")


def test_by_naming_id_and_unscoped_rules_still_apply_everywhere() -> None:
    by_id = Rule(FaultSpec(service="users", instance="id-b", latency_ms=100))
    everywhere = Rule(FaultSpec(service="users", latency_ms=10))
    slow = decide([by_id, everywhere], service="users", instance={"id-b", "users-2"})
    fast = decide([by_id, everywhere], service="users", instance={"id-a", "users-1"})
    assert (slow.latency_ms, fast.latency_ms) == (110, 10)
    assert by_id.to_json()["instance"] == "id-b" and by_id.hits == 1 and everywhere.hits == 2
