"""Routing rules: the JSON/YAML model and the pure evaluation that picks an instance subset.

The model is a devbox form of Polaris v2 rule routing (``RouteRule`` with a
``RuleRoutingConfig``), one level flatter so that rules read well in devbox.yaml and JSON::

    RoutingRule                      Polaris v2
    ───────────────────────────────  ──────────────────────────────────────────────
    name, enable, priority           RouteRule.name / enable / priority
    namespace, service (callee)      DestinationGroup.namespace / service ("*" = any)
    sources[]                        SubRuleRouting.sources[] (SourceService)
      .service, .namespace           SourceService.service / namespace ("*" = any)
      .arguments[] {type,key,value}  SourceMatch {type, key, value: MatchString}
    destinations[]                   SubRuleRouting.destinations[] (DestinationGroup)
      .labels {key: MatchString}     DestinationGroup.labels
      .priority, .weight, .isolate   DestinationGroup.priority / weight / isolate
    rules[] {name, sources,          RuleRoutingConfig.rules[] (further SubRuleRouting, after
             destinations}             the flat pair above when both are given)
    failover ("all" | "none")        polaris-go's ``failoverType`` consumer setting

``MatchString`` is Polaris's: ``type`` EXACT | REGEX | NOT_EQUALS | IN | NOT_IN (IN/NOT_IN take a
comma-separated list) and ``value_type`` TEXT | PARAMETER (PARAMETER: the destination label must
equal the value the *request* carries for the key named in ``value``). Shorthands accepted on
input: a plain string is an EXACT match; ``"*"`` matches any value that is present; ``"$env"`` is
``{"value": "env", "value_type": "PARAMETER"}``. A metadata key an instance lacks compares as
the empty string, so ``{"type": "IN", "value": "base,"}`` means "env=base or untagged".

Semantics (Polaris's): rules are tried in ``priority`` order (lower first, then name); the first
enabled rule whose callee matches and one of whose sub-rules' sources match the request is *the*
rule (no sources = any request). Its sub-rules are tried top to bottom, as Polaris does: a
sub-rule whose sources match routes if one of its destination groups has an available instance,
else the next matching sub-rule is tried (the usual feature-env rule is two sub-rules: ``env=X``
to the ``X`` instances, then any request to ``base``). Within a sub-rule the destination groups
are grouped by priority (lower first); the first priority level with at least one available
instance wins, and among its groups one is chosen by weight. If no sub-rule has instances,
``failover: all`` routes to every available instance and ``none`` routes to nothing. No rule
matching routes to every available instance.
"Available" is decided before the rule, by the filters isolation (weight 0 counts as isolated:
it takes no traffic) → health → circuit breaker;
if health and breaker together would remove every non-isolated instance, they are all kept
(Polaris's recover-all), and the explanation says so.

The 123 multi-environment pattern is one rule with ``service: "*"`` (every service of the
namespace, so it holds along the whole call chain as long as callers propagate the label)::

    name: feature-env
    service: "*"
    sources: [{arguments: [{key: env, value: "*"}]}]
    destinations:
      - {labels: {env: "$env"}}                                  # same env as the request
      - {labels: {env: {type: IN, value: "base,"}}, priority: 1}  # else base / untagged

:func:`multi_env_rule` builds exactly that.

LIMITATIONS: RANGE matches, VARIABLE values, nearby (location) routing, lanes and per-argument
types beyond the request fields in :class:`RouteRequest` are not modelled; a converted rule keeps
only what this model has.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from devbox.regex import compile_re2

LOG = logging.getLogger(__name__)

MatchType = Literal["EXACT", "REGEX", "NOT_EQUALS", "IN", "NOT_IN"]
ArgumentType = Literal[
    "CUSTOM", "HEADER", "QUERY", "METHOD", "PATH", "CALLER_IP", "COOKIE", "CALLER_METADATA"
]
ANY = "*"


class MatchString(BaseModel):
    """One value matcher (Polaris ``MatchString``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: MatchType = Field("EXACT", description="How `value` is compared.")
    value: str = Field(
        "", description="Text to compare; for IN/NOT_IN a comma-separated list; '*' = any present value."
    )
    value_type: Literal["TEXT", "PARAMETER"] = Field(
        "TEXT",
        description="PARAMETER: compare with the request's value for the key named in `value`.",
    )

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if isinstance(data, str):
            if data.startswith("$") and len(data) > 1:
                return {"value": data[1:], "value_type": "PARAMETER"}
            return {"value": data}
        return data

    _items: frozenset[str] = PrivateAttr(default=frozenset())

    def model_post_init(self, context: Any, /) -> None:
        self._items = frozenset(_split(self.value))

    @model_validator(mode="after")
    def _check_regex(self) -> MatchString:
        if self.type == "REGEX" and self.value_type == "TEXT":
            try:
                compile_re2(self.value)
            except ValueError as exc:
                raise ValueError(f"invalid regex {self.value!r}: {exc}") from None
        return self

    def matches(self, actual: str | None, params: Mapping[str, str] | None = None) -> bool:
        """Whether ``actual`` (None = absent) satisfies this matcher."""
        if self.value_type == "PARAMETER":
            if params is None or self.value not in params:
                return False
            expected = params[self.value]
        else:
            expected = self.value
        if expected == ANY and self.type == "EXACT":
            return actual is not None
        text = "" if actual is None else actual
        if self.type == "EXACT":
            return text == expected
        if self.type == "NOT_EQUALS":
            return text != expected
        if self.type == "IN":
            return text in (self._items if self.value_type == "TEXT" else _split(expected))
        if self.type == "NOT_IN":
            return text not in (self._items if self.value_type == "TEXT" else _split(expected))
        # RE2 (linear time, Go's syntax as Polaris): a PARAMETER pattern comes from the request
        try:
            return compile_re2(expected).search(text) is not None
        except ValueError:
            return False  # a request's parameter that is no regex matches nothing

    def describe(self) -> str:
        value = f"${self.value}" if self.value_type == "PARAMETER" else self.value
        return value if self.type == "EXACT" else f"{self.type} {value}"


class SourceArgument(BaseModel):
    """One condition on the request (Polaris ``SourceMatch``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: ArgumentType = Field(
        "CUSTOM", description="Which part of the request: CUSTOM labels (e.g. baggage env), HEADER, ..."
    )
    key: str = Field("", description="Label/header/query/cookie/metadata key (unused for METHOD, PATH, CALLER_IP).")
    value: MatchString = Field(default_factory=MatchString, description="Matcher for the value.")

    @model_validator(mode="before")
    @classmethod
    def _polaris_parameter(cls, data: Any) -> Any:
        # Polaris's own parameter routing marks the source label PARAMETER: it takes the request's
        # value (which must be present) for the destination labels that name this key. devbox's
        # destination labels read the request directly, so on the source it is "any present value".
        if isinstance(data, Mapping) and isinstance(data.get("value"), Mapping):
            value = data["value"]
            if value.get("value_type") == "PARAMETER" and value.get("type", "EXACT") == "EXACT":
                return {**data, "value": {"type": "EXACT", "value": ANY}}
        return data

    @model_validator(mode="after")
    def _needs_key(self) -> SourceArgument:
        if self.type not in ("METHOD", "PATH", "CALLER_IP") and not self.key:
            raise ValueError(f"a {self.type} argument needs a key")
        if self.value.value_type == "PARAMETER":
            raise ValueError("PARAMETER values are only allowed in destination labels")
        return self

    def to_polaris(self, sub: SubRule) -> dict[str, Any]:
        """The matcher as Polaris sends it. A CUSTOM "any present value" whose key a PARAMETER
        destination label of ``sub`` names goes as PARAMETER: polaris-java compares such a label
        only with a value its source label captured (else it never matches), and polaris-go takes
        a PARAMETER source label as match-all."""
        m = self.value
        if (self.type == "CUSTOM" and m.type == "EXACT" and m.value == ANY and m.value_type == "TEXT"
                and any(d.value_type == "PARAMETER" and d.value == self.key
                        for group in sub.destinations for d in group.labels.values())):
            return {"type": "EXACT", "value": ANY, "value_type": "PARAMETER"}
        return {"type": m.type, "value": m.value, "value_type": m.value_type}


class RuleSource(BaseModel):
    """Which callers a rule applies to (Polaris ``SourceService``); all conditions must hold."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    service: str = Field(ANY, description="Caller service name, '*' = any caller.")
    namespace: str = Field(ANY, description="Caller namespace, '*' = any.")
    arguments: list[SourceArgument] = Field(default_factory=list, description="Conditions on the request.")


class DestinationGroup(BaseModel):
    """An instance subset, selected by metadata (Polaris ``DestinationGroup``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field("", description="Optional name shown in explanations.")
    labels: dict[str, MatchString] = Field(
        default_factory=dict, description="Instance metadata matchers; empty = every instance."
    )
    priority: int = Field(0, ge=0, le=9, description="Lower is tried first; next level is the fallback.")
    weight: int = Field(100, ge=0, le=10000, description="Share among groups of the same priority.")
    isolate: bool = Field(False, description="Never route to this group (Polaris isolate).")

    def label(self) -> str:
        if self.name:
            return self.name
        if not self.labels:
            return "*"
        return ",".join(f"{k}={m.describe()}" for k, m in sorted(self.labels.items()))


class SubRule(BaseModel):
    """One sources -> destinations pair of a rule (Polaris ``SubRuleRouting``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field("", description="Optional name shown in explanations.")
    sources: list[RuleSource] = Field(default_factory=list, description="Any of these callers; empty = any request.")
    destinations: list[DestinationGroup] = Field(..., min_length=1, description="Instance subsets, by priority.")

    @field_validator("destinations")
    @classmethod
    def _reachable(cls, value: list[DestinationGroup]) -> list[DestinationGroup]:
        if all(d.isolate for d in value):
            raise ValueError("every destination is isolated")
        return value


class RoutingRule(BaseModel):
    """A routing rule for one callee service (or every service of a namespace with ``service: '*'``).

    The flat ``sources``/``destinations`` are the rule's first sub-rule (the common one-pair form);
    ``rules`` holds further sub-rules, tried after it in order.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., min_length=1, max_length=128, description="Rule name, unique per service.")
    namespace: str = Field("default", min_length=1, description="Namespace of the callee.")
    service: str = Field(ANY, min_length=1, description="Callee service, '*' = every service of the namespace.")
    enable: bool = Field(True, description="Disabled rules are kept but never match.")
    priority: int = Field(0, ge=0, le=10, description="Rule order, lower first (Polaris RouteRule.priority).")
    description: str = Field("", description="Free text.")
    sources: list[RuleSource] = Field(default_factory=list, description="Any of these callers; empty = any request.")
    destinations: list[DestinationGroup] = Field(
        default_factory=list, description="Instance subsets, by priority (the first sub-rule)."
    )
    rules: list[SubRule] = Field(default_factory=list, description="Further sub-rules, tried in order.")
    failover: Literal["all", "none"] = Field(
        "all", description="When no destination group has an instance: all available instances, or none."
    )

    _subrules: tuple[SubRule, ...] = PrivateAttr(default=())

    @model_validator(mode="after")
    def _has_destinations(self) -> RoutingRule:
        if not self.destinations and not self.rules:
            raise ValueError("a rule needs destinations (or sub-rules in `rules`)")
        if self.destinations and all(d.isolate for d in self.destinations):
            raise ValueError("every destination is isolated")
        if self.sources and not self.destinations:
            raise ValueError("`sources` without `destinations`: put them in a sub-rule")
        first = (SubRule(sources=self.sources, destinations=self.destinations),) if self.destinations else ()
        self._subrules = (*first, *self.rules)
        return self

    def subrules(self) -> tuple[SubRule, ...]:
        """Every sources -> destinations pair, in the order Polaris tries them."""
        return self._subrules

    def applies_to(self, namespace: str, service: str) -> bool:
        return self.enable and self.namespace == namespace and self.service in (ANY, service)


def multi_env_rule(*, key: str = "env", base: str = "base", namespace: str = "default",
                   service: str = ANY, name: str = "multi-env") -> RoutingRule:
    """The 123 multi-environment rule: ``key=X`` requests go to ``X`` instances, else to base/untagged."""
    return RoutingRule(
        name=name, namespace=namespace, service=service,
        sources=[RuleSource(arguments=[SourceArgument(key=key, value=MatchString(value=ANY))])],
        destinations=[
            DestinationGroup(name=f"same {key}", labels={key: MatchString(value=key, value_type="PARAMETER")}),
            DestinationGroup(name=base, labels={key: MatchString(type="IN", value=f"{base},")}, priority=1),
        ],
    )


def parse_rules(data: Iterable[Mapping[str, Any]]) -> list[RoutingRule]:
    """Validate a list of rule JSON objects (raises pydantic ``ValidationError``)."""
    return [RoutingRule.model_validate(item) for item in data]


def to_polaris(rule: RoutingRule, *, service: str | None = None, revision: str = "") -> dict[str, Any]:
    """The rule as protobuf-JSON of Polaris's v2 ``RouteRule`` (``json_format.ParseDict``-ready).

    ``service`` names the callee when the rule is namespace-wide (``"*"``) and is being sent for
    one service. ``routing_config`` is an ``Any`` holding a ``v1.RuleRoutingConfig``.
    """
    callee = rule.service if service is None or rule.service != ANY else service

    def match(m: MatchString) -> dict[str, Any]:
        return {"type": m.type, "value": m.value, "value_type": m.value_type}

    def subrule(sub: SubRule) -> dict[str, Any]:
        sources = [
            {
                "service": s.service,
                "namespace": s.namespace,
                "arguments": [{"type": a.type, "key": a.key, "value": a.to_polaris(sub)} for a in s.arguments],
            }
            for s in (sub.sources or [RuleSource()])
        ]
        destinations = [
            {
                "service": callee,
                "namespace": rule.namespace,
                "labels": {k: match(m) for k, m in d.labels.items()},
                "priority": d.priority,
                "weight": d.weight,
                "isolate": d.isolate,
                "name": d.label(),
            }
            for d in sub.destinations
        ]
        return {"name": sub.name or rule.name, "sources": sources, "destinations": destinations}

    return {
        "id": f"{rule.namespace}/{callee}/{rule.name}",
        "name": rule.name,
        "namespace": rule.namespace,
        "enable": rule.enable,
        "routing_policy": "RulePolicy",
        "routing_config": {
            "@type": "type.googleapis.com/v1.RuleRoutingConfig",
            "rules": [subrule(sub) for sub in rule.subrules()],
        },
        "revision": revision,
        "priority": rule.priority,
        "description": rule.description,
        "extendInfo": {"devbox.failover": rule.failover},
    }


# --- evaluation ---------------------------------------------------------------------------


class InstanceLike(Protocol):
    """What evaluation reads from an instance (the registry's ``Instance`` and the SDK's both fit)."""

    id: str
    host: str
    port: int
    weight: int
    healthy: bool
    isolated: bool
    metadata: Mapping[str, str]


@dataclass(frozen=True)
class RouteRequest:
    """What a call carries that rules can match on."""

    labels: Mapping[str, str] = field(default_factory=dict)
    caller_service: str = ""
    caller_namespace: str = ""
    caller_metadata: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    query: Mapping[str, str] = field(default_factory=dict)
    cookies: Mapping[str, str] = field(default_factory=dict)
    method: str = ""
    path: str = ""
    caller_ip: str = ""

    def argument(self, arg: SourceArgument) -> str | None:
        kind = arg.type
        if kind == "CUSTOM":
            return self.labels.get(arg.key)
        if kind == "HEADER":
            return _get_ci(self.headers, arg.key)
        if kind == "QUERY":
            return self.query.get(arg.key)
        if kind == "COOKIE":
            return self.cookies.get(arg.key)
        if kind == "CALLER_METADATA":
            return self.caller_metadata.get(arg.key)
        if kind == "METHOD":
            return self.method or None
        if kind == "PATH":
            return self.path or None
        return self.caller_ip or None

    def parameters(self) -> dict[str, str]:
        """Values PARAMETER destination labels refer to: headers, then custom labels over them."""
        params = {k.lower(): v for k, v in self.headers.items()}
        params.update(self.labels)
        return params


@dataclass
class FilterStep:
    """One filter's effect, for the explanation."""

    filter: str
    #: The removed instances themselves; labels are only formatted when someone looks.
    removed_instances: Sequence[Any]
    note: str = ""

    @property
    def removed(self) -> list[str]:
        return [instance_label(i) for i in self.removed_instances]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"filter": self.filter, "removed": list(self.removed)}
        if self.note:
            out["note"] = self.note
        return out


@dataclass
class RouteResult:
    """The subset to balance over, and why."""

    instances: list[Any]
    rule: str | None
    destination: str | None
    steps: list[FilterStep]
    reason: str
    failover: bool = False
    recovered_all: bool = False

    def filtered(self) -> dict[str, list[str]]:
        return {s.filter: s.removed for s in self.steps if s.removed}

    def removed_labels(self) -> tuple[str, ...]:
        """Every removed instance as ``filter:host:port`` (computed once: results get reused)."""
        cached = self.__dict__.get("_removed_labels")
        if cached is None:
            cached = self.__dict__["_removed_labels"] = tuple(
                f"{step.filter}:{addr}" for step in self.steps for addr in step.removed)
        return cached

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "destination": self.destination,
            "reason": self.reason,
            "failover": self.failover,
            "recovered_all": self.recovered_all,
            "filters": [s.to_dict() for s in self.steps],
            "candidates": [instance_label(i) for i in self.instances],
        }


