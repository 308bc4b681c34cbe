"""devbox's composite indicators (007's "复合指标"), plugged into the PromQL engine by name.

An indicator is a formula over base metrics (``success_rate``, ``error_rate``, ... from
``metrics.indicators`` in devbox.yaml) queried like a metric: in PromQL, in the devbox API and in
alert rules. The generic engine (:mod:`devbox.mocks.metrics.promql`) knows nothing of them; an
:class:`Indicator` is a :class:`~devbox.mocks.metrics.promql.ComputedMetric`, handed to the
evaluator as ``Evaluator(source, computed=indicators)``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from devbox.mocks.metrics.promql import (
    NAME,
    LabelKey,
    LabelMatcher,
    Matrix,
    QueryError,
    RawSeries,
    Scalar,
    Value,
    Vector,
    key_of,
    parse,
)
from devbox.mocks.metrics.promql.parse import short

if TYPE_CHECKING:  # the evaluator and its operators load with the first evaluation, not with the platform
    from devbox.mocks.metrics.promql import Evaluator


def looks_like_counter(name: str) -> bool:
    """Without metadata, Prometheus's naming conventions say which base metrics are cumulative."""
    return name.endswith(("_total", "_count", "_sum", "_bucket"))


@dataclass
class Indicator:
    """A composite indicator: a formula over base metrics, evaluated like a metric.

    ``formula`` uses only selectors, numbers, parentheses and arithmetic, e.g.
    ``rpc_server_requests_total{status="ok"} * 100 / rpc_server_requests_total``. Each selector is
    evaluated as ``sum by (<by>) (rate(sel{<filters>}[window]))`` for counters (``sum by`` of the
    plain selector for gauges), so the formula combines like-grouped series. ``is_counter`` tells
    counters from gauges (the metrics core answers from stored metadata).
    """

    kind: ClassVar[str] = "composite indicator"

    name: str
    formula: str
    by: list[str] = field(default_factory=list)
    window: float = 60.0
    help: str = ""
    is_counter: Callable[[str], bool] = field(default=looks_like_counter, repr=False, compare=False)

    @functools.cached_property
    def ast(self) -> Any:
        """The formula's AST, parsed on first use; QueryError if it is not a formula. The config
        checked the user's formulas when it was loaded, so a platform parses the built-in ones only
        when they are first asked for (no PromQL parser in an idle platform)."""
        ast = parse(self.formula)
        check_formula(ast)
        return ast

    def instant_vector(self, evaluator: Evaluator, filters: list[LabelMatcher], times: list[float]) -> Vector:
        """As a selector in PromQL: filtered by the selector's matchers, grouped by the default ``by``."""
        return self.evaluate(evaluator, times, filters=filters, by=self.by)

    def evaluate(self, ev: Evaluator, times: list[float], *, filters: list[LabelMatcher], by: list[str]) -> Vector:
        """The formula with every base metric filtered, rated and summed by ``by``.

        Each base metric is read from the store once per evaluation, and every selector of it is
        picked from that one read: spans keep arriving while a formula is evaluated, and a
        ``ok * 100 / all`` whose two sides were read a moment apart could pass 100."""
        from devbox.mocks.metrics.promql.aggregation import aggregate
        from devbox.mocks.metrics.promql.binary import binary

        reads = Reads(ev, times, filters, lookback=max(self.window, ev.lookback))

        def walk(n: Any) -> Value:
            kind = type(n).__name__
            if kind == "NumberLiteral":
                return Scalar([float(n.val)] * len(times))
            if kind == "ParenExpr":
                return walk(n.expr)
            if kind == "UnaryExpr":
                inner = walk(n.expr)
                return binary("*", Scalar([-1.0] * len(times)), inner, None, times)
            if kind == "BinaryExpr":
                return binary(str(n.op), walk(n.lhs), walk(n.rhs), None, times)
            base = self._base(n, times, reads)
            summed = aggregate("sum", base, by=by, without=False, times=times)
            if self.is_counter(n.name or "") and n.matchers.matchers:
                self._zero_fill(summed, n.name, times, reads, by)
            return summed

        result = walk(self.ast)
        if isinstance(result, Scalar):
            return Vector({(): ({}, list(result.values))})
        assert isinstance(result, Vector)
        return result

    def _zero_fill(self, summed: Vector, name: str, times: list[float], reads: Reads, by: list[str]) -> None:
        """A filtered counter with no events in a group is 0 there, not absent: a service whose every
        call failed has a success rate of 0 (and alerts), not no success rate at all."""
        from devbox.mocks.metrics.promql.aggregation import aggregate

        whole = self._base(parse(name), times, reads)
        for key, (labels, values) in aggregate("sum", whole, by=by, without=False, times=times).series.items():
            if key not in summed.series:
                summed.series[key] = (labels, [None if v is None else 0.0 for v in values])

    def _base(self, n: Any, times: list[float], reads: Reads) -> Vector:
        """One base metric of the formula at each step: rated over ``window`` if a counter, else as is."""
        from devbox.mocks.metrics.promql.range_functions import range_fn

        window = self.window
        series = reads.select(n)
        if self.is_counter(n.name or ""):
            matrix = Matrix(list(series.values()), [(t - window, t) for t in times], window)
            return range_fn("rate", matrix, times)
        out = Vector()
        for s in series.values():
            vals = s.latest_at(times, reads.ev.lookback)
            out.series[key_of(s.labels)] = (s.labels, vals)
        return out


