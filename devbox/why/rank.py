"""Rank the likely causes of a service's trouble from several signals. Pure (no I/O).

Input (:class:`Case`): the spans of the window before the moment asked about and of the window
before that, the deploy events and releases around it, the fault rules and routing rules in effect,
the registry. Each signal gives suspects a score in [0, 1] with a one-line reason with numbers;
a suspect's score is the noisy-OR of its distinct signals (``1 - prod(1 - s)``, each signal at its
strongest), so agreeing signals raise it, one weak signal stays weak, and one signal seen from many
places (a callee slower from each of its callers) does not pile up.

Signals, and the score each gives:

- **error origin** (≤ 0.9): where the failing traces' errors started (the deepest failing span, as
  ``traces why`` finds it), aggregated over the window: share of failing traces. A call that failed
  before reaching its callee (a CLIENT span with no server span under it, or a span with the SDK's
  ``devbox.naming.unresolved`` event: no instance was left to send it to) points at the route to the
  callee, and at the routing rules of that callee.
- **release/deploy** (≤ 0.5): a release, reload or restart of a service on the failing path in the
  window, more when it came just before the trouble.
- **latency per hop** (≤ 0.6): the operations whose own time (self time) or whose calls' time
  grew from the preceding window (Mann-Whitney U, p < 0.01, > 10 % and > 5 ms), weighted by their
  share of the largest shift.
- **instance outlier** (≤ 0.8): one instance whose calls are slower or fail more than the other
  instances of its service in the same window.
- **fault rule** (0.4): a fault rule in effect on a service on the failing path.
- **routing rule** (≤ 0.9): a rule on a service whose calls fail before reaching it.
- **breaker** (≤ 0.7): an instance the callers' circuit breakers kept out of (or only probed) at a larger
  share of the window's picks of its service than of the preceding window's (two-proportion test,
  p < 0.01, by ≥ 10 points): 0.7 x the change. A breaker that closed again (the instance back in
  rotation) scores 0.3 x the change. The breaker state is the callers' own (the SDK's), read from
  the ``devbox.naming.pick`` events it records on the span of each call, as ``devbox explain`` reads it.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from devbox.diff.core import latency_shift
from devbox.diff.profile import OpStats, is_probe, self_time_us
from devbox.diff.stats import ALPHA_DEFAULT, mann_whitney, quantile, two_proportions
from devbox.mocks.tracing.analysis import build_tree, calls, group_traces, root_cause
from devbox.mocks.tracing.links import CALLER_KINDS
from devbox.mocks.tracing.models import Span

DEPLOY_KINDS = ("release", "release_batch", "release_done", "reload", "reloaded", "restarted", "crashed", "scaled",
                "started", "killed")


@dataclass
class Case:
    """What the ranking reads (see the module docstring)."""

    service: str
    at: float
    window: float
    now: list[Span]
    before: list[Span]
    deploy_events: list[dict[str, Any]] = field(default_factory=list)
    faults: list[dict[str, Any]] = field(default_factory=list)
    routing_rules: list[dict[str, Any]] = field(default_factory=list)
    instances: list[dict[str, Any]] = field(default_factory=list)
    #: service -> its circuit-breaker settings in naming, for services that have their own
    breakers: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class Suspect:
    subject: str
    signals: list[tuple[str, float, str]] = field(default_factory=list)

    @property
    def score(self) -> float:
        """The noisy-OR of its distinct signals, each at its strongest: the same signal seen several
        times (calls to a service slower from each of its callers) is one piece of evidence."""
        strongest: dict[str, float] = {}
        for name, s, _ in self.signals:
            strongest[name] = max(s, strongest.get(name, 0.0))
        return 1 - math.prod(1 - s for s in strongest.values())

    @property
    def reason(self) -> str:
        ordered = sorted(self.signals, key=lambda sig: -sig[1])
        first = ordered[0][2]
        rest = "; ".join(f"{name}: {text}" for name, _, text in ordered[1:])
        return f"{first}" + (f" (also {rest})" if rest else "")

    def to_json(self) -> dict[str, Any]:
        return {"subject": self.subject, "score": round(self.score, 3), "reason": self.reason,
                "signals": [{"signal": n, "score": round(s, 3), "text": t} for n, s, t in self.signals]}


class Board:
    """The suspects so far, by subject."""

    def __init__(self) -> None:
        self.suspects: dict[str, Suspect] = {}

    def add(self, subject: str, signal: str, score: float, text: str) -> None:
        if score <= 0:
            return
        self.suspects.setdefault(subject, Suspect(subject)).signals.append((signal, min(score, 0.99), text))

    def ranked(self) -> list[Suspect]:
        return sorted(self.suspects.values(), key=lambda s: (-s.score, s.subject))


def _traces(spans: Iterable[Span]) -> list[Any]:
    out = []
    for trace in group_traces(spans).values():
        tree = build_tree(trace)
        if not is_probe(tree.spans[tree.main_root]):
            out.append(tree)
    return out


def failing_path(service: str, trees: list[Any]) -> set[str]:
    """The service and every service it calls, directly or not, in these traces."""
    graph = nx.DiGraph()
    for tree in trees:
        graph.add_edges_from((c.caller, c.callee) for c in calls(tree))
    if service not in graph:
        return {service}
    return {service, *nx.descendants(graph, service)}


def _short(instance: str, instances: dict[str, dict[str, Any]]) -> str:
    found = instances.get(instance)
    where = f" {found['host']}:{found['port']}" if found else ""
    name = (found or {}).get("metadata", {}).get("devbox.instance")
    return f"{name or instance[:10]}{where}"


def _describe(cause: dict[str, Any]) -> str:
    """What failed, in a few words: the span's message, else its name and status code."""
    message = str(cause.get("message") or "")
    if message and message.lower() not in ("true", "error"):
        return f"{cause['name']}: {message}"
    attrs = cause.get("attributes") or {}
    code = attrs.get("http.status_code") or attrs.get("http.response.status_code") or attrs.get("rpc.grpc.status_code")
    return f"{cause['name']} answered {code}" if code else str(cause["name"])


