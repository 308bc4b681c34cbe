"""Assertion logic over observed data: pure functions, no platform, no sockets.

Each check returns a :class:`Verdict` whose message puts the expectation next to what was
observed (numbers, trace ids, instances), so a failed scenario can be acted on without a re-run.
The session (:mod:`devbox.scenario.session`) gathers the data from the platform's stores.
"""

from __future__ import annotations

import operator
import re
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from devbox.mocks.tracing import analysis
from devbox.mocks.tracing.models import Span
from devbox.scenario.model import (
    AlertExpect,
    FailoverExpect,
    LogExpect,
    MetricExpect,
    RoutingExpect,
    TopologyExpect,
    TraceExpect,
)
from devbox.scenario.traffic import TrafficRun

OPS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le, "==": operator.eq, "!=": operator.ne}


@dataclass
class Verdict:
    ok: bool
    message: str

    def __bool__(self) -> bool:
        return self.ok


def _fmt_share(x: float) -> str:
    return f"{x * 100:.1f}%"


def selector_matches(selector: Mapping[str, str | None], metadata: Mapping[str, str]) -> bool:
    """``None`` (YAML null) means the key must be absent or empty: the base environment."""
    for key, want in selector.items():
        have = metadata.get(key) or None
        if want is None:
            if have is not None:
                return False
        elif have != want:
            return False
    return True


def span_instance(span: Any) -> str:
    resource = getattr(span, "resource", {}) or {}
    return str(resource.get("service.instance.id") or getattr(span, "attributes", {}).get("service.instance.id") or "?")


def span_metadata(span: Any, instances: Mapping[str, Mapping[str, str]]) -> dict[str, str]:
    """An instance's metadata from naming; else the ``devbox.<tag>`` resource attributes deploy injects."""
    iid = span_instance(span)
    if iid in instances:
        return dict(instances[iid])
    resource = getattr(span, "resource", {}) or {}
    return {k[len("devbox.") :]: str(v) for k, v in resource.items() if k.startswith("devbox.")}


def check_routing(
    exp: RoutingExpect, run: TrafficRun, spans: Sequence[Any], instances: Mapping[str, Mapping[str, str]]
) -> Verdict:
    """Share of ``exp.service``'s server spans in the traffic's traces whose instance matches."""
    wanted = set(run.trace_ids)
    served: Counter[str] = Counter()
    meta_of: dict[str, dict[str, str]] = {}
    for span in spans:
        if span.trace_id in wanted and span.service == exp.service and span.kind == "SERVER":
            iid = span_instance(span)
            served[iid] += 1
            meta_of[iid] = span_metadata(span, instances)
    total = sum(served.values())
    matched = sum(n for iid, n in served.items() if selector_matches(exp.selector, meta_of[iid]))
    share = matched / total if total else 0.0
    sel = ",".join(f"{k}={'<absent>' if v is None else v}" for k, v in exp.selector.items())
    per_instance = "; ".join(
        f"{iid[:12]} {_meta_text(meta_of[iid])}: {n}" for iid, n in served.most_common()
    ) or "none"
    observed = (
        f"observed {matched}/{total} = {_fmt_share(share)} of {exp.service} calls on [{sel}] "
        f"(traffic {run.step.name!r}: {run.summary()}); served by: {per_instance}"
    )
    expected = f"expected {_fmt_share(exp.min_share)}..{_fmt_share(exp.max_share)} of {exp.service} calls on [{sel}]"
    if total < exp.min_calls:
        sample = ", ".join(run.trace_ids[:3])
        return Verdict(False, f"{expected}, at least {exp.min_calls} calls; {observed}; sample traces: {sample}")
    ok = exp.min_share <= share <= exp.max_share
    return Verdict(ok, f"{expected}; {observed}")


def _meta_text(meta: Mapping[str, str]) -> str:
    return "{" + ",".join(f"{k}={v}" for k, v in sorted(meta.items())) + "}"


