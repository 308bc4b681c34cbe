"""Where the engine reads samples: label matchers, a stored series, the :class:`SampleSource` seam."""

from __future__ import annotations

import bisect
import functools
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from devbox.mocks.metrics.promql.errors import QueryError

from devbox.regex import compile_re2

if TYPE_CHECKING:  # numpy is imported where the columns are made: ~13 MB and ~50 ms a platform without samples skips
    import numpy as np

Labels = dict[str, str]


@dataclass(frozen=True)
class LabelMatcher:
    """One label matcher: ``op`` is ``=``, ``!=``, ``=~`` or ``!~``."""

    name: str
    op: str
    value: str

    def matches(self, labels: Labels) -> bool:
        got = labels.get(self.name, "")
        if self.op == "=":
            return got == self.value
        if self.op == "!=":
            return got != self.value
        hit = full_regex(self.value).matches(got)
        return hit if self.op == "=~" else not hit


class LabelRegex:
    """A label matcher's regex: RE2 (linear time, Go's syntax, as Prometheus), fully anchored.

    Python's ``re`` backtracks: ``(a+)+$`` against a hostile label value takes exponential time
    while the query holds a worker. RE2 cannot. Label values repeat across series, so answers are
    remembered per value (bounded), and a plain alternation of literals (``a|b|c``, what Grafana
    variables produce) is a set look-up without any regex engine.
    """

    __slots__ = ("_anchor", "_literals", "_regexp", "_seen", "compiled", "pattern")

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self._seen: dict[str, bool] = {}
        self._literals = frozenset(pattern.split("|")) if _LITERALS.fullmatch(pattern) else None
        try:
            # Prometheus compiles "^(?s:" + pattern + ")$": dot matches newline, anchored at both ends
            self.compiled = compile_re2(f"(?s:{pattern})")
        except ValueError as exc:
            raise QueryError(f"invalid regular expression {pattern!r}: {exc}") from None
        self._regexp = getattr(self.compiled, "_regexp", None)
        self._anchor = _anchor_both() if self._regexp is not None else None

    def matches(self, value: str) -> bool:
        if self._literals is not None:
            return value in self._literals
        hit = self._seen.get(value)
        if hit is None:
            if self._regexp is not None:  # the binding's matcher without building a match object (8x faster)
                encoded = value.encode()
                hit = self._regexp.Match(self._anchor, encoded, 0, len(encoded))[0] != _NO_MATCH
            else:
                hit = self.compiled.fullmatch(value) is not None
            if len(self._seen) < _SEEN_PER_REGEX:
                self._seen[value] = hit
        return hit

    def fullmatch(self, value: str) -> Any:
        """The match object (with groups, for ``label_replace``), or None."""
        return self.compiled.fullmatch(value)


@functools.cache
def _anchor_both() -> Any:
    """The binding's anchor constant; re2 imported with the first regex (~1.5 MB an idle platform skips)."""
    import re2  # type: ignore[import-untyped]

    return getattr(getattr(re2, "_Anchor", None), "ANCHOR_BOTH", None)


_NO_MATCH = (-1, -1)
_LITERALS = re.compile(r"[A-Za-z0-9_:/@,= -]*(?:\|[A-Za-z0-9_:/@,= -]*)*")
_SEEN_PER_REGEX = 4096
_REGEX_CACHE: dict[str, LabelRegex] = {}


def full_regex(pattern: str) -> LabelRegex:
    """The compiled (and cached) matcher for ``pattern``; QueryError if RE2 refuses it."""
    found = _REGEX_CACHE.get(pattern)
    if found is None:
        found = LabelRegex(pattern)
        if len(_REGEX_CACHE) >= 1024:
            _REGEX_CACHE.clear()
        _REGEX_CACHE[pattern] = found
    return found


