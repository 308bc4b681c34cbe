"""The capacity model: pure functions from measurements to "how many instances do we need".

Inputs are plain data — traces (lists of :class:`Span`), per-entry request counts from Locust,
per-service counters and CPU seconds — so every rule here is unit-tested without a platform.

- **Fan-out**: for each entry operation (a trace's main root), how many calls each downstream
  service/operation receives per entry request — mean and p95 over the traces, so a path taken by
  one request in five (the shop's fraud check) shows as mean 0.2, p95 1. A call received is a
  SERVER/CONSUMER span other than the root, or a call to an untraced peer (the same definition as
  ``devbox traces fanout``).
- **Prediction**: a service's QPS = Σ over entries of entry QPS x calls per entry request (the
  entry service itself gets 1 per request). Compared with a measurement as an error in %.
- **Saturation** (from a ramp's steps): the first step where the stop condition broke, or a
  service's CPU per instance reached the limit. The service it is pinned on is the one whose
  instances were busiest (CPU) at that step, else the one whose own p99 grew most.
- **Capacity per instance**: the lower of the CPU bound (CPU limit ÷ CPU seconds per request) and
  the QPS per instance at which the pinned service saturated. Instances needed =
  ceil(target QPS ÷ (capacity x (1 - headroom))); the first bottleneck is the service with the
  highest target load relative to what its current instances can take.

LIMITATIONS: fan-out is measured, not derived from code, so a path no request took is not in it;
CPU seconds are the instance processes' own (user + system), not the machine's — on a shared
machine the services compete for the same cores, which the per-instance figures do not see.
"""

from __future__ import annotations

import difflib
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from devbox.mocks.tracing.analysis import CALLEE_KINDS, build_tree, calls_received, group_traces, percentile
from devbox.mocks.tracing.models import Span

#: Operations that are devbox's own health probes, never part of a load's traffic (lower case:
#: the Zipkin query API answers names lower-cased, as the real server does).
PROBE_OPERATIONS = frozenset({"get /healthz", "get /health", "get /readyz", "get /livez",
                              "/grpc.health.v1.health/check", "/grpc.health.v1.health/watch",
                              "grpc.health.v1.health/check", "grpc.health.v1.health/watch"})


def is_probe(name: str) -> bool:
    return name.lower() in PROBE_OPERATIONS

#: CPU per instance (cores) above which an instance counts as saturated.
DEFAULT_CPU_LIMIT = 0.85


class ModelError(ValueError):
    """Input the model cannot use (an unknown entry in a target mix, a bad condition); the
    message is meant for the user as is."""


# --- fan-out --------------------------------------------------------------------------------------


@dataclass
class CallStats:
    """Calls one downstream service/operation receives per entry request."""

    service: str
    operation: str
    mean: float
    p95: float
    total: int


@dataclass
class EntryFanout:
    """One entry operation's fan-out over ``traces`` traces."""

    service: str
    operation: str
    traces: int
    spans_per_trace: float
    calls: list[CallStats] = field(default_factory=list)
    #: per downstream service: calls per entry request (mean, p95), every operation together
    services: dict[str, tuple[float, float]] = field(default_factory=dict)

    def per_service(self) -> dict[str, float]:
        """Mean calls per entry request to each service, the entry service itself counted once."""
        out = {svc: mean for svc, (mean, _) in self.services.items()}
        out[self.service] = out.get(self.service, 0.0) + 1.0
        return out


def _quantile(values: Sequence[int], q: float) -> float:
    return float(percentile(sorted(values), q))


def fanout(traces: Iterable[Sequence[Span]], *, entry_service: str | None = None) -> dict[str, EntryFanout]:
    """Fan-out per entry operation (keyed by operation name) over complete traces.

    ``entry_service`` keeps only traces whose main root is a span of that service (the load's
    target); probe traces are always left out.
    """
    per_trace: dict[tuple[str, str], list[dict[tuple[str, str], int]]] = defaultdict(list)
    span_counts: dict[tuple[str, str], list[int]] = defaultdict(list)
    for trace in traces:
        if not trace:
            continue
        tree = build_tree(trace)
        root = tree.main_root
        rs = tree.spans[root]
        if is_probe(rs.name) or (entry_service is not None and rs.service != entry_service):
            continue
        counts = calls_received(tree)
        per_trace[(rs.service, rs.name)].append(counts)
        span_counts[(rs.service, rs.name)].append(len(trace))
    out: dict[str, EntryFanout] = {}
    for (service, operation), rows in per_trace.items():
        n = len(rows)
        keys = sorted({k for row in rows for k in row})
        stats = []
        for key in keys:
            values = [row.get(key, 0) for row in rows]
            stats.append(CallStats(key[0], key[1], sum(values) / n, _quantile(values, 0.95), sum(values)))
        stats.sort(key=lambda c: (-c.mean, c.service, c.operation))
        services: dict[str, tuple[float, float]] = {}
        for svc in sorted({k[0] for k in keys}):
            values = [sum(v for (s, _), v in row.items() if s == svc) for row in rows]
            services[svc] = (sum(values) / n, _quantile(values, 0.95))
        entry = EntryFanout(service, operation, n, sum(span_counts[(service, operation)]) / n, stats, services)
        if operation in out:  # the same operation name at two services: keep the busier one
            if out[operation].traces >= n:
                continue
        out[operation] = entry
    return out


