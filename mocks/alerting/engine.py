"""The alerting core: rule evaluation state machines, silences, posted alerts. No sockets, no clock.

Each evaluation gets the rules' query results and ``now`` from the caller, so tests drive it with a
fake query function and a fake clock. Per rule and label set: inactive → pending → firing →
resolved, as Prometheus does (``for: 0`` goes straight to firing). Whether a transition is
notified is decided here too: firing/resolved are notified unless an active silence matches the
alert's labels, and a resolution is only notified when the firing was.

LIMITATIONS: no inhibition rules, no grouping waits (group_wait/group_interval) or repeat
intervals; alert states are not restored across a restart (Prometheus's ALERTS_FOR_STATE).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from devbox.mocks.alerting.models import (
    Alert,
    AlertState,
    Matcher,
    Rule,
    Silence,
    SilenceState,
    Transition,
    fingerprint,
)
from devbox.mocks.alerting.rules import expand_all

LOG = logging.getLogger(__name__)

Sample = tuple[dict[str, str], float]
Series = tuple[dict[str, str], list[tuple[float, float]]]
#: How long a resolved alert stays listed (Prometheus keeps them 15 minutes).
RESOLVED_RETENTION = 15 * 60.0


class RuleEvaluator:
    """The alerts of one rule across evaluations."""

    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        self.alerts: dict[str, Alert] = {}
        self.health = "unknown"
        self.last_error: str | None = None
        self.last_eval: float | None = None
        self.last_duration: float = 0.0

    def fail(self, reason: str, now: float) -> None:
        """The query failed: keep every alert as it is (Prometheus does the same) and say why."""
        self.health, self.last_error, self.last_eval = "err", reason, now

    def step(self, samples: Iterable[Sample], now: float) -> list[Transition]:
        rule = self.rule
        self.health, self.last_error, self.last_eval = "ok", None, now
        out: list[Transition] = []
        seen: set[str] = set()
        for raw, value in samples:
            metric = {k: v for k, v in raw.items() if k != "__name__"}
            labels = {**metric, **expand_all(rule.labels, metric, value), "alertname": rule.name}
            fp = fingerprint(labels)
            if fp in seen:
                self.health = "err"
                self.last_error = "two samples have the same labels after adding the rule's labels"
                continue
            seen.add(fp)
            annotations = expand_all(rule.annotations, metric, value)
            alert = self.alerts.get(fp)
            if alert is None or alert.state is AlertState.RESOLVED:
                alert = Alert(labels, annotations, AlertState.PENDING, rule.id, active_at=now, value=value, fp=fp)
                self.alerts[fp] = alert
                if rule.for_s <= 0:
                    alert.state, alert.fired_at = AlertState.FIRING, now
                out.append(self._transition(alert, AlertState.INACTIVE, now))
            alert.value, alert.annotations, alert.last_seen = value, annotations, now
        for fp, alert in list(self.alerts.items()):
            if fp in seen:
                if alert.state is AlertState.PENDING and now - alert.active_at >= rule.for_s:
                    alert.state, alert.fired_at = AlertState.FIRING, now
                    out.append(self._transition(alert, AlertState.PENDING, now))
                continue
            if alert.state is AlertState.PENDING:
                del self.alerts[fp]
                alert.state = AlertState.INACTIVE
                out.append(self._transition(alert, AlertState.PENDING, now))
            elif alert.state is AlertState.FIRING:
                if rule.keep_firing_for_s and now - alert.last_seen < rule.keep_firing_for_s:
                    continue
                alert.state, alert.resolved_at = AlertState.RESOLVED, now
                out.append(self._transition(alert, AlertState.FIRING, now))
            elif alert.state is AlertState.RESOLVED and now - (alert.resolved_at or now) > RESOLVED_RETENTION:
                del self.alerts[fp]
        return out

    def _transition(self, alert: Alert, before: AlertState, now: float) -> Transition:
        return Transition(
            rule_id=self.rule.id,
            alertname=self.rule.name,
            labels=dict(alert.labels),
            annotations=dict(alert.annotations),
            from_state=before,
            to_state=alert.state,
            at=now,
            value=alert.value,
            fingerprint=alert.fingerprint,
        )

    def to_json(self) -> dict[str, Any]:
        counts = {s.value: 0 for s in (AlertState.PENDING, AlertState.FIRING)}
        for alert in self.alerts.values():
            if alert.state.value in counts:
                counts[alert.state.value] += 1
        state = "firing" if counts["firing"] else "pending" if counts["pending"] else "inactive"
        return {
            **self.rule.to_json(),
            "state": state,
            "alerts": counts,
            "health": self.health,
            "last_error": self.last_error,
            "last_eval": self.last_eval,
        }


def _due(alert: Alert) -> float:
    """When a posted alert next needs looking at: it expires, or (resolved) it is dropped."""
    if alert.state is AlertState.RESOLVED:
        return (alert.resolved_at or 0.0) + RESOLVED_RETENTION
    return alert.ends_at if alert.ends_at is not None else math.inf


def still_firing(alert: Alert, now: float) -> Transition:
    """A firing → firing record of ``alert``: a notification for an alert that did not change."""
    return Transition(
        rule_id=alert.rule_id,
        alertname=alert.labels.get("alertname", ""),
        labels=dict(alert.labels),
        annotations=dict(alert.annotations),
        from_state=AlertState.FIRING,
        to_state=AlertState.FIRING,
        at=now,
        value=alert.value,
        fingerprint=alert.fingerprint,
        notified=True,
    )


class AlertingCore:
    """Rules' evaluators, silences and posted alerts; decides which transitions are notified."""

    def __init__(self, *, resolve_timeout: float = 300.0) -> None:
        self.evaluators: dict[str, RuleEvaluator] = {}
        self.silences: dict[str, Silence] = {}
        #: Alerts posted to /api/v2/alerts, by fingerprint.
        self.external: dict[str, Alert] = {}
        self.resolve_timeout = resolve_timeout
        # Each evaluation would otherwise walk every posted alert (20k: ~30 ms on the loop, every
        # second): the walks below run only when something can have come due.
        #: No posted alert expires, or is dropped, before this time.
        self._external_due = math.inf
        #: Whether a firing alert may still wait for the notification a silence held back.
        self._held_back = False

    # --- rules ------------------------------------------------------------------------------

    @property
    def rules(self) -> list[Rule]:
        return [e.rule for e in self.evaluators.values()]

    def set_rules(self, rules: list[Rule], now: float) -> list[Transition]:
        """Replace the rule set. A rule whose expr and for are unchanged keeps its alerts; the alerts of
        removed or changed rules resolve (pending ones go inactive)."""
        out: list[Transition] = []
        fresh: dict[str, RuleEvaluator] = {}
        for rule in rules:
            old = self.evaluators.get(rule.id)
            if old and (old.rule.expr, old.rule.for_s, old.rule.labels) == (rule.expr, rule.for_s, rule.labels):
                old.rule = rule
                fresh[rule.id] = old
            else:
                fresh[rule.id] = RuleEvaluator(rule)
        for rule_id, old in self.evaluators.items():
            if fresh.get(rule_id) is not old:
                old.rule = dataclasses.replace(old.rule, keep_firing_for_s=0.0)
                out.extend(old.step([], now))
        decided = self.decide(out, now)  # while the old evaluators still know whether they notified
        self.evaluators = fresh
        return decided

    def evaluate(self, results: dict[str, list[Sample] | Exception], now: float) -> list[Transition]:
        """One evaluation round: ``results`` maps rule id to its samples or the query's error."""
        out: list[Transition] = []
        for rule_id, evaluator in self.evaluators.items():
            result = results.get(rule_id)
            if result is None:
                continue
            if isinstance(result, Exception):
                evaluator.fail(str(result) or type(result).__name__, now)
                continue
            out.extend(evaluator.step(result, now))
        out.extend(self._expire_external(now))
        return self.decide(out, now) + self._late_notifications(now)

    # --- notification decisions -------------------------------------------------------------

    def _alert_of(self, t: Transition) -> Alert | None:
        if t.rule_id is None:
            return self.external.get(t.fingerprint)
        evaluator = self.evaluators.get(t.rule_id)
        return evaluator.alerts.get(t.fingerprint) if evaluator else None

    def decide(self, transitions: list[Transition], now: float) -> list[Transition]:
        for t in transitions:
            t.silenced_by = self.silenced_by(t.labels, now)
            alert = self._alert_of(t)
            if t.to_state is AlertState.FIRING:
                t.notified = not t.silenced_by
                if alert is not None:
                    alert.notified = t.notified
                    self._held_back = self._held_back or not t.notified
            elif t.to_state is AlertState.RESOLVED:
                was_notified = alert.notified if alert is not None else True
                t.notified = was_notified and not t.silenced_by
        return transitions

    def _late_notifications(self, now: float) -> list[Transition]:
        """Firing alerts whose notification a silence held back, once no silence mutes them."""
        if not self._held_back:
            return []
        out = []
        held = False
        for alert in self.firing():
            if alert.notified:
                continue
            if self.silenced_by(alert.labels, now):
                held = True
                continue
            alert.notified = True
            out.append(still_firing(alert, now))
        self._held_back = held
        return out

    # --- alerts -----------------------------------------------------------------------------

    def firing(self) -> list[Alert]:
        out = [a for e in self.evaluators.values() for a in e.alerts.values() if a.state is AlertState.FIRING]
        out.extend(a for a in self.external.values() if a.state is AlertState.FIRING)
        return out

    def alerts(self, *, include_pending: bool = False) -> list[Alert]:
        wanted = {AlertState.FIRING, AlertState.PENDING} if include_pending else {AlertState.FIRING}
        out = [a for e in self.evaluators.values() for a in e.alerts.values() if a.state in wanted]
        out.extend(a for a in self.external.values() if a.state in wanted)
        return out

    def post_alerts(self, posted: list[dict[str, Any]], now: float) -> list[Transition]:
        """Alerts from outside (``POST /api/v2/alerts``): already validated dicts with labels,
        annotations, starts_at, ends_at (None: now + resolve_timeout), generator_url, and optionally
        the labels' fingerprint (the adapter computes it off the loop)."""
        out: list[Transition] = []
        for item in posted:
            labels = item["labels"]
            fp = item.get("fingerprint") or fingerprint(labels)
            ends_at = item.get("ends_at") or now + self.resolve_timeout
            starts_at = item.get("starts_at") or now
            alert = self.external.get(fp)
            resolved = ends_at <= now
            if alert is None or alert.state is AlertState.RESOLVED:
                if resolved:
                    continue
                alert = Alert(
                    labels=labels,
                    annotations=item.get("annotations") or {},
                    state=AlertState.FIRING,
                    rule_id=None,
                    active_at=starts_at,
                    fired_at=starts_at,
                    generator_url=item.get("generator_url") or "",
                    fp=fp,
                )
                self.external[fp] = alert
                out.append(self._external_transition(alert, AlertState.INACTIVE, now))
            alert.annotations = item.get("annotations") or alert.annotations
            alert.ends_at, alert.last_seen = ends_at, now
            if resolved:
                alert.state, alert.resolved_at = AlertState.RESOLVED, ends_at
                out.append(self._external_transition(alert, AlertState.FIRING, now))
            self._external_due = min(self._external_due, _due(alert))
        return self.decide(out, now)

    def _expire_external(self, now: float) -> list[Transition]:
        if now < self._external_due:
            return []
        out = []
        due = math.inf
        for fp, alert in list(self.external.items()):
            if alert.state is AlertState.FIRING and alert.ends_at is not None and alert.ends_at <= now:
                alert.state, alert.resolved_at = AlertState.RESOLVED, now
                out.append(self._external_transition(alert, AlertState.FIRING, now))
            elif alert.state is AlertState.RESOLVED and now - (alert.resolved_at or now) > RESOLVED_RETENTION:
                del self.external[fp]
                continue
            due = min(due, _due(alert))
        self._external_due = due
        return out

    @staticmethod
    def _external_transition(alert: Alert, before: AlertState, now: float) -> Transition:
        return Transition(
            rule_id=None,
            alertname=alert.labels.get("alertname", ""),
            labels=dict(alert.labels),
            annotations=dict(alert.annotations),
            from_state=before,
            to_state=alert.state,
            at=now,
            value=None,
            fingerprint=alert.fingerprint,
        )

    # --- silences ---------------------------------------------------------------------------

    def silenced_by(self, labels: dict[str, str], now: float) -> list[str]:
        return [s.id for s in self.silences.values() if s.mutes(labels, now)]

    def make_silence(
        self,
        *,
        matchers: list[Matcher],
        starts_at: float,
        ends_at: float,
        created_by: str,
        comment: str,
        now: float,
        silence_id: str | None = None,
    ) -> Silence:
        """A validated silence (not stored yet): ValueError on what Alertmanager refuses too."""
        if not matchers:
            raise ValueError("a silence needs at least one matcher")
        if all(m.matches({}) for m in matchers):
            raise ValueError("at least one matcher must not match the empty string (it would mute everything)")
        if not (math.isfinite(starts_at) and math.isfinite(ends_at)):
            raise ValueError("startsAt and endsAt must be valid times")
        if ends_at < starts_at:
            raise ValueError("endsAt is before startsAt")
        if ends_at <= now:
            raise ValueError("endsAt is in the past: the silence would never be active")
        if silence_id is not None:
            old = self.silences.get(silence_id)
            if old is None:
                raise KeyError(silence_id)
            if old.state(now) is SilenceState.EXPIRED:
                silence_id = None  # Alertmanager answers an update of an expired silence with a new one
        return Silence(
            id=silence_id or str(uuid.uuid4()),
            matchers=list(matchers),
            starts_at=now if silence_id is None and starts_at < now else starts_at,
            ends_at=ends_at,
            created_by=created_by,
            comment=comment,
            updated_at=now,
        )

    def expire_silence(self, silence_id: str, now: float) -> Silence:
        silence = self.silences[silence_id]
        if silence.state(now) is SilenceState.PENDING:
            silence.starts_at = now
        if silence.state(now) is not SilenceState.EXPIRED:
            silence.ends_at = now
            silence.updated_at = now
        return silence


