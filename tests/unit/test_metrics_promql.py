"""PromQL evaluation over in-memory series: the semantics dashboards and alert rules rely on."""

from __future__ import annotations

import math

import pytest
from devbox.mocks.metrics.indicators import Indicator
from devbox.mocks.metrics.promql import Evaluator, ListSource, QueryError


def _source() -> ListSource:
    src = ListSource()
    # counters scraped every 15 s for 10 minutes: a/ok grows 1/s, a/err 0.1/s, b/* 2/s
    for svc, code, slope in (("a", "ok", 1.0), ("a", "err", 0.1), ("b", "ok", 2.0), ("b", "err", 2.0)):
        src.add({"__name__": "req_total", "svc": svc, "code": code}, [(t, t * slope) for t in range(0, 601, 15)])
    for le, share in (("0.1", 0.5), ("1", 0.9), ("+Inf", 1.0)):
        src.add({"__name__": "lat_bucket", "svc": "a", "le": le}, [(t, t * share) for t in range(0, 601, 15)])
    src.add({"__name__": "temp", "room": "x"}, [(0, 10.0), (300, 20.0)])
    src.add({"__name__": "temp", "room": "y"}, [(0, 5.0)])
    return src


@pytest.fixture
def ev() -> Evaluator:
    indicators = {
        "ok_rate": Indicator("ok_rate", 'req_total{code="ok"} * 100 / req_total', by=["svc"]),
    }
    return Evaluator(_source(), computed=indicators)


def _vec(ev: Evaluator, expr: str, at: float = 600) -> dict[tuple[tuple[str, str], ...], float]:
    kind, result = ev.instant(expr, at)
    assert kind == "vector", kind
    return {tuple(sorted(lb.items())): v for lb, v in result}


def test_selectors_all_matcher_kinds(ev: Evaluator) -> None:
    assert len(_vec(ev, 'req_total{svc="a"}')) == 2
    assert len(_vec(ev, 'req_total{svc!="a"}')) == 2
    assert len(_vec(ev, 'req_total{code=~"e.*"}')) == 2
    assert len(_vec(ev, 'req_total{code!~"e.*",svc="b"}')) == 1
    assert len(_vec(ev, '{__name__=~"req_.*"}')) == 4
    assert _vec(ev, 'req_total{svc="a",code="ok"}') == {(("__name__", "req_total"), ("code", "ok"), ("svc", "a")): 600}


def test_lookback_hides_stale_series(ev: Evaluator) -> None:
    # room y's only sample is at t=0: visible until 300 s later, not after
    assert len(_vec(ev, "temp", at=299)) == 2
    assert len(_vec(ev, "temp", at=301)) == 1


def test_rate_increase_irate_match_prometheus(ev: Evaluator) -> None:
    rates = _vec(ev, 'rate(req_total{svc="a"}[1m])')
    assert rates[(("code", "ok"), ("svc", "a"))] == pytest.approx(1.0)
    assert rates[(("code", "err"), ("svc", "a"))] == pytest.approx(0.1)
    assert _vec(ev, 'increase(req_total{svc="b",code="ok"}[2m])') == {
        (("code", "ok"), ("svc", "b")): pytest.approx(240)
    }
    assert _vec(ev, 'irate(req_total{svc="b",code="ok"}[1m])') == {(("code", "ok"), ("svc", "b")): pytest.approx(2.0)}


def test_rate_handles_counter_reset() -> None:
    src = ListSource()
    src.add({"__name__": "c_total"}, [(0, 0), (10, 10), (20, 20), (30, 5), (40, 15)])
    value = Evaluator(src).instant("increase(c_total[40s])", 40)[1][0][1]
    # the window (0, 40] is left-open: 10, 20, 5 (reset), 15 -> 10 + 5 + 10 = 25 over the 30 s sampled,
    # extrapolated to the 40 s window (the gap to the window start is under 1.1 sample intervals)
    assert value == pytest.approx(25 * 40 / 30)


def test_over_time_functions(ev: Evaluator) -> None:
    x = (("room", "x"),)
    assert _vec(ev, "max_over_time(temp[10m])", at=310)[x] == 20
    assert _vec(ev, "min_over_time(temp[10m])", at=310)[x] == 10
    assert _vec(ev, "avg_over_time(temp[10m])", at=310)[x] == 15
    assert _vec(ev, "count_over_time(temp[10m])", at=310)[x] == 2
    assert _vec(ev, "last_over_time(temp[10m])", at=310)[(("__name__", "temp"), *x)] == 20


