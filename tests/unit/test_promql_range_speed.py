"""The fast paths of a range query give exactly what the straightforward definitions give.

- ``_rates`` over a series held as numpy columns only (as the store's head gives them) against
  Prometheus's extrapolatedRate window by window, on random data with counter resets, gaps, NaN
  and infinities, and series of 0 or 1 samples;
- a range query against the instant query at each of its steps (series that start, stop and pause
  inside the range: the answer's runs of steps are cut by slicing; vector matching);
- ``format_values`` (each distinct value formatted once) against ``format_value`` one by one;
- ``_matrix_body`` (an answer joined from flat pieces) against ``json.dumps`` of the same answer;
- a series held as columns makes the same lists on demand; ``latest_at`` is ``latest`` at each time;
- ``+ - * /`` over vectors and scalars (the fast path) are ``_apply`` at each point, and matched
  vector arithmetic answers (or refuses) as the step-by-step matching does.
"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from devbox.mocks.metrics.prom_api import _matrix_body, _success_body
from devbox.mocks.metrics.promql import Evaluator, ListSource, QueryError, format_value, format_values, key_of
from devbox.mocks.metrics.promql.binary import _apply, binary
from devbox.mocks.metrics.promql.range_functions import _Bounds, _extrapolated, _rates
from devbox.mocks.metrics.promql.source import RawSeries
from devbox.mocks.metrics.promql.values import LabelKey, Scalar, Vector


def _samples(rng: random.Random, count: int, *, finite: bool = False) -> tuple[list[float], list[float]]:
    ts, vs, t, v = [], [], rng.choice([0.0, 40.0, 200.0]), 0.0
    for _ in range(count):
        t += rng.choice([1.0, 1.0, 1.0, 0.5, 3.0, 17.0, 90.0])
        if rng.random() < 0.1:
            v = 0.0  # a counter reset
        elif not finite and rng.random() < 0.03:
            v = rng.choice([math.nan, math.inf, -math.inf, -v])
        else:
            v = (v if math.isfinite(v) else 0.0) + rng.choice([0.0, 1.0, rng.random() * 10])
        ts.append(t)
        vs.append(v)
    return ts, vs


def _same(got: list[float | None], want: list[float | None]) -> bool:
    return [repr(v) for v in got] == [repr(v) for v in want]


def test_rates_over_columns_match_the_per_window_reference_bit_for_bit() -> None:
    rng = random.Random(15)
    for _ in range(40):
        series = []
        for k in range(rng.randint(1, 6)):
            ts, vs = _samples(rng, rng.choice([0, 1, 2, 50, 300]))
            if ts and rng.random() < 0.5:  # as the store's head gives them: columns only
                series.append(RawSeries({"i": str(k)}, arrays=(np.array(ts), np.array(vs))))
            else:
                series.append(RawSeries({"i": str(k)}, ts, vs))
        width = rng.choice([0.5, 1.0, 5.0, 60.0, 120.0])
        step = rng.choice([0.7, 1.0, 15.0])
        windows = [(t - width, t) for t in (i * step for i in range(int(600 / step)))]
        bounds = _Bounds(windows)
        for counter, rate in ((True, True), (True, False), (False, False)):
            for s in series:
                got = _rates(s, windows, counter=counter, rate=rate, bounds=bounds)
                want = [_extrapolated(*s.in_window(w), w, counter=counter, rate=rate) for w in windows]
                assert _same(got, want), (counter, rate)


def test_a_range_query_is_the_instant_query_at_each_step() -> None:
    rng = random.Random(16)
    source = ListSource()
    for k in range(8):
        ts, vs = _samples(rng, rng.choice([40, 150, 400]), finite=True)
        source.add({"__name__": "x_total", "a": f"a{k % 2}", "b": f"b{k % 3}", "i": str(k)}, zip(ts, vs, strict=True))
    evaluator = Evaluator(source)
    expressions = [
        "rate(x_total[1m])",
        "sum by (a,b)(rate(x_total[1m]))",
        "sum by (a)(increase(x_total[2m]))",
        "delta(x_total[30s])",
        "irate(x_total[1m])",
        "avg_over_time(x_total[1m])",
        "x_total",
        "rate(x_total[1m]) / ignoring(i) group_left sum by (a,b)(rate(x_total[1m]))",
        "sum by (a)(x_total) / on(a) group_right x_total",
        "x_total - on(i) x_total > bool 0",
        "sum by (a,b)(rate(x_total[1m])) / sum by (a,b)(increase(x_total[2m]))",
    ]
    for expr in expressions:
        for start, end, step in ((0.0, 900.0, 7.0), (100.0, 700.0, 1.0), (0.0, 2000.0, 60.0)):
            _, matrix = evaluator.range(expr, start, end, step)
            by_step: dict[float, dict[object, float]] = {}
            for labels, points in matrix:
                for t, v in points:
                    by_step.setdefault(t, {})[key_of(labels)] = v
            count = math.floor((end - start) / step + 1e-9) + 1
            for t in (start + i * step for i in range(count)):
                _, vector = evaluator.instant(expr, t)
                want = {key_of(labels): repr(v) for labels, v in vector}
                assert {k: repr(v) for k, v in by_step.get(t, {}).items()} == want, (expr, t)


def test_format_values_is_format_value_of_each() -> None:
    rng = random.Random(17)
    special = [0.0, -0.0, 1.0, -5.0, 123.0, 1e15, 1e16, -1e16, 2.5e16, 1e-7, 1.5e-5, 0.1, 1 / 3, 1e300]
    special += [math.nan, math.inf, -math.inf]
    cases = [
        [],
        special,
        [rng.random() * 100 for _ in range(3000)],  # all distinct
        [rng.choice(special) for _ in range(3000)],  # mostly repeats, the specials among them
        [rng.choice([0.0, -0.0, 0.25, 7.0, math.nan]) for _ in range(5000)],
        [float(i % 7) / 3 for i in range(10_000)],
        [float(i) for i in range(-50, 5000)] + [-0.0, 0.0, 1e15 - 1],  # all integral
        [float(i) for i in range(-50, 5000)] + [0.5, 1e15, math.nan],
    ]
    for values in cases:
        assert format_values(values) == [format_value(v) for v in values]


def test_matrix_body_is_the_json_answer_byte_for_byte() -> None:
    rng = random.Random(18)
    steps = [1_796_000_000.0 + i * 15 for i in range(200)]
    columns = []
    for k in range(12):
        if k % 3 == 0:
            ts = steps  # series on the query's steps share one list
        elif k % 3 == 1:
            ts = steps[rng.randint(0, 50) : rng.randint(150, 200)]
        else:
            ts = [1.5, 2.25, 1e10 + 0.001][: rng.randint(0, 3)]
        vs = [rng.choice([rng.random(), 0.0, 3.0, math.nan, math.inf, -1e-9, 1e17]) for _ in ts]
        columns.append(({"__name__": "x", "k": str(k), "q": 'a "quoted" \u00e9 value'}, ts, vs))
    want = _success_body(
        {
            "resultType": "matrix",
            "result": [
                {"metric": labels, "values": [[t, format_value(v)] for t, v in zip(ts, vs, strict=True)]}
                for labels, ts, vs in columns
            ],
        }
    )
    assert _matrix_body(columns) == want
    assert _matrix_body([]) == _success_body({"resultType": "matrix", "result": []})


def test_a_series_held_as_columns_makes_its_lists_on_demand() -> None:
    ts, vs = np.array([1.0, 2.0, 4.0]), np.array([3.0, 0.5, 9.0])
    series = RawSeries({"__name__": "x"}, arrays=(ts, vs))
    assert len(series) == 3
    assert series.columns()[0] is ts
    assert series.ts == [1.0, 2.0, 4.0] and series.vs == [3.0, 0.5, 9.0]
    assert series.in_window((1.0, 4.0)) == ([2.0, 4.0], [0.5, 9.0])
    assert series.latest(3.0, 300.0) == 1


def test_latest_at_is_latest_at_each_time() -> None:
    rng = random.Random(19)
    for _ in range(40):
        ts, vs = _samples(rng, rng.choice([0, 1, 5, 200]))
        series = RawSeries({"__name__": "x"}, ts, vs)
        times = sorted(rng.uniform(-50, 3000) for _ in range(rng.randint(1, 80)))
        times += rng.sample([*ts, math.inf, -math.inf, 1e300], k=min(3, len(ts) + 1))  # on a sample, off the scale
        lookback = rng.choice([1.0, 30.0, 300.0])
        for stamps, column in ((False, vs), (True, ts)):
            want = [None if (i := series.latest(t, lookback)) is None else column[i] for t in times]
            assert _same(series.latest_at(times, lookback, stamps=stamps), want)


def test_arithmetic_over_vectors_is_the_operator_at_each_point() -> None:
    rng = random.Random(20)
    special = [0.0, -0.0, 1.0, -2.5, 1e308, -1e308, 1e-320, math.nan, math.inf, -math.inf, None]
    steps = 400
    left, right = Vector(), Vector()
    for k in range(3):
        labels = {"__name__": "m", "k": str(k)}
        for side in (left, right):
            side.series[key_of(labels)] = (labels, [rng.choice([*special, rng.random() * 10]) for _ in range(steps)])
    scalar = [rng.choice([0.0, -0.0, 3.0, -1.0, math.nan, math.inf, 1e-300]) for _ in range(steps)]
    times = [float(i) for i in range(steps)]

    def with_scalar(key: LabelKey, i: int) -> tuple[float, float] | None:
        v = left.series[key][1][i]
        return None if v is None else (v, scalar[i])

    def scalar_first(key: LabelKey, i: int) -> tuple[float, float] | None:
        v = left.series[key][1][i]
        return None if v is None else (scalar[i], v)

    def with_vector(key: LabelKey, i: int) -> tuple[float, float] | None:
        v, w = left.series[key][1][i], right.series[key][1][i]
        return None if v is None or w is None else (v, w)

    for op in ("+", "-", "*", "/"):
        for got, operands in (
            (binary(op, left, Scalar(scalar), None, times), with_scalar),
            (binary(op, Scalar(scalar), left, None, times), scalar_first),
            (binary(op, left, right, None, times), with_vector),
        ):
            assert isinstance(got, Vector)
            for key in left.series:
                want = [None if (ab := operands(key, i)) is None else _apply(op, *ab, False) for i in range(steps)]
                out_key = tuple(pair for pair in key if pair[0] != "__name__")
                assert _same(got.series[out_key][1], want), (op, operands.__name__)


def test_matched_arithmetic_is_the_step_by_step_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    """Vector-vector arithmetic with its fast paths and with the step-by-step path alone: the same
    series in the same order with the same values, or the same refusal."""
    from devbox.mocks.metrics.promql import binary as binary_module

    rng = random.Random(21)
    source = ListSource()
    for k in range(8):
        ts, vs = _samples(rng, rng.choice([40, 150, 400]), finite=True)
        source.add({"__name__": "x_total", "a": f"a{k % 2}", "b": f"b{k % 3}", "i": str(k)}, zip(ts, vs, strict=True))
        source.add(
            {"__name__": "y_total", "a": f"a{k % 2}", "b": f"b{k % 3}", "i": str(k)}, zip(ts, vs[::-1], strict=True)
        )
    expressions = [
        "rate(x_total[1m]) / rate(y_total[1m])",
        "x_total - ignoring(i) group_left sum by (a,b)(y_total)",
        "sum by (a,b)(rate(x_total[1m])) * sum by (a,b)(rate(y_total[2m]))",
        "sum by (a)(x_total) + on(a) sum by (a)(y_total)",
        "x_total / on(a) y_total",  # many-to-many: refused
        "rate(x_total[1m]) - on(__name__) rate(y_total[1m])",  # every pair has the same labels: refused
        "x_total + on(i) y_total",
        # unique match groups, but both pairs come out as {i="1"}: refused
        '{__name__=~"x_total|y_total", i="1"} + on(__name__, i) {__name__=~"x_total|y_total", i="1"}',
    ]

    def answers() -> list[object]:
        out: list[object] = []
        for expr in expressions:
            try:
                out.append(Evaluator(source).range(expr, 0.0, 1500.0, 7.0))
            except QueryError as exc:
                out.append(str(exc))
        return [repr(a) for a in out]

    fast = answers()
    monkeypatch.setattr(binary_module, "_ARITHMETIC", {})
    assert fast == answers()
