"""Order statistics and variance computed the way Prometheus does (same rounding), for functions and aggregation."""

from __future__ import annotations

import math


def quantile(q: float, values: list[float]) -> float:
    if not values:
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    ordered = sorted(values)
    rank = q * (len(ordered) - 1)
    lo = max(0, math.floor(rank))
    hi = min(len(ordered) - 1, lo + 1)
    weight = rank - math.floor(rank)
    return ordered[lo] * (1 - weight) + ordered[hi] * weight


def _kahan_inc(inc: float, total: float, comp: float) -> tuple[float, float]:
    """Neumaier-compensated addition, as Prometheus's kahanSumInc."""
    t = total + inc
    if abs(total) >= abs(inc):
        comp += (total - t) + inc
    else:
        comp += (inc - t) + total
    return t, comp


def variance(values: list[float]) -> float:
    """Population variance: Welford's algorithm with compensated sums, as Prometheus (same rounding)."""
    count = mean = c_mean = aux = c_aux = 0.0
    for v in values:
        count += 1
        delta = v - (mean + c_mean)
        mean, c_mean = _kahan_inc(delta / count, mean, c_mean)
        aux, c_aux = _kahan_inc(delta * (v - (mean + c_mean)), aux, c_aux)
    return (aux + c_aux) / count


__all__ = ["quantile", "variance"]