def instance_label(instance: InstanceLike) -> str:
    return f"{instance.host}:{instance.port}"


def source_matches(source: RuleSource, namespace: str, request: RouteRequest) -> bool:
    if source.service != ANY and source.service != request.caller_service:
        return False
    if source.namespace != ANY and source.namespace != (request.caller_namespace or namespace):
        return False
    return all(arg.value.matches(request.argument(arg)) for arg in source.arguments)


def match_rule(rules: Sequence[RoutingRule], *, namespace: str, service: str,
               request: RouteRequest) -> RoutingRule | None:
    """The first applicable rule (by priority, then name) whose sources match the request."""
    ordered = sorted((r for r in rules if r.applies_to(namespace, service)), key=lambda r: (r.priority, r.name))
    for rule in ordered:
        if matching_subrules(rule, namespace, request):
            return rule
    return None


def matching_subrules(rule: RoutingRule, namespace: str, request: RouteRequest) -> list[SubRule]:
    """The rule's sub-rules whose sources match the request (no sources = any), in order."""
    return [
        sub for sub in rule.subrules()
        if not sub.sources or any(source_matches(s, namespace, request) for s in sub.sources)
    ]


def group_matches(group: DestinationGroup, instance: InstanceLike, params: Mapping[str, str]) -> bool:
    meta = instance.metadata
    for key, matcher in group.labels.items():  # a loop, not all(genexpr): this is the hot path
        if not matcher.matches(meta.get(key), params):
            return False
    return True


