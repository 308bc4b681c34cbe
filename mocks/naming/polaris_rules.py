"""Polaris v2 ``RouteRule`` (protobuf-JSON) -> devbox :class:`~devbox.polaris.routing.RoutingRule`.

The other direction is :func:`devbox.polaris.routing.to_polaris`. Used by the console endpoint
``/naming/v2/routings`` so rules written for a real Polaris console can be loaded into devbox.

Every sub-rule (``routing_config.rules[]``) is kept, in order: the first becomes the flat
``sources``/``destinations`` pair of the devbox rule, the others its ``rules``.

LIMITATIONS: RulePolicy only (not MetadataPolicy / NearbyPolicy), no
RANGE matches or VARIABLE values, all destinations must name the same callee service.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from devbox.polaris.routing import ANY, DestinationGroup, RoutingRule

_CONFIG_TYPE = "type.googleapis.com/v1.RuleRoutingConfig"


class RuleConversionError(ValueError):
    """A Polaris rule devbox cannot represent; ``str()`` says which part and why."""


def _match(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise RuleConversionError(f"{where}: expected a MatchString object")
    kind = value.get("type", "EXACT")
    value_type = value.get("value_type", value.get("valueType", "TEXT"))
    if kind == "RANGE" or value_type == "VARIABLE":
        raise RuleConversionError(f"{where}: {kind}/{value_type} matches are not supported by devbox")
    return {"type": kind, "value": value.get("value", ""), "value_type": value_type}


def rule_from_polaris(data: dict[str, Any]) -> RoutingRule:
    """Convert one RouteRule JSON object; raises :class:`RuleConversionError` with the reason."""
    if not isinstance(data, dict):
        raise RuleConversionError("a RouteRule must be a JSON object")
    policy = data.get("routing_policy", data.get("routingPolicy", "RulePolicy"))
    if policy not in ("RulePolicy", 0):
        raise RuleConversionError(f"routing_policy {policy!r} is not supported (only RulePolicy)")
    config = data.get("routing_config", data.get("routingConfig")) or {}
    if config.get("@type", _CONFIG_TYPE) != _CONFIG_TYPE:
        raise RuleConversionError(f"routing_config must be a {_CONFIG_TYPE}")
    subrules = config.get("rules") or []
    if not subrules and (config.get("sources") or config.get("destinations")):
        subrules = [{"sources": config.get("sources") or [], "destinations": config.get("destinations") or []}]
    if not subrules:
        raise RuleConversionError("routing_config has no sub-rules (rules[])")
    if not isinstance(subrules, list) or not all(isinstance(sub, dict) for sub in subrules):
        raise RuleConversionError("routing_config.rules must be a list of SubRuleRouting objects")
    callees = {
        (d.get("namespace") or data.get("namespace") or "default", d.get("service") or ANY)
        for sub in subrules
        for d in sub.get("destinations") or []
        if isinstance(d, dict)
    }
    if len(callees) > 1:
        raise RuleConversionError(f"destinations name several callee services {sorted(callees)}; devbox needs one")
    if not callees:
        raise RuleConversionError("the rule has no destinations")
    namespace, service = callees.pop()
    converted = [_subrule(sub, f"rules[{n}]") for n, sub in enumerate(subrules)]
    first = converted[0]
    extend = data.get("extendInfo") or data.get("extend_info") or {}
    try:
        return RoutingRule.model_validate(
            {
                "name": data.get("name", ""),
                "namespace": namespace,
                "service": service,
                "enable": data.get("enable", True),
                "priority": data.get("priority", 0),
                "description": data.get("description", ""),
                "sources": first["sources"],
                "destinations": first["destinations"],
                "rules": converted[1:],
                "failover": extend.get("devbox.failover", "all"),
            }
        )
    except ValidationError as exc:
        reasons = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise RuleConversionError(reasons) from None


def _subrule(sub: dict[str, Any], where: str) -> dict[str, Any]:
    """One ``SubRuleRouting`` as a devbox sub-rule dict (name, sources, destinations)."""
    raw_dests = sub.get("destinations") or []
    if not raw_dests:
        raise RuleConversionError(f"{where} has no destinations")
    sources = [
        {
            "service": s.get("service") or ANY,
            "namespace": s.get("namespace") or ANY,
            "arguments": [
                {"type": a.get("type", "CUSTOM"), "key": a.get("key", ""),
                 "value": _match(a.get("value", {}), f"{where}.sources[{i}].arguments[{j}]")}
                for j, a in enumerate(s.get("arguments") or [])
            ],
        }
        for i, s in enumerate(sub.get("sources") or [])
        if s.get("arguments") or (s.get("service") or ANY) != ANY or (s.get("namespace") or ANY) != ANY
    ]
    destinations = []
    for i, d in enumerate(raw_dests):
        group: dict[str, Any] = {
            "labels": {k: _match(v, f"destinations[{i}].labels.{k}") for k, v in (d.get("labels") or {}).items()},
            "priority": d.get("priority", 0),
            "weight": d.get("weight", 100),
            "isolate": d.get("isolate", False),
        }
        name = d.get("name", "")
        try:
            if name and DestinationGroup.model_validate(group).label() != name:
                group["name"] = name
        except ValidationError as exc:
            raise RuleConversionError(f"destinations[{i}]: {exc.errors()[0]['msg']}") from None
        destinations.append(group)
    return {"name": sub.get("name", ""), "sources": sources, "destinations": destinations}
