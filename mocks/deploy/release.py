"""Gray release in batches (STKE-style): new-version instances beside the old, traffic shifted by weight,
a gate checked over each pause, automatic rollback, the old version retired on success.

``POST /api/deploy/releases`` starts one (``{"service", "version", "batches": [10, 50, 100], "pause",
"gates", "in_place", "env", "tags"}``); ``GET /api/deploy/releases`` is the current one and the history;
``POST /api/deploy/releases/current/pause|resume|rollback``. One release at a time per project.

How traffic shifts: **instance weights in naming**. Every caller already balances by weight (the
SDKs' weighted random, the entry ports), so a batch is one registry write per instance that every
caller sees at its next refresh, with no caller-side rule to learn and whatever the request carries.
A routing rule by version would need callers that evaluate rules and would route by request
metadata (a cohort), not by share of traffic.

Gates (``--gate``), checked every second over each pause (and before the old version is retired):

- ``NAME`` or ``alert:NAME``: the alert rule NAME is firing (alerting's :class:`AlertsView`);
- ``success_rate<99.5``: the new version's server-side success rate over the batch so far, from the
  span-derived ``rpc_server_requests_total{version=...}`` (health probes left out), is below 99.5 %;
- ``p99>1.2x``: the new version's p99 latency over the batch is above 1.2 x the old version's.

Indicator gates need :data:`MIN_CALLS` calls of the new version before they judge. A batch whose
pause ends with an indicator gate still unjudged (no traffic reached the new version), and at least
:data:`DATA_DELAY_S` after it began (the counters lag the calls), is *held*, not promoted: the
release pauses itself and says so; ``resume`` watches the batch again, ``rollback`` reverts (a gate
that could not look must not let a broken version through). The old version's p99 is taken over the
whole release, so the last batch (no traffic left on the old) still has one. The state is written to
``releases.json`` in the state dir at every step: a platform that died mid-release comes back with
the release ``interrupted`` (the new instances died with it), which ``rollback`` closes.

LIMITATIONS: one release at a time; ``in_place`` replaces instances one by one (no surge), so a
rollback of it starts old-version instances again; the old version's instances run the code on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from devbox.mocks.deploy.deployment import Deployment, Instance
from devbox.mocks.deploy.errors import DeployError, NotDeployed, NotPossibleNow
from devbox.mocks.deploy.models import DeployEvent, EventKind, InstanceState
from devbox.mocks.deploy.supervisor import Supervisor
from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, field_validator

from devbox.platform.errors import BadRequest, NotFound
from devbox.platform.ports import AlertsView, MetricsQueryPort, PortError

LOG = logging.getLogger(__name__)

GROUP = "release"
#: Calls of the new version an indicator gate needs before it judges.
MIN_CALLS = 10
#: Seconds a batch is watched, whatever its pause, before a gate that saw too few calls holds it: the
#: span-derived counters lag the calls — a ``trace: auto`` service's proxy spans wait 3 s after its
#: first request (faults.AUTO_HOLD: does it send spans of its own?), then indexing and deriving take
#: ~1 s. A 2 s pause with traffic flowing held a release whose calls had not reached the counters yet.
DATA_DELAY_S = 5.0
PROBES = "GET /healthz|grpc.health.v1.Health/Check"
TRAFFIC = {
    "method": "instance weights",
    "why": "every caller (the naming SDKs' weighted balancer, devbox's entry ports) already picks by weight, so "
           "a batch is one registry write that all callers follow at their next refresh, whatever a request "
           "carries; a routing rule by version would need rule-aware callers and routes cohorts, not a share",
}
ACTIVE = ("running", "paused", "rolling_back")


class ReleaseRequest(BaseModel):
    """What ``POST /api/deploy/releases`` takes."""

    model_config = ConfigDict(extra="forbid")

    service: str
    version: str = Field("v2", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
    batches: list[int] = Field(default_factory=lambda: [10, 50, 100], min_length=1, max_length=20)
    pause: float = Field(30.0, ge=0, le=3600, description="Seconds the gate is watched after each batch.")
    gates: list[str] = Field(default_factory=list)
    in_place: bool = False
    env: dict[str, str] = Field(default_factory=dict)
    tags: dict[str, str] = Field(default_factory=dict)

    @field_validator("batches")
    @classmethod
    def _batches(cls, value: list[int]) -> list[int]:
        if any(not 0 < b <= 100 for b in value) or value != sorted(set(value)) or value[-1] != 100:
            raise ValueError(f"batches must be rising percentages in (0, 100] ending at 100, not {value}")
        return value


@dataclass(frozen=True)
class Gate:
    """One parsed ``--gate``: an alert rule, or a threshold on the new version's calls."""

    text: str
    kind: str  # alert | success_rate | p99
    name: str = ""
    threshold: float = 0.0