UNRESOLVED = "devbox.naming.unresolved"
PICK = "devbox.naming.pick"


def span_events(span: Span, name: str) -> list[dict[str, Any]]:
    """The attributes of the span's ``name`` events: OTel events, and the ``name: {json}`` Zipkin
    annotations such events become when the spans are read through Zipkin."""
    out = [dict(e.get("attributes") or {}) for e in span.events if e.get("name") == name]
    prefix = name + ": {"
    for _, value in span.annotations:
        if value.startswith(prefix):
            try:
                attrs = json.loads(value[len(name) + 2:])
            except ValueError:
                continue
            if isinstance(attrs, dict):
                out.append(attrs)
    return out


def _unresolved(span: Span) -> tuple[str, str] | None:
    """``(service, reason)`` of a call the SDK could not send for want of an instance (its
    ``devbox.naming.unresolved`` event)."""
    for attrs in span_events(span, UNRESOLVED):
        if attrs.get("service"):
            return str(attrs["service"]), str(attrs.get("reason") or "no instance")
    return None


def origin_signal(board: Board, case: Case, trees: list[Any], path: set[str]) -> int:
    """Error origin of the failing traces through the service; returns how many failed."""
    failing = [t for t in trees if any(s.error for s in t.spans.values())
               and any(s.service == case.service for s in t.spans.values())]
    origins: dict[tuple[str, str], list[str]] = defaultdict(list)
    for tree in failing:
        seen: set[tuple[str, str]] = set()
        for cause in root_cause(list(tree.spans.values()))["causes"]:
            span_kind, remote = cause["kind"], cause.get("attributes", {}).get("peer.service")
            key_span = next((s for s in tree.spans.values() if s.span_id == cause["span_id"]), None)
            remote = remote or (key_span.remote_service if key_span else None)
            unresolved = _unresolved(key_span) if key_span is not None else None
            if unresolved is not None:  # the SDK found no instance to send the call to: it never left
                key, what = ("unreached", unresolved[0]), unresolved[1]
            elif span_kind in CALLER_KINDS and remote and remote != cause["service"]:
                key, what = ("unreached", remote), _describe(cause)
            else:
                key, what = ("origin", f"{cause['service']}"), _describe(cause)
            if key not in seen:
                seen.add(key)
                origins[key].append(what)
    for (kind, subject), messages in origins.items():
        share = len(messages) / len(failing)
        common = max(set(messages), key=messages.count)
        if kind == "origin":
            board.add(subject, "error origin", 0.9 * share,
                      f"errors start here in {len(messages)}/{len(failing)} failing traces ({share:.0%}): "
                      f"{clip(common, 80)}")
        else:
            board.add(f"route to {subject}", "error origin", 0.6 * share,
                      f"calls to {subject} fail before reaching it in {len(messages)}/{len(failing)} failing traces "
                      f"({share:.0%}): {clip(common, 80)}")
            for rule in case.routing_rules:
                if rule.get("service") in (subject, "*"):
                    name = f"routing rule {rule.get('service')}/{rule.get('name')}"
                    board.add(name, "routing rule", 0.9 * share,
                              f"routes calls to {subject}, which fail before reaching it in "
                              f"{len(messages)}/{len(failing)} failing traces ({share:.0%}): {clip(common, 80)}")
    return len(failing)


