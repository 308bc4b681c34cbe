"""Where the engine reads samples: label matchers, a stored series, the :class:`SampleSource` seam."""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from devbox.mocks.metrics.promql.errors import QueryError

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
        hit = full_regex(self.value).fullmatch(got) is not None
        return hit if self.op == "=~" else not hit


_REGEX_CACHE: dict[str, re.Pattern[str]] = {}


def full_regex(pattern: str) -> re.Pattern[str]:
    found = _REGEX_CACHE.get(pattern)
    if found is None:
        try:
            found = re.compile(pattern, re.DOTALL)
        except re.error as exc:
            raise QueryError(f"invalid regular expression {pattern!r}: {exc}") from None
        if len(_REGEX_CACHE) < 1024:
            _REGEX_CACHE[pattern] = found
    return found


@dataclass
class RawSeries:
    """Samples of one stored series, sorted by time. ``labels`` includes ``__name__``."""

    labels: Labels
    ts: list[float]
    vs: list[float]

    def in_window(self, window: tuple[float, float]) -> tuple[list[float], list[float]]:
        """Timestamps and values of the samples in ``(start, end]``: what a range selector sees."""
        lo = bisect.bisect_right(self.ts, window[0])
        hi = bisect.bisect_right(self.ts, window[1])
        return self.ts[lo:hi], self.vs[lo:hi]

    def latest(self, t: float, lookback: float) -> int | None:
        """Index of the newest sample in (t - lookback, t] — what an instant selector sees at t."""
        i = bisect.bisect_right(self.ts, t) - 1
        return i if i >= 0 and self.ts[i] > t - lookback else None


class SampleSource(Protocol):
    """Where the evaluator reads samples from (the store, or a list in tests)."""

    def select(self, matchers: Sequence[LabelMatcher], start: float, end: float) -> list[RawSeries]:
        """Series matching every matcher, with their samples in ``[start, end]``."""
        ...


class ListSource:
    """A :class:`SampleSource` over series held in memory (tests, scrape previews)."""

    def __init__(self, series: Iterable[RawSeries] = ()) -> None:
        self.series = list(series)

    def add(self, labels: Labels, samples: Iterable[tuple[float, float]]) -> None:
        pts = sorted(samples)
        self.series.append(RawSeries(dict(labels), [t for t, _ in pts], [v for _, v in pts]))

    def select(self, matchers: Sequence[LabelMatcher], start: float, end: float) -> list[RawSeries]:
        out = []
        for s in self.series:
            if all(m.matches(s.labels) for m in matchers):
                lo, hi = bisect.bisect_left(s.ts, start), bisect.bisect_right(s.ts, end)
                if hi > lo:
                    out.append(RawSeries(s.labels, s.ts[lo:hi], s.vs[lo:hi]))
        return out


__all__ = ["LabelMatcher", "Labels", "ListSource", "RawSeries", "SampleSource", "full_regex"]