class Reads:
    """The series one evaluation of a formula reads, each metric name read from the store once."""

    def __init__(self, ev: Evaluator, times: list[float], filters: list[LabelMatcher], *, lookback: float) -> None:
        self.ev, self.filters = ev, filters
        self.start, self.end = min(times) - lookback, max(times)
        self._by_name: dict[str, list[RawSeries]] = {}

    def select(self, n: Any) -> dict[LabelKey, RawSeries]:
        """The series of selector ``n`` (its matcher groups or-ed), filtered by the query's filters."""
        found: dict[LabelKey, RawSeries] = {}
        for group in self.ev.matchers(n):
            if n.name:
                named = self._by_name.get(n.name)
                if named is None:
                    named = self._by_name[n.name] = self._read([m for m in group if m.name == NAME])
                picked = [s for s in named if all(m.matches(s.labels) for m in group)]
            else:  # no name to read by: this selector's own read
                picked = self._read(group)
            for s in picked:
                found.setdefault(key_of(s.labels), s)
        return found

    def _read(self, matchers: list[LabelMatcher]) -> list[RawSeries]:
        return self.ev.source.select(matchers + self.filters, self.start, self.end, budget=self.ev.budget)


def check_formula(node: Any) -> None:
    """Raise QueryError unless ``node`` is only selectors, numbers and arithmetic."""
    kind = type(node).__name__
    if kind in ("VectorSelector", "NumberLiteral"):
        return
    if kind == "ParenExpr":
        check_formula(node.expr)
    elif kind == "UnaryExpr":
        check_formula(node.expr)
    elif kind == "BinaryExpr" and str(node.op) in ("+", "-", "*", "/", "%", "^"):
        check_formula(node.lhs)
        check_formula(node.rhs)
    else:
        raise QueryError(
            f"a composite indicator formula may only use metric names, numbers and + - * / % ^, "
            f"not {kind} {short(node)}"
        )


def selector_names(node: Any) -> set[str]:
    """The base metric names a formula reads."""
    kind = type(node).__name__
    if kind == "VectorSelector":
        return {node.name} if node.name else set()
    if kind == "BinaryExpr":
        return selector_names(node.lhs) | selector_names(node.rhs)
    if kind in ("ParenExpr", "UnaryExpr"):
        return selector_names(node.expr)
    return set()


__all__ = ["Indicator", "check_formula", "looks_like_counter", "selector_names"]