Stats = dict[tuple[str, str], OpStats]


def _op_stats(trees: list[Any], path: set[str]) -> tuple[Stats, Stats]:
    """Per service/operation on the path: server-side stats; per caller→callee: call (client-side) stats."""
    ops: dict[tuple[str, str], OpStats] = defaultdict(OpStats)
    hops: dict[tuple[str, str], OpStats] = defaultdict(OpStats)
    for tree in trees:
        for key, s in tree.spans.items():
            if s.service in path and s.kind in ("SERVER", "CONSUMER"):
                st = ops[(s.service, s.name)]
                st.durations_ms.append(s.duration_us / 1000)
                st.self_ms.append(self_time_us(tree, key) / 1000)
        for c in calls(tree):
            if c.callee in path:
                st = hops[(c.caller, c.callee)]
                st.durations_ms.append(c.duration_us / 1000)
                st.self_ms.append(c.duration_us / 1000)
    return ops, hops


def latency_signal(board: Board, now: list[Any], before: list[Any], path: set[str]) -> None:
    ops_now, hops_now = _op_stats(now, path)
    ops_before, hops_before = _op_stats(before, path)
    shifts: list[tuple[str, float, str]] = []
    for key in set(ops_now) & set(ops_before):
        own = latency_shift(ops_before[key], ops_now[key], self_time=True)
        if own and own["delta_ms"] > 0:
            shifts.append((key[0], own["delta_ms"], f"{key[0]}:{key[1]} own time p50 {own['p50_a']:.1f} → "
                           f"{own['p50_b']:.1f} ms (+{own['delta_ms']:.1f} ms, p={own['p']:.1g})"))
    for key in set(hops_now) & set(hops_before):
        hop = latency_shift(hops_before[key], hops_now[key])
        server = [k for k in ops_now if k[0] == key[1]]
        moved = any(latency_shift(ops_before[k], ops_now[k]) for k in server if k in ops_before)
        if hop and hop["delta_ms"] > 0 and not moved:
            # the call got slower while the callee's own spans did not: the time is added on the way
            shifts.append((key[1], hop["delta_ms"], f"calls {key[0]} → {key[1]} p50 {hop['p50_a']:.1f} → "
                           f"{hop['p50_b']:.1f} ms (+{hop['delta_ms']:.1f} ms) while {key[1]}'s own spans did not "
                           "change: time added between them (proxy, network, fault)"))
    if not shifts:
        return
    top = max(d for _, d, _ in shifts)
    for subject, delta, text in shifts:
        board.add(subject, "latency shift", 0.6 * delta / top, text)


@dataclass
class InstanceCalls:
    """One instance's calls in the window: how long each took as its caller saw it (a proxy's or the
    network's time included) where the caller's span is there, as the instance served it always."""

    called_ms: list[float] = field(default_factory=list)
    served_ms: list[float] = field(default_factory=list)
    errors: int = 0

    @property
    def count(self) -> int:
        return len(self.served_ms)

    @classmethod
    def merged(cls, parts: Iterable[InstanceCalls]) -> InstanceCalls:
        out = cls()
        for p in parts:
            out.called_ms += p.called_ms
            out.served_ms += p.served_ms
            out.errors += p.errors
        return out


#: Fewer calls than this on either side is no comparison.
OUTLIER_MIN_CALLS = 5


