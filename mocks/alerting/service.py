"""Alerting's service layer: what the protocol adapters (devbox API, Alertmanager API, Prometheus
API) call. It owns the running state around the pure core — the store, the notifier, the rule
sources, the API-created rules and the evaluation loop — and refuses requests with
:mod:`devbox.platform.errors` exceptions, which each listener renders in its own error shape.

PromQL comes from whichever component provides :class:`devbox.platform.ports.MetricsQueryPort`
(set :attr:`AlertingService.metrics` before :meth:`start`); without one, every rule's health says
why and the backtest is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from devbox.mocks.alerting.config import AlertingConfig
from devbox.mocks.alerting.engine import AlertingCore, Sample, backtest, run_queries, still_firing
from devbox.mocks.alerting.models import Alert, AlertState, Rule, Silence, Transition
from devbox.mocks.alerting.notify import Notified, Notifier, upstream_alert
from devbox.mocks.alerting.rules import rule_from_json
from devbox.mocks.alerting.sources import RuleSources, RuleWatcher
from devbox.mocks.alerting.store import AlertStore

from devbox.platform.errors import BadRequest, Conflict, NotFound
from devbox.platform.ports import MetricsQueryPort, PortError

LOG = logging.getLogger(__name__)
#: A big batch (20k posted alerts, their transitions) is worked through in slices of about this many
#: seconds, the loop let go between them: every listener shares the loop, and /healthz must answer
#: within 100 ms while it runs.
SLICE_SECONDS = 0.005
#: Items handled between two looks at the clock.
SLICE_ITEMS = 64

#: How often firing alerts are re-sent to an upstream Alertmanager (Prometheus: resend_delay 1m).
RESEND_EVERY = 60.0
PRUNE_EVERY = 3600.0
SILENCE_RETENTION = 120 * 3600.0

#: ``url(listener)``: base URL of a bound listener, or ``None`` when it is not served.
UrlOf = Callable[[str], str | None]


class RuleNotFound(NotFound):
    code = "no such rule"


class SilenceNotFound(NotFound):
    code = "no such silence"


class NoMetrics(Exception):
    """No component provides PromQL: rules cannot be evaluated (the rule's health says this)."""


class Slices:
    """Lets the loop go whenever about :data:`SLICE_SECONDS` of work ran since it last did."""

    def __init__(self, budget: float = SLICE_SECONDS) -> None:
        self.budget = budget
        self._until = time.perf_counter() + budget

    async def pause(self) -> None:
        if time.perf_counter() >= self._until:
            await asyncio.sleep(0)
            self._until = time.perf_counter() + self.budget


class AlertingService:
    """Rules (files, devbox.yaml, API), their evaluation, silences, posted alerts and history."""

    def __init__(
        self,
        config: AlertingConfig,
        *,
        sources: RuleSources,
        db_path: Path,
        url: UrlOf,
        on_transition: Callable[[Transition], None] = lambda _: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.sources = sources
        self.db_path = db_path
        self.url = url
        self.on_transition = on_transition
        self.clock = clock
        self.core = AlertingCore(resolve_timeout=config.resolve_timeout)
        #: PromQL, from the component providing the metrics query port (set before start).
        self.metrics: MetricsQueryPort | None = None
        self.store: AlertStore | None = None
        self.notifier: Notifier | None = None
        self.started_at = clock()
        self.load_errors: list[str] = []
        self.load_warnings: list[str] = []
        self._store_warnings: list[str] = []
        self._api_rules: dict[str, tuple[Rule, dict[str, Any]]] = {}
        self._watcher = RuleWatcher(sources, self.reload_rules)
        self._task: asyncio.Task[Any] | None = None
        self._last_resend = 0.0
        self._last_prune = 0.0
        self._eval_lock = asyncio.Lock()
        self.evaluations = 0
        self.reloads = 0

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        store: AlertStore = await asyncio.to_thread(AlertStore, self.db_path)
        self.store = store
        for silence in store.silences():
            self.core.silences[silence.id] = silence
        for rule_id, body in store.rules():
            try:
                self._api_rules[rule_id] = (rule_from_json(body), body)
            except ValueError as exc:
                self._store_warnings.append(f"alerting.db: stored rule {rule_id} no longer loads: {exc}")
        self.notifier = Notifier(
            self.config.receivers,
            terminal=self.config.terminal,
            upstream=self.config.alertmanager_url,
            external_url=self.url("alertmanager") or "",
        )
        await self.notifier.start()
        await self.reload_rules()
        self._watcher.start()
        self._task = asyncio.create_task(self._run(), name="alerting:evaluate")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await self._watcher.stop()
        if self.notifier is not None:
            await self.notifier.stop()
        if self.store is not None:
            self.store.close()

    def info(self) -> dict[str, Any]:
        return {
            "rules": len(self.core.evaluators),
            "firing": len(self.core.alerts()),
            "rule_errors": len(self.load_errors),
            "silences": sum(1 for s in self.core.silences.values() if s.state(self.clock()).value != "expired"),
            "evaluations": self.evaluations,
            "rule_reloads": self.reloads,
            "notifications": dict(self.notifier.stats) if self.notifier else {},
        }

    # --- rules ------------------------------------------------------------------------------

    async def reload_rules(self) -> list[str]:
        """Re-read every rule source; returns the load errors (old rules stay for broken files)."""
        results = await asyncio.to_thread(self.sources.load)
        self.reloads += 1
        combined, errors, warnings = self.sources.combine(results)
        for rule_id, (rule, _) in self._api_rules.items():
            if rule_id in combined:
                errors.append(f"api: rule {rule_id} is shadowed by {combined[rule_id].source}")
                continue
            combined[rule_id] = rule
        if errors != self.load_errors:
            for problem in errors:
                LOG.warning("alert rules: %s", problem)
        self.load_errors, self.load_warnings = errors, self._store_warnings + warnings
        async with self._eval_lock:
            await self._handle(self.core.set_rules(list(combined.values()), self.clock()))
        return self.load_errors

    def find_rule(self, ref: str) -> Rule:
        """A rule by id (``group/name``) or by a name only one rule has."""
        if ref in self.core.evaluators:
            return self.core.evaluators[ref].rule
        named = [e.rule for e in self.core.evaluators.values() if e.rule.name == ref]
        if len(named) == 1:
            return named[0]
        if named:
            raise RuleNotFound(f"{ref!r} names {len(named)} rules; use group/name: {', '.join(r.id for r in named)}")
        raise RuleNotFound(f"no rule {ref!r}; `devbox alerts rules` lists them")

    async def put_rule(self, body: Any, *, replace: str | None = None) -> Rule:
        """Create (``replace=None``) or update an API rule; a rule from a file is read-only here."""
        assert self.store is not None
        verb, taken = ("update", "cannot update") if replace is not None else ("create", "rule exists")
        try:
            rule = rule_from_json(body)
        except ValueError as exc:
            raise BadRequest(str(exc), code="invalid rule") from None
        if replace is not None:
            current = self._api_rule(replace, verb)
            if rule.id != current.id and rule.id in self.core.evaluators:
                raise Conflict(self._exists(rule.id), code=taken)
            self._api_rules.pop(current.id, None)
            self.store.delete_rule(current.id)
        elif rule.id in self.core.evaluators:
            raise Conflict(self._exists(rule.id), code=taken)
        self.store.save_rule(rule.id, body, self.clock())
        self._api_rules[rule.id] = (rule, body)
        await self._apply_rules()
        return rule

    async def delete_rule(self, ref: str) -> Rule:
        assert self.store is not None
        rule = self._api_rule(ref, "delete")
        self._api_rules.pop(rule.id, None)
        self.store.delete_rule(rule.id)
        await self._apply_rules()
        return rule

    def _api_rule(self, ref: str, verb: str) -> Rule:
        rule = self.find_rule(ref)
        if rule.source != "api":
            raise Conflict(f"rule {rule.id} is defined in {rule.source}; edit that file", code=f"cannot {verb}")
        return rule

    def _exists(self, rule_id: str) -> str:
        return f"rule {rule_id} already exists ({self.core.evaluators[rule_id].rule.source})"

    async def _apply_rules(self) -> None:
        rules = [e.rule for e in self.core.evaluators.values() if e.rule.source != "api"]
        rules += [r for r, _ in self._api_rules.values()]
        async with self._eval_lock:
            await self._handle(self.core.set_rules(rules, self.clock()))

    def export_rules(self) -> list[Rule]:
        return self.core.rules

    # --- evaluation -------------------------------------------------------------------------

    def _query(self, expr: str, at: float) -> list[Sample]:
        if self.metrics is None:
            raise NoMetrics("the metrics component is not running: nothing to evaluate rules against")
        return self.metrics.query_instant(expr, at)

    async def evaluate_once(self, now: float | None = None) -> list[Transition]:
        """One evaluation round of every rule (the loop calls it every ``interval``)."""
        async with self._eval_lock:
            now = self.clock() if now is None else now
            rules = self.core.rules
            timings: dict[str, float] = {}
            query = functools.partial(run_queries, rules, self._query, now, timings=timings)
            results = await asyncio.to_thread(query) if rules else {}
            transitions = self.core.evaluate(results, now)
            for rule_id, seconds in timings.items():
                if rule_id in self.core.evaluators:
                    self.core.evaluators[rule_id].last_duration = seconds
            self.evaluations += 1
            await self._handle(transitions)
            if self.notifier is not None and self.notifier.upstream and now - self._last_resend >= RESEND_EVERY:
                self._last_resend = now
                self.notifier.forward([self._upstream_of(a) for a in self.core.firing()])
            if self.store is not None and now - self._last_prune >= PRUNE_EVERY:
                self._last_prune = now
                await self._prune(now)
            return transitions

    async def _prune(self, now: float) -> None:
        assert self.store is not None
        await asyncio.to_thread(self.store.prune_history, now - self.config.history_days * 86400)
        # Alertmanager keeps expired silences 120 h (--data.retention) before dropping them.
        horizon = now - SILENCE_RETENTION
        await asyncio.to_thread(self.store.delete_silences_before, horizon)
        for silence_id in [s.id for s in self.core.silences.values() if s.ends_at < horizon]:
            del self.core.silences[silence_id]

    async def _run(self) -> None:
        interval = self.config.interval
        while True:
            started = time.monotonic()
            try:
                await self.evaluate_once()
            except Exception:
                LOG.exception("alert evaluation failed")
            await asyncio.sleep(max(0.01, interval - (time.monotonic() - started)))

    def generator_url(self, rule_id: str | None) -> str:
        """Prometheus's graph link for a rule's expression (empty when no Prometheus API is served)."""
        base = self.url("prometheus")
        evaluator = self.core.evaluators.get(rule_id) if rule_id is not None else None
        if base is None or evaluator is None:
            return ""
        return f"{base}/graph?g0.expr={quote(evaluator.rule.expr)}&g0.tab=1"

    def _upstream_of(self, alert: Alert) -> dict[str, Any]:
        ends = alert.resolved_at if alert.state is AlertState.RESOLVED else None
        return upstream_alert(
            alert.labels,
            alert.annotations,
            starts_at=alert.fired_at or alert.active_at,
            ends_at=ends,
            generator_url=alert.generator_url or self.generator_url(alert.rule_id),
        )

    async def _handle(self, transitions: list[Transition]) -> None:
        """Store, announce and notify one batch of transitions (the caller holds ``_eval_lock``).
        A big batch is worked through in :class:`Slices`, so the loop keeps answering meanwhile."""
        if not transitions:
            return
        if self.store is not None:
            await asyncio.to_thread(self.store.add_transitions, transitions)
        slices = Slices()
        for i, t in enumerate(transitions, 1):
            self.on_transition(t)
            if i % SLICE_ITEMS == 0:
                await slices.pause()
        if self.notifier is None:
            return
        forwarding = bool(self.notifier.upstream)
        outgoing: list[Notified] = []
        upstream = []
        for i, t in enumerate(transitions, 1):
            if i % SLICE_ITEMS == 0:
                await slices.pause()
            if not t.notified and not forwarding:
                continue
            alert = self.core._alert_of(t)
            starts = (alert.fired_at or alert.active_at) if alert is not None else t.at
            generator = (alert.generator_url if alert is not None else "") or self.generator_url(t.rule_id)
            if t.notified:
                outgoing.append((t, starts, generator))
            if forwarding and t.to_state in (AlertState.FIRING, AlertState.RESOLVED) and t.from_state is not t.to_state:
                upstream.append(
                    upstream_alert(
                        t.labels,
                        t.annotations,
                        starts_at=starts,
                        ends_at=t.at if t.to_state is AlertState.RESOLVED else None,
                        generator_url=generator,
                    )
                )
        companions = await self._companions(outgoing, slices)
        self.notifier.notify(outgoing, companions)
        self.notifier.forward(upstream)

    async def _companions(self, outgoing: list[Notified], slices: Slices) -> dict[str, list[Notified]]:
        """The other firing, already notified, unsilenced alerts of each group being notified."""
        if not outgoing:
            return {}
        names = {t.alertname for t, _, _ in outgoing}
        changed = {t.fingerprint for t, _, _ in outgoing}
        now = self.clock()
        out: dict[str, list[Notified]] = {}
        for i, alert in enumerate(self.core.firing(), 1):
            if i % SLICE_ITEMS == 0:
                await slices.pause()
            name = alert.labels.get("alertname", "")
            if name not in names or not alert.notified or alert.fingerprint in changed:
                continue
            if self.core.silenced_by(alert.labels, now):
                continue
            generator = alert.generator_url or self.generator_url(alert.rule_id)
            out.setdefault(name, []).append((still_firing(alert, now), alert.fired_at or alert.active_at, generator))
        return out

    # --- posted alerts, silences, history, backtest -------------------------------------------

    async def post_alerts(self, alerts: list[dict[str, Any]]) -> None:
        # A big batch (Alertmanager clients send thousands) goes through the core in slices with the
        # loop let go between them: 20k alerts in one go held the loop 1.5-2 s (every listener stalled).
        async with self._eval_lock:
            now = self.clock()
            transitions: list[Transition] = []
            slices = Slices()
            for start in range(0, len(alerts), SLICE_ITEMS):
                transitions += self.core.post_alerts(alerts[start:start + SLICE_ITEMS], now)
                await slices.pause()
            await self._handle(transitions)

    def save_silence(self, silence: Silence) -> Silence:
        assert self.store is not None
        self.store.save_silence(silence)
        self.core.silences[silence.id] = silence
        return silence

    def silence(self, silence_id: str) -> Silence:
        found = self.core.silences.get(silence_id)
        if found is None:
            raise SilenceNotFound(f"no silence {silence_id!r}; `devbox alerts silence ls` lists them")
        return found

    def expire_silence(self, silence_id: str) -> Silence:
        assert self.store is not None
        self.silence(silence_id)
        silence = self.core.expire_silence(silence_id, self.clock())
        self.store.save_silence(silence)
        return silence

    async def history(self, **query: Any) -> list[dict[str, Any]]:
        """Stored transitions (``rule``, ``service``, ``since``, ``until``, ``limit``), oldest first."""
        assert self.store is not None
        return await asyncio.to_thread(self.store.history, **query)

    async def backtest(self, rule: Rule, *, start: float, end: float, step: float | None = None) -> dict[str, Any]:
        """Replay ``rule`` over stored data (``query_range`` of its expression)."""
        metrics = self.metrics
        if metrics is None:
            raise Conflict("the metrics component is not running: no stored data to replay", code="cannot backtest")
        if step is None:
            step = max(self.config.interval, (end - start) / 5000)
        try:
            series = await asyncio.to_thread(metrics.query_range, rule.expr, start, end, step)
        except PortError as exc:
            raise BadRequest(str(exc), code="query failed") from None
        return backtest(rule, series, start=start, end=end, step=step)
