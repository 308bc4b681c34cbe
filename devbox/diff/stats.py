"""The two tests the diff uses, in plain Python (no scipy/numpy in devbox's dependencies).

- :func:`mann_whitney` — two-sided Mann-Whitney U with the normal approximation, tie-corrected
  and continuity-corrected (what ``scipy.stats.mannwhitneyu(..., method="asymptotic")`` does). The
  samples here are latencies or per-request call counts: hundreds of values, where the
  approximation is good; below 8 values on a side it answers p = 1 (never significant).
- :func:`two_proportions` — two-sided z-test of two error rates with the pooled proportion.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

MIN_SAMPLE = 8
#: What "significant" means wherever devbox tests a difference.
ALPHA_DEFAULT = 0.01


def normal_sf(z: float) -> float:
    """P(Z > z) for a standard normal Z."""
    return 0.5 * math.erfc(z / math.sqrt(2))


def mann_whitney(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p-value that ``a`` and ``b`` come from the same distribution."""
    n1, n2 = len(a), len(b)
    if n1 < MIN_SAMPLE or n2 < MIN_SAMPLE:
        return 1.0
    pooled = sorted([(v, 0) for v in a] + [(v, 1) for v in b])
    ranks_a = 0.0
    ties = 0.0
    i = 0
    n = n1 + n2
    while i < n:
        j = i
        while j + 1 < n and pooled[j + 1][0] == pooled[i][0]:
            j += 1
        rank = (i + j) / 2 + 1  # average rank of the tie group
        t = j - i + 1
        ties += t**3 - t
        ranks_a += rank * sum(1 for k in range(i, j + 1) if pooled[k][1] == 0)
        i = j + 1
    u1 = ranks_a - n1 * (n1 + 1) / 2
    mu = n1 * n2 / 2
    sigma = math.sqrt(n1 * n2 / 12 * ((n + 1) - ties / (n * (n - 1))))
    if sigma == 0:
        return 1.0
    z = (abs(u1 - mu) - 0.5) / sigma
    return min(1.0, 2 * normal_sf(max(z, 0.0)))


def two_proportions(x1: int, n1: int, x2: int, n2: int) -> float:
    """Two-sided p-value that ``x1/n1`` and ``x2/n2`` are the same rate."""
    if n1 == 0 or n2 == 0:
        return 1.0
    pooled = (x1 + x2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return 1.0
    z = abs(x1 / n1 - x2 / n2) / se
    return min(1.0, 2 * normal_sf(z))


def quantile(values: Sequence[float], q: float) -> float:
    """Nearest-rank quantile (0 for no values); ``values`` need not be sorted."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return float(ordered[min(rank, len(ordered)) - 1])