class RawSeries:
    """Samples of one stored series, sorted by time. ``labels`` includes ``__name__``.

    Holds the samples as lists (``ts``, ``vs``), as float64 columns (``arrays``, when the source has
    them at hand: the store's head), or both. A series given only as columns makes its lists on
    first use: the range functions read the columns, so a rate over a head-held hour never builds
    the 2 x 3,600 float objects per series the lists would cost.
    """

    __slots__ = ("_ts", "_vs", "arrays", "labels")

    def __init__(
        self,
        labels: Labels,
        ts: list[float] | None = None,
        vs: list[float] | None = None,
        arrays: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        if (ts is None or vs is None) and arrays is None:
            raise ValueError("a series needs its samples as lists or as columns")
        self.labels = labels
        self._ts = ts
        self._vs = vs
        #: the same samples as float64 columns (when given, they are what the lists would hold)
        self.arrays = arrays

    @property
    def ts(self) -> list[float]:
        if self._ts is None:
            assert self.arrays is not None
            self._ts = self.arrays[0].tolist()
        return self._ts

    @property
    def vs(self) -> list[float]:
        if self._vs is None:
            assert self.arrays is not None
            self._vs = self.arrays[1].tolist()
        return self._vs

    def __len__(self) -> int:
        return len(self._ts) if self._ts is not None else len(self.arrays[0]) if self.arrays is not None else 0

    def __repr__(self) -> str:
        return f"RawSeries({self.labels!r}, {len(self)} samples)"

    def columns(self) -> tuple[np.ndarray, np.ndarray]:
        """Timestamps and values as numpy float64 columns (the vectorised range functions read these)."""
        import numpy as np
        if self.arrays is not None and (self._ts is None or len(self.arrays[0]) == len(self._ts)):
            return self.arrays
        return np.asarray(self.ts, dtype=np.float64), np.asarray(self.vs, dtype=np.float64)

    def in_window(self, window: tuple[float, float]) -> tuple[list[float], list[float]]:
        """Timestamps and values of the samples in ``(start, end]``: what a range selector sees."""
        lo = bisect.bisect_right(self.ts, window[0])
        hi = bisect.bisect_right(self.ts, window[1])
        return self.ts[lo:hi], self.vs[lo:hi]

    def latest(self, t: float, lookback: float) -> int | None:
        """Index of the newest sample in (t - lookback, t] — what an instant selector sees at t."""
        i = bisect.bisect_right(self.ts, t) - 1
        return i if i >= 0 and self.ts[i] > t - lookback else None

    def latest_at(self, times: Sequence[float], lookback: float, *, stamps: bool = False) -> list[float | None]:
        """:meth:`latest` at every time at once: the newest sample's value (its timestamp if
        ``stamps``) in (t - lookback, t], or None. One ``searchsorted`` over the steps instead of a
        bisect per step; the comparisons are the same IEEE ones, so the answer is too."""
        import numpy as np
        ts, vs = self.columns()
        at = np.asarray(times, dtype=np.float64)
        idx = np.searchsorted(ts, at, side="right") - 1
        seen = idx >= 0
        idx[~seen] = 0
        if len(ts):
            seen &= ts[idx] > at - lookback
        else:
            seen[:] = False
        out: list[float | None] = (ts if stamps else vs)[idx].tolist() if len(ts) else [None] * len(at)
        for k in np.flatnonzero(~seen).tolist():
            out[k] = None
        return out


class SampleBudget:
    """What one query may still spend: samples read or held, and time until its deadline.

    Charged as work is about to be done (a selector's samples, a vector's points per step, a
    subquery's steps), so an oversized query is refused before it builds its lists, not after.
    """

    def __init__(self, max_samples: int, deadline: float | None = None) -> None:
        self.max_samples = max_samples
        #: on :func:`time.monotonic`'s clock; None: no timeout
        self.deadline = deadline
        self.used = 0

    def charge(self, samples: int) -> None:
        self.used += samples
        if self.used > self.max_samples:
            raise QueryError(
                f"query processing would load too many samples into memory (over {self.max_samples:,}); "
                "narrow the selectors, shorten the range or raise the step"
            )
        self.check_time()

    def check_time(self) -> None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise QueryError("query timed out in expression evaluation")


class SampleSource(Protocol):
    """Where the evaluator reads samples from (the store, or a list in tests)."""

    def select(
        self, matchers: Sequence[LabelMatcher], start: float, end: float, *, budget: SampleBudget | None = None
    ) -> list[RawSeries]:
        """Series matching every matcher, with their samples in ``[start, end]``; ``budget`` is charged
        for the samples read."""
        ...


class ListSource:
    """A :class:`SampleSource` over series held in memory (tests, scrape previews)."""

    def __init__(self, series: Iterable[RawSeries] = ()) -> None:
        self.series = list(series)

    def add(self, labels: Labels, samples: Iterable[tuple[float, float]]) -> None:
        pts = sorted(samples)
        self.series.append(RawSeries(dict(labels), [t for t, _ in pts], [v for _, v in pts]))

    def select(
        self, matchers: Sequence[LabelMatcher], start: float, end: float, *, budget: SampleBudget | None = None
    ) -> list[RawSeries]:
        out = []
        for s in self.series:
            if all(m.matches(s.labels) for m in matchers):
                lo, hi = bisect.bisect_left(s.ts, start), bisect.bisect_right(s.ts, end)
                if hi > lo:
                    if budget is not None:
                        budget.charge(hi - lo)
                    out.append(RawSeries(s.labels, s.ts[lo:hi], s.vs[lo:hi]))
        return out


__all__ = [
    "LabelMatcher",
    "LabelRegex",
    "Labels",
    "ListSource",
    "RawSeries",
    "SampleBudget",
    "SampleSource",
    "full_regex",
]