def check_failover(
    exp: FailoverExpect,
    run: TrafficRun | None,
    *,
    victim: str | None = None,
    killed_at: float | None = None,
    out_at: float | None = None,
    out_how: str = "",
) -> Verdict:
    """Errors the traffic saw stay under a bound; the victim left naming's healthy set in time."""
    parts: list[str] = []
    ok = _failover_traffic(exp, run, parts) if run is not None else True
    if exp.unhealthy_within is not None:
        if victim is None or killed_at is None:
            ok = False
            parts.append(f"expected instance {exp.instance!r} to have been named by an earlier step with `as:`")
        elif out_at is None:
            ok = False
            parts.append(
                f"instance {victim} is still healthy in naming (expected out within {exp.unhealthy_within:g}s)"
            )
        else:
            took = out_at - killed_at
            ok &= took <= exp.unhealthy_within
            parts.append(
                f"instance {victim} {out_how} {took:.2f}s after the fault (expected within {exp.unhealthy_within:g}s)"
            )
    return Verdict(ok, "; ".join(parts))


def _failover_traffic(exp: FailoverExpect, run: TrafficRun, parts: list[str]) -> bool:
    total = len(run.results)
    bad = run.errors()
    rate = len(bad) / total if total else 0.0
    ok = True
    observed = f"observed {len(bad)}/{total} failed ({_fmt_share(rate)})"
    if bad:
        kinds = Counter(f"{r.status}" for r in bad)
        observed += " " + ", ".join(f"{k} x{v}" for k, v in kinds.most_common())
        observed += f", first failed traces: {', '.join(r.trace_id for r in bad[:3])}"
        by_instance = Counter((r.instance or "?")[:12] for r in bad)
        observed += "; failed calls by entry instance: " + ", ".join(f"{k}: {v}" for k, v in by_instance.most_common())
    if total == 0:
        ok = False
        parts.append(f"expected traffic {run.step.name!r} to have made calls; it made none")
    if exp.max_error_rate is not None:
        ok &= rate <= exp.max_error_rate
        parts.append(f"expected error rate <= {_fmt_share(exp.max_error_rate)}")
    if exp.max_errors is not None:
        ok &= len(bad) <= exp.max_errors
        parts.append(f"expected <= {exp.max_errors} errors")
    parts.append(observed)
    return ok


# --- traces -------------------------------------------------------------------------------