def align_names(fan: Mapping[str, EntryFanout], names: Iterable[str]) -> dict[str, EntryFanout]:
    """``fan`` re-keyed to the spelling of ``names`` (Locust's entry names, a target mix) where
    they differ only in case: traces read through the Zipkin API come back lower-cased."""
    wanted = {n.lower(): n for n in names}
    out: dict[str, EntryFanout] = {}
    for key, entry in fan.items():
        name = key if key in wanted.values() else wanted.get(key.lower(), key)
        entry.operation = name
        out[name] = entry
    return out


def fanout_from_spans(spans: Iterable[Span], *, entry_service: str | None = None) -> dict[str, EntryFanout]:
    return fanout(group_traces(spans).values(), entry_service=entry_service)


# --- prediction -----------------------------------------------------------------------------------


def predict_service_qps(entry_qps: Mapping[str, float], fan: Mapping[str, EntryFanout]) -> dict[str, float]:
    """Each service's QPS for the given entry QPS. Raises ModelError for an entry with no fan-out."""
    check_entries(entry_qps, fan)
    out: dict[str, float] = defaultdict(float)
    for entry, qps in entry_qps.items():
        for svc, per_request in fan[entry].per_service().items():
            out[svc] += qps * per_request
    return dict(sorted(out.items()))


def error_pct(predicted: float, measured: float) -> float | None:
    """(predicted - measured) ÷ measured in %, None when nothing was measured."""
    if measured <= 0:
        return None
    return (predicted - measured) / measured * 100.0


def check_entries(names: Iterable[str], fan: Mapping[str, EntryFanout]) -> None:
    known = sorted(fan)
    for name in names:
        if name not in fan:
            close = difflib.get_close_matches(name, known, n=1) or [k for k in known if k.lower() == name.lower()]
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ModelError(f"unknown entry {name!r}: the run's traces have entries {', '.join(known) or '(none)'}"
                             f"{hint}")


_MIX_ITEM = re.compile(r"^\s*(?P<name>.+?)\s*=\s*(?P<qps>\d+(?:\.\d+)?)\s*(?:/\s*s|rps|qps)?\s*$")


def parse_target_mix(text: str) -> dict[str, float]:
    """``"GET /checkout/{user}=500/s, POST /orders=50/s"`` → {entry: QPS}."""
    out: dict[str, float] = {}
    for part in (p for p in text.split(",") if p.strip()):
        match = _MIX_ITEM.match(part)
        if not match:
            raise ModelError(f"target {part.strip()!r} is not ENTRY=QPS/s (e.g. 'GET /checkout/{{user}}=500/s')")
        name = match.group("name")
        if name in out:
            raise ModelError(f"target names entry {name!r} twice")
        out[name] = float(match.group("qps"))
    if not out:
        raise ModelError("the target mix is empty (e.g. --target 'GET /checkout/{user}=500/s')")
    return out


# --- stop conditions ------------------------------------------------------------------------------


_COND = re.compile(r"^\s*(?P<what>p50|p95|p99|errors|rps|cpu)\s*(?P<op>>=|<=|>|<)\s*(?P<num>\d+(?:\.\d+)?)"
                   r"\s*(?P<unit>ms|s|%|/s)?\s*$")


@dataclass(frozen=True)
class Condition:
    """One clause of a stop condition: ``p99>300ms``, ``errors>1%``, ``cpu>0.9``."""

    what: str
    op: str
    value: float  # ms for latencies, a fraction for errors, cores for cpu, req/s for rps

    def holds(self, figures: Mapping[str, float]) -> bool:
        got = figures.get(self.what)
        if got is None:
            return False
        return {">": got > self.value, ">=": got >= self.value, "<": got < self.value,
                "<=": got <= self.value}[self.op]

    def __str__(self) -> str:
        if self.what == "errors":
            return f"errors{self.op}{self.value * 100:g}%"
        unit = {"p50": "ms", "p95": "ms", "p99": "ms", "rps": "/s", "cpu": ""}[self.what]
        return f"{self.what}{self.op}{self.value:g}{unit}"


