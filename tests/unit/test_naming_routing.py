"""Routing rules: model validation, matching, priority fallback, filters and explanations."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest
from google.protobuf import json_format
from polarismesh_specification.api.v1.traffic_manage import routing_pb2
from pydantic import ValidationError

from devbox.polaris.routing import (
    MatchString,
    RouteRequest,
    RoutingRule,
    evaluate,
    match_rule,
    multi_env_rule,
    parse_rules,
    to_polaris,
)


@dataclass
class Inst:
    id: str
    port: int
    metadata: dict[str, str] = field(default_factory=dict)
    weight: int = 100
    healthy: bool = True
    isolated: bool = False
    host: str = "127.0.0.1"


def fleet() -> list[Inst]:
    return [
        Inst("b1", 1, {"env": "base"}),
        Inst("b2", 2, {}),  # untagged = base
        Inst("f1", 3, {"env": "feature-x"}),
        Inst("y1", 4, {"env": "feature-y"}),
    ]


SHORT_RULE = {
    "name": "feature-env",
    "sources": [{"arguments": [{"key": "env", "value": "*"}]}],
    "destinations": [
        {"labels": {"env": "$env"}},
        {"labels": {"env": {"type": "IN", "value": "base,"}}, "priority": 1},
    ],
}


def ports(result) -> list[int]:
    return sorted(i.port for i in result.instances)


def test_short_rule_parses_and_equals_the_builder() -> None:
    rule = RoutingRule.model_validate(SHORT_RULE)
    built = multi_env_rule(name="feature-env")
    assert rule.sources == built.sources
    assert [d.labels for d in rule.destinations] == [d.labels for d in built.destinations]
    assert rule.destinations[0].labels["env"] == MatchString(value="env", value_type="PARAMETER")


@pytest.mark.parametrize(
    "bad",
    [
        {"name": "x", "destinations": [{}], "bogus": 1},  # unknown field
        {"name": "x", "destinations": []},  # no destination
        {"name": "", "destinations": [{}]},
        {"name": "x", "destinations": [{"labels": {"env": {"type": "REGEX", "value": "("}}}]},
        {"name": "x", "destinations": [{"labels": {"env": {"type": "LIKE", "value": "a"}}}]},
        {"name": "x", "destinations": [{"weight": -1}]},
        {"name": "x", "destinations": [{"isolate": True}]},
        {"name": "x", "sources": [{"arguments": [{"type": "HEADER", "value": "a"}]}], "destinations": [{}]},
        {"name": "x", "sources": [{"arguments": [{"key": "env", "value": "$env"}]}], "destinations": [{}]},
    ],
)
def test_bad_rules_are_refused(bad: dict) -> None:
    with pytest.raises(ValidationError):
        parse_rules([bad])


def test_feature_request_goes_to_feature_instances() -> None:
    result = evaluate(namespace="default", service="orders", instances=fleet(), rules=[multi_env_rule()],
                      request=RouteRequest(labels={"env": "feature-x"}))
    assert ports(result) == [3]
    assert result.rule == "multi-env" and not result.failover
    assert result.filtered()["metadata"] == ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:4"]


def test_feature_without_instances_falls_back_to_base_and_untagged() -> None:
    result = evaluate(namespace="default", service="orders", instances=fleet(), rules=[multi_env_rule()],
                      request=RouteRequest(labels={"env": "feature-z"}))
    assert ports(result) == [1, 2]
    assert result.failover and "fell back" in result.reason


def test_untagged_request_matches_no_rule_and_uses_everything() -> None:
    result = evaluate(namespace="default", service="orders", instances=fleet(), rules=[multi_env_rule()])
    assert ports(result) == [1, 2, 3, 4]
    assert result.rule is None


def test_fallback_along_a_chain() -> None:
    """Same request labels at each hop: feature where the service has one, base where not."""
    chain = {
        "gateway": [Inst("g", 10, {"env": "base"})],
        "orders": [Inst("o", 20, {"env": "base"}), Inst("of", 21, {"env": "feature-x"})],
        "inventory": [Inst("i", 30, {"env": "base"})],
        "payments": [Inst("p", 40, {"env": "base"}), Inst("pf", 41, {"env": "feature-x"})],
    }
    rules = [multi_env_rule()]
    req = RouteRequest(labels={"env": "feature-x"})
    picked = {svc: ports(evaluate(namespace="default", service=svc, instances=insts, rules=rules, request=req))
              for svc, insts in chain.items()}
    assert picked == {"gateway": [10], "orders": [21], "inventory": [30], "payments": [41]}


def test_unhealthy_feature_instance_falls_back_to_base() -> None:
    insts = fleet()
    insts[2].healthy = False
    result = evaluate(namespace="default", service="orders", instances=insts, rules=[multi_env_rule()],
                      request=RouteRequest(labels={"env": "feature-x"}))
    assert ports(result) == [1, 2]
    assert result.filtered()["health"] == ["127.0.0.1:3"]


def test_filters_are_explained_isolation_health_breaker() -> None:
    insts = fleet()
    insts[0].isolated = True
    insts[1].healthy = False
    result = evaluate(namespace="default", service="orders", instances=insts, rules=[],
                      is_open=lambda i: i.id == "f1")
    assert ports(result) == [4]
    assert result.filtered() == {"isolation": ["127.0.0.1:1"], "health": ["127.0.0.1:2"],
                                 "circuit_breaker": ["127.0.0.1:3"]}
    as_json = result.to_dict()
    assert as_json["candidates"] == ["127.0.0.1:4"]
    assert [f["filter"] for f in as_json["filters"]] == ["isolation", "health", "circuit_breaker", "metadata"]


def test_recover_all_when_every_instance_is_unhealthy_but_never_isolated() -> None:
    insts = [Inst("a", 1, healthy=False), Inst("b", 2, healthy=False), Inst("c", 3, isolated=True)]
    result = evaluate(namespace="default", service="s", instances=insts, rules=[])
    assert ports(result) == [1, 2] and result.recovered_all


def test_failover_none_returns_nothing() -> None:
    rule = RoutingRule.model_validate({"name": "strict", "failover": "none",
                                       "destinations": [{"labels": {"env": "gold"}}]})
    result = evaluate(namespace="default", service="s", instances=fleet(), rules=[rule])
    assert result.instances == [] and result.failover
    rule_all = rule.model_copy(update={"failover": "all"})
    assert ports(evaluate(namespace="default", service="s", instances=fleet(), rules=[rule_all])) == [1, 2, 3, 4]


def test_rule_order_sources_and_scoping() -> None:
    rules = parse_rules([
        {"name": "z-from-web", "priority": 0, "service": "orders",
         "sources": [{"service": "web"}], "destinations": [{"labels": {"env": "feature-y"}}]},
        {"name": "a-header", "priority": 1,
         "sources": [{"arguments": [{"type": "HEADER", "key": "X-Canary", "value": {"type": "IN", "value": "1,yes"}}]}],
         "destinations": [{"labels": {"env": "feature-x"}}]},
        {"name": "other-service", "service": "payments", "destinations": [{"labels": {"env": "base"}}]},
        {"name": "other-ns", "namespace": "prod", "destinations": [{"labels": {"env": "base"}}]},
        {"name": "disabled", "enable": False, "destinations": [{"labels": {"env": "base"}}]},
    ])
    def rule_for(req: RouteRequest) -> str | None:
        found = match_rule(rules, namespace="default", service="orders", request=req)
        return found.name if found else None
    assert rule_for(RouteRequest(caller_service="web", headers={"x-canary": "yes"})) == "z-from-web"
    assert rule_for(RouteRequest(caller_service="cli", headers={"x-canary": "yes"})) == "a-header"
    assert rule_for(RouteRequest(caller_service="cli", headers={"x-canary": "no"})) is None
    assert rule_for(RouteRequest()) is None


@pytest.mark.parametrize(
    ("matcher", "actual", "expected"),
    [
        ({"value": "a"}, "a", True), ({"value": "a"}, None, False), ({"value": "*"}, "", True),
        ({"value": "*"}, None, False), ({"type": "NOT_EQUALS", "value": "a"}, "b", True),
        ({"type": "NOT_EQUALS", "value": "a"}, None, True), ({"type": "IN", "value": "a, b"}, "b", True),
        ({"type": "NOT_IN", "value": "a,b"}, "b", False), ({"type": "REGEX", "value": "^feat"}, "feature", True),
        ({"type": "REGEX", "value": "^feat"}, "base", False), ({"type": "IN", "value": "base,"}, None, True),
    ],
)
def test_match_string(matcher: dict, actual: str | None, expected: bool) -> None:
    assert MatchString.model_validate(matcher).matches(actual) is expected


def test_weighted_destination_groups_of_equal_priority() -> None:
    rule = RoutingRule.model_validate({"name": "split", "destinations": [
        {"labels": {"env": "base"}, "weight": 80}, {"labels": {"env": "feature-x"}, "weight": 20}]})
    rng = random.Random(7).random
    counts = {1: 0, 3: 0}
    for _ in range(2000):
        result = evaluate(namespace="default", service="s", instances=fleet(), rules=[rule], rng=rng)
        counts[result.instances[0].port] += 1
    assert 0.75 < counts[1] / 2000 < 0.85


def test_to_polaris_round_trips_through_the_official_descriptor() -> None:
    doc = to_polaris(multi_env_rule(), service="orders", revision="r7")
    message = json_format.ParseDict(doc, routing_pb2.RouteRule())
    config = routing_pb2.RuleRoutingConfig()
    assert message.routing_config.Unpack(config)
    assert message.routing_policy == routing_pb2.RulePolicy and message.revision == "r7"
    dest = config.rules[0].destinations
    assert [d.service for d in dest] == ["orders", "orders"]
    assert dest[0].labels["env"].value_type == dest[0].labels["env"].PARAMETER
    assert dest[1].priority == 1
    assert config.rules[0].sources[0].arguments[0].key == "env"
