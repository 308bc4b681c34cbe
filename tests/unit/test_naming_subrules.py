"""Polaris v2 rules with several sub-rules (issue 13): the feature-env rule with a base fallback
as Polaris writes it — two ``SubRuleRouting`` entries — is accepted, converted both ways and
evaluated top to bottom as Polaris does; priorities and weights hold inside each sub-rule."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from devbox.mocks.naming.polaris import v1_routes
from devbox.mocks.naming.polaris_rules import rule_from_polaris
from google.protobuf import json_format
from polarismesh_specification.api.v1.traffic_manage import routing_pb2
from pydantic import ValidationError

from devbox.polaris.routing import RouteRequest, RoutingRule, evaluate, to_polaris


@dataclass
class Inst:
    id: str
    port: int
    metadata: dict[str, str] = field(default_factory=dict)
    weight: int = 100
    healthy: bool = True
    isolated: bool = False
    host: str = "127.0.0.1"


def _dest(env: str, **kw: object) -> dict:
    return {"service": "orders", "namespace": "default", "labels": {"env": {"type": "EXACT", "value": env}}, **kw}


# Polaris console JSON: sub-rule 1 sends env=feature-x to the feature instances, sub-rule 2 sends
# everything (and env=feature-x when it has no instance) to base, split 80/20 between two base pools.
POLARIS_RULE = {
    "name": "feature-x", "namespace": "default", "enable": True, "routing_policy": "RulePolicy", "priority": 1,
    "routing_config": {"@type": "type.googleapis.com/v1.RuleRoutingConfig", "rules": [
        {"name": "feature", "sources": [{"service": "*", "namespace": "*", "arguments": [
            {"type": "CUSTOM", "key": "env", "value": {"type": "EXACT", "value": "feature-x"}}]}],
         "destinations": [_dest("feature-x")]},
        {"name": "base", "sources": [{"service": "*", "namespace": "*"}],
         "destinations": [_dest("base", weight=80, name="base-a"),
                          {**_dest("base-b"), "weight": 20, "name": "base-b"},
                          {**_dest("last"), "priority": 1, "name": "last"}]},
    ]},
}


def _fleet(*envs: str) -> list[Inst]:
    return [Inst(f"i{n}", 9000 + n, {"env": env}) for n, env in enumerate(envs)]


def _ports(result) -> list[int]:
    return sorted(i.port for i in result.instances)


def _route(rule: RoutingRule, fleet: list[Inst], env: str | None, rng: float = 0.5):
    labels = {"env": env} if env else {}
    return evaluate(namespace="default", service="orders", instances=fleet, rules=[rule],
                    request=RouteRequest(labels=labels), rng=lambda: rng)


def test_two_sub_rules_convert_and_route_top_to_bottom() -> None:
    rule = rule_from_polaris(POLARIS_RULE)
    assert [len(s.destinations) for s in rule.subrules()] == [1, 3]
    fleet = _fleet("feature-x", "base", "base-b", "last")
    assert _ports(_route(rule, fleet, "feature-x")) == [9000]
    # any other request skips sub-rule 1 (its source does not match) and uses sub-rule 2's weights
    assert _ports(_route(rule, fleet, "other", rng=0.1)) == [9001]  # 0.1 * 100 < 80: base-a
    assert _ports(_route(rule, fleet, None, rng=0.9)) == [9002]  # 90 >= 80: base-b
    # env=feature-x with no feature instance falls through to the next sub-rule, as Polaris does
    no_feature = _fleet("base", "last")
    result = _route(rule, no_feature, "feature-x", rng=0.1)
    assert _ports(result) == [9000] and result.failover and "fell back to base-a" in result.reason
    # both weighted groups of priority 0 empty: priority 1 of the same sub-rule
    assert _ports(_route(rule, _fleet("last", "other"), None)) == [9000]


def test_sub_rules_survive_polaris_json_and_the_official_descriptor() -> None:
    rule = rule_from_polaris(POLARIS_RULE)
    again = to_polaris(rule)
    assert [s["name"] for s in again["routing_config"]["rules"]] == ["feature-x", "base"]
    message = routing_pb2.RouteRule()
    json_format.ParseDict(again, message, ignore_unknown_fields=True)  # Polaris's own proto accepts it
    assert rule_from_polaris(again).model_dump() == rule.model_dump()
    # devbox's own rule form takes sub-rules directly too
    own = RoutingRule.model_validate({"name": "r", "service": "orders", "rules": [
        {"sources": [{"arguments": [{"key": "env", "value": "feature-x"}]}],
         "destinations": [{"labels": {"env": "feature-x"}}]},
        {"destinations": [{"labels": {"env": "base"}}]},
    ]})
    assert _ports(_route(own, _fleet("feature-x", "base"), "feature-x")) == [9000]
    assert _ports(_route(own, _fleet("feature-x", "base"), None)) == [9001]


def test_v1_inbounds_one_route_per_sub_rule() -> None:
    routes = v1_routes(rule_from_polaris(POLARIS_RULE), "default", "orders")
    assert len(routes) == 2
    assert routes[0]["sources"][0]["metadata"] == {"env": {"type": "EXACT", "value": "feature-x", "value_type": "TEXT"}}
    assert [d["weight"] for d in routes[1]["destinations"]] == [80, 20, 100]


@pytest.mark.parametrize(
    "bad",
    [
        {"name": "r", "rules": []},  # no destinations at all
        {"name": "r", "rules": [{"destinations": []}]},
        {"name": "r", "rules": [{"destinations": [{"isolate": True}]}]},
        {"name": "r", "sources": [{"service": "web"}], "rules": [{"destinations": [{}]}]},
    ],
)
def test_bad_sub_rules_are_refused(bad: dict) -> None:
    with pytest.raises(ValidationError):
        RoutingRule.model_validate(bad)
