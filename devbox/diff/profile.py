"""A run's profile: what the diff compares, computed once from one :class:`Evidence`.

From the spans (Zipkin JSON rows, read back into the collector's :class:`Span` so the tracing
analysis applies unchanged): per entry operation the calls each service receives per request
(one count per trace, so the diff can test the distribution), the topology edges, per
service/operation the latency, the *self time* (the span's time not spent waiting on calls it
made — a shift here is where time was added, a shift only in the total was passed on from
downstream), errors and exception types from span events; per instance the same, for outliers.
From the rest: alert rules that fired, and the registry and rules as comparable summaries.

Names are lower-case: the Zipkin API answers them so, as the real server does.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from devbox.mocks.tracing.analysis import CALLEE_KINDS, build_tree, calls, group_traces
from devbox.mocks.tracing.links import CALLER_KINDS
from devbox.mocks.tracing.models import Span
from devbox.snapshot.collect import PROBE_ROOTS
from devbox.snapshot.format import Evidence

#: Tags that describe the process or the request instance, not the configuration (ids, ports, times).
VOLATILE_META = ("devbox.instance",)


def span_of(row: dict[str, Any]) -> Span:
    """A Zipkin v2 JSON span as the analysis reads it (names kept as answered: lower-case)."""
    tags = {str(k): v for k, v in (row.get("tags") or {}).items()}
    error = "error" in tags or tags.get("otel.status_code") == "ERROR"
    remote = (row.get("remoteEndpoint") or {}).get("serviceName")
    return Span(
        trace_id=row["traceId"], span_id=row["id"], parent_id=row.get("parentId"), name=str(row.get("name") or ""),
        kind=row.get("kind") or "INTERNAL", service=str((row.get("localEndpoint") or {}).get("serviceName") or ""),
        start_us=int(row.get("timestamp") or 0), duration_us=int(row.get("duration") or 0), error=error,
        status_message=str(tags.get("otel.status_description") or (tags.get("error") if error else "") or ""),
        attributes=tags, remote_service=remote,
        annotations=[(int(a.get("timestamp") or 0), str(a.get("value") or "")) for a in row.get("annotations") or []],
    )


def exception_types(span: Span) -> list[str]:
    """``exception.type`` of the span's exception events (OTel events come back as Zipkin annotations
    ``exception: {json}``; a span that kept its events is read directly)."""
    out = [str((e.get("attributes") or {}).get("exception.type")) for e in span.events
           if e.get("name") == "exception" and (e.get("attributes") or {}).get("exception.type")]
    for _, value in span.annotations:
        if value.startswith("exception: {"):
            try:
                attrs = json.loads(value[len("exception: "):])
            except ValueError:
                continue
            if attrs.get("exception.type"):
                out.append(str(attrs["exception.type"]))
    return out


def calls_made(tree: Any, key: str) -> int:
    """How many calls the span made (CLIENT/PRODUCER spans or other services' spans under it, the
    walk stopping at each, as :func:`self_time_us` walks)."""
    span = tree.spans[key]
    count, stack = 0, list(tree.children(key))
    while stack:
        child = stack.pop()
        s = tree.spans[child]
        if s.kind in CALLER_KINDS or s.service != span.service:
            count += 1
        else:
            stack.extend(tree.children(child))
    return count


def self_time_us(tree: Any, key: str) -> int:
    """The span's duration minus the time it waited on calls it made (union of those intervals).

    Walks the span's same-service descendants; a CLIENT/PRODUCER span, or a span of another
    service, is a call: its interval counts as waiting and the walk stops there."""
    span = tree.spans[key]
    intervals: list[tuple[int, int]] = []
    stack = list(tree.children(key))
    while stack:
        child = stack.pop()
        s = tree.spans[child]
        if s.kind in CALLER_KINDS or s.service != span.service:
            intervals.append((max(s.start_us, span.start_us), min(s.end_us, span.end_us)))
        else:
            stack.extend(tree.children(child))
    covered, cursor = 0, span.start_us
    for lo, hi in sorted(intervals):
        lo = max(lo, cursor)
        if hi > lo:
            covered += hi - lo
            cursor = hi
    return max(int(span.duration_us) - covered, 0)


def _subtree_calls(tree: Any, key: str) -> list[str]:
    """The span's same-service descendants and the first spans of the calls it made."""
    span = tree.spans[key]
    out: list[str] = []
    stack = list(tree.children(key))
    while stack:
        child = stack.pop()
        out.append(child)
        s = tree.spans[child]
        if s.service == span.service:
            stack.extend(tree.children(child))
    return out


@dataclass
class OpStats:
    """One service/operation (or one instance of it): what it was asked, how long, how it failed."""

    durations_ms: list[float] = field(default_factory=list)
    self_ms: list[float] = field(default_factory=list)
    errors: int = 0
    #: Calls each span made (one number per span): a span that makes more calls spends more own time.
    calls: list[int] = field(default_factory=list)
    #: Errors that started here: the span failed and none of its children did (``traces why``'s rule).
    origin_errors: int = 0

    @property
    def count(self) -> int:
        return len(self.durations_ms)


@dataclass
class Profile:
    """The comparable facts of one run (see the module docstring)."""

    label: str
    window: tuple[float, float]
    #: entry (service, op) -> requests
    entries: dict[tuple[str, str], int] = field(default_factory=dict)
    #: entry -> callee service -> calls received in each trace of that entry (one number per trace)
    fanout: dict[tuple[str, str], dict[str, list[int]]] = field(default_factory=dict)
    #: (caller, callee) -> calls
    edges: dict[tuple[str, str], int] = field(default_factory=dict)
    ops: dict[tuple[str, str], OpStats] = field(default_factory=dict)
    #: (service, op, instance id) -> stats
    instances: dict[tuple[str, str, str], OpStats] = field(default_factory=dict)
    #: (service, exception type) -> count
    error_types: dict[tuple[str, str], int] = field(default_factory=dict)
    fired: dict[str, int] = field(default_factory=dict)
    registry: dict[str, Any] = field(default_factory=dict)
    traces: int = 0


