"""The ``alerting:`` section of devbox.yaml, and the rule models shared with rule files.

Rules come in two forms, both accepted inline here and in rule files:

- Prometheus rule-file format: ``groups: [{name, rules: [{alert, expr, for, labels, annotations}]}]``;
- the 007-style short form: ``rules: [{name, indicator, filter, comparison, threshold, duration}]``,
  compiled to PromQL (``indicator{filter} comparison threshold``).
"""

from __future__ import annotations

import math
import re
from typing import Any, Literal

from devbox.mocks.alerting.matchers import parse_matchers
from devbox.mocks.alerting.shortform import compile_short
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

#: Alert names: what Prometheus accepts as a metric name.
ALERT_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def parse_duration(value: Any) -> float:
    """Seconds from a Prometheus duration (``30s``, ``1h30m``, ``500ms``) or a number of seconds."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration; write e.g. 30s, 5m, 1h30m")
    if isinstance(value, int | float):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{value!r} is not a duration: it must be a finite number of seconds >= 0")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a duration; write e.g. 30s, 5m, 1h30m")
    text = value.strip()
    if text in ("0", ""):
        return 0.0
    pos, total = 0, 0.0
    for m in _DURATION_PART.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        pos = m.end()
    if pos != len(text) or pos == 0:
        raise ValueError(f"{value!r} is not a duration; write e.g. 30s, 5m, 1h30m (units ms s m h d w y)")
    if not math.isfinite(total):
        raise ValueError(f"{value!r} is too long a duration")
    return total


def _stringify(data: Any) -> Any:
    """YAML reads ``priority: 1`` as an int; Prometheus label values are strings."""
    if isinstance(data, dict):
        return {k: "" if v is None else str(v).lower() if isinstance(v, bool) else str(v) for k, v in data.items()}
    return data


def _check_label_names(labels: dict[str, str]) -> dict[str, str]:
    for name in labels:
        if not LABEL_NAME.match(name):
            raise ValueError(f"label name {name!r} is not valid: use letters, digits and _, not starting with a digit")
    return labels


def _check_expr(expr: str) -> str:
    # the metrics engine's guarded parse: rule text is bounded before the native parser sees it
    from devbox.mocks.metrics.promql import QueryError, parse

    if not expr.strip():
        raise ValueError("expr is empty")
    try:
        parse(expr)
    except QueryError as exc:
        raise ValueError(f"expr is not valid PromQL: {exc}") from None
    return expr


class PromRuleSpec(BaseModel):
    """One rule of a Prometheus rule group (``alert`` rules; ``record`` rules are read and skipped)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    alert: str | None = Field(None, description="Alert name (the alertname label).")
    record: str | None = Field(None, description="Recording rule name: accepted, not evaluated by devbox.")
    expr: str = Field(description="PromQL expression; every sample it returns is an active alert.")
    for_: float | str = Field(0.0, alias="for", description="How long the expression must hold before firing.")
    keep_firing_for: float | str = Field(0.0, description="Keep firing this long after the expression stops holding.")
    labels: dict[str, str] = Field(default_factory=dict, description="Labels added to every alert.")
    annotations: dict[str, str] = Field(
        default_factory=dict, description="Annotations; {{ $labels.x }} and {{ $value }} are expanded."
    )

    @field_validator("labels", "annotations", mode="before")
    @classmethod
    def _stringify_maps(cls, value: Any) -> Any:
        return _stringify(value)

    @field_validator("for_", "keep_firing_for")
    @classmethod
    def _duration(cls, value: Any) -> float:
        return parse_duration(value)

    @field_validator("expr")
    @classmethod
    def _expr(cls, value: str) -> str:
        return _check_expr(value)

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        return _check_label_names(value)

    @model_validator(mode="after")
    def _alert_or_record(self) -> PromRuleSpec:
        if bool(self.alert) == bool(self.record):
            raise ValueError("each rule needs exactly one of 'alert' or 'record'")
        if self.alert and not ALERT_NAME.match(self.alert):
            raise ValueError(f"alert name {self.alert!r} is not valid: letters, digits, _ and :")
        return self