def first_seen(items: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for item in items:
        seen.setdefault(item, None)
    return list(seen)


def is_subsequence(wanted: Sequence[str], seen: Sequence[str]) -> bool:
    it = iter(seen)
    return all(any(x == w for x in it) for w in wanted)


@dataclass
class Cause:
    service: str
    name: str
    message: str = ""


def root_causes(trace: Sequence[Span]) -> list[Cause]:
    """Where the trace's failure originated, by the trace collector's own analysis (``/why``)."""
    return [Cause(c["service"], c["name"], c["message"]) for c in analysis.root_cause(trace)["causes"]]


def critical_path_shares(trace: Sequence[Span]) -> dict[str, float]:
    """Each service's share of the critical path, by the collector's own analysis (``/critical-path``)."""
    return {row["service"]: row["share"] for row in analysis.critical_path(trace)["services"]}


def check_trace(
    exp: TraceExpect,
    run: TrafficRun,
    traces: Mapping[str, Sequence[Span]],
) -> Verdict:
    """Each trace of the traffic checked; ``which: any`` needs one good trace, ``all`` every one.

    Root causes and critical paths are the trace collector's analysis (:mod:`devbox.mocks.tracing.analysis`),
    so a scenario asserts what ``devbox traces why`` and the dashboard show.
    """
    if not traces:
        return Verdict(
            False,
            f"expected traces of traffic {run.step.name!r}; none of its {len(run.results)} trace ids "
            f"reached the collector (sample: {', '.join(run.trace_ids[:3]) or 'none'})",
        )
    failures: list[str] = []
    passed: list[str] = []
    for trace_id, trace in traces.items():
        problems = _trace_problems(exp, trace)
        if not problems and exp.which == "any":
            passed.append(trace_id)
            break
        if problems:
            failures.append(f"trace {trace_id}: " + "; ".join(problems))
        else:
            passed.append(trace_id)
    want = _trace_expectation(exp)
    if exp.which == "any":
        ok = bool(passed)
    else:
        ok = not failures
    if ok and exp.which == "any":
        return Verdict(True, f"expected {want}: trace {passed[0]} matches ({len(traces)} traces of the traffic)")
    if ok:
        return Verdict(True, f"expected {want}: all {len(passed)} traces match (e.g. {passed[0]})")
    shown = failures[:3]
    return Verdict(
        False,
        f"expected {want} in {'every' if exp.which == 'all' else 'some'} trace; "
        f"{len(passed)}/{len(traces)} traces match; observed: " + " | ".join(shown),
    )


def _trace_expectation(exp: TraceExpect) -> str:
    parts = []
    if exp.services:
        parts.append(f"services {' -> '.join(exp.services)}")
    if exp.operations:
        parts.append(f"operations {' -> '.join(exp.operations)}")
    if exp.no_error:
        parts.append("no error")
    if exp.root_cause:
        parts.append(f"root cause in {exp.root_cause}")
    if exp.critical_path:
        cp = exp.critical_path
        parts.append(f">= {_fmt_share(cp.min_share)} of the critical path in {cp.service}")
    return ", ".join(parts) or "a trace"


def _trace_problems(exp: TraceExpect, trace: Sequence[Span]) -> list[str]:
    problems = []
    services = first_seen(s.service for s in trace)
    if exp.services and not is_subsequence(exp.services, services):
        problems.append(f"services seen {' -> '.join(services)}")
    if exp.operations:
        ops = first_seen(s.name for s in trace)
        if not is_subsequence(exp.operations, ops):
            problems.append(f"operations seen {' -> '.join(ops)}")
    errors = [s for s in trace if s.error]
    if exp.no_error and errors:
        problems.append("errors in " + ", ".join(f"{s.service}:{s.name} ({s.status_message})" for s in errors[:3]))
    if exp.root_cause:
        causes = root_causes(trace)
        if not causes:
            problems.append("no span errored")
        elif not any(c.service == exp.root_cause for c in causes):
            problems.append(
                "root cause in " + ", ".join(f"{c.service}:{c.name} ({c.message or 'error'})" for c in causes)
            )
    if exp.critical_path:
        shares = critical_path_shares(trace)
        mine = shares.get(exp.critical_path.service, 0.0)
        if mine < exp.critical_path.min_share:
            listing = ", ".join(f"{k} {_fmt_share(v)}" for k, v in sorted(shares.items(), key=lambda kv: -kv[1]))
            problems.append(f"critical path {exp.critical_path.service} {_fmt_share(mine)} (shares: {listing})")
    return problems


def check_topology(exp: TopologyExpect, edges: Mapping[tuple[str, str], int]) -> Verdict:
    missing = [e for e in exp.edges if tuple(e) not in edges]
    present = [e for e in exp.absent if tuple(e) in edges]
    listing = ", ".join(f"{a}->{b} ({n})" for (a, b), n in sorted(edges.items())) or "no edges"
    want = "edges " + ", ".join(f"{a}->{b}" for a, b in exp.edges)
    if exp.absent:
        want += "; no " + ", ".join(f"{a}->{b}" for a, b in exp.absent)
    ok = not missing and not present
    detail = ""
    if missing:
        detail += " missing " + ", ".join(f"{a}->{b}" for a, b in missing) + ";"
    if present:
        detail += " unexpected " + ", ".join(f"{a}->{b}" for a, b in present) + ";"
    return Verdict(ok, f"expected {want};{detail} observed topology: {listing}")


Series = Sequence[tuple[Mapping[str, str], Sequence[tuple[float, float]]]]


def check_metric(exp: MetricExpect, series: Series) -> Verdict:
    """Every point of every series must satisfy ``op threshold``."""
    cmp = OPS[exp.op]
    want = f"expected {exp.query} {exp.op} {exp.threshold:g}" + (f" over {exp.window:g}s" if exp.window else "")
    if not series:
        return Verdict(exp.allow_empty, f"{want}; the query returned no series")
    bad = []
    shown = []
    for labels, points in series:
        name = "{" + ",".join(f"{k}={v}" for k, v in sorted(labels.items())) + "}"
        values = [v for _, v in points]
        shown.append(f"{name} = {_values(values)}")
        if not values or not all(cmp(v, exp.threshold) for v in values):
            bad.append(name)
    observed = "; ".join(shown[:5])
    if bad:
        return Verdict(False, f"{want}; failing series {', '.join(bad[:5])}; observed {observed}")
    return Verdict(True, f"{want}; observed {observed}")


def _values(values: Sequence[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4g}"
    if not values:
        return "no points"
    return f"{len(values)} points, min {min(values):.4g}, max {max(values):.4g}, last {values[-1]:.4g}"


def check_alert(exp: AlertExpect, transitions: Sequence[Mapping[str, Any]], state: str | None) -> Verdict:
    """``transitions`` are history entries (``to``, ``at``, ``notified``, ``silenced``, ``labels``)."""
    mine = [
        t for t in transitions
        if t.get("alertname") == exp.rule and all(t.get("labels", {}).get(k) == v for k, v in exp.labels.items())
    ]
    history = [str(t["to"]) for t in mine]
    problems = []
    current = state or (history[-1] if history else "inactive")
    if exp.state != current and not (exp.state == "resolved" and current == "inactive" and "resolved" in history):
        problems.append(f"state is {current}")
    firings = [t for t in mine if t["to"] == "firing"]
    if exp.notified is not None:
        notified = any(t.get("notified") for t in firings)
        if notified != exp.notified:
            problems.append(f"firing notified={notified}")
    if exp.silenced is not None:
        silenced = any(t.get("silenced") for t in firings)
        if silenced != exp.silenced:
            problems.append(f"firing silenced={silenced}")
    if exp.history and not is_subsequence(exp.history, history):
        problems.append("history does not show " + " -> ".join(exp.history))
    want = f"expected alert {exp.rule} {exp.state}"
    if exp.notified is not None:
        want += f", notified={exp.notified}"
    if exp.silenced is not None:
        want += f", silenced={exp.silenced}"
    if exp.history:
        want += f", history {' -> '.join(exp.history)}"
    seen = ", ".join(
        f"{t['to']} at {_clock(t['at'])}"
        + (" (silenced)" if t.get("silenced") else "")
        + (" (notified)" if t.get("notified") else "")
        for t in mine
    ) or "none"
    text = f"{want}; observed state {current}, history: {seen}"
    if problems:
        text += "; mismatch: " + ", ".join(problems)
    return Verdict(not problems, text)


def _clock(ts: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts)) + f".{int(ts % 1 * 10)}"


def check_log(exp: LogExpect, lines_by_file: Mapping[str, Sequence[str]]) -> Verdict:
    pattern = re.compile(exp.pattern)
    hits = [(f, line) for f, lines in lines_by_file.items() for line in lines if pattern.search(line)]
    files = ", ".join(sorted(lines_by_file)) or "no log files"
    if exp.absent:
        ok = not hits
        sample = "; ".join(f"{f}: {line.strip()[:160]}" for f, line in hits[:3])
        return Verdict(
            ok, f"expected no /{exp.pattern}/ in {exp.service} logs; observed {len(hits)} matches {sample} ({files})"
        )
    want = f"expected /{exp.pattern}/ in {exp.service} logs" + (f" at least {exp.min_count} times" if
                                                                    exp.min_count > 1 else "")
    if len(hits) >= exp.min_count:
        f, line = hits[0]
        return Verdict(True, f"{want}; found {len(hits)}, e.g. {f}: {line.strip()[:160]}")
    if hits:
        per_file = ", ".join(f"{f}: {sum(1 for g, _ in hits if g == f)}" for f in sorted({f for f, _ in hits}))
        return Verdict(False, f"{want}; found {len(hits)} ({per_file})")
    tail: list[str] = []
    for f, lines in lines_by_file.items():
        tail.extend(f"{f}: {line.rstrip()[:160]}" for line in lines[-3:])
    return Verdict(False, f"{want}; no match in {files}; last lines: " + " | ".join(tail))