# --- backtest --------------------------------------------------------------------------------


def backtest(rule: Rule, series: list[Series], *, start: float, end: float, step: float) -> dict[str, Any]:
    """Replay ``rule`` over the range query of its expression: the transitions it would have made,
    and per label set the periods it would have been pending/firing. Pure: the caller queries."""
    by_time: dict[int, list[Sample]] = {}
    for labels, points in series:
        for t, v in points:
            by_time.setdefault(round(t * 1000), []).append((labels, v))
    evaluator = RuleEvaluator(dataclasses.replace(rule))
    transitions: list[Transition] = []
    open_episodes: dict[str, dict[str, Any]] = {}
    episodes: list[dict[str, Any]] = []
    steps = 0
    t = start
    while t <= end + 1e-9:
        for tr in evaluator.step(by_time.get(round(t * 1000), []), t):
            transitions.append(tr)
            if tr.from_state is AlertState.INACTIVE:
                episode = {
                    "labels": tr.labels,
                    "pending_at": tr.at,
                    "fired_at": None,
                    "resolved_at": None,
                    "max_value": tr.value,
                    "min_value": tr.value,
                }
                open_episodes[tr.fingerprint] = episode
                episodes.append(episode)
            episode = open_episodes.get(tr.fingerprint)
            if episode is None:
                continue
            if tr.to_state is AlertState.FIRING:
                episode["fired_at"] = tr.at
            elif tr.to_state in (AlertState.RESOLVED, AlertState.INACTIVE):
                episode["resolved_at"] = tr.at
                del open_episodes[tr.fingerprint]
        for fp, episode in open_episodes.items():
            alert = evaluator.alerts.get(fp)
            if alert is not None and alert.value is not None and alert.last_seen == t:
                episode["max_value"] = max(episode["max_value"], alert.value)
                episode["min_value"] = min(episode["min_value"], alert.value)
        steps += 1
        t = start + steps * step
    still = [a for a in evaluator.alerts.values() if a.state in (AlertState.PENDING, AlertState.FIRING)]
    return {
        "rule": rule.to_json(),
        "start": start,
        "end": end,
        "step": step,
        "evaluations": steps,
        "transitions": [t.to_json() for t in transitions],
        "episodes": episodes,
        "would_fire": any(e["fired_at"] is not None for e in episodes),
        "firing_at_end": [a.labels for a in still if a.state is AlertState.FIRING],
    }


def run_queries(
    rules: list[Rule],
    query: Callable[[str, float], list[Sample]],
    now: float,
    *,
    timings: dict[str, float] | None = None,
) -> dict[str, list[Sample] | Exception]:
    """Query every rule at ``now``; an exception becomes that rule's result (its health says why).
    ``timings`` (if given) receives each rule's query time in seconds."""
    results: dict[str, list[Sample] | Exception] = {}
    for rule in rules:
        started = time.perf_counter()
        try:
            results[rule.id] = list(query(rule.expr, now))
        except Exception as exc:
            results[rule.id] = exc
        if timings is not None:
            timings[rule.id] = time.perf_counter() - started
    return results