def is_probe(root: Span) -> bool:
    return root.name.lower() in PROBE_ROOTS


def profile(ev: Evidence, *, spans: Iterable[Span] | None = None) -> Profile:
    """The profile of ``ev`` (or of ``spans`` given already converted, with ``ev``'s other parts)."""
    out = Profile(label=ev.label(), window=ev.window)
    fan: dict[tuple[str, str], dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    edges: dict[tuple[str, str], int] = defaultdict(int)
    ops: dict[tuple[str, str], OpStats] = defaultdict(OpStats)
    inst: dict[tuple[str, str, str], OpStats] = defaultdict(OpStats)
    etypes: dict[tuple[str, str], int] = defaultdict(int)
    entries: dict[tuple[str, str], int] = defaultdict(int)
    converted = list(spans) if spans is not None else [span_of(r) for r in ev.spans]
    for trace in group_traces(converted).values():
        tree = build_tree(trace)
        root_key = tree.main_root
        root = tree.spans[root_key]
        if is_probe(root):
            continue
        out.traces += 1
        entry = (root.service, root.name)
        entries[entry] += 1
        received: dict[str, int] = defaultdict(int)
        for key, s in tree.spans.items():
            if s.kind in CALLEE_KINDS or key == root_key:
                if key != root_key:
                    received[s.service] += 1
                stats = ops[(s.service, s.name)]
                stats.durations_ms.append(s.duration_us / 1000)
                stats.self_ms.append(self_time_us(tree, key) / 1000)
                stats.calls.append(calls_made(tree, key))
                stats.errors += int(s.error)
                origin = s.error and not any(tree.spans[c].error for c in _subtree_calls(tree, key))
                stats.origin_errors += int(origin)
                instance = str(s.attributes.get("service.instance.id") or "")
                if instance:
                    one = inst[(s.service, s.name, instance)]
                    one.durations_ms.append(s.duration_us / 1000)
                    one.self_ms.append(stats.self_ms[-1])
                    one.errors += int(s.error)
                    one.origin_errors += int(origin)
            for kind in exception_types(s):
                etypes[(s.service, kind)] += 1
        for call in calls(tree):
            edges[(call.caller, call.callee)] += 1
            if not call.traced:
                received[call.callee] += 1
        per_entry = fan[entry]
        for service in set(received) | set(per_entry):
            # a service this trace did not call counts 0 for it; earlier traces that missed a
            # service first seen now are filled in with zeros
            column = per_entry[service]
            column.extend([0] * (entries[entry] - 1 - len(column)))
            column.append(received.get(service, 0))
    for entry, per in fan.items():
        for column in per.values():
            column.extend([0] * (entries[entry] - len(column)))
    out.entries = dict(entries)
    out.fanout = {k: dict(v) for k, v in fan.items()}
    out.edges = dict(edges)
    out.ops = dict(ops)
    out.instances = dict(inst)
    out.error_types = dict(etypes)
    out.fired = fired_rules(ev.transitions)
    out.registry = registry_summary(ev)
    return out


def fired_rules(transitions: Iterable[dict[str, Any]]) -> dict[str, int]:
    """Alert rule name -> how many times it went to firing."""
    out: dict[str, int] = defaultdict(int)
    for t in transitions:
        state = str(t.get("to") or "").lower()
        if state == "firing":
            out[str(t.get("alertname") or t.get("rule") or "?")] += 1
    return dict(out)


def registry_summary(ev: Evidence) -> dict[str, Any]:
    """The configuration a reviewer compares: per service its instance count, versions, weights and
    tags (ids, ports and times left out: they differ on every run); rules by name; alert rules by
    expression; silences by matchers; fault rules in effect."""
    services: dict[str, dict[str, Any]] = {}
    for i in ev.instances:
        svc = services.setdefault(f"{i.get('namespace')}/{i.get('service')}",
                                  {"instances": 0, "versions": set(), "weights": set(), "tags": set(),
                                   "isolated": 0})
        svc["instances"] += 1
        svc["versions"].add(str(i.get("version") or ""))
        svc["weights"].add(int(i.get("weight") or 0))
        svc["isolated"] += int(bool(i.get("isolated")))
        meta = {k: v for k, v in (i.get("metadata") or {}).items() if k not in VOLATILE_META}
        svc["tags"].add(json.dumps(meta, sort_keys=True))
    for svc in services.values():
        for key in ("versions", "weights", "tags"):
            svc[key] = sorted(svc[key])
    rules = {f"{r.get('namespace')}/{r.get('service')}/{r.get('name')}": _strip(r) for r in ev.routing_rules}
    alerts = {str(r.get("id") or r.get("name")): {"expr": r.get("expr"), "for": r.get("for")} for r in ev.alert_rules}
    silences = {str(s.get("matchers_text") or json.dumps(s.get("matchers"), sort_keys=True)): s.get("comment", "")
                for s in ev.silences if s.get("state", "active") == "active"}
    faults = {json.dumps(_strip(f), sort_keys=True): 1 for f in ev.faults}
    return {"services": services, "routing_rules": rules, "alert_rules": alerts, "silences": silences,
            "faults": sorted(faults)}


def _strip(item: dict[str, Any]) -> dict[str, Any]:
    """A rule without its bookkeeping (ids, revisions, times, counters)."""
    return {k: v for k, v in item.items()
            if k not in ("id", "revision", "created", "updated", "ctime", "mtime", "hits", "matched", "applied")}
