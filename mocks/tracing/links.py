"""Dependency links kept at index time: service→service call counts per minute.

``/dependencies`` and ``/api/topology`` used to load every span of their window (up to 200k
objects: ~23 s and +200 MB for an hour of 200k spans) and link them. The indexer now keeps, per
minute bucket, parent service, child service: calls, errors, the sum and max of call latency and a
latency histogram (table ``links``), plus span and error counts per service and minute (table
``service_minutes``); a query sums the buckets of its window.

Which spans make a call is :mod:`~devbox.mocks.tracing.analysis`'s rule (it imports its loop
breaker and caller kinds from here, so the indexer does not import networkx), applied by
:func:`calls_of` to one trace's spans as light tuples (:data:`Light`) — the same tree (Zipkin
shared spans paired by id, missing parents make roots, loops broken) and the same calls. Spans of
one trace arrive over several batches (a parent often after its children): for each trace a batch
touches, the indexer links the trace's stored spans before and after the batch and adds the
difference, so the counts are those of linking every trace whole. A call is counted in the minute
its callee span started (an uninstrumented peer: the minute of the caller's span).

LIMITATIONS: windows are whole minutes (a window's edges include up to a minute more); latency
percentiles come from the histogram (buckets of 2^(1/16), under 4.5 % off; the max is exact
unless a call was re-linked away); a trace's stored spans are read again each time a later batch
adds to it (linear in its size per batch).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

#: A node of a span tree: a span id (OTLP), or (span id, n) where Zipkin spans share an id.
K = TypeVar("K", bound=Hashable)

MINUTE_US = 60_000_000
CALLER_KINDS = ("CLIENT", "PRODUCER")

#: A span as the linker reads it: span_id, parent_id, kind, service, remote_service, start_us,
#: duration_us, error (0/1).
Light = tuple[str, str | None, str, str, str | None, int, int, int]
#: (minute, caller, callee) -> [calls, errors, sum_us, max_us, {bucket: count}]
Delta = dict[tuple[int, str, str], list[Any]]

_SCALE = 16 / math.log(2)


def bucket_of(duration_us: int) -> int:
    """The histogram bucket of a latency: 0 for 0-1 µs, else ceil(16 * log2(µs))."""
    return 0 if duration_us <= 1 else math.ceil(math.log(duration_us) * _SCALE - 1e-9)


def bucket_top(bucket: int) -> int:
    return 1 if bucket <= 0 else round(2 ** (bucket / 16))


def calls_of(spans: Sequence[Light]) -> list[tuple[int, str, str, int, int]]:
    """The calls of one trace as (start_us of the call's bucket span, caller, callee, duration_us,
    error) — :func:`analysis.calls` over :func:`analysis.build_tree`, without objects or graphs."""
    unique = {s[0]: s for s in spans}
    if len(unique) == len(spans):
        return _calls_of_unique(spans, unique)
    by_id: dict[str, list[Light]] = defaultdict(list)
    for s in spans:
        by_id[s[0]].append(s)
    keyed: dict[tuple[str, int], Light] = {}
    owner: dict[str, tuple[str, int]] = {}
    extra_parent: dict[tuple[str, int], tuple[str, int]] = {}
    for span_id, group in by_id.items():
        group.sort(key=lambda s: (s[2] != "CLIENT", s[5]))
        keys = [(span_id, i) for i in range(len(group))]
        for key, s in zip(keys, group, strict=True):
            keyed[key] = s
        owner[span_id] = keys[0]
        for key, s in zip(keys[1:], group[1:], strict=True):
            if s[2] == "SERVER" and group[0][2] == "CLIENT":
                extra_parent[key] = keys[0]
                owner[span_id] = key
    parent_of: dict[tuple[str, int], tuple[str, int]] = {}
    for key, s in keyed.items():
        parent = extra_parent.get(key)
        if parent is None and s[1]:
            parent = owner.get(s[1])
        if parent is not None and parent != key:
            parent_of[key] = parent
    break_cycles(parent_of)
    return _calls_in_tree(parent_of, keyed)


def _calls_of_unique(spans: Sequence[Light], by_id: dict[str, Light]) -> list[tuple[int, str, str, int, int]]:
    """:func:`calls_of` for a trace whose span ids are all different (no Zipkin shared spans: every
    OTLP trace), where a span's id is its key in the tree: the same calls, without the grouping."""
    parent_of = {s[0]: s[1] for s in spans if s[1] and s[1] != s[0] and s[1] in by_id}
    break_cycles(parent_of)
    return _calls_in_tree(parent_of, by_id)


def _calls_in_tree(parent_of: Mapping[K, K], span_of: Mapping[K, Light]) -> list[tuple[int, str, str, int, int]]:
    """The calls of a span tree (``parent_of``: node -> its parent, cycles broken): one per edge that
    crosses services, timed by the caller's side when it has one; and a client span with no child of
    the remote service (an uninstrumented callee) is a call to its remote service."""
    out: list[tuple[int, str, str, int, int]] = []
    has_remote_child: set[K] = set()
    for key, parent in parent_of.items():
        p, c = span_of[parent], span_of[key]
        if p[3] == c[3]:
            continue
        has_remote_child.add(parent)
        duration = p[6] if p[2] in CALLER_KINDS else c[6]
        out.append((c[5], p[3], c[3], duration, int(bool(c[7]) or (p[2] == "CLIENT" and bool(p[7])))))
    for key, s in span_of.items():
        if s[2] in CALLER_KINDS and key not in has_remote_child and s[4] and s[4] != s[3]:
            out.append((s[5], s[3], s[4], s[6], int(bool(s[7]))))
    return out


def break_cycles(parent_of: dict[Any, Any]) -> None:
    """Bad data can make spans each other's ancestors: drop the link that closes each loop, so its
    span becomes a root. Linear: every node is walked up once (marked with the walk that reached it,
    so a walk that meets its own mark closed a loop and one that meets an older mark can stop)."""
    walk_of: dict[Any, int] = {}
    for walk, node in enumerate(list(parent_of)):
        last = None
        while node is not None:
            seen = walk_of.get(node)
            if seen is not None:
                if seen == walk:
                    del parent_of[last]  # the last link walked closes the loop
                break
            walk_of[node] = walk
            last = node
            node = parent_of.get(node)


def add_calls(delta: Delta, calls: Iterable[tuple[int, str, str, int, int]], sign: int) -> None:
    for start_us, caller, callee, duration, error in calls:
        row = delta.get((start_us // MINUTE_US, caller, callee))
        if row is None:
            row = delta[(start_us // MINUTE_US, caller, callee)] = [0, 0, 0, 0, {}]
        row[0] += sign
        row[1] += sign * error
        row[2] += sign * duration
        if sign > 0 and duration > row[3]:
            row[3] = duration
        b = bucket_of(duration)
        row[4][b] = row[4].get(b, 0) + sign


def percentile(hist: dict[int, int], total: int, q: float, top: int) -> int:
    """Nearest-rank percentile of a histogram (the bucket's upper bound, at most ``top``)."""
    if total <= 0:
        return 0
    rank = max(1, math.ceil(q * total))
    seen = 0
    for b in sorted(hist):
        seen += hist[b]
        if seen >= rank:
            return min(bucket_top(b), top)
    return top