def parse_until(text: str) -> list[Condition]:
    """``'p99>300ms or errors>1%'`` → conditions, any of which stops the ramp."""
    out = []
    for part in re.split(r"\s+or\s+|\|\|", text.strip()):
        match = _COND.match(part)
        if not match:
            raise ModelError(f"condition {part!r} is not like p99>300ms, errors>1%, cpu>0.9 (joined with 'or')")
        value = float(match.group("num"))
        unit = match.group("unit")
        what = match.group("what")
        if what.startswith("p"):
            value = value * 1000 if unit == "s" else value
        elif what == "errors":
            value = value / 100 if unit == "%" or (unit is None and value > 1) else value
        out.append(Condition(what, match.group("op"), value))
    return out


def broken(conditions: Sequence[Condition], figures: Mapping[str, float]) -> list[str]:
    """The conditions that hold for a step's figures, as text."""
    return [str(c) for c in conditions if c.holds(figures)]


# --- saturation and instances needed --------------------------------------------------------------


@dataclass
class ServiceStep:
    """One service during one ramp step."""

    qps: float
    instances: int
    cpu_s: float  # every instance together
    seconds: float
    p99_ms: float = 0.0
    errors: float = 0.0  # fraction

    @property
    def cpu_per_instance(self) -> float:
        return self.cpu_s / self.seconds / max(self.instances, 1) if self.seconds > 0 else 0.0

    @property
    def qps_per_instance(self) -> float:
        return self.qps / max(self.instances, 1)


@dataclass
class Step:
    """One ramp step: its users, the entry figures and each service's."""

    users: int
    figures: dict[str, float]  # p50/p95/p99 ms, errors fraction, rps of the entries together
    services: dict[str, ServiceStep]
    broke: list[str] = field(default_factory=list)


def saturation(steps: Sequence[Step], *, cpu_limit: float = DEFAULT_CPU_LIMIT) -> dict[str, dict[str, Any]]:
    """Per service: the step where it saturated (or None), why, and QPS per instance there and at
    the last good step."""
    out: dict[str, dict[str, Any]] = {}
    services = sorted({s for step in steps for s in step.services})
    for svc in services:
        out[svc] = {"step": None, "why": None, "qps_per_instance": None,
                    "last_good_qps_per_instance": None, "users": None}
    pinned: str | None = None
    for index, step in enumerate(steps):
        hot = {svc: st for svc, st in step.services.items() if st.cpu_per_instance >= cpu_limit}
        for svc, st in hot.items():
            if out[svc]["step"] is None:
                out[svc].update(step=index, users=step.users, qps_per_instance=st.qps_per_instance,
                                why=f"CPU {st.cpu_per_instance:.2f} cores per instance ≥ {cpu_limit:g}")
        if step.broke and pinned is None and step.services:
            pinned = _pin(steps[0], step)
            st = step.services[pinned]
            if out[pinned]["step"] is None:
                out[pinned].update(step=index, users=step.users, qps_per_instance=st.qps_per_instance,
                                   why=f"{' or '.join(step.broke)} at {step.users} users; {pinned} "
                                       f"{_pin_reason(steps[0], step, pinned)}")
    for svc in services:
        limit = out[svc]["step"] if out[svc]["step"] is not None else len(steps)
        good = [s.services[svc] for s in steps[:limit] if svc in s.services and not s.broke]
        if good:
            out[svc]["last_good_qps_per_instance"] = max(g.qps_per_instance for g in good)
    return out


#: A p99 below this is not compared as a ratio: 2 ms -> 8 ms is x4 and means nothing (a README ramp
#: blamed the shop's 2 ms users service over the gateway whose p99 grew by 250 ms).
GROWTH_FLOOR_MS = 10.0


def _growth(first: Step, step: Step, svc: str) -> float:
    base = first.services.get(svc)
    if base is None:
        return 1.0
    return max(step.services[svc].p99_ms, GROWTH_FLOOR_MS) / max(base.p99_ms, GROWTH_FLOOR_MS)


def _pin(first: Step, step: Step) -> str:
    """The service a broken step is blamed on: the busiest by CPU if any is past half a core,
    else the one whose own p99 grew most since the first step."""
    busiest = max(step.services, key=lambda s: step.services[s].cpu_per_instance)
    if step.services[busiest].cpu_per_instance >= 0.5:
        return busiest
    # growth ties (a ramp broken at its first step has none to compare): the busier one, not the last name
    return max(step.services, key=lambda s: (_growth(first, step, s), step.services[s].cpu_per_instance, s))


