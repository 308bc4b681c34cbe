"""The one-pass range functions give exactly what the per-window reference gives (bit for bit),
with counter resets, gaps, irregular samples and windows that hold 0, 1 or many samples; and the
aggregation fast path for groups of one keeps NaN and infinities as they are."""

from __future__ import annotations

import math
import random

from devbox.mocks.metrics.promql import Evaluator, ListSource
from devbox.mocks.metrics.promql.range_functions import _extrapolated, _rates
from devbox.mocks.metrics.promql.source import RawSeries


def _series(rng: random.Random) -> RawSeries:
    ts, vs, t, v = [], [], 0.0, 0.0
    for _ in range(rng.randint(0, 400)):
        t += rng.choice([1.0, 1.0, 1.0, 0.5, 3.0, 17.0, 0.001])
        v = 0.0 if rng.random() < 0.03 else v + rng.random() * 10  # resets now and then
        ts.append(t)
        vs.append(v if rng.random() > 0.01 else -v)
    return RawSeries({"__name__": "x_total"}, ts, vs)


def test_rates_match_the_per_window_reference_bit_for_bit() -> None:
    rng = random.Random(15)
    for _ in range(60):
        s = _series(rng)
        rng_seconds = rng.choice([1.0, 5.0, 60.0, 300.0])
        step = rng.choice([0.7, 1.0, 15.0])
        windows = [(t - rng_seconds, t) for t in (i * step for i in range(int(500 / step)))]
        for counter, rate in ((True, True), (True, False), (False, False)):
            got = _rates(s, windows, counter=counter, rate=rate)
            want = [_extrapolated(*s.in_window(w), w, counter=counter, rate=rate) for w in windows]
            assert [repr(v) for v in got] == [repr(v) for v in want]  # repr: bit-exact, NaN included


def test_group_of_one_keeps_special_values() -> None:
    source = ListSource()
    source.add({"__name__": "g", "a": "1"}, [(0.0, math.inf), (10.0, math.nan), (20.0, -0.0)])
    ev = Evaluator(source)
    for op in ("sum", "avg", "min", "max"):
        _, got = ev.range(f"{op} by (a) (g)", 0.0, 20.0, 10.0)
        values = [v for _, v in got[0][1]]
        assert values[0] == math.inf and math.isnan(values[1]) and values[2] == 0.0