def evaluate(
    *,
    namespace: str,
    service: str,
    instances: Sequence[Any],
    rules: Sequence[RoutingRule],
    request: RouteRequest | None = None,
    is_open: Callable[[Any], bool] | None = None,
    rng: Callable[[], float] = random.random,
) -> RouteResult:
    """Choose the instance subset for one call and explain the choice.

    ``is_open(instance)`` tells whether the instance's circuit breaker refuses calls; ``rng``
    chooses among destination groups of equal priority (inject it for determinism).
    """
    request = request or RouteRequest()
    isolated: list[Any] = []
    unhealthy: list[Any] = []
    broken: list[Any] = []
    available: list[Any] = []
    for inst in instances:
        if inst.isolated or inst.weight <= 0:
            isolated.append(inst)
        elif not inst.healthy:
            unhealthy.append(inst)
        elif is_open is not None and is_open(inst):
            broken.append(inst)
        else:
            available.append(inst)
    steps = [FilterStep("isolation", isolated), FilterStep("health", unhealthy),
             FilterStep("circuit_breaker", broken)]
    recovered = False
    if not available and (unhealthy or broken):
        available = [i for i in instances if not (i.isolated or i.weight <= 0)]
        recovered = True
        steps[-1].note = "all instances unhealthy or open: recover-all keeps them"

    rule = match_rule(rules, namespace=namespace, service=service, request=request) if rules else None
    if rule is None:
        steps.append(FilterStep("metadata", ()))
        reason = "no rule matched: every available instance"
        return RouteResult(available, None, None, steps, reason, recovered_all=recovered)

    params = request.parameters()
    skipped: list[str] = []
    for sub in matching_subrules(rule, namespace, request):
        found = _route_subrule(sub, available, params, rng)
        if found is None:
            skipped.extend(d.label() for d in sub.destinations if not d.isolate)
            continue
        group, members, passed = found
        skipped.extend(passed)
        chosen = {id(i) for i in members}
        removed = [i for i in available if id(i) not in chosen]
        steps.append(FilterStep("metadata", removed, note=f"destination {group.label()}"))
        if skipped:
            reason = f"rule {rule.name}: no instances in {', '.join(skipped)}; fell back to {group.label()}"
        else:
            reason = f"rule {rule.name}: destination {group.label()}"
        return RouteResult(members, rule.name, group.label(), steps, reason,
                           failover=bool(skipped), recovered_all=recovered)

    if rule.failover == "all":
        steps.append(FilterStep("metadata", (), note="no destination had instances: failover all"))
        reason = f"rule {rule.name}: no destination had instances; failover to all"
        return RouteResult(available, rule.name, None, steps, reason, failover=True, recovered_all=recovered)
    steps.append(FilterStep("metadata", available, note="no destination had instances: failover none"))
    reason = f"rule {rule.name}: no destination had instances; failover none"
    return RouteResult([], rule.name, None, steps, reason, failover=True, recovered_all=recovered)