def _pin_reason(first: Step, step: Step, svc: str) -> str:
    st = step.services[svc]
    if st.cpu_per_instance >= 0.5 or first is step:
        return f"was the busiest ({st.cpu_per_instance:.2f} cores per instance)"
    return f"p99 grew most (x{_growth(first, step, svc):.1f}, to {st.p99_ms:.0f} ms)"


def cpu_seconds_per_request(samples: Iterable[ServiceStep]) -> float | None:
    """Total CPU seconds ÷ total requests over the samples (None without requests)."""
    cpu = req = 0.0
    for s in samples:
        cpu += s.cpu_s
        req += s.qps * s.seconds
    return cpu / req if req > 0 else None


@dataclass
class Need:
    """Instances one service needs for a target mix."""

    service: str
    target_qps: float
    capacity_per_instance: float | None
    capacity_from: str
    instances_now: int
    needed: int | None
    load_factor: float | None  # target load ÷ what today's instances can take (>1: add instances)


def instances_needed(
    target_qps: Mapping[str, float],
    *,
    cpu_s_per_request: Mapping[str, float | None],
    saturated_qps_per_instance: Mapping[str, float | None],
    instances_now: Mapping[str, int],
    headroom: float = 0.3,
    cpu_limit: float = DEFAULT_CPU_LIMIT,
) -> tuple[list[Need], Need | None]:
    """Instances needed per service, and the first bottleneck (highest load factor)."""
    if not 0 <= headroom < 1:
        raise ModelError(f"headroom {headroom} must be in [0, 1)")
    needs = []
    for svc, qps in sorted(target_qps.items()):
        options = []
        cpu = cpu_s_per_request.get(svc)
        if cpu:
            options.append((cpu_limit / cpu, f"CPU: {cpu * 1000:.2f} ms per request, {cpu_limit:g} core per instance"))
        sat = saturated_qps_per_instance.get(svc)
        if sat:
            options.append((sat, f"ramp: saturated at {sat:.1f}/s per instance"))
        now = instances_now.get(svc, 0)
        if not options:
            needs.append(Need(svc, qps, None, "no CPU or ramp figure", now, None, None))
            continue
        capacity, why = min(options)
        needed = max(1, math.ceil(qps / (capacity * (1 - headroom)))) if qps > 0 else max(now, 1)
        factor = qps / (capacity * now) if now else None
        needs.append(Need(svc, qps, capacity, why, now, needed, factor))
    ranked = [n for n in needs if n.needed is not None and n.capacity_per_instance]
    bottleneck = max(ranked, key=lambda n: (n.target_qps / n.capacity_per_instance / max(n.instances_now, 1),
                                            n.service), default=None)
    return needs, bottleneck


# --- span completeness -----------------------------------------------------------------------------


def span_completeness(requests_sent: Mapping[str, int], fan: Mapping[str, EntryFanout],
                      spans_received: int) -> dict[str, Any]:
    """Traces received per request sent, and spans received against those expected (requests x
    spans per complete trace). ``complete`` is False when more than 1% is missing."""
    sent = sum(requests_sent.values())
    traces = sum(fan[e].traces for e in requests_sent if e in fan)
    expected = sum(n * fan[e].spans_per_trace for e, n in requests_sent.items() if e in fan)
    trace_ratio = traces / sent if sent else None
    span_ratio = spans_received / expected if expected else None
    missing = max(0, round(expected - spans_received)) if expected else 0
    complete = all(r is None or r >= 0.99 for r in (trace_ratio, span_ratio))
    return {"requests_sent": sent, "traces_received": traces, "traces_ratio": trace_ratio,
            "spans_expected": round(expected), "spans_received": spans_received, "spans_ratio": span_ratio,
            "spans_missing": missing, "complete": complete}


# --- per-service figures of a time window, from traces ------------------------------------------


def service_figures(traces: Iterable[Sequence[Span]], start_us: int, end_us: int) -> dict[str, dict[str, float]]:
    """Per service, from the SERVER/CONSUMER spans that started in [start_us, end_us]: calls,
    QPS, p50/p99 ms and the error fraction (probes left out)."""
    durations: dict[str, list[int]] = defaultdict(list)
    errors: dict[str, int] = defaultdict(int)
    for trace in traces:
        for s in trace:
            if s.kind in CALLEE_KINDS and start_us <= s.start_us <= end_us and not is_probe(s.name):
                durations[s.service].append(s.duration_us)
                errors[s.service] += int(s.error)
    seconds = max((end_us - start_us) / 1e6, 1e-9)
    out = {}
    for svc, values in sorted(durations.items()):
        values.sort()
        out[svc] = {"calls": len(values), "qps": len(values) / seconds, "p50_ms": percentile(values, 0.5) / 1000,
                    "p99_ms": percentile(values, 0.99) / 1000, "errors": errors[svc] / len(values)}
    return out