GATE_FORMS = "an alert rule name (or alert:NAME), success_rate<PERCENT, p99>FACTORx"


def parse_gate(text: str) -> Gate:
    raw = text.strip()
    if m := re.fullmatch(r"success_rate\s*<\s*([0-9.]+)\s*%?", raw):
        return Gate(raw, "success_rate", threshold=float(m.group(1)))
    if m := re.fullmatch(r"p99\s*>\s*([0-9.]+)\s*[x\u00d7]", raw):
        return Gate(raw, "p99", threshold=float(m.group(1)))
    if m := re.fullmatch(r"(?:alert:)?([A-Za-z_:][A-Za-z0-9_:]*)", raw):
        return Gate(raw, "alert", name=m.group(1))
    raise BadRequest(f"gate {text!r} is not understood; a gate is {GATE_FORMS}", code="invalid gate")


@dataclass
class Release:
    """A release's persisted state: what was asked, where it is, what happened."""

    id: str
    service: str
    version: str
    batches: list[int]
    pause: float
    gates: list[str]
    in_place: bool
    env: dict[str, str]
    tags: dict[str, str]
    state: str = "running"  # running | paused | rolling_back | succeeded | rolled_back | failed | interrupted
    batch: int = -1  # index into batches of the current batch
    percent: int = 0
    started: float = field(default_factory=time.time)
    finished: float | None = None
    reason: str = ""
    gate_failed: dict[str, Any] | None = None
    last_gate: list[dict[str, Any]] = field(default_factory=list)
    switch_seconds: list[float] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    new_instances: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["traffic"] = TRAFFIC
        out["explain"] = self.explain()
        return out

    def explain(self) -> str:
        where = f"batch {self.batch + 1}/{len(self.batches)} ({self.percent}% to {self.version})" if self.batch >= 0 \
            else "starting the new instances"
        if self.state == "running":
            return f"releasing {self.service} {self.version}: {where}, gates watched over {self.pause:g}s"
        if self.state == "paused":
            return f"paused at {where}; `devbox release resume` goes on, `devbox release rollback` reverts"
        if self.state == "interrupted":
            return (f"the platform stopped during {where}: the new instances died with it and the old version serves "
                    "all traffic again; `devbox release rollback` closes this release")
        return f"{self.state}: {self.reason}" if self.reason else self.state