def outlier_signal(board: Board, case: Case, trees: list[Any], path: set[str]) -> None:
    """Per callee instance: its calls' latency and errors against the service's other instances.

    Latency is compared as the callers saw it where every side has enough calls whose caller's span is
    in the window's traces (time added in front of the instance shows only there), else as served: one
    measure on both sides, never a mix (a trace read before its caller's spans arrived has only the
    instance's own)."""
    by_instance: dict[str, dict[str, InstanceCalls]] = defaultdict(lambda: defaultdict(InstanceCalls))
    for tree in trees:
        for key, s in tree.spans.items():
            instance = str(s.attributes.get("service.instance.id") or "")
            if s.service not in path or s.kind not in ("SERVER", "CONSUMER") or not instance:
                continue
            parent = tree.parent(key)
            caller = tree.spans[parent] if parent and tree.spans[parent].kind in CALLER_KINDS else None
            st = by_instance[s.service][instance]
            st.served_ms.append(s.duration_us / 1000)
            if caller is not None:
                st.called_ms.append(caller.duration_us / 1000)
            st.errors += int(s.error or (caller is not None and caller.error))
    known = {str(i.get("id")): i for i in case.instances}
    for service, per in by_instance.items():
        if len(per) < 2:
            continue
        by_caller = all(len(st.called_ms) >= OUTLIER_MIN_CALLS for st in per.values())
        for instance, st in per.items():
            rest = InstanceCalls.merged(ost for other, ost in per.items() if other != instance)
            if st.count < OUTLIER_MIN_CALLS or rest.count < OUTLIER_MIN_CALLS:
                continue
            mine, others = (st.called_ms, rest.called_ms) if by_caller else (st.served_ms, rest.served_ms)
            a, b = quantile(others, 0.5), quantile(mine, 0.5)
            label = f"{service} instance {_short(instance, known)}"
            if b - a > 5 and b > 1.5 * a and mann_whitney(others, mine) < ALPHA_DEFAULT:
                board.add(label, "instance outlier", 0.8,
                          f"its calls take p50 {b:.1f} ms vs {a:.1f} ms on the other {len(per) - 1} instance(s) "
                          f"({len(mine)} vs {len(others)} calls{'' if by_caller else ', as served'})")
            ra, rb = rest.errors / rest.count, st.errors / st.count
            if rb - ra > 0.1 and two_proportions(rest.errors, rest.count, st.errors, st.count) < ALPHA_DEFAULT:
                board.add(label, "instance outlier", 0.8,
                          f"{rb:.0%} of its calls fail vs {ra:.0%} on the other {len(per) - 1} instance(s)")


