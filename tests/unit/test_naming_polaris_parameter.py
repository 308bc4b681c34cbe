"""Parameter routing as Polaris writes it (seen with the real polaris-java SDK, issue 13): the
multi-environment rule's source label goes on the wire as PARAMETER — polaris-java compares a
PARAMETER destination label only with a value captured by a PARAMETER source label of that key —
and Polaris's own form of that rule (PARAMETER on the source) is accepted as "any present value"."""

from __future__ import annotations

from dataclasses import dataclass, field

from devbox.mocks.naming.polaris import v1_routes
from devbox.mocks.naming.polaris_rules import rule_from_polaris

from devbox.polaris.routing import RouteRequest, RoutingRule, evaluate, multi_env_rule, to_polaris

PARAMETER = {"type": "EXACT", "value": "*", "value_type": "PARAMETER"}


@dataclass
class Inst:
    id: str
    metadata: dict[str, str] = field(default_factory=dict)
    port: int = 1
    weight: int = 100
    healthy: bool = True
    isolated: bool = False
    host: str = "127.0.0.1"


def test_multi_env_source_goes_as_parameter_in_v1_and_v2() -> None:
    rule = multi_env_rule(service="orders")
    (route,) = v1_routes(rule, "default", "orders")
    assert route["sources"][0]["metadata"] == {"env": PARAMETER}
    assert route["destinations"][0]["metadata"]["env"]["value_type"] == "PARAMETER"
    (sub,) = to_polaris(rule)["routing_config"]["rules"]
    assert sub["sources"][0]["arguments"] == [{"type": "CUSTOM", "key": "env", "value": PARAMETER}]


def test_any_value_source_without_parameter_destination_stays_text() -> None:
    rule = RoutingRule.model_validate({
        "name": "r", "service": "orders",
        "sources": [{"arguments": [{"key": "env", "value": "*"}]}],
        "destinations": [{"labels": {"env": "base"}}],
    })
    (route,) = v1_routes(rule, "default", "orders")
    assert route["sources"][0]["metadata"] == {"env": {"type": "EXACT", "value": "*", "value_type": "TEXT"}}


def test_polaris_parameter_source_is_accepted_and_routes_like_multi_env() -> None:
    polaris = {
        "name": "feature-env", "namespace": "default", "enable": True, "routing_policy": "RulePolicy",
        "routing_config": {"@type": "type.googleapis.com/v1.RuleRoutingConfig", "rules": [{
            "name": "env", "sources": [{"service": "*", "namespace": "*", "arguments": [
                {"type": "CUSTOM", "key": "env", "value": {"type": "EXACT", "value_type": "PARAMETER"}}]}],
            "destinations": [
                {"service": "orders", "namespace": "default", "priority": 0, "weight": 100,
                 "labels": {"env": {"type": "EXACT", "value": "env", "value_type": "PARAMETER"}}},
                {"service": "orders", "namespace": "default", "priority": 1, "weight": 100,
                 "labels": {"env": {"type": "EXACT", "value": "base"}}},
            ]}]},
    }
    rule = RoutingRule.model_validate(rule_from_polaris(polaris))
    assert rule.subrules()[0].sources[0].arguments[0].value.value == "*"
    instances = [Inst("b", {"env": "base"}), Inst("f", {"env": "feature-x"})]

    def routed(labels: dict[str, str]) -> list[str]:
        result = evaluate(namespace="default", service="orders", instances=instances, rules=[rule],
                          request=RouteRequest(labels=labels))
        return sorted(i.id for i in result.instances)

    assert routed({"env": "feature-x"}) == ["f"]
    assert routed({"env": "nowhere"}) == ["b"]
    # and it goes back out in Polaris's form
    (route,) = v1_routes(rule, "default", "orders")
    assert route["sources"][0]["metadata"] == {"env": PARAMETER}


def test_a_parameter_regex_from_the_request_matches_in_linear_time_and_a_bad_one_matches_nothing() -> None:
    """A REGEX destination with value_type PARAMETER takes its pattern from the request: "(" was a
    500 on /api/naming/explain, and "(a+)+$" held the event loop for seconds (a probe's findings)."""
    from devbox.polaris.routing import MatchString

    matcher = MatchString.model_validate({"type": "REGEX", "value": "env", "value_type": "PARAMETER"})
    hostile = "a" * 40 + "!"
    assert matcher.matches(hostile, {"env": "(a+)+$"}) is False  # RE2: no backtracking, at once
    assert matcher.matches(hostile, {"env": "a+!$"}) is True  # unanchored search, as Go's MatchString
    assert matcher.matches("x", {"env": "("}) is False
    assert matcher.matches("x", {"env": "(a)\\1"}) is False  # not RE2 (Polaris's Go refuses it too)