class ReleaseManager:
    """Runs at most one release at a time over the supervisor's deployments; persists every step."""

    def __init__(self, *, sup: Supervisor, emit: Callable[[DeployEvent], None], path: Path,
                 metrics: Callable[[], MetricsQueryPort | None], alerts: Callable[[], AlertsView | None]) -> None:
        self.sup = sup
        self.emit = emit
        self.path = path
        self.metrics = metrics
        self.alerts = alerts
        self.current: Release | None = None
        self.history: list[Release] = []
        self._task: asyncio.Task[None] | None = None
        self._resume = asyncio.Event()
        self._resume.set()
        self._rollback_asked = False
        self._started = time.monotonic()  # the running release's start (the old version's p99 window)
        self._load()

    # --- persistence ----------------------------------------------------------------------

    def _load(self) -> None:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return
        known = set(Release.__dataclass_fields__)
        self.history = [Release(**{k: v for k, v in r.items() if k in known}) for r in data.get("history", [])]
        cur = data.get("current")
        if cur:
            self.current = Release(**{k: v for k, v in cur.items() if k in known})
            if self.current.state in ACTIVE:
                self.current.state = "interrupted"
                self._save()

    def _save(self) -> None:
        data = {"current": asdict(self.current) if self.current else None,
                "history": [asdict(r) for r in self.history[-50:]]}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(self.path)

    def _step(self, kind: EventKind, message: str, **data: Any) -> None:
        rel = self.current
        assert rel is not None
        rel.steps.append({"ts": time.time(), "kind": kind.value, "message": message})
        self._save()
        self.emit(DeployEvent(service=rel.service, kind=kind, message=message,
                              data={"release": rel.id, "version": rel.version, **data}))

    # --- operations -------------------------------------------------------------------------

    def start(self, req: ReleaseRequest) -> dict[str, Any]:
        if self.current is not None and self.current.state in (*ACTIVE, "interrupted"):
            cur = self.current
            raise NotPossibleNow(f"release {cur.id} of {cur.service} {cur.version} is {cur.state}; "
                                 "wait for it, or `devbox release rollback` it first")
        gates = [parse_gate(g) for g in req.gates]
        self._check_alert_rules(gates)
        dep = self.sup.deployments.get(req.service)
        if dep is None:
            raise NotDeployed(f"service {req.service!r} is not up (no deployment of it)")
        if not self._live(dep):  # declared in devbox.yaml, but scaled to 0, stopped or not ready yet
            states = sorted({i.record.state.value for i in dep.instances.values()}) or ["scaled to 0"]
            raise NotPossibleNow(f"service {req.service} is not up ({', '.join(states)}): a release needs a ready "
                                 f"instance to release next to; start it (replicas in devbox.yaml, or POST "
                                 f"/api/deploy/services/{req.service}/scale) and release again")
        rel = Release(id=f"{req.service}-{req.version}-{int(time.time())}", service=req.service, version=req.version,
                      batches=req.batches, pause=req.pause, gates=req.gates, in_place=req.in_place,
                      env=dict(req.env), tags=dict(req.tags))
        self.current = rel
        self._rollback_asked = False
        self._resume.set()
        mode = "in place" if req.in_place else "canary"
        self._step(EventKind.RELEASE, f"release of {rel.service} {rel.version} started ({mode}, batches "
                   f"{','.join(map(str, rel.batches))}, pause {rel.pause:g}s, gates {', '.join(rel.gates) or 'none'})")
        self._task = asyncio.create_task(self._run(dep, gates), name=f"release:{rel.id}")
        return rel.to_json()

    def _check_alert_rules(self, gates: list[Gate]) -> None:
        wanted = [g for g in gates if g.kind == "alert"]
        if not wanted:
            return
        alerts = self.alerts()
        if alerts is None:
            raise BadRequest("alert gates need alerting, which this platform does not host", code="invalid gate")
        names = {r.get("name") for g in alerts.prometheus_rules().get("groups", []) for r in g.get("rules", [])}
        for gate in wanted:
            if gate.name not in names:
                raise BadRequest(f"gate {gate.text!r}: no alert rule named {gate.name!r} (known: "
                                 f"{', '.join(sorted(n for n in names if n)) or 'none'}); a gate is {GATE_FORMS}",
                                 code="invalid gate")

    def status(self) -> dict[str, Any]:
        if self.current is None:
            raise NotFound("no release yet", code="no release")
        return self.current.to_json()

    def pause(self) -> dict[str, Any]:
        rel = self._active()
        if rel.state == "running":
            rel.state = "paused"
            self._resume.clear()
            self._step(EventKind.RELEASE_PAUSED, f"paused at {rel.percent}%")
        return rel.to_json()

    def resume(self) -> dict[str, Any]:
        rel = self._active()
        if rel.state == "paused":
            rel.state = "running"
            self._resume.set()
            self._step(EventKind.RELEASE_RESUMED, f"resumed at {rel.percent}%")
        return rel.to_json()

    async def rollback(self) -> dict[str, Any]:
        rel = self.current
        if rel is None or rel.state not in (*ACTIVE, "interrupted"):
            raise NotPossibleNow("no release to roll back" + (f" ({rel.id} is {rel.state})" if rel else ""))
        if rel.state == "interrupted":
            await self._revert(rel, "rolled back by request after the platform stopped mid-release")
            return rel.to_json()
        self._rollback_asked = True
        self._resume.set()
        if self._task is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._task)
        return rel.to_json()

    async def close(self) -> None:
        """The platform stops: the release task ends; its persisted state says ``interrupted`` next time."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self.current is not None and self.current.state in ACTIVE:
            self.current.state = "interrupted"
            self._save()

    def _active(self) -> Release:
        if self.current is None or self.current.state not in ACTIVE:
            raise NotPossibleNow("no release is running")
        return self.current

    # --- the run --------------------------------------------------------------------------------

    @staticmethod
    def _live(dep: Deployment) -> list[Instance]:
        return [i for i in dep.instances.values() if i.record.state in (InstanceState.READY, InstanceState.UNHEALTHY)]

    async def _run(self, old: Deployment, gates: list[Gate]) -> None:
        rel = self.current
        assert rel is not None
        old_live = self._live(old)
        count = len(old_live)
        svc = old.svc.model_copy(update={"replicas": 0 if rel.in_place else count})
        tags = {**old.extra_tags, **rel.tags, "version": rel.version}
        env = {**old.extra_env, **rel.env}
        try:
            self._started = time.monotonic()
            new = await self.sup.deploy(svc, group=GROUP, tags=tags, env=env, weight=0)
            rel.new_instances = list(new.instances)
            for n, percent in enumerate(rel.batches):
                rel.batch, rel.percent = n, percent
                started = time.monotonic()
                await self._shift(rel, old, new, old_live, percent)
                took = round(time.monotonic() - started, 3)
                rel.switch_seconds.append(took)
                self._step(EventKind.RELEASE_BATCH, f"batch {n + 1}/{len(rel.batches)}: {percent}% of {rel.service} "
                           f"traffic to {rel.version} (switched in {took:.3f}s)", percent=percent, seconds=took)
                failed = await self._watch(rel, gates, time.monotonic())
                if failed is not None or self._rollback_asked:
                    why = failed["message"] if failed else "rollback requested"
                    if failed:
                        rel.gate_failed = failed
                        self._step(EventKind.RELEASE_GATE, f"gate {failed['gate']} failed: {failed['message']}",
                                   gate=failed)
                    await self._revert(rel, f"release of {rel.service} {rel.version} rolled back because {why}",
                                       old=old, new=new, old_live=old_live)
                    return
            await self._retire(rel, old, new)
        except DeployError as exc:
            await self._revert(rel, f"release of {rel.service} {rel.version} failed to start: {exc}", old=old,
                               new=self.sup.deployments.get(f"{rel.service}@{GROUP}"), old_live=old_live,
                               kind=EventKind.RELEASE_FAILED, state="failed")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            LOG.exception("release %s crashed", rel.id)
            await self._revert(rel, f"release of {rel.service} {rel.version} stopped by an internal error: {exc!r}",
                               old=old, new=self.sup.deployments.get(f"{rel.service}@{GROUP}"), old_live=old_live,
                               kind=EventKind.RELEASE_FAILED, state="failed")

    async def _shift(self, rel: Release, old: Deployment, new: Deployment, old_live: list[Instance],
                     percent: int) -> None:
        if rel.in_place:  # replace instance by instance: no extra capacity, weights stay equal
            want = math.ceil(len(old_live) * percent / 100)
            while len(self._live(new)) < want:
                victim = next(i for i in old_live if i.record.state is not InstanceState.STOPPED)
                await self.sup.stop_instance(old, victim, drain=old.svc.drain, forget=True)
                inst = await self.sup.start_instance(new)
                self.sup.naming.set_weight(new, inst, 100)
                rel.new_instances.append(inst.record.name)
            return
        new_live, old_now = self._live(new), self._live(old)
        new_weight = min(10000, max(1, round(percent * 100 / max(1, len(new_live)))))
        old_weight = round((100 - percent) * 100 / max(1, len(old_now)))
        for inst in new_live:
            self.sup.naming.set_weight(new, inst, new_weight)
        for inst in old_now:
            self.sup.naming.set_weight(old, inst, old_weight)

    async def _watch(self, rel: Release, gates: list[Gate], since: float) -> dict[str, Any] | None:
        """Check every gate each second for ``pause`` seconds (a paused release waits); the first failure.
        A pause that ends with a gate unable to judge is watched on to :data:`DATA_DELAY_S`, then holds
        the batch (see the module's docstring)."""
        watched = 0.0
        while True:
            if not self._resume.is_set():
                await self._resume.wait()
                watched = 0.0  # resumed after a hold (or a pause): the batch is watched for a full pause again
            if self._rollback_asked:
                return None
            now = time.monotonic()
            window, whole = max(5.0, now - since), max(5.0, now - self._started)
            results = [await self._check(rel, gate, window, whole) for gate in gates]
            rel.last_gate = results
            failed = next((r for r in results if r["ok"] is False), None)
            if failed is not None:
                return failed
            if watched >= rel.pause:
                unjudged = [r for r in results if r.get("inconclusive")]
                if not unjudged:
                    return None
                if watched >= DATA_DELAY_S:
                    self._hold(rel, unjudged)
                    continue
                step = min(1.0, DATA_DELAY_S - watched)  # the calls may not have reached the counters yet
            else:
                step = min(1.0, rel.pause - watched)
            await asyncio.sleep(step)
            watched += step

    def _hold(self, rel: Release, unjudged: list[dict[str, Any]]) -> None:
        """Pause the release at this batch: its gates could not look at the new version."""
        rel.state = "paused"
        self._resume.clear()
        why = "; ".join(f"gate {r['gate']} not judged: {r['message']}" for r in unjudged)
        self._step(EventKind.RELEASE_PAUSED, f"held at {rel.percent}%: {why}. Send traffic to {rel.service}, then "
                   "`devbox release resume` to watch this batch again, or `devbox release rollback`",
                   held=True, gates=unjudged)

    async def _check(self, rel: Release, gate: Gate, window: float, whole: float | None = None) -> dict[str, Any]:
        result: dict[str, Any] = {"gate": gate.text, "kind": gate.kind, "ok": True}
        if gate.kind == "alert":
            alerts = self.alerts()
            firing = [a for a in (alerts.prometheus_alerts().get("alerts", []) if alerts else [])
                      if a.get("labels", {}).get("alertname") == gate.name and a.get("state") == "firing"]
            if firing:
                labels = ", ".join(",".join(f"{k}={v}" for k, v in a["labels"].items() if k != "alertname")
                                   for a in firing)
                result.update(ok=False, firing=len(firing),
                              message=f"alert {gate.name} is firing ({labels or 'no labels'}; value "
                                      f"{firing[0].get('value')})")
            return result
        metrics = self.metrics()
        if metrics is None:
            return {**result, "ok": None, "message": "metrics are not hosted: gate not checked"}
        w = f"{max(1, round(window))}s"
        sel = f'callee="{rel.service}",method!~"{PROBES}"'
        new_sel, old_sel = f'{sel},version="{rel.version}"', f'{sel},version!="{rel.version}"'
        # every query of one check at one instant: increase() extrapolates to the window's edges, so the
        # same counter read a moment apart gives another value (a healthy v2 read 94 % this way)
        at = time.time()
        calls = await self._value(metrics, f"sum(increase(rpc_server_requests_total{{{new_sel}}}[{w}]))", at)
        result["calls"] = round(calls or 0)
        if not calls or calls < MIN_CALLS:
            return {**result, "ok": None, "inconclusive": True,
                    "message": f"{round(calls or 0)} calls of {rel.version} so far (a judgement needs {MIN_CALLS})"}
        if gate.kind == "success_rate":
            # one expression, so numerator and denominator are one evaluation over the same samples
            share = await self._value(
                metrics, f'(sum(increase(rpc_server_requests_total{{{new_sel},status="ok"}}[{w}])) or vector(0))'
                         f' / sum(increase(rpc_server_requests_total{{{new_sel}}}[{w}]))', at)
            rate = 100.0 * min(1.0, share if share is not None else 0.0)
            result["success_rate"] = round(rate, 2)
            result["message"] = (f"{rel.version} answered {rate:.1f}% of {round(calls)} calls without error over "
                                 f"{w} (gate: at least {gate.threshold:g}%)")
            result["ok"] = rate >= gate.threshold
            return result
        quantile = "histogram_quantile(0.99, sum by (le) (increase(rpc_server_duration_seconds_bucket{%s}[%s])))"
        new_p99 = await self._value(metrics, quantile % (new_sel, w), at)
        old_p99 = await self._value(metrics, quantile % (old_sel, f"{max(1, round(whole or window))}s"), at)
        result.update(p99_seconds=new_p99, old_p99_seconds=old_p99)
        if new_p99 is None or not old_p99:
            return {**result, "ok": None, "inconclusive": True,
                    "message": "no p99 of the old version to compare with (no calls of it since the release began)"}
        ratio = new_p99 / old_p99
        result["message"] = (f"p99 of {rel.version} is {new_p99 * 1000:.0f} ms, {ratio:.2f}x the old version's "
                             f"{old_p99 * 1000:.0f} ms (gate: at most {gate.threshold:g}x)")
        result["ok"] = ratio <= gate.threshold
        return result

    @staticmethod
    async def _value(metrics: MetricsQueryPort, expr: str, at: float) -> float | None:
        try:  # a query may take a while: never on the platform's loop
            found = await asyncio.to_thread(metrics.query_instant, expr, at)
        except PortError as exc:
            LOG.warning("release gate query %s failed: %s", expr, exc)
            return None
        values = [v for _, v in found if math.isfinite(v)]
        return values[0] if values else None

    async def _retire(self, rel: Release, old: Deployment, new: Deployment) -> None:
        """Success: stop what is left of the old version; the new instances become the service's own."""
        async with old.lock:
            for inst in [i for i in old.instances.values() if i.record.state is not InstanceState.STOPPED]:
                await self.sup.stop_instance(old, inst, drain=old.svc.drain, forget=True)
            old.instances.clear()
            for name, inst in new.instances.items():
                inst.record.group = old.group
                old.instances[name] = inst
            old.extra_tags, old.extra_env = new.extra_tags, new.extra_env
            old.svc = old.svc.model_copy(update={"replicas": len(old.instances)})
            self.sup.deployments.pop(new.key, None)
            for inst in self._live(old):
                self.sup.naming.set_weight(new, inst, 100)
        rel.state, rel.finished = "succeeded", time.time()
        rel.reason = f"{rel.service} {rel.version} serves all traffic; the old version is retired"
        self._step(EventKind.RELEASE_DONE, f"release of {rel.service} {rel.version} succeeded: {rel.reason}")
        self._archive()

    async def _revert(self, rel: Release, reason: str, *, old: Deployment | None = None,
                      new: Deployment | None = None, old_live: list[Instance] | None = None,
                      kind: EventKind = EventKind.RELEASE_ROLLED_BACK, state: str = "rolled_back") -> None:
        """Old weights restored first (capacity), then the new instances deregistered, drained, stopped."""
        rel.state = "rolling_back"
        self._save()
        old = old or self.sup.deployments.get(rel.service)
        new = new or self.sup.deployments.get(f"{rel.service}@{GROUP}")
        if old is not None:
            for inst in self._live(old):
                self.sup.naming.set_weight(old, inst, 100)
        if new is not None:
            for inst in list(new.instances.values()):
                with contextlib.suppress(Exception):
                    await self.sup.stop_instance(new, inst, drain=new.svc.drain, forget=True)
            self.sup.deployments.pop(new.key, None)
        if old is not None and rel.in_place and old_live is not None:
            while len(self._live(old)) < len(old_live):  # put back the capacity replaced in place
                try:
                    await self.sup.start_instance(old)
                except DeployError as exc:
                    reason += f"; restarting an old instance failed: {exc}"
                    break
        rel.state, rel.finished, rel.reason = state, time.time(), reason
        self._step(kind, reason, gate=rel.gate_failed)
        self._archive()

    def _archive(self) -> None:
        if self.current is not None:
            self.history.append(self.current)
            self._save()


class ReleaseApi:
    """``/api/deploy/releases``: start, show, pause, resume, roll back."""

    def __init__(self, manager: Callable[[], ReleaseManager]) -> None:
        self.manager = manager

    def router(self) -> APIRouter:
        router = APIRouter(prefix="/api/deploy/releases", tags=["deploy"])
        router.add_api_route("", self.start, methods=["POST"], status_code=202)
        router.add_api_route("", self.list, methods=["GET"])
        router.add_api_route("/current", self.current, methods=["GET"])
        router.add_api_route("/current/pause", self.pause, methods=["POST"])
        router.add_api_route("/current/resume", self.resume, methods=["POST"])
        router.add_api_route("/current/rollback", self.rollback, methods=["POST"])
        return router

    async def start(self, body: ReleaseRequest) -> dict[str, Any]:
        return self.manager().start(body)

    async def list(self) -> dict[str, Any]:
        m = self.manager()
        return {"current": m.current.to_json() if m.current else None,
                "history": [r.to_json() for r in reversed(m.history)]}

    async def current(self) -> dict[str, Any]:
        return self.manager().status()

    async def pause(self) -> dict[str, Any]:
        return self.manager().pause()

    async def resume(self) -> dict[str, Any]:
        return self.manager().resume()

    async def rollback(self) -> dict[str, Any]:
        return await self.manager().rollback()