def clip(text: str, limit: int) -> str:
    """``text`` in at most ``limit`` characters, cut after a whole word with an ellipsis."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1].rsplit(" ", 1)[0] if " " in text[: limit - 1] else text[: limit - 1]
    return cut.rstrip(" ,;:") + "…"


def deploy_signal(board: Board, case: Case, path: set[str], onset: float | None) -> None:
    seen: set[tuple[str, str]] = set()
    for e in sorted(case.deploy_events, key=lambda e: -float(e.get("ts") or 0)):
        service, kind, ts = str(e.get("service")), str(e.get("kind")), float(e.get("ts") or 0)
        if service not in path or kind not in DEPLOY_KINDS or ts > case.at or (service, kind) in seen:
            continue
        seen.add((service, kind))
        reference = onset if onset is not None else case.at
        ago = reference - ts
        # closer before the trouble counts more; after its onset it cannot have caused it
        near = 1.0 if 0 <= ago <= case.window else 0.5 if ago > case.window else 0.2
        weight = 0.5 if kind.startswith("release") or kind.startswith("reload") else 0.3
        board.add(service, "deploy", weight * near,
                  f"{_happened(kind, service)} {abs(ago):.0f} s {'before' if ago >= 0 else 'after'} the trouble "
                  f"began: {clip(str(e.get('message') or ''), 70)}")


def _happened(kind: str, service: str) -> str:
    """A deploy event as words: "release of payment", "payment crashed"."""
    words = kind.replace("_", " ")
    return f"{service} {words}" if words.endswith(("ed", "done")) else f"{words} of {service}"


def _instance_id(name: str, case: Case) -> str:
    """The naming id of an instance given by deploy name (``users-2``) or id."""
    found = next((i for i in case.instances if name in (i.get("id"), (i.get("metadata") or {}).get("devbox.instance"))),
                 None)
    return str(found["id"]) if found else name


def fault_signal(board: Board, case: Case, path: set[str]) -> None:
    known = {str(i.get("id")): i for i in case.instances}
    for f in case.faults:
        service = str(f.get("service"))
        if service not in path:
            continue
        what = ", ".join(x for x in (f"latency {f['latency_ms']:g} ms" if f.get("latency_ms") else "",
                                     f"errors {f['error_rate']:.0%}" if f.get("error_rate") else "",
                                     f"aborts {f['abort_rate']:.0%}" if f.get("abort_rate") else "") if x)
        scope = f" from {f['caller']}" if f.get("caller") else ""
        hits = (f.get("stats") or {}).get("hits", 0)
        # a rule on one instance points at that instance (the same subject the outlier signal names)
        subject = (f"{service} instance {_short(_instance_id(str(f['instance']), case), known)}" if f.get("instance")
                   else service)
        target = f"{service} instance {f['instance']}" if f.get("instance") else service
        board.add(subject, "fault rule", 0.4,
                  f"fault rule {f.get('id')} in effect: {what} on calls to {target}{scope} ({hits} calls hit)")


BREAKER_CHANGE = 0.10
#: A breaker seen open at fewer picks than this (on the side where it was) is not a change.
BREAKER_MIN_PICKS = 3


@dataclass
class BreakerTally:
    """One window's picks as the callers' breakers saw them: picks per callee service, and per
    (service, instance id) the picks at which that instance's breaker was not closed (kept out, or
    the chosen instance half-open or open), with the callers whose breakers they were."""

    picks: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    out: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    callers: dict[tuple[str, str], set[str]] = field(default_factory=lambda: defaultdict(set))

    @classmethod
    def of(cls, trees: list[Any], path: set[str]) -> BreakerTally:
        tally = cls()
        for tree in trees:
            for span in tree.spans.values():
                for pick in span_events(span, PICK):
                    service = str(pick.get("service") or "").lower()  # span names are read lower-cased
                    if service not in path:
                        continue
                    tally.picks[service] += 1
                    ids = {str(i) for i in pick.get("breaker_open_ids") or []}
                    if pick.get("breaker") in ("open", "half_open") and pick.get("instance_id"):
                        ids.add(str(pick["instance_id"]))
                    for instance in ids:
                        tally.out[(service, instance)] += 1
                        tally.callers[(service, instance)].add(span.service)
        return tally


def _settings(config: dict[str, Any] | None) -> str:
    return f"; its breaker settings: {', '.join(f'{k} {v}' for k, v in sorted(config.items()))}" if config else ""


def breaker_signal(board: Board, case: Case, now: list[Any], before: list[Any], path: set[str]) -> None:
    """Instances whose breakers (in the callers) were open at more — or fewer — of the window's picks
    of their service than of the preceding window's."""
    tn, tb = BreakerTally.of(now, path), BreakerTally.of(before, path)
    known = {str(i.get("id")): i for i in case.instances}
    for service, instance in sorted(set(tn.out) | set(tb.out)):
        n, b = tn.picks.get(service, 0), tb.picks.get(service, 0)
        xn, xb = tn.out.get((service, instance), 0), tb.out.get((service, instance), 0)
        share_n, share_b = (xn / n if n else 0.0), (xb / b if b else 0.0)
        change = share_n - share_b
        if abs(change) < BREAKER_CHANGE or max(xn, xb) < BREAKER_MIN_PICKS:
            continue
        if n and b and two_proportions(xb, b, xn, n) >= ALPHA_DEFAULT:
            continue
        counts = f"{xn}/{n} picks of {service} ({share_n:.0%}) vs {xb}/{b} ({share_b:.0%}) before"
        label = f"{service} instance {_short(instance, known)}"
        if change > 0:
            by = ", ".join(sorted(tn.callers[(service, instance)]))
            board.add(label, "breaker", 0.7 * change,
                      f"circuit breaker open for it in {by} at {counts}{_settings(case.breakers.get(service))}")
        else:
            board.add(label, "breaker", 0.3 * -change,
                      f"its circuit breaker closed again (back in rotation): open at {counts}")


def onset_of(trees: list[Any]) -> float | None:
    """When the first failing trace of the window started (epoch s), if any."""
    starts = [tree.spans[tree.main_root].start_us for tree in trees if any(s.error for s in tree.spans.values())]
    return min(starts) / 1e6 if starts else None


def rank(case: Case) -> dict[str, Any]:
    """Suspects, best first, with the facts they were ranked on."""
    now, before = _traces(case.now), _traces(case.before)
    path = failing_path(case.service, now + before)
    board = Board()
    failing = origin_signal(board, case, now, path)
    latency_signal(board, now, before, path)
    outlier_signal(board, case, now, path)
    deploy_signal(board, case, path, onset_of(now))
    fault_signal(board, case, path)
    breaker_signal(board, case, now, before, path)
    return {"service": case.service, "at": case.at, "window_s": case.window, "path": sorted(path),
            "traces": len(now), "traces_before": len(before), "failing_traces": failing,
            "suspects": [s.to_json() for s in board.ranked()]}