class RuleGroupSpec(BaseModel):
    """A Prometheus rule group."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, description="Group name; rule ids are group/alert.")
    interval: float | str | None = Field(
        None, description="Accepted for compatibility; devbox evaluates at alerting.interval."
    )
    limit: int | None = Field(None, description="Accepted for compatibility; not enforced.")
    rules: list[PromRuleSpec] = Field(default_factory=list)


class ShortRuleSpec(BaseModel):
    """The 007-style short form: an indicator, a dimension filter, a comparison, a threshold, a duration."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Alert name.")
    group: str = Field("devbox", min_length=1, description="Group the rule is listed under.")
    indicator: str = Field(
        description="Metric or composite indicator name (e.g. success_rate), queried through PromQL."
    )
    filter: dict[str, str] | list[str] = Field(
        default_factory=dict,
        description='Dimension filter: {service: orders} (equality) or matchers ["method=~\\"Get.*\\""].',
    )
    by: list[str] | None = Field(
        None, description="Aggregate the indicator by these dimensions first (one alert per group)."
    )
    aggregate: Literal["sum", "avg", "max", "min", "count"] = Field(
        "avg", description="How to aggregate when 'by' is given."
    )
    comparison: Literal[">", ">=", "<", "<=", "==", "!="] = Field(description="How to compare with threshold.")
    threshold: float = Field(description="The value to compare with.")
    duration: float | str = Field(0.0, description="How long the condition must hold before firing.")
    min_volume: int | None = Field(
        None,
        ge=1,
        description="Only alert for a group (of 'by') that saw at least this many events of 'volume' "
        "within volume_window: one failed call of two is not an outage.",
    )
    volume: str | None = Field(
        None,
        description="PromQL selector of the counter whose increase is the volume, e.g. "
        "rpc_server_requests_total{method!=\"GET /healthz\"}; required with min_volume.",
    )
    volume_window: float | str = Field(60.0, description="Window the volume is counted over (e.g. 1m).")
    labels: dict[str, str] = Field(default_factory=dict, description="Labels added to every alert.")
    annotations: dict[str, str] = Field(default_factory=dict, description="Annotations (templated).")

    @field_validator("labels", "annotations", mode="before")
    @classmethod
    def _stringify_maps(cls, value: Any) -> Any:
        return _stringify(value)

    @field_validator("volume_window")
    @classmethod
    def _volume_window(cls, value: Any) -> float:
        seconds = parse_duration(value)
        if seconds <= 0:
            raise ValueError("volume_window must be longer than 0")
        return seconds

    @field_validator("filter", mode="before")
    @classmethod
    def _filter(cls, value: Any) -> Any:
        return _stringify(value)

    @field_validator("duration")
    @classmethod
    def _duration(cls, value: Any) -> float:
        return parse_duration(value)

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        return _check_label_names(value)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not ALERT_NAME.match(value):
            raise ValueError(f"alert name {value!r} is not valid: letters, digits, _ and :")
        return value

    @field_validator("indicator")
    @classmethod
    def _indicator(cls, value: str) -> str:
        if not ALERT_NAME.match(value):
            raise ValueError(f"indicator {value!r} is not a metric name: letters, digits, _ and :")
        return value

    @field_validator("by")
    @classmethod
    def _by(cls, value: list[str] | None) -> list[str] | None:
        for name in value or []:
            if not LABEL_NAME.match(name):
                raise ValueError(f"dimension {name!r} is not a valid label name")
        return value

    @model_validator(mode="after")
    def _compiles(self) -> ShortRuleSpec:
        if (self.min_volume is None) != (self.volume is None):
            raise ValueError("min_volume and volume go together: how many events of which counter")
        if self.volume is not None:
            _check_expr(self.volume)
        _check_expr(compile_short(self))
        return self


class WebhookReceiver(BaseModel):
    """Where notifications go: an HTTP endpoint getting Alertmanager's webhook payload (version 4)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, description="Receiver name (shown in /api/v2/receivers).")
    url: str = Field(pattern=r"^https?://", description="Webhook URL (http or https).")
    send_resolved: bool = Field(True, description="Also notify when an alert resolves.")
    matchers: list[str] = Field(
        default_factory=list, description='Only alerts matching all of these, e.g. severity="page".'
    )
    max_retries: int = Field(3, ge=0, le=10, description="Retries on connection errors and 5xx.")
    timeout: float = Field(5.0, gt=0, description="Seconds per attempt.")

    @field_validator("matchers")
    @classmethod
    def _matchers(cls, value: list[str]) -> list[str]:
        for item in value:
            parse_matchers(item)
        return value


class AlertingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    interval: float = Field(1.0, gt=0, description="Seconds between rule evaluations.")
    groups: list[RuleGroupSpec] = Field(
        default_factory=list, description="Alert rules in Prometheus rule-file format, inline."
    )
    rules: list[ShortRuleSpec] = Field(default_factory=list, description="Alert rules in the 007-style short form.")
    rule_files: list[str] = Field(
        default_factory=list,
        description="Rule files (globs, relative to devbox.yaml), either form; hot-reloaded on change.",
    )
    receivers: list[WebhookReceiver] = Field(default_factory=list, description="Webhook receivers.")
    terminal: bool = Field(True, description="Log every notification as a line on the terminal.")
    alertmanager_url: str | None = Field(
        None, pattern=r"^https?://", description="Forward alerts to a real Alertmanager (POST /api/v2/alerts)."
    )
    resolve_timeout: float = Field(
        300.0, gt=0, description="Seconds an alert posted without endsAt stays active (Alertmanager's default)."
    )
    history_days: float = Field(7.0, gt=0, description="Transitions older than this are deleted.")
