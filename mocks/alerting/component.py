"""The alerting component: evaluates rules against the metrics component, keeps silences and
history, notifies receivers; serves the devbox alert API and an Alertmanager API v2 subset.

Rules come from devbox.yaml (``alerting.groups`` / ``alerting.rules``), rule files
(``alerting.rule_files``, hot-reloaded by a watchdog observer) and the HTTP API (stored in
alerting.db). A file whose rules do not parse keeps its previous rules active; its errors are
listed with file and line by ``GET /api/alerts/rules``.

LIMITATIONS: one Alertmanager-like receiver route (every alert to every matching receiver),
no inhibition, no clustering; only rules are hot-reloaded (receivers, interval and the upstream
URL are read at start); see :mod:`devbox.mocks.alerting.engine` and :mod:`devbox.mocks.alerting.notify`.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import functools
import glob
import logging
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from devbox.mocks.alerting.engine import AlertingCore, Sample, backtest, run_queries, still_firing
from devbox.mocks.alerting.models import Alert, AlertState, Rule, Silence, Transition
from devbox.mocks.alerting.notify import Notifier, rfc3339, upstream_alert
from devbox.mocks.alerting.rules import LoadResult, load_config_file, load_file, load_tree, rule_from_json
from devbox.mocks.alerting.store import AlertStore

from devbox.platform.component import Component

if TYPE_CHECKING:
    from fastapi import APIRouter

    from devbox.platform.component import PlatformContext

LOG = logging.getLogger(__name__)

#: How often firing alerts are re-sent to an upstream Alertmanager (Prometheus: resend_delay 1m).
RESEND_EVERY = 60.0
PRUNE_EVERY = 3600.0
SILENCE_RETENTION = 120 * 3600.0
RELOAD_DEBOUNCE = 0.2


def _prom_value(value: float | None) -> str:
    """A sample value as the Prometheus API writes it (``1.5e+00``, ``NaN``, ``+Inf``)."""
    if value is None or math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return f"{value:e}"


class RuleNotFound(KeyError):
    pass


class AlertingComponent(Component):
    name = "alerting"
    after = ("metrics",)

    def __init__(self, ctx: PlatformContext, *, clock: Callable[[], float] = time.time) -> None:
        super().__init__(ctx)
        self.config = ctx.config.alerting
        self.clock = clock
        self.core = AlertingCore(resolve_timeout=self.config.resolve_timeout)
        self.store: AlertStore | None = None
        self.notifier: Notifier | None = None
        self.started_at = clock()
        #: Last rules that loaded cleanly, per source file (kept when the file breaks).
        self._good: dict[str, list[Rule]] = {}
        self.load_errors: list[str] = []
        self.load_warnings: list[str] = []
        self._store_warnings: list[str] = []
        self._api_rules: dict[str, tuple[Rule, dict[str, Any]]] = {}
        self._task: asyncio.Task[Any] | None = None
        self._observer: Any = None
        self._reload_handle: asyncio.TimerHandle | None = None
        self._reload_task: asyncio.Task[Any] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_resend = 0.0
        self._last_prune = 0.0
        self._eval_lock = asyncio.Lock()
        self.evaluations = 0
        self.reloads = 0

    # --- platform wiring --------------------------------------------------------------------

    def http_routes(self) -> list[tuple[str, APIRouter]]:
        from devbox.mocks.alerting.alertmanager import alertmanager_router
        from devbox.mocks.alerting.api import api_router

        return [("api", api_router(self)), ("alertmanager", alertmanager_router(self))]

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.store = await asyncio.to_thread(AlertStore, self.ctx.state_dir / "alerting.db")
        for silence in self.store.silences():
            self.core.silences[silence.id] = silence
        for rule_id, body in self.store.rules():
            try:
                self._api_rules[rule_id] = (rule_from_json(body), body)
            except ValueError as exc:
                self._store_warnings.append(f"alerting.db: stored rule {rule_id} no longer loads: {exc}")
        self.notifier = Notifier(
            self.config.receivers,
            terminal=self.config.terminal,
            upstream=self.config.alertmanager_url,
            external_url=self.ctx.url("alertmanager") if "alertmanager" in self.ctx.addresses else "",
        )
        await self.notifier.start()
        await self.reload_rules()
        self._start_watching()
        self._task = asyncio.create_task(self._run(), name="alerting:evaluate")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._reload_handle is not None:
            self._reload_handle.cancel()
        if self._reload_task is not None and not self._reload_task.done():
            self._reload_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reload_task
        if self._observer is not None:
            with contextlib.suppress(Exception):
                self._observer.stop()
                await asyncio.to_thread(self._observer.join, 2)
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

    # --- rule sources -----------------------------------------------------------------------

    def _config_display(self) -> str:
        source = self.ctx.config.source
        return source.name if source else "devbox.yaml"

    def _rule_file_paths(self) -> list[Path]:
        root = self.ctx.config.root
        out: list[Path] = []
        for pattern in self.config.rule_files:
            full = pattern if Path(pattern).is_absolute() else str(root / pattern)
            matches = sorted(glob.glob(full))
            if not matches and not glob.has_magic(pattern):
                out.append(Path(full))  # reported as unreadable: the user named a file that is not there
            out.extend(Path(m) for m in matches)
        return out

    def _load_sources(self) -> list[tuple[str, LoadResult]]:
        results: list[tuple[str, LoadResult]] = []
        source = self.ctx.config.source
        if source is not None and source.exists():
            results.append((str(source), load_config_file(source, self._config_display())))
        else:
            tree = {
                "groups": [g.model_dump(by_alias=True) for g in self.config.groups],
                "rules": [r.model_dump() for r in self.config.rules],
            }
            results.append(("<config>", load_tree(tree, "devbox.yaml")))
        root = self.ctx.config.root
        for path in self._rule_file_paths():
            try:
                display = str(path.relative_to(root))
            except ValueError:
                display = str(path)
            results.append((str(path), load_file(path, display)))
        return results

    def _combine(self, results: list[tuple[str, LoadResult]]) -> list[Rule]:
        errors: list[str] = []
        warnings: list[str] = list(self._store_warnings)
        combined: dict[str, Rule] = {}
        live_keys = set()
        for key, result in results:
            live_keys.add(key)
            warnings.extend(result.warnings)
            if result.errors:
                errors.extend(result.errors)
                kept = self._good.get(key, [])
                if kept:
                    warnings.append(f"{key}: keeping its {len(kept)} previously loaded rules until it loads again")
            else:
                self._good[key] = result.rules
            for rule in self._good.get(key, []):
                if rule.id in combined:
                    errors.append(f"{rule.source}: rule {rule.id} is already defined at {combined[rule.id].source}")
                    continue
                combined[rule.id] = rule
        for key in list(self._good):
            if key not in live_keys:
                del self._good[key]
        for rule_id, (rule, _) in self._api_rules.items():
            if rule_id in combined:
                errors.append(f"api: rule {rule_id} is shadowed by {combined[rule_id].source}")
                continue
            combined[rule_id] = rule
        if errors != self.load_errors:
            for problem in errors:
                LOG.warning("alert rules: %s", problem)
        self.load_errors, self.load_warnings = errors, warnings
        return list(combined.values())

    async def reload_rules(self) -> list[str]:
        """Re-read every rule source; returns the load errors (old rules stay for broken files)."""
        results = await asyncio.to_thread(self._load_sources)
        self.reloads += 1
        rules = self._combine(results)
        async with self._eval_lock:
            transitions = self.core.set_rules(rules, self.clock())
            await self._handle(transitions)
        return self.load_errors

    def _start_watching(self) -> None:
        dirs = set()
        if self.ctx.config.source is not None:
            dirs.add(self.ctx.config.source.parent)
        root = self.ctx.config.root
        for pattern in self.config.rule_files:
            full = Path(pattern) if Path(pattern).is_absolute() else root / pattern
            parent = full.parent
            while glob.has_magic(str(parent)):
                parent = parent.parent
            dirs.add(parent)
        dirs = {d for d in dirs if d.is_dir()}
        if not dirs:
            return
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        component = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: Any) -> None:
                if event.is_directory or event.event_type in ("opened", "closed_no_write"):
                    return
                paths = [event.src_path, getattr(event, "dest_path", "")]
                if any(p and component._is_rule_source(os.fsdecode(p)) for p in paths):
                    component._schedule_reload()

        observer = Observer()
        recursive_dirs = {d for d in dirs if any("**" in p for p in self.config.rule_files)}
        for d in dirs:
            observer.schedule(Handler(), str(d), recursive=d in recursive_dirs)
        observer.daemon = True
        observer.start()
        self._observer = observer

    def _is_rule_source(self, path: str) -> bool:
        """Whether a changed file is devbox.yaml or matches a rule_files pattern (other files in the
        same folders, such as logs, must not trigger reloads)."""
        changed = str(Path(path).resolve())
        source = self.ctx.config.source
        if source is not None and changed == str(source.resolve()):
            return True
        root = self.ctx.config.root.resolve()
        for pattern in self.config.rule_files:
            full = Path(pattern) if Path(pattern).is_absolute() else root / pattern
            if fnmatch.fnmatch(changed, str(full)):
                return True
        return False

    async def _reload_logged(self) -> None:
        try:
            await self.reload_rules()
        except Exception:
            LOG.exception("reloading alert rules failed")

    def _schedule_reload(self) -> None:
        """From the watchdog thread: reload once, shortly after the last change (editors write twice)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return

        def arm() -> None:
            if self._reload_handle is not None:
                self._reload_handle.cancel()
            self._reload_handle = loop.call_later(RELOAD_DEBOUNCE, start)

        def start() -> None:
            self._reload_task = loop.create_task(self._reload_logged(), name="alerting:reload")

        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(arm)

    # --- API rules --------------------------------------------------------------------------

    def find_rule(self, ref: str) -> Rule:
        if ref in self.core.evaluators:
            return self.core.evaluators[ref].rule
        named = [e.rule for e in self.core.evaluators.values() if e.rule.name == ref]
        if len(named) == 1:
            return named[0]
        if named:
            raise RuleNotFound(f"{ref!r} names {len(named)} rules; use group/name: {', '.join(r.id for r in named)}")
        raise RuleNotFound(f"no rule {ref!r}; `devbox alerts rules` lists them")

    async def put_rule(self, body: dict[str, Any], *, replace: str | None = None) -> Rule:
        """Create (``replace=None``) or update an API rule. ValueError: invalid; KeyError: not found;
        PermissionError: the rule lives in a file; FileExistsError: the id is taken."""
        assert self.store is not None
        rule = rule_from_json(body)
        if replace is not None:
            current = self.find_rule(replace)
            if current.source != "api":
                raise PermissionError(f"rule {current.id} is defined in {current.source}; edit that file")
            if rule.id != current.id and rule.id in self.core.evaluators:
                raise FileExistsError(f"rule {rule.id} already exists ({self.core.evaluators[rule.id].rule.source})")
            self._api_rules.pop(current.id, None)
            self.store.delete_rule(current.id)
        elif rule.id in self.core.evaluators:
            raise FileExistsError(f"rule {rule.id} already exists ({self.core.evaluators[rule.id].rule.source})")
        self.store.save_rule(rule.id, body, self.clock())
        self._api_rules[rule.id] = (rule, body)
        await self._apply_rules()
        return rule

    async def delete_rule(self, ref: str) -> Rule:
        assert self.store is not None
        rule = self.find_rule(ref)
        if rule.source != "api":
            raise PermissionError(f"rule {rule.id} is defined in {rule.source}; edit that file")
        self._api_rules.pop(rule.id, None)
        self.store.delete_rule(rule.id)
        await self._apply_rules()
        return rule

    async def _apply_rules(self) -> None:
        rules = [e.rule for e in self.core.evaluators.values() if e.rule.source != "api"]
        rules += [r for r, _ in self._api_rules.values()]
        async with self._eval_lock:
            await self._handle(self.core.set_rules(rules, self.clock()))

    # --- evaluation -------------------------------------------------------------------------

    def _query(self, expr: str, at: float) -> list[Sample]:
        if not self.ctx.has("metrics"):
            raise RuntimeError("the metrics component is not running: nothing to evaluate rules against")
        return self.ctx.component("metrics").query_instant(expr, at)  # type: ignore[attr-defined]

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
                await asyncio.to_thread(self.store.prune_history, now - self.config.history_days * 86400)
                # Alertmanager keeps expired silences 120 h (--data.retention) before dropping them.
                horizon = now - SILENCE_RETENTION
                await asyncio.to_thread(self.store.delete_silences_before, horizon)
                for silence_id in [s.id for s in self.core.silences.values() if s.ends_at < horizon]:
                    del self.core.silences[silence_id]
            return transitions

    async def _run(self) -> None:
        interval = self.config.interval
        while True:
            started = time.monotonic()
            try:
                await self.evaluate_once()
            except Exception:
                LOG.exception("alert evaluation failed")
            await asyncio.sleep(max(0.01, interval - (time.monotonic() - started)))

    def _generator_url(self, rule_id: str | None) -> str:
        if rule_id is None or "prometheus" not in self.ctx.addresses:
            return ""
        evaluator = self.core.evaluators.get(rule_id)
        if evaluator is None:
            return ""
        return f"{self.ctx.url('prometheus')}/graph?g0.expr={quote(evaluator.rule.expr)}&g0.tab=1"

    def _upstream_of(self, alert: Alert) -> dict[str, Any]:
        ends = alert.resolved_at if alert.state is AlertState.RESOLVED else None
        return upstream_alert(
            alert.labels,
            alert.annotations,
            starts_at=alert.fired_at or alert.active_at,
            ends_at=ends,
            generator_url=alert.generator_url or self._generator_url(alert.rule_id),
        )

    async def _handle(self, transitions: list[Transition]) -> None:
        """Store, announce and notify one batch of transitions."""
        if not transitions:
            return
        if self.store is not None:
            await asyncio.to_thread(self.store.add_transitions, transitions)
        for t in transitions:
            self.ctx.events.alert_transition.fire(transition=t)
        if self.notifier is None:
            return
        outgoing = []
        upstream = []
        for t in transitions:
            alert = self.core._alert_of(t)
            starts = (alert.fired_at or alert.active_at) if alert is not None else t.at
            generator = (alert.generator_url if alert is not None else "") or self._generator_url(t.rule_id)
            if t.notified:
                outgoing.append((t, starts, generator))
            if t.to_state in (AlertState.FIRING, AlertState.RESOLVED) and t.from_state is not t.to_state:
                upstream.append(
                    upstream_alert(
                        t.labels,
                        t.annotations,
                        starts_at=starts,
                        ends_at=t.at if t.to_state is AlertState.RESOLVED else None,
                        generator_url=generator,
                    )
                )
        self.notifier.notify(outgoing, self._companions(outgoing))
        self.notifier.forward(upstream)

    # --- Prometheus-shaped views (served by metrics on /api/v1/rules and /api/v1/alerts) -------

    @staticmethod
    def _prom_alert(alert: Alert) -> dict[str, Any]:
        return {
            "labels": alert.labels,
            "annotations": alert.annotations,
            "state": alert.state.value,
            "activeAt": rfc3339(alert.active_at),
            "value": _prom_value(alert.value),
        }

    def prometheus_alerts(self) -> dict[str, Any]:
        """``data`` of Prometheus's ``GET /api/v1/alerts``: pending and firing alerts of the rules."""
        alerts = [a for a in self.core.alerts(include_pending=True) if a.rule_id is not None]
        return {"alerts": [self._prom_alert(a) for a in alerts]}

    def prometheus_rules(self, params: dict[str, str] | None = None) -> dict[str, Any]:
        """``data`` of Prometheus's ``GET /api/v1/rules`` (``type=alert|record``, ``rule_name[]``,
        ``rule_group[]``, ``file[]`` filters, one value each)."""
        params = params or {}
        if params.get("type") == "record":
            return {"groups": []}
        names = params.get("rule_name[]") or params.get("rule_name")
        wanted_group = params.get("rule_group[]") or params.get("rule_group")
        wanted_file = params.get("file[]") or params.get("file")
        groups: dict[str, dict[str, Any]] = {}
        for evaluator in self.core.evaluators.values():
            rule = evaluator.rule
            file = rule.source.rsplit(":", 1)[0] if ":" in rule.source else rule.source
            if (names and rule.name != names) or (wanted_group and rule.group != wanted_group):
                continue
            if wanted_file and file != wanted_file:
                continue
            group = groups.setdefault(
                rule.group,
                {
                    "name": rule.group,
                    "file": file,
                    "rules": [],
                    "interval": self.config.interval,
                    "limit": 0,
                    "evaluationTime": 0,
                    "lastEvaluation": rfc3339(evaluator.last_eval),
                },
            )
            alerts = [a for a in evaluator.alerts.values() if a.state in (AlertState.PENDING, AlertState.FIRING)]
            group["rules"].append(
                {
                    "state": evaluator.to_json()["state"],
                    "name": rule.name,
                    "query": rule.expr,
                    "duration": rule.for_s,
                    "keepFiringFor": rule.keep_firing_for_s,
                    "labels": rule.labels,
                    "annotations": rule.annotations,
                    "alerts": [self._prom_alert(a) for a in alerts],
                    "health": evaluator.health,
                    "lastError": evaluator.last_error or "",
                    "evaluationTime": evaluator.last_duration,
                    "lastEvaluation": rfc3339(evaluator.last_eval),
                    "type": "alerting",
                }
            )
        return {"groups": list(groups.values())}

    def _companions(
        self, outgoing: list[tuple[Transition, float, str]]
    ) -> dict[str, list[tuple[Transition, float, str]]]:
        """The other firing, already notified, unsilenced alerts of each group being notified."""
        names = {t.alertname for t, _, _ in outgoing}
        changed = {t.fingerprint for t, _, _ in outgoing}
        now = self.clock()
        out: dict[str, list[tuple[Transition, float, str]]] = {}
        for alert in self.core.firing():
            name = alert.labels.get("alertname", "")
            if name not in names or alert.fingerprint in changed or not alert.notified:
                continue
            if self.core.silenced_by(alert.labels, now):
                continue
            generator = alert.generator_url or self._generator_url(alert.rule_id)
            out.setdefault(name, []).append((still_firing(alert, now), alert.fired_at or alert.active_at, generator))
        return out

    # --- posted alerts, silences, backtest ---------------------------------------------------

    async def post_alerts(self, alerts: list[dict[str, Any]]) -> None:
        async with self._eval_lock:
            await self._handle(self.core.post_alerts(alerts, self.clock()))

    def save_silence(self, silence: Silence) -> Silence:
        assert self.store is not None
        self.store.save_silence(silence)
        self.core.silences[silence.id] = silence
        return silence

    def expire_silence(self, silence_id: str) -> Silence:
        assert self.store is not None
        silence = self.core.expire_silence(silence_id, self.clock())
        self.store.save_silence(silence)
        return silence

    async def backtest(self, rule: Rule, *, start: float, end: float, step: float | None = None) -> dict[str, Any]:
        """Replay ``rule`` over stored data (``query_range`` of its expression)."""
        if not self.ctx.has("metrics"):
            raise RuntimeError("the metrics component is not running: no stored data to replay")
        if step is None:
            step = max(self.config.interval, (end - start) / 5000)
        metrics = self.ctx.component("metrics")
        series = await asyncio.to_thread(metrics.query_range, rule.expr, start, end, step)  # type: ignore[attr-defined]
        return backtest(rule, series, start=start, end=end, step=step)
