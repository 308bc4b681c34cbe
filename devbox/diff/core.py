"""``devbox diff``'s core: two :class:`Profile` in, findings out. Pure (no I/O).

A *finding* is a change a reviewer should look at; it is reported only when it is both
significant (the test says it is not noise: p < :data:`ALPHA`) and material (big enough to
matter: latency > 10 % and > 5 ms on the median, fan-out by ≥ 0.2 calls per request and ≥ 10 %,
error rate by ≥ 1 point). Two runs of an unchanged system give none.

Latency and errors are attributed to where they started: an operation whose total latency
shifted while its *self time* did not only passed on a shift from downstream, and an operation
whose error rate changed while its *origin* errors did not only passed on errors; an operation
that now makes more calls spends more of its own time making them (that is the fan-out finding).
Those are kept as ``notes`` (context, not findings), so one slower hop is one finding, not one per
caller above it.

A busy (or idle) machine stretches (or shrinks) every process's own time alike: between two runs of
the unchanged shop on a loaded 2-core box, every operation's self-time median was 1.3-1.5x the
other run's, each with p < 0.001. So the self-time test compares each operation with the other run
scaled by :func:`run_scale` (the median over operations of their self-time ratios): a change moves
one operation, or a few, against the rest. LIMITATION: a change that slows most operations by the
same factor (every service doing more work per call) looks like a busier machine and is a note.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

from devbox.diff.profile import OpStats, Profile
from devbox.diff.stats import ALPHA_DEFAULT, MIN_SAMPLE, mann_whitney, quantile, two_proportions

ALPHA = ALPHA_DEFAULT
LATENCY_REL = 0.10
LATENCY_ABS_MS = 5.0
FANOUT_ABS = 0.2
FANOUT_REL = 0.10
ERROR_ABS = 0.01
#: A new or vanished edge or error type needs this many occurrences on the side that has it.
MIN_OCCURRENCES = 3
#: The run-wide factor on own time is taken from at least this many operations (else none: 1.0).
SCALE_MIN_OPS = 3


@dataclass
class Finding:
    """One difference: its kind, what it is about, a one-line sentence with numbers, the numbers."""

    kind: str
    subject: str
    text: str
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Diff:
    a: str
    b: str
    findings: list[Finding] = field(default_factory=list)
    #: Shifts passed on from downstream, and traffic warnings: context, not findings.
    notes: list[Finding] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "summary": self.summary,
                "findings": [f.to_json() for f in self.findings], "notes": [n.to_json() for n in self.notes]}


def _op(key: tuple[str, str]) -> str:
    return f"{key[0]}:{key[1]}"


def _pct(a: float, b: float) -> float:
    return (b - a) / a if a else (0.0 if b == a else float("inf"))


def fmt_p(p: float) -> str:
    return "p<0.0001" if p < 1e-4 else f"p={p:.4f}"


def diff_fanout(a: Profile, b: Profile) -> list[Finding]:
    out = []
    for entry in sorted(set(a.fanout) & set(b.fanout)):
        if a.entries[entry] < MIN_SAMPLE or b.entries[entry] < MIN_SAMPLE:
            continue
        for service in sorted(set(a.fanout[entry]) | set(b.fanout[entry])):
            xa = a.fanout[entry].get(service) or [0] * a.entries[entry]
            xb = b.fanout[entry].get(service) or [0] * b.entries[entry]
            ma, mb = sum(xa) / len(xa), sum(xb) / len(xb)
            if abs(mb - ma) < FANOUT_ABS or abs(_pct(ma, mb)) < FANOUT_REL:
                continue
            p = mann_whitney(xa, xb)
            if p >= ALPHA:
                continue
            verb = "now calls" if ma else "now also calls"
            out.append(Finding(
                "fanout", f"{_op(entry)} → {service}",
                f"{_op(entry)} {verb} {service} {mb:.1f}x per request instead of {ma:.1f}x "
                f"({len(xa)} vs {len(xb)} requests, {fmt_p(p)})",
                {"entry": _op(entry), "service": service, "a": round(ma, 3), "b": round(mb, 3), "p": p},
            ))
    return out


def diff_edges(a: Profile, b: Profile) -> list[Finding]:
    out = []
    for edge in sorted(set(a.edges) | set(b.edges)):
        na, nb = a.edges.get(edge, 0), b.edges.get(edge, 0)
        caller, callee = edge
        if na == 0 and nb >= MIN_OCCURRENCES and a.traces:
            out.append(Finding("edge_new", f"{caller} → {callee}",
                               f"new call {caller} → {callee} ({nb} calls; none before)",
                               {"caller": caller, "callee": callee, "a": na, "b": nb}))
        elif nb == 0 and na >= MIN_OCCURRENCES and b.traces:
            out.append(Finding("edge_gone", f"{caller} → {callee}",
                               f"{caller} no longer calls {callee} ({na} calls before, none now)",
                               {"caller": caller, "callee": callee, "a": na, "b": nb}))
    return out


def run_scale(a: Profile, b: Profile) -> float:
    """How much longer every operation's own time is in ``b`` than in ``a`` (the machine, not the code):
    the median over operations measured in both of the ratio of their self-time medians; 1.0 when fewer
    than :data:`SCALE_MIN_OPS` operations tell. A change to one operation, or a few, leaves it be."""
    ratios = []
    for key in set(a.ops) & set(b.ops):
        xa, xb = a.ops[key].self_ms, b.ops[key].self_ms
        if len(xa) >= MIN_SAMPLE and len(xb) >= MIN_SAMPLE:
            pa, pb = quantile(xa, 0.5), quantile(xb, 0.5)
            if pa > 0 and pb > 0:
                ratios.append(pb / pa)
    return statistics.median(ratios) if len(ratios) >= SCALE_MIN_OPS else 1.0


def latency_shift(sa: OpStats, sb: OpStats, *, self_time: bool = False, scale: float = 1.0) -> dict[str, Any] | None:
    """The shift between two samples when it is significant and material, else None. With ``scale``,
    the self time of ``sa`` is first multiplied by it (the run-wide factor, :func:`run_scale`)."""
    xa, xb = (sa.self_ms, sb.self_ms) if self_time else (sa.durations_ms, sb.durations_ms)
    if len(xa) < MIN_SAMPLE or len(xb) < MIN_SAMPLE:
        return None
    if self_time and scale != 1.0:
        xa = [x * scale for x in xa]
    p50a, p50b = quantile(xa, 0.5), quantile(xb, 0.5)
    delta = p50b - p50a
    if abs(delta) <= LATENCY_ABS_MS or abs(_pct(p50a, p50b)) <= LATENCY_REL:
        return None
    p = mann_whitney(xa, xb)
    if p >= ALPHA:
        return None
    out = {"p50_a": round(p50a, 2), "p50_b": round(p50b, 2), "p99_a": round(quantile(xa, 0.99), 2),
           "p99_b": round(quantile(xb, 0.99), 2), "delta_ms": round(delta, 2), "p": p, "n_a": len(xa), "n_b": len(xb)}
    if self_time and scale != 1.0:
        out["scale"] = round(scale, 3)
    return out


def _more_calls(sa: OpStats, sb: OpStats) -> tuple[float, float] | None:
    """Mean calls made per span before and after, when the operation now makes significantly more."""
    if not sa.calls or not sb.calls:
        return None
    ma, mb = sum(sa.calls) / len(sa.calls), sum(sb.calls) / len(sb.calls)
    if mb - ma >= FANOUT_ABS and mann_whitney(sa.calls, sb.calls) < ALPHA:
        return ma, mb
    return None


def _beyond(scale: float) -> str:
    return f" beyond the whole run's x{scale:.2f}" if abs(scale - 1) >= 0.05 else ""


def _total_text(key: tuple[str, str], sa: OpStats, sb: OpStats, total: dict[str, Any] | None) -> str:
    if total is None:  # the total did not move significantly: its medians, for context
        a, b = quantile(sa.durations_ms, 0.5), quantile(sb.durations_ms, 0.5)
        return f"{_op(key)}: p50 {a:.1f} → {b:.1f} ms in all (not a significant change)"
    word = "slower" if total["delta_ms"] > 0 else "faster"
    return (f"{_op(key)} {word}: p50 {total['p50_a']:.1f} → {total['p50_b']:.1f} ms, "
            f"p99 {total['p99_a']:.1f} → {total['p99_b']:.1f} ms ({total['n_a']} vs {total['n_b']} calls, "
            f"{fmt_p(total['p'])})")


def diff_latency(a: Profile, b: Profile) -> tuple[list[Finding], list[Finding]]:
    """Own-time shifts are findings, whatever the total did: on a busy machine the time an operation
    waits on its calls (client, proxy, connection) swings by tens of ms between runs, so 50 ms more of
    its own time can leave its total unchanged or even faster. A total shift with no own-time shift
    was passed on (or is the whole run's): a note."""
    findings, notes = [], []
    scale = run_scale(a, b)
    for key in sorted(set(a.ops) & set(b.ops)):
        sa, sb = a.ops[key], b.ops[key]
        total = latency_shift(sa, sb)
        own = latency_shift(sa, sb, self_time=True, scale=scale)
        if own is not None:
            text = _total_text(key, sa, sb, total)
            more = _more_calls(sa, sb)
            data = {**(total or {}), "self": own}
            if more is not None and own["delta_ms"] > 0:
                notes.append(Finding("latency_with_more_calls", _op(key),
                                     f"{text}; its own time {own['delta_ms']:+.1f} ms goes with the calls it makes "
                                     f"({more[0]:.1f} → {more[1]:.1f} per request)", data))
            else:
                findings.append(Finding("latency", _op(key),
                                        f"{text}; its own time {own['delta_ms']:+.1f} ms{_beyond(scale)} "
                                        f"(p50 {own['p50_a']:.1f} → {own['p50_b']:.1f} ms)", data))
        elif total is not None:
            text = _total_text(key, sa, sb, total)
            raw = latency_shift(sa, sb, self_time=True)
            if raw is not None:
                notes.append(Finding("latency_whole_run", _op(key), f"{text}; its own time {raw['delta_ms']:+.1f} "
                                     f"ms is the whole run's: every operation's own time is x{scale:.2f} (a busier "
                                     "or idler machine, not a change)",
                                     {**total, "self": raw, "scale": round(scale, 3)}))
            else:
                notes.append(Finding("latency_passed_on", _op(key), f"{text}; its own time did not change: "
                                     "the shift comes from a call it makes", total))
    return findings, notes


def diff_errors(a: Profile, b: Profile) -> tuple[list[Finding], list[Finding]]:
    findings, notes = [], []
    for key in sorted(set(a.ops) | set(b.ops)):
        sa, sb = a.ops.get(key, OpStats()), b.ops.get(key, OpStats())
        if sa.count < MIN_SAMPLE or sb.count < MIN_SAMPLE:
            continue
        ra, rb = sa.errors / sa.count, sb.errors / sb.count
        if abs(rb - ra) < ERROR_ABS:
            continue
        p = two_proportions(sa.errors, sa.count, sb.errors, sb.count)
        if p >= ALPHA:
            continue
        text = (f"{_op(key)} errors {ra:.1%} → {rb:.1%} ({sa.errors}/{sa.count} vs {sb.errors}/{sb.count}, "
                f"{fmt_p(p)})")
        data = {"a": ra, "b": rb, "p": p, "errors_a": sa.errors, "errors_b": sb.errors}
        oa, ob = sa.origin_errors / sa.count, sb.origin_errors / sb.count
        own_p = two_proportions(sa.origin_errors, sa.count, sb.origin_errors, sb.count)
        if abs(ob - oa) >= ERROR_ABS and own_p < ALPHA:
            findings.append(Finding("error_rate", _op(key), f"{text}; started here: {oa:.1%} → {ob:.1%}", data))
        else:
            notes.append(Finding("errors_passed_on", _op(key), f"{text}; passed on from a call it makes", data))
    return findings, notes


def diff_error_types(a: Profile, b: Profile) -> list[Finding]:
    out = []
    for key in sorted(set(a.error_types) | set(b.error_types)):
        na, nb = a.error_types.get(key, 0), b.error_types.get(key, 0)
        service, kind = key
        if na == 0 and nb >= MIN_OCCURRENCES - 1:
            out.append(Finding("error_type_new", f"{service} {kind}",
                               f"{service} now raises {kind} ({nb}x; never before)",
                               {"service": service, "type": kind, "a": na, "b": nb}))
        elif nb == 0 and na >= MIN_OCCURRENCES - 1:
            out.append(Finding("error_type_gone", f"{service} {kind}",
                               f"{service} no longer raises {kind} ({na}x before)",
                               {"service": service, "type": kind, "a": na, "b": nb}))
    return out


def diff_alerts(a: Profile, b: Profile) -> list[Finding]:
    out = []
    for rule in sorted(set(a.fired) ^ set(b.fired)):
        if rule in b.fired:
            out.append(Finding("alert_fired", rule, f"alert {rule} fired ({b.fired[rule]}x) and did not before",
                               {"rule": rule, "a": 0, "b": b.fired[rule]}))
        else:
            out.append(Finding("alert_quiet", rule, f"alert {rule} no longer fires (fired {a.fired[rule]}x before)",
                               {"rule": rule, "a": a.fired[rule], "b": 0}))
    return out


def _show(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str) if not isinstance(value, str) else value


def diff_registry(a: Profile, b: Profile) -> list[Finding]:
    out = []
    ra, rb = a.registry, b.registry
    for section in ("services", "routing_rules", "alert_rules", "silences"):
        xa, xb = ra.get(section) or {}, rb.get(section) or {}
        for key in sorted(set(xa) | set(xb)):
            if key not in xa:
                out.append(Finding("config", f"{section} {key}", f"{section.replace('_', ' ')}: {key} added",
                                   {"section": section, "key": key, "b": xb[key]}))
            elif key not in xb:
                out.append(Finding("config", f"{section} {key}", f"{section.replace('_', ' ')}: {key} removed",
                                   {"section": section, "key": key, "a": xa[key]}))
            elif xa[key] != xb[key]:
                if isinstance(xa[key], dict) and isinstance(xb[key], dict):
                    changed = [f"{k} {_show(xa[key].get(k))} → {_show(xb[key].get(k))}"
                               for k in sorted(set(xa[key]) | set(xb[key])) if xa[key].get(k) != xb[key].get(k)]
                else:
                    changed = [f"{_show(xa[key])} → {_show(xb[key])}"]
                out.append(Finding("config", f"{section} {key}",
                                   f"{section.replace('_', ' ')}: {key}: " + "; ".join(changed),
                                   {"section": section, "key": key, "a": xa[key], "b": xb[key]}))
    fa, fb = set(ra.get("faults") or []), set(rb.get("faults") or [])
    for fault in sorted(fa ^ fb):
        out.append(Finding("config", "fault", f"fault rule {'in effect' if fault in fb else 'gone'}: {fault}",
                           {"section": "faults", "rule": fault, "in": "b" if fault in fb else "a"}))
    return out


def traffic_notes(a: Profile, b: Profile) -> list[Finding]:
    out = []
    for entry in sorted(set(a.entries) ^ set(b.entries)):
        where = "B" if entry in b.entries else "A"
        n = (b.entries if entry in b.entries else a.entries)[entry]
        out.append(Finding("traffic", _op(entry), f"entry {_op(entry)} only in {where} ({n} requests): not compared",
                           {"entry": _op(entry), "in": where, "requests": n}))
    return out


def diff(a: Profile, b: Profile) -> Diff:
    """Everything that changed from ``a`` to ``b`` (see the module docstring)."""
    result = Diff(a.label, b.label)
    latency, latency_notes = diff_latency(a, b)
    errors, error_notes = diff_errors(a, b)
    result.findings = [*diff_fanout(a, b), *diff_edges(a, b), *latency, *errors, *diff_error_types(a, b),
                       *diff_alerts(a, b), *diff_registry(a, b)]
    result.notes = [*latency_notes, *error_notes, *traffic_notes(a, b)]
    result.summary = {
        side: {"label": p.label, "window": p.window, "traces": p.traces,
               "entries": {_op(k): v for k, v in p.entries.items()}}
        for side, p in (("a", a), ("b", b))
    }
    result.summary["own_time_scale"] = round(run_scale(a, b), 3)
    return result