def test_aggregations_by_without_topk(ev: Evaluator) -> None:
    assert _vec(ev, "sum by (svc) (req_total)") == {(("svc", "a"),): 660, (("svc", "b"),): 2400}
    assert _vec(ev, "sum without (code) (req_total)") == {(("svc", "a"),): 660, (("svc", "b"),): 2400}
    assert _vec(ev, "count(req_total)") == {(): 4}
    assert _vec(ev, "max by (code) (req_total)") == {(("code", "ok"),): 1200, (("code", "err"),): 1200}
    assert _vec(ev, "avg(req_total)") == {(): pytest.approx((600 + 60 + 1200 + 1200) / 4)}
    top = _vec(ev, "topk(1, req_total{svc='a'})")
    assert list(top) == [(("__name__", "req_total"), ("code", "ok"), ("svc", "a"))]
    bottom = _vec(ev, "bottomk(1, req_total)")
    assert list(bottom) == [(("__name__", "req_total"), ("code", "err"), ("svc", "a"))]


def test_binary_vector_scalar_and_comparison(ev: Evaluator) -> None:
    assert _vec(ev, 'req_total{svc="a",code="ok"} * 2') == {(("code", "ok"), ("svc", "a")): 1200}
    filtered = _vec(ev, "req_total > 700")
    assert len(filtered) == 2 and all(k[0] == ("__name__", "req_total") for k in filtered)
    as_bool = _vec(ev, "req_total > bool 700")
    assert sorted(as_bool.values()) == [0, 0, 1, 1]
    assert ev.instant("1 + 2 * 3", 0) == ("scalar", 7)
    with pytest.raises(QueryError, match="BOOL"):
        ev.instant("1 > 2", 0)


def test_vector_matching_on_ignoring_group_left(ev: Evaluator) -> None:
    ratio = _vec(ev, 'req_total{code="ok"} / ignoring(code) sum by (svc) (req_total)')
    assert ratio == {(("svc", "a"),): pytest.approx(600 / 660), (("svc", "b"),): pytest.approx(0.5)}
    on = _vec(ev, 'sum by (svc) (req_total{code="err"}) / on(svc) sum by (svc) (req_total)')
    assert on[(("svc", "a"),)] == pytest.approx(60 / 660)
    many = _vec(ev, "req_total / ignoring(code) group_left sum by (svc) (req_total)")
    assert len(many) == 4 and many[(("code", "err"), ("svc", "b"))] == pytest.approx(0.5)
    with pytest.raises(QueryError, match="many-to-many"):
        ev.instant("sum by (svc) (req_total) / ignoring(code) req_total", 600)


def test_set_operators(ev: Evaluator) -> None:
    assert len(_vec(ev, 'req_total and req_total{code="ok"}')) == 2
    assert len(_vec(ev, 'req_total unless req_total{code="ok"}')) == 2
    assert len(_vec(ev, 'req_total{svc="a"} or req_total{svc="b"}')) == 4


def test_histogram_quantile(ev: Evaluator) -> None:
    q = _vec(ev, "histogram_quantile(0.5, rate(lat_bucket[1m]))")
    assert q == {(("svc", "a"),): pytest.approx(0.1)}
    q90 = _vec(ev, "histogram_quantile(0.7, sum by (le) (rate(lat_bucket[1m])))")
    # rank 0.7 lies in (0.1, 1]: 0.1 + 0.9 * (0.7 - 0.5) / 0.4
    assert q90 == {(): pytest.approx(0.1 + 0.9 * 0.5)}
    q99 = _vec(ev, "histogram_quantile(0.99, rate(lat_bucket[1m]))")
    assert q99[(("svc", "a"),)] == pytest.approx(1.0)  # falls in +Inf: the highest finite bound


def test_offset_and_at(ev: Evaluator) -> None:
    assert (
        _vec(ev, 'req_total{svc="a",code="ok"} offset 5m')[(("__name__", "req_total"), ("code", "ok"), ("svc", "a"))]
        == 300
    )
    assert (
        _vec(ev, 'req_total{svc="a",code="ok"} @ 150')[(("__name__", "req_total"), ("code", "ok"), ("svc", "a"))] == 150
    )


def test_range_query_steps(ev: Evaluator) -> None:
    kind, result = ev.range('sum(rate(req_total{svc="a"}[1m]))', 120, 600, 60)
    assert kind == "matrix"
    ((labels, points),) = result
    assert labels == {}
    assert [t for t, _ in points] == list(range(120, 601, 60))
    assert all(v == pytest.approx(1.1) for _, v in points)


