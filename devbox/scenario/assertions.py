"""What a scenario reads from the running system to check its expectations.

Each ``_check_<kind>`` gathers the observations (naming's registry and its change events, the spans
the collector accepted and stored, the metrics query engine, alerting's history, instance log
files) and hands them to the pure checks of :mod:`devbox.scenario.checks`; :meth:`Assertions.expect`
re-checks until the expectation holds or its time is up.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from typing import Any

import httpx

from devbox.platform.ports import AlertsView, MetricsQueryPort, TracesPort
from devbox.scenario import checks
from devbox.scenario.model import (
    AlertExpect,
    Expectation,
    FailoverExpect,
    LoadExpect,
    LogExpect,
    MetricExpect,
    RoutingExpect,
    TopologyExpect,
    TraceExpect,
)
from devbox.scenario.system import AssertionFailed, StepError, System
from devbox.scenario.traffic import TrafficRun
from devbox.tls import tls_for

#: Trace assertions read at most this many traces of a traffic from the collector.
MAX_TRACES = 50
#: Naming changes that take an instance out of rotation.
OUT_CHANGES = ("unhealthy", "deregistered", "isolated")
#: The window the topology assertion reads (the collector's dependency links of the last hour).
TOPOLOGY_LOOKBACK_US = 3_600_000_000


class Assertions(System):
    """``expect`` and its typed shorthands (``expect_routing(...)`` ...)."""

    def expect(self, exp: Expectation) -> str:
        """Check ``exp`` until it holds or ``exp.within`` seconds pass; raise AssertionFailed."""
        check: Callable[[Any], checks.Verdict] = getattr(self, f"_check_{exp.kind}")
        deadline = time.monotonic() + exp.within
        traffic = getattr(exp.body, "traffic", None)
        if exp.kind in ("routing", "trace") and traffic in self.traffic_runs:
            self._settle_spans(self.traffic_runs[traffic], deadline)
        while True:
            verdict = check(exp.body)
            if verdict.ok:
                return verdict.message
            if time.monotonic() >= deadline:
                raise AssertionFailed(verdict.message)
            time.sleep(min(0.5, max(0.05, exp.within / 20)))

    def expect_routing(self, within: float = 10.0, **kw: Any) -> str:
        return self.expect(Expectation(routing=RoutingExpect(**kw), within=within))

    def expect_failover(self, within: float = 10.0, **kw: Any) -> str:
        return self.expect(Expectation(failover=FailoverExpect(**kw), within=within))

    def expect_trace(self, within: float = 10.0, **kw: Any) -> str:
        return self.expect(Expectation(trace=TraceExpect(**kw), within=within))

    def expect_topology(self, within: float = 10.0, **kw: Any) -> str:
        return self.expect(Expectation(topology=TopologyExpect(**kw), within=within))

    def expect_metric(self, within: float = 10.0, **kw: Any) -> str:
        return self.expect(Expectation(metric=MetricExpect(**kw), within=within))

    def expect_alert(self, within: float = 10.0, **kw: Any) -> str:
        return self.expect(Expectation(alert=AlertExpect(**kw), within=within))

    def expect_log(self, within: float = 10.0, **kw: Any) -> str:
        return self.expect(Expectation(log=LogExpect(**kw), within=within))

    def expect_load(self, **kw: Any) -> str:
        return self.expect(Expectation(load=LoadExpect(**kw), within=0))

    def _settle_spans(self, run: TrafficRun, deadline: float, quiet: float = 0.7) -> None:
        """Wait until the traffic's spans stop arriving (SDKs export in batches), or the deadline.

        Once per traffic: after its spans were quiet for ``quiet`` s, the next assertions on the same
        traffic (a scenario often checks several services' shares of one traffic) read them at once.
        """
        if run.settled:
            return
        if not run.done:
            run.wait(max(deadline - time.monotonic(), 0))
        wanted = set(run.trace_ids)
        last, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            with self._lock:
                count = sum(1 for span in self.spans if span.trace_id in wanted)
            if count != last:
                last, since = count, time.monotonic()
            elif count and time.monotonic() - since >= quiet:
                run.settled = run.done
                return
            time.sleep(0.1)

    def _spans(self) -> list[Any]:
        with self._lock:
            return list(self.spans)

    def _check_routing(self, exp: RoutingExpect) -> checks.Verdict:
        run = self._traffic(exp.traffic)
        meta = {i.id: dict(i.metadata) for i in self.all_instances()}
        if exp.instance is not None:
            if exp.instance not in self.aliases:
                raise StepError(f"no instance named {exp.instance!r} (name one with `as:` on an earlier step)")
            chosen = self.aliases[exp.instance]["id"]
            # the named instance is the selector: mark it, so the share is "calls it served"
            meta = {iid: {**m, "devbox.chosen": "yes" if iid == chosen else "no"} for iid, m in meta.items()}
            exp = exp.model_copy(update={"selector": {"devbox.chosen": "yes"}})
        return checks.check_routing(exp, run, self._spans(), meta)

    def _check_failover(self, exp: FailoverExpect) -> checks.Verdict:
        run = self._traffic(exp.traffic) if exp.traffic is not None else None
        if run is not None and not run.done:
            run.wait()
        victim = killed_at = out_at = None
        how = ""
        if exp.instance is not None:
            if exp.instance not in self.aliases:
                raise StepError(f"no instance named {exp.instance!r} (name one with `as:` on kill/hang/stop)")
            alias = self.aliases[exp.instance]
            victim, killed_at = alias["id"], alias["at"]
            with self._lock:
                changes = [(t, c) for t, i, c in self.naming_changes if i == victim and t >= killed_at - 0.01]
            out = [(t, c) for t, c in changes if c in OUT_CHANGES]
            if out:
                out_at, how = out[0][0], f"was {out[0][1]} in naming"
            else:
                now = self.instance(victim)
                if now is None or not now.healthy or now.isolated:
                    # out of rotation already when the fault began (e.g. its heartbeats were dropped)
                    out_at, how = killed_at, "was already out of rotation in naming"
        return checks.check_failover(exp, run, victim=victim, killed_at=killed_at, out_at=out_at, out_how=how)

    def _check_trace(self, exp: TraceExpect) -> checks.Verdict:
        """Traces as the collector stored them, checked with its own analysis (root cause, critical path)."""
        run = self._traffic(exp.traffic)
        tracing = self.port(TracesPort, "tracing")
        stored = self.call(tracing.traces(run.trace_ids[:MAX_TRACES]))
        return checks.check_trace(exp, run, {spans[0].trace_id: spans for spans in stored if spans})

    def _check_topology(self, exp: TopologyExpect) -> checks.Verdict:
        tracing = self.port(TracesPort, "tracing")
        end_us = (int(time.time() * 1000) + 1000) * 1000
        links = self.call(tracing.dependencies(end_us, TOPOLOGY_LOOKBACK_US))
        edges = {(d["parent"], d["child"]): int(d.get("callCount", 0)) for d in links}
        return checks.check_topology(exp, edges)

    def _check_metric(self, exp: MetricExpect) -> checks.Verdict:
        metrics = self.port(MetricsQueryPort, "metrics")
        now = time.time()
        try:
            if exp.window > 0:
                series = self.call(_maybe_async(metrics.query_range, exp.query, now - exp.window, now, 1.0))
            else:
                instant = self.call(_maybe_async(metrics.query_instant, exp.query, now))
                series = [(labels, [(now, value)]) for labels, value in instant]
        except Exception as exc:
            raise StepError(f"metric query {exp.query!r} failed: {exc}") from None
        return checks.check_metric(exp, series)

    def _check_alert(self, exp: AlertExpect) -> checks.Verdict:
        """From alerting's own history store (``GET /api/alerts/history``)."""
        self.port(AlertsView, "alerting")
        response = httpx.get(self.url("api") + "/api/alerts/history", params={"limit": 10000}, timeout=10,
                             verify=tls_for(self.url("api")))
        if response.status_code != 200:
            raise StepError(f"GET /api/alerts/history: {response.status_code} {response.text[:200]}")
        history = sorted(response.json().get("transitions", []), key=lambda t: t.get("at", 0))
        mine = [
            t for t in history
            if t.get("alertname") == exp.rule and all(t.get("labels", {}).get(k) == v for k, v in exp.labels.items())
        ]
        state = str(mine[-1]["to"]) if mine else None
        return checks.check_alert(exp, history, state)

    def _check_log(self, exp: LogExpect) -> checks.Verdict:
        assert self.config is not None
        folder = self.config.state_path / "logs" / exp.service
        lines: dict[str, list[str]] = {}
        for path in sorted(folder.glob("*.log")) if folder.is_dir() else []:
            try:
                lines[path.name] = path.read_text(encoding="utf-8", errors="replace").splitlines()
            except OSError:
                continue
        try:
            re.compile(exp.pattern)
        except re.error as exc:
            raise StepError(f"log pattern {exp.pattern!r} is not a valid regex: {exc}") from None
        return checks.check_log(exp, lines)


    def _check_load(self, exp: LoadExpect) -> checks.Verdict:
        """The kept figures of a finished load run: they cannot change, so a miss fails at once."""
        from devbox.load.scenario import check_load

        if exp.run not in self.load_runs:
            raise StepError(f"no load run named {exp.run!r} (run a `load` step first)")
        verdict = check_load(exp, self.load_runs[exp.run])
        if not verdict.ok:
            raise AssertionFailed(verdict.message)
        return verdict


async def _maybe_async(fn: Callable[..., Any], *args: Any) -> Any:
    """The metrics port is synchronous today; a component may answer with a coroutine."""
    result = fn(*args)
    if asyncio.iscoroutine(result):
        result = await result
    return result
