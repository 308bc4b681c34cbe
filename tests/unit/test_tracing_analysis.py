"""Analysis on constructed traces whose answers are worked out by hand."""

from __future__ import annotations

import pytest
from devbox.mocks.tracing import analysis
from devbox.mocks.tracing.models import Span

T0 = 1_700_000_000_000_000


def span(trace: str, sid: str, parent: str | None, service: str, name: str, kind: str, start: int, end: int, *,
         error: bool = False, message: str = "", remote: str | None = None) -> Span:
    return Span(trace_id=trace * 32, span_id=sid * 16, parent_id=parent * 16 if parent else None, name=name,
                kind=kind, service=service, start_us=T0 + start, duration_us=end - start, error=error,
                status_message=message, remote_service=remote)


def failed_trace() -> list[Span]:
    a = "a"
    return [
        span(a, "1", None, "gateway", "GET /checkout", "SERVER", 0, 100, error=True, message="500"),
        span(a, "2", "1", "gateway", "call orders", "CLIENT", 10, 80, error=True, remote="orders"),
        span(a, "3", "2", "orders", "POST /orders", "SERVER", 12, 78, error=True, message="stock failed"),
        span(a, "4", "3", "orders", "call inventory", "CLIENT", 20, 70, error=True),
        span(a, "5", "4", "inventory", "reserve", "SERVER", 22, 68, error=True, message="out of stock"),
        span(a, "6", "5", "inventory", "db", "INTERNAL", 25, 35),
        span(a, "7", "1", "gateway", "call users", "CLIENT", 82, 95, remote="users"),
    ]


def ok_trace() -> list[Span]:
    b = "b"
    return [
        span(b, "1", None, "gateway", "GET /checkout", "SERVER", 1000, 1100),
        span(b, "2", "1", "gateway", "call orders", "CLIENT", 1010, 1050),
        span(b, "3", "2", "orders", "POST /orders", "SERVER", 1012, 1048),
        span(b, "4", "3", "orders", "call inventory", "CLIENT", 1015, 1020),
        span(b, "5", "4", "inventory", "reserve", "SERVER", 1016, 1019),
        span(b, "6", "3", "orders", "call inventory", "CLIENT", 1025, 1030),
        span(b, "7", "6", "inventory", "reserve", "SERVER", 1026, 1029),
    ]


def test_root_cause_is_the_deepest_error_with_its_path() -> None:
    result = analysis.root_cause(failed_trace())
    assert result["failed"] and result["error_spans"] == 5
    [cause] = result["causes"]
    assert (cause["service"], cause["name"], cause["message"]) == ("inventory", "reserve", "out of stock")
    assert [(p["service"], p["name"]) for p in cause["path"]] == [
        ("gateway", "GET /checkout"), ("gateway", "call orders"), ("orders", "POST /orders"),
        ("orders", "call inventory"), ("inventory", "reserve"),
    ]
    assert analysis.root_cause(ok_trace()) == {"failed": False, "error_spans": 0, "causes": []}


def test_two_independent_failures_are_both_causes() -> None:
    spans = [
        span("c", "1", None, "gw", "root", "SERVER", 0, 50, error=True),
        span("c", "2", "1", "a", "x", "SERVER", 5, 10, error=True, message="boom a"),
        span("c", "3", "1", "b", "y", "SERVER", 20, 30, error=True, message="boom b"),
    ]
    assert [c["message"] for c in analysis.root_cause(spans)["causes"]] == ["boom a", "boom b"]


def test_critical_path_segments_and_service_shares() -> None:
    result = analysis.critical_path(failed_trace())
    assert result["duration_us"] == 100
    shares = {row["service"]: row["critical_us"] for row in result["services"]}
    assert shares == {"gateway": 34, "orders": 20, "inventory": 46}
    assert sum(seg["self_us"] for seg in result["segments"]) == 100
    assert [(s["name"], s["start_us"] - T0, s["end_us"] - T0) for s in result["segments"][:4]] == [
        ("GET /checkout", 0, 10), ("call orders", 10, 12), ("POST /orders", 12, 20), ("call inventory", 20, 22),
    ]
    assert pytest.approx(result["services"][0]["share"]) == 0.46