def _route_subrule(
    sub: SubRule, available: Sequence[Any], params: Mapping[str, str], rng: Callable[[], float]
) -> tuple[DestinationGroup, list[Any], list[str]] | None:
    """(chosen group, its instances, labels of the empty groups tried before it), or None if all are empty."""
    skipped: list[str] = []
    for priority in sorted({g.priority for g in sub.destinations if not g.isolate}):
        candidates = []
        for group in sub.destinations:
            if group.priority != priority or group.isolate:
                continue
            members = [i for i in available if group_matches(group, i, params)] if group.weight > 0 else []
            if members:
                candidates.append((group, members))
            else:
                skipped.append(group.label())
        if candidates:
            group, members = _weighted_group(candidates, rng)
            return group, members, skipped
    return None


def _weighted_group(candidates: list[tuple[DestinationGroup, list[Any]]],
                    rng: Callable[[], float]) -> tuple[DestinationGroup, list[Any]]:
    if len(candidates) == 1:
        return candidates[0]
    total = sum(g.weight for g, _ in candidates)
    point = rng() * total
    for group, members in candidates:
        point -= group.weight
        if point < 0:
            return group, members
    return candidates[-1]


def _split(text: str) -> frozenset[str]:
    return frozenset(part.strip() for part in text.split(","))


def _get_ci(mapping: Mapping[str, str], key: str) -> str | None:
    if key in mapping:
        return mapping[key]
    lower = key.lower()
    for k, v in mapping.items():
        if k.lower() == lower:
            return v
    return None
