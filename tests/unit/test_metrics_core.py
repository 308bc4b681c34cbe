"""The metrics core without sockets: span-derived RPC reports, custom reports, storage, structured queries."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from devbox.mocks.metrics.api import build_query
from devbox.mocks.metrics.config import MetricsConfig
from devbox.mocks.metrics.core import Filter, MetricsCore, ReportError, StructuredQuery
from devbox.mocks.metrics.promql import Evaluator, QueryError
from devbox.mocks.metrics.store import MetricsStore, Point
from devbox.mocks.tracing.models import Span
from devbox.mocks.tracing.rpcstats import RpcDeriver, calls_of_spans
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st


def _span(
    span_id: str,
    kind: str,
    service: str,
    *,
    parent: str | None = None,
    error: bool = False,
    ms: int = 20,
    remote: str | None = None,
    attrs: dict | None = None,
) -> Span:
    return Span(
        trace_id="a" * 32,
        span_id=span_id,
        parent_id=parent,
        name="GET /orders",
        kind=kind,
        service=service,
        start_us=0,
        duration_us=ms * 1000,
        error=error,
        attributes=attrs or {},
        remote_service=remote,
    )


@pytest.fixture
def core(tmp_path: Path) -> MetricsCore:
    c = MetricsCore(tmp_path / "metrics.db", MetricsConfig())
    yield c
    c.close()


class Feed:
    """The trace indexer's side of span-derived RPC reports: spans in, peers resolved over time by
    :class:`RpcDeriver`, the aggregates it settles handed to the core (as ``rpc_aggregates`` does)."""

    def __init__(self, core: MetricsCore) -> None:
        self.core = core
        self.deriver = RpcDeriver(core.config.rpc_buckets)

    def observe(self, spans: list[Span], now: float) -> None:
        self.deriver.observe(calls_of_spans(spans), now)

    def flush(self, now: float, *, force: bool = False) -> int:
        self.core.rpc.add(self.deriver.settle(now, force=force))
        return self.core.flush_derived(now)


@pytest.fixture
def feed(core: MetricsCore) -> Feed:
    return Feed(core)


def test_spans_become_caller_and_callee_reports(core: MetricsCore, feed: Feed) -> None:
    t0 = 1_000_000.0
    spans = []
    for i in range(10):
        client = f"{i:016x}"
        server = f"{i + 100:016x}"
        failed = i < 3
        spans.append(
            _span(
                client,
                "CLIENT",
                "gateway",
                remote="orders",
                error=failed,
                attrs={"http.request.method": "GET", "http.route": "/orders"},
            )
        )
        spans.append(
            _span(
                server,
                "SERVER",
                "orders",
                parent=client,
                error=failed,
                ms=40,
                attrs={
                    "http.request.method": "GET",
                    "http.route": "/orders",
                    "http.response.status_code": 500 if failed else 200,
                },
            )
        )
    # server spans arrive first (they finish first); the caller is learned from the client span
    feed.observe([s for s in spans if s.kind == "SERVER"], t0)
    feed.observe([s for s in spans if s.kind == "CLIENT"], t0 + 0.5)
    feed.flush(t0 + 1)
    result = dict(
        (tuple(sorted(lb.items())), v)
        for lb, v in core.query_instant('rpc_server_requests_total{callee="orders"}', t0 + 1)
    )
    base = (("__name__", "rpc_server_requests_total"), ("callee", "orders"), ("caller", "gateway"))
    assert result[(*base[:2], ("caller", "gateway"), ("code", "200"), ("method", "GET /orders"), ("status", "ok"))] == 7
    assert (
        result[(*base[:2], ("caller", "gateway"), ("code", "500"), ("method", "GET /orders"), ("status", "error"))] == 3
    )
    client = core.query_instant("sum by (caller, callee, status) (rpc_client_requests_total)", t0 + 1)
    assert {(lb["caller"], lb["callee"], lb["status"]): v for lb, v in client} == {
        ("gateway", "orders", "ok"): 7,
        ("gateway", "orders", "error"): 3,
    }
    count = core.query_instant('rpc_server_duration_seconds_count{callee="orders"}', t0 + 1)
    assert count[0][1] == 10
    le = core.query_instant('rpc_server_duration_seconds_bucket{callee="orders",le="0.05"}', t0 + 1)
    assert le[0][1] == 10
    le = core.query_instant('rpc_server_duration_seconds_bucket{callee="orders",le="0.025"}', t0 + 1)
    assert le[0][1] == 0
    # more traffic later, then composite indicators over the rate
    feed.observe(
        [
            _span(
                f"{i + 500:016x}",
                "SERVER",
                "orders",
                remote="gateway",
                ms=20,
                attrs={"http.request.method": "GET", "http.route": "/orders"},
            )
            for i in range(10)
        ],
        t0 + 30,
    )
    feed.flush(t0 + 40, force=True)
    # the last minute holds all 20 calls (the series starts with a 0 sample): 10 x 40 ms and 10 x 20 ms
    assert core.query_instant("avg_latency_seconds", t0 + 40) == [({"callee": "orders"}, pytest.approx(0.03))]
    assert core.query_instant("success_rate", t0 + 40) == [({"callee": "orders"}, pytest.approx(85))]


def test_server_span_without_a_client_peer_counts_after_waiting(core: MetricsCore, feed: Feed) -> None:
    feed.observe([_span("1" * 16, "SERVER", "orders", parent="9" * 16)], 100.0)
    feed.flush(100.5)
    assert core.query_instant("rpc_server_requests_total", 100.5) == []
    feed.flush(103.0)
    ((labels, value),) = core.query_instant("rpc_server_requests_total", 103)
    assert labels["caller"] == "unknown" and value == 1


def test_custom_report_policies(core: MetricsCore) -> None:
    def report(v: float) -> dict:
        return {
            "name": "pay",
            "dimensions": [["region", "sh"], ["channel", "app"]],
            "values": [
                {"name": "amount", "value": v, "policy": "SUM"},
                {"name": "calls", "policy": "COUNT"},
                {"name": "peak", "value": v, "policy": "MAX"},
                {"name": "low", "value": v, "policy": "MIN"},
                {"name": "mean", "value": v, "policy": "AVG"},
                {"name": "last", "value": v, "policy": "SET"},
            ],
        }

    core.custom_reports([report(10), report(30)], now=500.2)
    core.custom_reports([report(20)], now=500.7)
    values = {lb["__name__"]: v for lb, v in core.query_instant('{region="sh"}', 501)}
    assert values == {
        "pay_amount_total": 60,
        "pay_calls_total": 3,
        "pay_peak": 30,
        "pay_low": 10,
        "pay_mean": 20,
        "pay_last": 20,
    }
    # a new second starts new gauge buckets; counters keep running
    core.custom_reports([report(5)], now=502.0)
    values = {lb["__name__"]: v for lb, v in core.query_instant('{channel="app"}', 502)}
    assert values["pay_amount_total"] == 65 and values["pay_peak"] == 5 and values["pay_calls_total"] == 4
    listed = {m["name"]: m for m in core.metric_list()}
    assert listed["pay_amount_total"]["dimensions"] == ["region", "channel"]
    assert listed["success_rate"]["kind"] == "composite"


@pytest.mark.parametrize(
    ("report", "reason"),
    [
        ({"name": "p", "values": [{"name": "v", "value": 1, "policy": "MEDIAN"}]}, "unknown policy"),
        ({"name": "p", "values": [{"name": "v", "value": float("nan")}]}, "finite"),
        ({"name": "p", "values": [{"name": "v", "value": float("inf")}]}, "finite"),
        ({"name": "p", "values": [{"name": "v", "value": "3"}]}, "number"),
        ({"name": "p", "dimensions": {"bad-name": "x"}, "values": [{"name": "v", "value": 1}]}, "label name"),
        ({"name": "p", "dimensions": {"__x": "x"}, "values": [{"name": "v", "value": 1}]}, "label name"),
        ({"name": "1p", "values": [{"name": "v", "value": 1}]}, "metric name"),
        ({"name": "p", "values": []}, "non-empty"),
        ({"name": "p", "values": [{"name": "v", "value": 1}], "extra": 1}, "unknown field"),
    ],
)
def test_bad_custom_reports_store_nothing(core: MetricsCore, report: dict, reason: str) -> None:
    good = {"name": "ok", "values": [{"name": "v", "value": 1}]}
    with pytest.raises(ReportError, match=reason):
        core.custom_reports([good, report], now=10)
    assert core.store.names() == []


def test_store_rollup_and_retention(tmp_path: Path) -> None:
    store = MetricsStore(tmp_path / "m.db")
    labels = (("job", "x"),)
    # two hours of 1 s samples of a counter
    store.write([Point("c_total", labels, t, float(t)) for t in range(0, 7200)])
    result = store.compact(now=7200, raw_seconds=3600, retention_seconds=6000)
    stats = store.stats()
    assert stats["samples_1s"] == 3600
    # 3600..? minus expired: 1 min rows kept from ts >= 1200 to < 3600 -> 40 minutes
    assert stats["samples_1m"] == 40
    assert result["expired"] > 0
    (series,) = store.select([], 0, 7200)
    assert series.ts[0] == 1259 and series.vs[0] == 1259  # the last sample of its minute
    assert series.ts[40] == 3600
    # PromQL over the rolled-up minutes measures 1/s; across the boundary into 1 s data it counts what
    # the samples cover (Prometheus extrapolates by at most half the mean interval: 3359..3900 here)
    ev = Evaluator(store)
    assert ev.instant("rate(c_total[10m])", 3000)[1][0][1] == pytest.approx(1.0)
    assert 540 < ev.instant("increase(c_total[10m])", 3900)[1][0][1] <= 600
    store.close()
    # everything is still there after reopening
    again = MetricsStore(tmp_path / "m.db")
    assert again.stats()["samples_1s"] == 3600 and again.names() == ["c_total"]
    again.close()


def test_store_refuses_a_cardinality_explosion_whole(tmp_path: Path) -> None:
    store = MetricsStore(tmp_path / "m.db", max_series=10)
    store.write([Point("a", (("i", str(i)),), 1, 1.0) for i in range(8)])
    with pytest.raises(ValueError, match="max_series"):
        store.write([Point("a", (("i", str(i)),), 2, 1.0) for i in range(5, 13)])
    assert store.stats()["series"] == 8 and store.stats()["samples_1s"] == 8
    store.write([Point("a", (("i", str(i)),), 2, 1.0) for i in range(8)])  # known series still fine
    store.close()


def test_store_refuses_nan(tmp_path: Path) -> None:
    store = MetricsStore(tmp_path / "m.db")
    with pytest.raises(ValueError, match="finite"):
        store.write([Point("a", (), 1, 1.0), Point("b", (), 1, math.nan)])
    assert store.names() == []
    store.close()


def test_structured_query_filter_group_top_and_percentile(core: MetricsCore, feed: Feed) -> None:
    t0 = 10_000.0
    for step in range(0, 120, 5):
        spans = []
        for n, (callee, method, err) in enumerate(
            [
                ("orders", "GET /a", False),
                ("orders", "GET /b", True),
                ("stock", "GET /c", False),
                ("pay", "POST /p", False),
            ]
        ):
            spans.append(
                _span(
                    f"{step * 10 + n:016x}",
                    "SERVER",
                    callee,
                    remote="gw",
                    error=err,
                    ms=10 * (n + 1),
                    attrs={"http.route": method},
                )
            )
        feed.observe(spans, t0 + step)
        feed.flush(t0 + step, force=True)
    end = t0 + 115
    q = StructuredQuery("rpc_server_requests_total", start=end - 60, end=end, step=30, group_by=["callee"])
    by_callee = {s["labels"]["callee"]: s["points"][-1][1] for s in core.structured_query(q)["series"]}
    assert by_callee == {"orders": pytest.approx(0.4), "stock": pytest.approx(0.2), "pay": pytest.approx(0.2)}
    q = StructuredQuery(
        "rpc_server_requests_total",
        start=end - 60,
        end=end,
        step=30,
        filters=[Filter.parse("callee in orders|stock"), Filter.parse("status!=error")],
        group_by=["callee", "method"],
    )
    got = {(s["labels"]["callee"], s["labels"]["method"]) for s in core.structured_query(q)["series"]}
    assert got == {("orders", "GET /a"), ("stock", "GET /c")}
    q = StructuredQuery("rpc_server_requests_total", start=end, end=end, group_by=["callee"], top=1)
    assert [s["labels"] for s in core.structured_query(q)["series"]] == [{"callee": "orders"}]
    q = StructuredQuery("success_rate", start=end, end=end)  # the indicator's default: by callee
    rates = {s["labels"]["callee"]: s["points"][0][1] for s in core.structured_query(q)["series"]}
    assert rates == {"orders": pytest.approx(50), "stock": pytest.approx(100), "pay": pytest.approx(100)}
    q = StructuredQuery("success_rate", start=end, end=end, filters=[Filter.parse("method=~GET.*")], group_by=[])
    (total,) = core.structured_query(q)["series"]
    assert total["labels"] == {} and total["points"][0][1] == pytest.approx(200 / 3)
    q = StructuredQuery("rpc_server_duration_seconds", start=end, end=end, group_by=["callee"], aggregate="p99")
    p99 = {s["labels"]["callee"]: s["points"][0][1] for s in core.structured_query(q)["series"]}
    # pay's 40 ms calls sit in (0.025, 0.05]; orders is half 10 ms (<= 0.01), half 20 ms (<= 0.025)
    assert p99["pay"] == pytest.approx(0.025 + 0.025 * 0.99)
    assert p99["orders"] == pytest.approx(0.01 + 0.015 * 0.49 / 0.5)
    with pytest.raises(ReportError):
        Filter.parse("callee ~~ x")
    with pytest.raises(ReportError):
        StructuredQuery("x", group_by=["bad-name"])


_json = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=True) | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
_report = st.fixed_dictionaries(
    {},
    optional={
        "name": st.sampled_from(["ok", "bad-name", "", "x1"]) | st.text(max_size=5),
        "dimensions": st.dictionaries(st.text(max_size=5), st.text(max_size=5) | st.integers(), max_size=3) | _json,
        "values": st.lists(
            st.fixed_dictionaries(
                {},
                optional={
                    "name": st.text(max_size=5) | st.just("v"),
                    "value": st.floats(allow_nan=True) | st.integers() | _json,
                    "policy": st.sampled_from(["SUM", "AVG", "MAX", "MIN", "SET", "LAST", "COUNT", "sum", "x"]) | _json,
                },
            ),
            max_size=3,
        )
        | _json,
        "timestamp": st.floats(allow_nan=True) | _json,
    },
)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(reports=st.lists(_report | _json, min_size=1, max_size=3))
def test_any_custom_report_is_stored_or_refused_with_a_reason(
    tmp_path_factory: pytest.TempPathFactory, reports: list
) -> None:
    core = MetricsCore(tmp_path_factory.mktemp("fuzz") / "m.db", MetricsConfig())
    try:
        try:
            core.custom_reports(reports, now=1000)
        except ReportError as exc:
            assert str(exc)
            assert core.store.stats()["samples_1s"] == 0  # refused whole
    finally:
        core.close()


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    data=st.dictionaries(
        st.sampled_from(
            ["metric", "start", "end", "step", "filters", "group_by", "aggregate", "top", "window", "rate", "extra"]
        ),
        _json,
        max_size=6,
    )
)
def test_any_query_body_is_answered_or_refused_with_a_reason(core: MetricsCore, data: dict) -> None:
    try:
        q = build_query(data)
        core.structured_query(q)
    except (ReportError, QueryError) as exc:
        assert str(exc)


def test_a_service_failing_from_its_first_call_has_success_rate_zero(core: MetricsCore, feed: Feed) -> None:
    """No status="ok" series exists at all: the ratio is 0, not absent (else its alert never fires)."""
    t0 = 1_700_000_000.0
    ok = [_span(f"{i:016x}", "SERVER", "orders", remote="gateway") for i in range(4)]
    failing = [_span(f"{i + 100:016x}", "SERVER", "payment", remote="orders", error=True) for i in range(5)]
    feed.observe(ok + failing, t0)
    feed.flush(t0 + 1, force=True)
    rates = dict((labels["callee"], value) for labels, value in core.query_instant("success_rate", t0 + 20))
    assert rates == {"orders": pytest.approx(100), "payment": 0}
    errors = dict((labels["callee"], value) for labels, value in core.query_instant("error_rate", t0 + 20))
    assert errors == {"orders": 0, "payment": pytest.approx(100)}
