"""Assertion logic on hand-built observations: verdicts, and messages that carry what was observed."""

from __future__ import annotations

from devbox.mocks.tracing.models import Span

from devbox.scenario import checks
from devbox.scenario.model import (
    AlertExpect,
    CriticalPathExpect,
    FailoverExpect,
    LogExpect,
    MetricExpect,
    RoutingExpect,
    TopologyExpect,
    TraceExpect,
    TrafficStep,
)
from devbox.scenario.traffic import CallResult, TrafficRun

T1, T2 = "a" * 32, "b" * 32


def _run(*results: CallResult) -> TrafficRun:
    run = TrafficRun(step=TrafficStep(name="t", service="gateway", count=max(len(results), 1)))
    run.results.extend(results)
    run.ended = 1.0
    return run


def _call(trace_id: str, ok: bool = True, status: int | str = 200, instance: str = "gw-1") -> CallResult:
    return CallResult(0, trace_id, 0.0, 1.0, ok, status, instance=instance, error="" if ok else f"status {status}")


def _span(trace_id: str, span_id: str, parent: str | None, service: str, start: int, dur: int, *,
          kind: str = "SERVER", error: bool = False, name: str = "op", instance: str = "", env: str = "") -> Span:
    resource = {"service.instance.id": instance} if instance else {}
    if env:
        resource["devbox.env"] = env
    return Span(trace_id, span_id, parent, name, kind, service, start, dur, error=error, resource=resource,
                status_message="boom" if error else "")


def test_routing_share_from_server_spans_and_naming_metadata() -> None:
    run = _run(_call(T1), _call(T2))
    spans = [
        _span(T1, "1" * 16, None, "orders", 0, 10, instance="o-feat"),
        _span(T2, "2" * 16, None, "orders", 0, 10, instance="o-base"),
        _span(T2, "3" * 16, None, "users", 0, 10, instance="u-1", env="base"),  # metadata from resource
    ]
    meta = {"o-feat": {"env": "feature-x"}, "o-base": {"env": "base"}}
    verdict = checks.check_routing(
        RoutingExpect(traffic="t", service="orders", selector={"env": "feature-x"}, min_share=0.99), run, spans, meta
    )
    assert not verdict.ok
    assert "observed 1/2 = 50.0% of orders calls on [env=feature-x]" in verdict.message
    assert "o-feat {env=feature-x}: 1" in verdict.message and "o-base {env=base}: 1" in verdict.message
    users = checks.check_routing(RoutingExpect(service="users", selector={"env": "base"}), run, spans, meta)
    assert users.ok, users.message
    absent = checks.check_routing(RoutingExpect(service="users", selector={"env": None}), run, spans, meta)
    assert not absent.ok


def test_routing_without_calls_fails_with_sample_traces() -> None:
    verdict = checks.check_routing(RoutingExpect(service="orders", selector={"env": "x"}), _run(_call(T1)), [], {})
    assert not verdict.ok and T1 in verdict.message and "at least 1 calls" in verdict.message


def test_failover_bound_and_time_to_unhealthy() -> None:
    run = _run(*[_call(T1)] * 18, _call(T2, ok=False, status=503, instance="gw-2"), _call(T2, ok=False, status=503))
    verdict = checks.check_failover(
        FailoverExpect(max_error_rate=0.05, instance="victim", unhealthy_within=2.0),
        run, victim="inst-9", killed_at=100.0, out_at=103.5, out_how="was unhealthy in naming",
    )
    assert not verdict.ok
    for part in ("observed 2/20 failed (10.0%)", "503 x2", T2, "gw-2: 1", "inst-9 was unhealthy in naming 3.50s"):
        assert part in verdict.message, verdict.message
    ok = checks.check_failover(FailoverExpect(max_errors=2), run)
    assert ok.ok


def test_trace_order_root_cause_and_critical_path() -> None:
    trace = [
        _span(T1, "1" * 16, None, "gateway", 0, 1000, error=True, name="GET /checkout"),
        _span(T1, "2" * 16, "1" * 16, "gateway", 10, 980, kind="CLIENT", error=True),
        _span(T1, "3" * 16, "2" * 16, "orders", 20, 960, error=True, name="GET /quote"),
        _span(T1, "4" * 16, "3" * 16, "orders", 30, 900, kind="CLIENT", error=True),
        _span(T1, "5" * 16, "4" * 16, "payment", 40, 880, error=True, name="POST /charge"),
    ]
    run = _run(_call(T1, ok=False, status=502))
    good = checks.check_trace(
        TraceExpect(services=["gateway", "orders", "payment"], root_cause="payment",
                    critical_path=CriticalPathExpect(service="payment", min_share=0.8)),
        run, {T1: trace},
    )
    assert good.ok, good.message
    bad = checks.check_trace(TraceExpect(root_cause="orders", no_error=True, services=["payment", "gateway"]),
                             run, {T1: trace})
    assert not bad.ok
    assert "root cause in payment:POST /charge (boom)" in bad.message
    assert "services seen gateway -> orders -> payment" in bad.message and T1 in bad.message
    shares = checks.critical_path_shares(trace)
    assert abs(sum(shares.values()) - 1.0) < 1e-9 and shares["payment"] == 0.88


def test_trace_missing_from_collector() -> None:
    verdict = checks.check_trace(TraceExpect(no_error=True), _run(_call(T1)), {})
    assert not verdict.ok and "none of its 1 trace ids reached the collector" in verdict.message


def test_topology_metric_alert_log_messages() -> None:
    topo = checks.check_topology(TopologyExpect(edges=[("gateway", "orders"), ("orders", "payment")]),
                                 {("gateway", "orders"): 5})
    assert not topo.ok and "missing orders->payment" in topo.message and "gateway->orders (5)" in topo.message

    metric = checks.check_metric(MetricExpect(query="success_rate", op=">=", threshold=99),
                                 [({"callee": "payment"}, [(0.0, 97.5)])])
    assert not metric.ok and "{callee=payment} = 97.5" in metric.message
    assert not checks.check_metric(MetricExpect(query="x", threshold=1), []).ok

    history = [
        {"alertname": "Low", "labels": {"callee": "payment"}, "to": "pending", "at": 1.0},
        {"alertname": "Low", "labels": {"callee": "payment"}, "to": "firing", "at": 2.0, "silenced": True},
        {"alertname": "Low", "labels": {"callee": "payment"}, "to": "resolved", "at": 3.0},
    ]
    fired = checks.check_alert(AlertExpect(rule="Low", state="resolved", silenced=True, notified=False,
                                           history=["pending", "firing", "resolved"]), history, "resolved")
    assert fired.ok, fired.message
    wrong = checks.check_alert(AlertExpect(rule="Low", state="firing", notified=True), history, "resolved")
    assert not wrong.ok and "state is resolved" in wrong.message and "firing notified=False" in wrong.message

    log = checks.check_log(LogExpect(service="orders", pattern=r"ready on \d+"), {"orders-1.log": ["starting", "up"]})
    assert not log.ok and "orders-1.log: up" in log.message
    assert checks.check_log(LogExpect(service="orders", pattern="up"), {"orders-1.log": ["up"]}).ok
    twice = checks.check_log(LogExpect(service="orders", pattern="up", min_count=2), {"orders-1.log": ["up"]})
    assert not twice.ok and "at least 2 times; found 1 (orders-1.log: 1)" in twice.message