def test_critical_path_skips_a_child_running_in_parallel() -> None:
    spans = [
        span("d", "1", None, "gw", "root", "SERVER", 0, 100),
        span("d", "2", "1", "a", "long", "SERVER", 10, 90),
        span("d", "3", "1", "b", "short-parallel", "SERVER", 20, 40),
    ]
    result = analysis.critical_path(spans)
    assert {r["service"]: r["critical_us"] for r in result["services"]} == {"gw": 20, "a": 80}


def test_critical_path_of_a_deep_chain_does_not_recurse() -> None:
    spans = [span("e", "0", None, "s", "op0", "SERVER", 0, 5000)]
    for i in range(1, 2000):
        spans.append(Span(trace_id="e" * 32, span_id=f"{i:016x}", parent_id=f"{i - 1:016x}" if i > 1 else "0" * 16,
                          name=f"op{i}", kind="INTERNAL", service="s", start_us=T0 + i, duration_us=5000 - 2 * i))
    assert analysis.critical_path(spans)["duration_us"] == 5000


def test_topology_counts_errors_latencies_and_transitive_neighbours() -> None:
    topo = analysis.topology(failed_trace() + ok_trace(), service="orders")
    edges = {(e["caller"], e["callee"]): e for e in topo["edges"]}
    assert set(edges) == {("gateway", "orders"), ("orders", "inventory"), ("gateway", "users")}
    go = edges[("gateway", "orders")]
    assert (go["calls"], go["errors"], go["p50_us"], go["p99_us"]) == (2, 1, 40, 70)
    oi = edges[("orders", "inventory")]
    assert (oi["calls"], oi["errors"], oi["p50_us"], oi["max_us"]) == (3, 1, 5, 50)
    assert edges[("gateway", "users")]["calls"] == 1
    assert topo["service"] == {"name": "orders", "callers": ["gateway"], "callees": ["inventory"],
                               "callers_transitive": ["gateway"], "callees_transitive": ["inventory"]}
    inv = analysis.topology(failed_trace(), service="inventory")["service"]
    assert inv["callers_transitive"] == ["gateway", "orders"] and inv["callers"] == ["orders"]
    with pytest.raises(KeyError):
        analysis.topology(failed_trace(), service="nobody")


def test_dependency_links_in_zipkin_shape() -> None:
    links = analysis.dependency_links(failed_trace() + ok_trace())
    assert {"parent": "orders", "child": "inventory", "callCount": 3, "errorCount": 1} in links


def test_zipkin_shared_span_pairs_client_and_server() -> None:
    spans = [
        span("f", "1", None, "web", "root", "SERVER", 0, 50),
        span("f", "2", "1", "web", "get", "CLIENT", 5, 45),
        span("f", "2", "1", "api", "get", "SERVER", 6, 44),  # same id: Zipkin shared span
        span("f", "3", "2", "api", "query", "CLIENT", 10, 30, remote="db"),
    ]
    tree = analysis.build_tree(spans)
    assert tree.roots == ["1" * 16]
    assert [tree.spans[k].service for k in tree.path_to("3" * 16)] == ["web", "web", "api", "api"]
    assert analysis.dependency_links(spans) == [
        {"parent": "api", "child": "db", "callCount": 1, "errorCount": 0},
        {"parent": "web", "child": "api", "callCount": 1, "errorCount": 0},
    ]


def test_fanout_per_entry_request() -> None:
    [entry] = analysis.fanout(failed_trace() + ok_trace())
    assert (entry["service"], entry["operation"], entry["requests"]) == ("gateway", "GET /checkout", 2)
    per = {(d["service"], d["operation"]): d["per_request"] for d in entry["downstream"]}
    assert per == {("inventory", "reserve"): 1.5, ("orders", "POST /orders"): 1.0, ("users", "call users"): 0.5}
    assert entry["services"] == {"inventory": 1.5, "orders": 1.0, "users": 0.5}


def test_orphans_become_roots_and_cycles_are_broken() -> None:
    spans = [
        span("g", "1", "9", "a", "orphan", "SERVER", 0, 10),
        span("g", "2", "3", "a", "x", "INTERNAL", 1, 2),
        span("g", "3", "2", "a", "y", "INTERNAL", 1, 2),
    ]
    tree = analysis.build_tree(spans)
    assert "1" * 16 in tree.roots and len(tree.graph.edges) == 1
