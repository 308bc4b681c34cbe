"""What alerting talks about: rules, alert states, transitions, silences and their matchers.

Plain dataclasses with no I/O, shared by the evaluation core, the store and the adapters.
Times are Unix seconds (float) everywhere inside; the adapters format RFC 3339 at the edge.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from typing import Any

from devbox.regex import compile_re2

#: Label names follow Prometheus: [a-zA-Z_][a-zA-Z0-9_]*.
LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


class AlertState(enum.StrEnum):
    INACTIVE = "inactive"
    PENDING = "pending"
    FIRING = "firing"
    RESOLVED = "resolved"


class SilenceState(enum.StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    EXPIRED = "expired"


class MatchType(enum.StrEnum):
    EQ = "="
    NE = "!="
    RE = "=~"
    NRE = "!~"


@dataclass(frozen=True)
class Matcher:
    """One label matcher, as in a silence or a ``filter`` query parameter. Regexes are anchored."""

    name: str
    value: str
    type: MatchType = MatchType.EQ

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a matcher needs a label name")
        if self.type in (MatchType.RE, MatchType.NRE):
            try:
                compile_re2(self.value)
            except ValueError as exc:
                raise ValueError(f"matcher {self.name}{self.type.value}{self.value!r}: bad regex: {exc}") from None

    def matches(self, labels: dict[str, str]) -> bool:
        actual = labels.get(self.name, "")
        if self.type is MatchType.EQ:
            return actual == self.value
        if self.type is MatchType.NE:
            return actual != self.value
        hit = compile_re2(self.value).fullmatch(actual) is not None  # RE2: linear time, Go's syntax
        return hit if self.type is MatchType.RE else not hit

    @property
    def is_regex(self) -> bool:
        return self.type in (MatchType.RE, MatchType.NRE)

    @property
    def is_equal(self) -> bool:
        return self.type in (MatchType.EQ, MatchType.RE)

    def to_api(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "isRegex": self.is_regex, "isEqual": self.is_equal}

    def __str__(self) -> str:
        escaped = self.value.replace("\\", "\\\\").replace('"', '\\"')
        return f'{self.name}{self.type.value}"{escaped}"'


_FNV_OFFSET = 14695981039346656037
_FNV_PRIME = 1099511628211
_MASK64 = (1 << 64) - 1


def fingerprint(labels: dict[str, str]) -> str:
    """The label set's fingerprint as Prometheus computes it (FNV-1a 64 over sorted name/value
    pairs with 0xff separators), so an alert has the same id in devbox and in a real Alertmanager."""
    h = _FNV_OFFSET
    for name in sorted(labels):
        for part in (name, labels[name]):
            for byte in part.encode():
                h = ((h ^ byte) * _FNV_PRIME) & _MASK64
            h = ((h ^ 0xFF) * _FNV_PRIME) & _MASK64
    return f"{h:016x}"


@dataclass
class Rule:
    """An alerting rule after loading: always a PromQL expression, whatever form it was written in."""

    name: str
    expr: str
    group: str = "default"
    for_s: float = 0.0
    keep_firing_for_s: float = 0.0
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    #: Where the rule came from: ``path:line`` of a file, or ``api``.
    source: str = "api"
    #: The 007-style short form this rule was compiled from, if any (shown back to the user).
    short: dict[str, Any] | None = None

    @property
    def id(self) -> str:
        return f"{self.group}/{self.name}"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "group": self.group,
            "expr": self.expr,
            "for": self.for_s,
            "keep_firing_for": self.keep_firing_for_s,
            "labels": dict(self.labels),
            "annotations": dict(self.annotations),
            "source": self.source,
            "short": self.short,
            "editable": self.source == "api",
        }


@dataclass
class Alert:
    """One label set of one rule (or one alert posted from outside) and where it is in its life."""

    labels: dict[str, str]
    annotations: dict[str, str]
    state: AlertState
    rule_id: str | None
    #: When the expression first returned this label set (pending since).
    active_at: float
    value: float | None = None
    fired_at: float | None = None
    resolved_at: float | None = None
    last_seen: float = 0.0
    #: Set for alerts posted to /api/v2/alerts: when they stop being active.
    ends_at: float | None = None
    #: Whether the firing of this alert reached the receivers (False while silenced).
    notified: bool = False
    generator_url: str = ""
    #: ``fingerprint(labels)``, computed once (an alert's labels never change; it is read on every
    #: notification and listing, and costs ~20 µs in pure Python)
    fp: str = field(default="", repr=False, compare=False)

    @property
    def fingerprint(self) -> str:
        if not self.fp:
            self.fp = fingerprint(self.labels)
        return self.fp


@dataclass
class Transition:
    """One state change of one alert: what ``alert_transition`` is fired with and history stores."""

    rule_id: str | None
    alertname: str
    labels: dict[str, str]
    annotations: dict[str, str]
    from_state: AlertState
    to_state: AlertState
    at: float
    value: float | None
    fingerprint: str
    #: Ids of the silences that muted this transition's notification (empty: not silenced).
    silenced_by: list[str] = field(default_factory=list)
    #: Whether a notification went out for it (firing/resolved that were not silenced).
    notified: bool = False

    @property
    def service(self) -> str:
        return self.labels.get("service") or self.labels.get("callee") or self.labels.get("job") or ""

    def to_json(self) -> dict[str, Any]:
        return {
            "rule": self.rule_id,
            "alertname": self.alertname,
            "labels": dict(self.labels),
            "annotations": dict(self.annotations),
            "from": self.from_state.value,
            "to": self.to_state.value,
            "at": self.at,
            "value": self.value,
            "fingerprint": self.fingerprint,
            "service": self.service,
            "silenced": bool(self.silenced_by),
            "silenced_by": list(self.silenced_by),
            "notified": self.notified,
        }


@dataclass
class Silence:
    """Mutes notifications of the alerts all its matchers match, between starts_at and ends_at."""

    id: str
    matchers: list[Matcher]
    starts_at: float
    ends_at: float
    created_by: str
    comment: str
    updated_at: float

    def state(self, now: float) -> SilenceState:
        if now >= self.ends_at:
            return SilenceState.EXPIRED
        if now < self.starts_at:
            return SilenceState.PENDING
        return SilenceState.ACTIVE

    def mutes(self, labels: dict[str, str], now: float) -> bool:
        return self.state(now) is SilenceState.ACTIVE and all(m.matches(labels) for m in self.matchers)
