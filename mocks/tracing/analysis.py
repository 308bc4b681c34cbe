"""Trace analysis on spans: service topology, root cause, critical path, per-entry fan-out.

Pure functions over :class:`Span` lists (no store, no sockets), graphs on networkx.

- A *call* between services is a span whose parent span belongs to another service (the
  client→server hop, or producer→consumer), or a CLIENT/PRODUCER span naming a remote service
  that has no instrumented child (the peer is not traced). Its latency is the caller-side span's
  duration when the caller recorded one, else the callee's; it is an error when the callee span or
  the caller's CLIENT span is an error.
- The *root cause* of a failed trace: the erroring spans none of whose children errored — where
  the error originated rather than where it was passed on — with the path from the root.
- The *critical path*: walking back from the root's end, the latest-finishing child at each point
  (clipped to what is still uncovered) is on the path; the rest of the time is the span's own.

LIMITATIONS: the topology is built from the spans of a time window, so traces crossing the window's
edge are counted partly; Zipkin "shared" spans (client and server with one id) are paired by id;
clock skew between services is not corrected (children are clipped to their parent's window).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from devbox.mocks.tracing.links import CALLER_KINDS, break_cycles
from devbox.mocks.tracing.models import Span

if TYPE_CHECKING:
    import networkx as nx

# networkx is imported where a graph is made, not here: the tracing component imports this module
# at start, and networkx was ~0.2 s of an empty project's `devbox up` (issue 15, platform up <= 1 s).

CALLEE_KINDS = ("SERVER", "CONSUMER")


# --- trace tree --------------------------------------------------------------------------------


@dataclass
class TraceTree:
    """One trace as a tree: nodes are unique keys (span ids, suffixed for Zipkin shared ids)."""

    graph: nx.DiGraph
    spans: dict[str, Span]

    @property
    def roots(self) -> list[str]:
        return sorted((k for k in self.graph if self.graph.in_degree(k) == 0),
                      key=lambda k: (self.spans[k].start_us, -self.spans[k].duration_us))

    @property
    def main_root(self) -> str:
        """The root that covers the most: the longest one (the request's entry span)."""
        return max(self.roots, key=lambda k: (self.spans[k].duration_us, -self.spans[k].start_us))

    def parent(self, key: str) -> str | None:
        preds = list(self.graph.predecessors(key))
        return preds[0] if preds else None

    def children(self, key: str) -> list[str]:
        return list(self.graph.successors(key))

    def path_to(self, key: str) -> list[str]:
        path = [key]
        while (up := self.parent(path[-1])) is not None:
            path.append(up)
        return path[::-1]


def build_tree(spans: Sequence[Span]) -> TraceTree:
    """The parent/child tree of one trace's spans. Spans whose parent is missing become roots."""
    by_id: dict[str, list[Span]] = defaultdict(list)
    for s in spans:
        by_id[s.span_id].append(s)
    keyed: dict[str, Span] = {}
    owner: dict[str, str] = {}  # span id -> key children attach to
    extra_parent: dict[str, str] = {}
    for span_id, group in by_id.items():
        group.sort(key=lambda s: (s.kind != "CLIENT", s.start_us))
        keys = [span_id if i == 0 else f"{span_id}#{i}" for i in range(len(group))]
        for key, s in zip(keys, group, strict=True):
            keyed[key] = s
        owner[span_id] = keys[0]
        for key, s in zip(keys[1:], group[1:], strict=True):
            if s.kind == "SERVER" and group[0].kind == "CLIENT":
                extra_parent[key] = keys[0]  # Zipkin shared span: the server half is the client's child
                owner[span_id] = key
    parent_of: dict[str, str] = {}
    for key, s in keyed.items():
        parent = extra_parent.get(key)
        if parent is None and s.parent_id:
            parent = owner.get(s.parent_id)
        if parent is not None and parent != key:
            parent_of[key] = parent
    break_cycles(parent_of)
    import networkx as nx

    graph = nx.DiGraph()
    graph.add_nodes_from(keyed)
    graph.add_edges_from((parent, key) for key, parent in parent_of.items())
    return TraceTree(graph=graph, spans=keyed)


def group_traces(spans: Iterable[Span]) -> dict[str, list[Span]]:
    traces: dict[str, list[Span]] = defaultdict(list)
    for s in spans:
        traces[s.trace_id].append(s)
    return traces


# --- calls between services and topology -------------------------------------------------------


@dataclass(frozen=True)
class Call:
    caller: str
    callee: str
    operation: str
    duration_us: int
    error: bool
    #: False when the callee was not traced (known only from the caller's remote service).
    traced: bool = True


def calls(tree: TraceTree) -> list[Call]:
    """Every call between two services in one trace (see the module docstring)."""
    out: list[Call] = []
    has_remote_child: set[str] = set()
    for parent_key, child_key in tree.graph.edges:
        p, c = tree.spans[parent_key], tree.spans[child_key]
        if p.service == c.service:
            continue
        has_remote_child.add(parent_key)
        duration = p.duration_us if p.kind in CALLER_KINDS else c.duration_us
        out.append(Call(p.service, c.service, c.name, duration, c.error or (p.kind == "CLIENT" and p.error)))
    for key, s in tree.spans.items():
        if (s.kind in CALLER_KINDS and key not in has_remote_child and s.remote_service
                and s.remote_service != s.service):
            out.append(Call(s.service, s.remote_service, s.name, s.duration_us, s.error, traced=False))
    return out


def percentile(sorted_values: Sequence[int], q: float) -> int:
    """Nearest-rank percentile of an ascending list (0 when empty)."""
    if not sorted_values:
        return 0
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def topology_graph(spans: Iterable[Span]) -> nx.DiGraph:
    """Services as nodes (span and error counts), calls as edges (counts and latencies)."""
    import networkx as nx

    graph = nx.DiGraph()
    latencies: dict[tuple[str, str], list[int]] = defaultdict(list)
    errors: dict[tuple[str, str], int] = defaultdict(int)
    for trace in group_traces(spans).values():
        for s in trace:
            if s.service not in graph:
                graph.add_node(s.service, spans=0, errors=0)
            graph.nodes[s.service]["spans"] += 1
            graph.nodes[s.service]["errors"] += int(s.error)
        for call in calls(build_tree(trace)):
            latencies[(call.caller, call.callee)].append(call.duration_us)
            errors[(call.caller, call.callee)] += int(call.error)
    for (caller, callee), values in latencies.items():
        values.sort()
        if callee not in graph:
            graph.add_node(callee, spans=0, errors=0)
        graph.add_edge(
            caller, callee, calls=len(values), errors=errors[(caller, callee)],
            error_rate=errors[(caller, callee)] / len(values), p50_us=percentile(values, 0.5),
            p90_us=percentile(values, 0.9), p99_us=percentile(values, 0.99),
            mean_us=round(sum(values) / len(values)), max_us=values[-1],
        )
    return graph


def topology(spans: Iterable[Span], service: str | None = None) -> dict[str, Any]:
    """The dependency graph as JSON; with ``service``, also who calls it and whom it calls,
    directly and transitively. Raises KeyError when ``service`` has no spans or calls."""
    return topology_of(topology_graph(spans), service)


def topology_of(graph: nx.DiGraph, service: str | None = None) -> dict[str, Any]:
    """:func:`topology`'s answer from a graph shaped as :func:`topology_graph` makes it."""
    result: dict[str, Any] = {
        "services": [{"name": n, **graph.nodes[n]} for n in sorted(graph)],
        "edges": [{"caller": a, "callee": b, **graph.edges[a, b]} for a, b in sorted(graph.edges)],
    }
    if service is not None:
        if service not in graph:
            raise KeyError(service)
        import networkx as nx

        result["service"] = {
            "name": service,
            "callers": sorted(graph.predecessors(service)),
            "callees": sorted(graph.successors(service)),
            "callers_transitive": sorted(nx.ancestors(graph, service)),
            "callees_transitive": sorted(nx.descendants(graph, service)),
        }
    return result


def dependency_links(spans: Iterable[Span]) -> list[dict[str, Any]]:
    """Zipkin's ``/dependencies`` answer: parent, child, callCount, errorCount."""
    graph = topology_graph(spans)
    return [
        {"parent": a, "child": b, "callCount": graph.edges[a, b]["calls"], "errorCount": graph.edges[a, b]["errors"]}
        for a, b in sorted(graph.edges)
    ]


# --- one trace ---------------------------------------------------------------------------------


def _brief(s: Span) -> dict[str, Any]:
    return {"span_id": s.span_id, "service": s.service, "name": s.name, "kind": s.kind, "error": s.error}


def root_cause(spans: Sequence[Span]) -> dict[str, Any]:
    """Where a failed trace's errors originated: erroring spans none of whose children errored."""
    tree = build_tree(spans)
    erroring = [k for k, s in tree.spans.items() if s.error]
    causes = [k for k in erroring if not any(tree.spans[c].error for c in tree.children(k))]
    causes.sort(key=lambda k: tree.spans[k].start_us)
    return {
        "failed": bool(erroring),
        "error_spans": len(erroring),
        "causes": [
            {
                **_brief(tree.spans[k]),
                "message": tree.spans[k].status_message,
                "start_us": tree.spans[k].start_us,
                "duration_us": tree.spans[k].duration_us,
                "attributes": tree.spans[k].attributes,
                "path": [_brief(tree.spans[p]) for p in tree.path_to(k)],
            }
            for k in causes
        ],
    }


@dataclass
class _Frame:
    key: str
    lo: int
    cursor: int
    children: Any


def critical_path(spans: Sequence[Span]) -> dict[str, Any]:
    """The critical path from the main root, as time segments, and each service's share of it."""
    tree = build_tree(spans)
    if not tree.spans:
        return {"duration_us": 0, "segments": [], "services": []}
    root = tree.main_root
    rs = tree.spans[root]
    segments: list[tuple[str, int, int]] = []

    def frame(key: str, lo: int, hi: int) -> _Frame:
        kids = sorted(tree.children(key), key=lambda c: tree.spans[c].end_us, reverse=True)
        return _Frame(key, lo, min(tree.spans[key].end_us, hi), iter(kids))

    stack = [frame(root, rs.start_us, rs.end_us)]
    while stack:  # iterative: traces can be deeper than Python's recursion limit
        top = stack[-1]
        pushed = False
        for child in top.children:
            cs = tree.spans[child]
            if cs.start_us >= top.cursor:
                continue  # runs after the path's current point: in parallel with a later child
            child_end = min(cs.end_us, top.cursor)
            if child_end <= top.lo:
                continue
            if child_end < top.cursor:
                segments.append((top.key, child_end, top.cursor))
            child_lo = max(cs.start_us, top.lo)
            top.cursor = child_lo
            stack.append(frame(child, child_lo, child_end))
            pushed = True
            break
        if not pushed:
            if top.cursor > top.lo:
                segments.append((top.key, top.lo, top.cursor))
            stack.pop()
    segments.sort(key=lambda seg: seg[1])
    total = max(rs.duration_us, 1)
    per_service: dict[str, int] = defaultdict(int)
    for key, start, end in segments:
        per_service[tree.spans[key].service] += end - start
    return {
        "root": _brief(rs),
        "duration_us": rs.duration_us,
        "segments": [
            {**_brief(tree.spans[k]), "start_us": a, "end_us": b, "self_us": b - a} for k, a, b in segments
        ],
        "services": sorted(
            ({"service": svc, "critical_us": us, "share": us / total} for svc, us in per_service.items()),
            key=lambda row: -row["critical_us"],
        ),
        "other_roots": len(tree.roots) - 1,
    }


# --- fan-out per entry operation ---------------------------------------------------------------


def calls_received(tree: TraceTree) -> dict[tuple[str, str], int]:
    """(service, operation) -> calls one trace made to it, its main root excluded.

    A call received is a SERVER/CONSUMER span (other than the entry itself) or a call to an
    uninstrumented peer (a CLIENT/PRODUCER span naming a remote service with no traced child).
    """
    root = tree.main_root
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for key, s in tree.spans.items():
        if key != root and s.kind in CALLEE_KINDS:
            counts[(s.service, s.name)] += 1
    for call in calls(tree):
        if not call.traced:
            counts[(call.callee, call.operation)] += 1
    return counts


def fanout(spans: Iterable[Span]) -> list[dict[str, Any]]:
    """For each entry operation (the main root of a trace), how many calls each downstream
    service/operation receives per entry request, on average over the traces given.

    A call received is a SERVER/CONSUMER span (other than the entry itself) or a call to an
    uninstrumented peer (a CLIENT/PRODUCER span naming a remote service with no traced child).
    """
    entries: dict[tuple[str, str], int] = defaultdict(int)
    received: dict[tuple[str, str], dict[tuple[str, str], int]] = defaultdict(lambda: defaultdict(int))
    for trace in group_traces(spans).values():
        tree = build_tree(trace)
        root = tree.main_root
        entry = (tree.spans[root].service, tree.spans[root].name)
        entries[entry] += 1
        counts = received[entry]
        for key, n in calls_received(tree).items():
            counts[key] += n
    out = []
    for (service, operation), requests in sorted(entries.items(), key=lambda kv: (-kv[1], kv[0])):
        downstream = [
            {"service": svc, "operation": op, "calls": n, "per_request": n / requests}
            for (svc, op), n in sorted(received[(service, operation)].items(), key=lambda kv: (-kv[1], kv[0]))
        ]
        per_service: dict[str, float] = defaultdict(float)
        for row in downstream:
            per_service[row["service"]] += row["per_request"]
        out.append({
            "service": service, "operation": operation, "requests": requests, "downstream": downstream,
            "services": dict(sorted(per_service.items())),
        })
    return out