def test_functions_and_subquery(ev: Evaluator) -> None:
    assert _vec(ev, "abs(-1 * temp)", at=310)[(("room", "x"),)] == 20
    assert _vec(ev, "clamp_max(temp, 12)", at=310)[(("room", "x"),)] == 12
    assert (
        _vec(ev, 'label_replace(temp, "floor", "f-$1", "room", "(.*)")', at=310)[
            (("__name__", "temp"), ("floor", "f-x"), ("room", "x"))
        ]
        == 20
    )
    assert _vec(ev, "absent(nothing_here)") == {(): 1}
    assert _vec(ev, "absent(temp)", at=310) == {}
    assert _vec(ev, 'max_over_time(rate(req_total{svc="a",code="ok"}[1m])[5m:30s])')[
        (("code", "ok"), ("svc", "a"))
    ] == pytest.approx(1.0)
    assert ev.instant("scalar(sum(temp))", 310) == ("scalar", 20)


def test_division_by_zero_gives_inf_and_nan() -> None:
    src = ListSource()
    src.add({"__name__": "z"}, [(0, 0.0)])
    src.add({"__name__": "one"}, [(0, 1.0)])
    ev = Evaluator(src)
    assert math.isnan(ev.instant("z / 0", 1)[1][0][1])
    assert ev.instant("one / 0", 1)[1][0][1] == math.inf


def test_composite_indicator_is_a_metric(ev: Evaluator) -> None:
    rates = _vec(ev, "ok_rate")
    assert rates[(("svc", "a"),)] == pytest.approx(1.0 / 1.1 * 100)
    assert rates[(("svc", "b"),)] == pytest.approx(50)
    assert _vec(ev, 'ok_rate{svc="b"}') == {(("svc", "b"),): pytest.approx(50)}
    assert _vec(ev, "ok_rate < 95") == {
        (("svc", "a"),): pytest.approx(90.909, rel=1e-3),
        (("svc", "b"),): pytest.approx(50),
    }


class ArrivingSource(ListSource):
    """Samples keep arriving while a query runs: after each read, every series takes in a sample at
    the query's moment, unchanged (no call in the last seconds)."""

    def select(self, matchers, start, end, *, budget=None):  # type: ignore[no-untyped-def]
        found = super().select(matchers, start, end, budget=budget)
        for s in self.series:
            if s.ts[-1] < 600:
                s.ts.append(600.0)
                s.vs.append(s.vs[-1])
        return found


def test_both_sides_of_a_composite_indicator_are_read_at_one_moment() -> None:
    """The shop's success_rate read 102 % on the CI box: the ``ok`` side was read before a sample
    arrived, the ``all`` side after it (a flat last sample lowers a rate's extrapolation). One read
    per metric name: both sides see the same samples."""
    src = ArrivingSource()
    for code, slope in (("ok", 1.0), ("err", 0.1)):
        src.add({"__name__": "req_total", "svc": "a", "code": code}, [(t, t * slope) for t in range(0, 586, 15)])
    ok_rate = Indicator("ok_rate", 'req_total{code="ok"} * 100 / req_total', by=["svc"])
    [(_, value)] = Evaluator(src, computed={"ok_rate": ok_rate}).instant("ok_rate", 600)[1]
    assert value == pytest.approx(1.0 / 1.1 * 100)


@pytest.mark.parametrize(
    ("expr", "reason"),
    [
        ("sum(", "parse error"),
        ("rate(x)", "parse error"),
        ('x{a=~"("}', "parse error"),
        ('{a=""}', "non-empty"),
        ("", "empty"),
        ('sort_by_label(temp, "room")', "sort_by_label"),
    ],
)
def test_bad_queries_raise_query_error(ev: Evaluator, expr: str, reason: str) -> None:
    with pytest.raises(QueryError, match=reason):
        ev.instant(expr, 100)


def test_range_query_refuses_bad_steps(ev: Evaluator) -> None:
    with pytest.raises(QueryError, match="step"):
        ev.range("temp", 0, 10, 0)
    with pytest.raises(QueryError, match="11,000"):
        ev.range("temp", 0, 100000, 1)
    with pytest.raises(QueryError, match="range vector"):
        ev.range("temp[5m]", 0, 10, 1)


def test_formula_rejects_functions() -> None:
    with pytest.raises(QueryError, match="composite indicator formula"):
        Indicator("x", "rate(a[1m]) / b").ast  # noqa: B018  (parsed on first use)


def test_round_to_zero_is_nan_as_in_prometheus_not_a_refusal(ev: Evaluator) -> None:
    """Prometheus computes floor(v * 1/to + 0.5) / (1/to) in IEEE arithmetic: to=0 gives NaN. It was
    a 400 (ZeroDivisionError) here — a hostile-input probe's finding."""
    (_, value), = ev.instant("round(vector(1), 0)", 10.0)[1]
    assert math.isnan(value)
    assert ev.instant("round(vector(1.26), 0.1)", 10.0)[1] == [({}, 1.3)]
    assert ev.instant("round(vector(-2.5))", 10.0)[1] == [({}, -2.0)]  # halves round up, as Go's floor(x+0.5)
