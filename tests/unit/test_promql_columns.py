"""The range functions computed over all steps at once (numpy) give exactly what the per-window
reference gives, bit for bit: NaN, infinities, resets, gaps and windows of 0, 1 or many samples."""

from __future__ import annotations

import math
import random

from devbox.mocks.metrics.promql.range_functions import (
    _EXACT_COLUMNS,
    _Bounds,
    _exact_columns,
    _instant_delta,
    _over_time,
)
from devbox.mocks.metrics.promql.source import RawSeries


def _series(rng: random.Random) -> RawSeries:
    ts, vs, t, v = [], [], 0.0, 0.0
    for _ in range(rng.randint(0, 300)):
        t += rng.choice([1.0, 1.0, 0.5, 3.0, 17.0, 0.001])
        v = rng.choice([0.0, v, v, v + rng.random() * 10, -v, math.nan, math.inf, -math.inf])
        ts.append(t)
        vs.append(v)
    return RawSeries({"__name__": "x"}, ts, vs)


def _reference(name: str, ts: list[float], vs: list[float]) -> float | None:
    if name in ("irate", "idelta"):
        return _instant_delta(ts, vs, rate=name == "irate")
    return _over_time(name, ts, vs, None)


def test_columns_match_the_per_window_reference_bit_for_bit() -> None:
    rng = random.Random(16)
    for _ in range(60):
        s = _series(rng)
        width = rng.choice([0.5, 1.0, 5.0, 60.0])
        step = rng.choice([0.7, 1.0, 15.0])
        windows = [(t - width, t) for t in (i * step for i in range(int(400 / step)))]
        bounds = _Bounds(windows)
        for name in sorted(_EXACT_COLUMNS):
            got = _exact_columns(name, s, bounds)
            want = [_reference(name, *s.in_window(w)) for w in windows]
            assert [repr(v) for v in got] == [repr(v) for v in want], name
