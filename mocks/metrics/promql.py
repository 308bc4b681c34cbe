"""PromQL evaluation over devbox's stored samples.

Parsing is done by the ``promql-parser`` package (a binding of a real PromQL parser); this module
only walks its AST. Evaluation is vectorised over the steps of a range query: every node is
evaluated once for all step timestamps, which keeps a 1 h range query of many series cheap.

What is covered: instant selectors with ``=``, ``!=``, ``=~``, ``!~`` (and ``or`` matcher sets),
range selectors, ``offset`` and ``@``, subqueries, ``rate``/``increase``/``irate``/``delta``/
``idelta``/``deriv``/``changes``/``resets``/``*_over_time``, the math and label functions,
``histogram_quantile``, ``sum``/``avg``/``min``/``max``/``count``/``group``/``stddev``/``stdvar``/
``topk``/``bottomk``/``quantile``/``count_values`` with ``by``/``without``, arithmetic, comparison
(filtering and ``bool``) and set operators between scalars and vectors, with ``on``/``ignoring``
and ``group_left``/``group_right``. Staleness: an instant selector sees the newest sample within
the 5 minute lookback, like Prometheus.

LIMITATIONS: no native histograms, no staleness markers (a series stops being visible 5 minutes
after its last sample rather than at once), no query timeout (only the 11,000-steps limit);
``double_exponential_smoothing``, ``limitk``, ``sort_by_label``, ``info`` and the date functions
are not implemented (they answer a ``QueryError`` that names them). Checked against Prometheus's
own engine by ``tests/integration/test_metrics_promql_oracle.py``.
"""

from __future__ import annotations

import bisect
import copy
import itertools
import logging
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import promql_parser as pp

LOG = logging.getLogger(__name__)

LOOKBACK_SECONDS = 300.0
#: Refuse range queries with more steps than this (Prometheus refuses > 11000 points per series).
MAX_STEPS = 11000

Labels = dict[str, str]
LabelKey = tuple[tuple[str, str], ...]
NAME = "__name__"


class QueryError(Exception):
    """The query cannot be parsed or evaluated; ``str()`` is the reason, suitable for a user."""


# --- sample source --------------------------------------------------------------------------


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
        hit = _full_regex(self.value).fullmatch(got) is not None
        return hit if self.op == "=~" else not hit


_REGEX_CACHE: dict[str, re.Pattern[str]] = {}


def _full_regex(pattern: str) -> re.Pattern[str]:
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


# --- composite indicators -------------------------------------------------------------------


@dataclass
class Indicator:
    """A composite indicator: a formula over base metrics, evaluated like a metric.

    ``formula`` uses only selectors, numbers, parentheses and arithmetic, e.g.
    ``rpc_server_requests_total{status="ok"} * 100 / rpc_server_requests_total``. Each selector is
    evaluated as ``sum by (<by>) (rate(sel{<filters>}[window]))`` for counters (``sum by`` of the
    plain selector for gauges), so the formula combines like-grouped series.
    """

    name: str
    formula: str
    by: list[str] = field(default_factory=list)
    window: float = 60.0
    help: str = ""

    def __post_init__(self) -> None:
        self.ast = parse(self.formula)
        check_formula(self.ast)


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
            f"not {kind} {_short(node)}"
        )


def _short(node: Any) -> str:
    text = str(node)
    return text if len(text) < 60 else text[:57] + "..."


# --- values ---------------------------------------------------------------------------------


@dataclass
class Scalar:
    values: list[float]


@dataclass
class StringVal:
    value: str


@dataclass
class Vector:
    """An instant vector at every step: label key -> (labels, value or None per step)."""

    series: dict[LabelKey, tuple[Labels, list[float | None]]] = field(default_factory=dict)


@dataclass
class Matrix:
    """A range vector for every step: each series' samples and the window per step."""

    series: list[RawSeries]
    #: (start, end] of the window at each step, in the samples' time.
    windows: list[tuple[float, float]]
    range_seconds: float


Value = Scalar | StringVal | Vector | Matrix


def key_of(labels: Labels) -> LabelKey:
    return tuple(sorted(labels.items()))


def parse(expr: str) -> Any:
    """Parse PromQL with ``promql-parser``; raise QueryError with the parser's reason."""
    if not expr or not expr.strip():
        raise QueryError("empty query")
    try:
        return pp.parse(expr)
    except (ValueError, TypeError) as exc:
        raise QueryError(f"parse error: {exc}") from None
    except BaseException as exc:  # the Rust binding may panic on odd input
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        raise QueryError(f"parse error: {exc}") from None


# --- evaluator ------------------------------------------------------------------------------


class Evaluator:
    """Evaluates PromQL against a :class:`SampleSource`, with optional composite indicators."""

    def __init__(
        self,
        source: SampleSource,
        *,
        indicators: dict[str, Indicator] | None = None,
        lookback: float = LOOKBACK_SECONDS,
        counter_names: Callable[[str], bool] | None = None,
    ) -> None:
        self.source = source
        self.indicators = indicators or {}
        self.lookback = lookback
        self._is_counter = counter_names or _looks_like_counter

    # entry points

    def instant(self, expr: str, at: float) -> tuple[str, Any]:
        """Evaluate at one time: ``("vector", [(labels, v)])``, ``("scalar", v)`` or ``("string", s)``."""
        node = parse(expr)
        value = self.fork((float(at), float(at)))._safe_eval(node, [float(at)], expr)
        if isinstance(value, Scalar):
            return "scalar", value.values[0]
        if isinstance(value, StringVal):
            return "string", value.value
        if isinstance(value, Matrix):
            return "matrix", [
                (s.labels, list(zip(*self._window_samples(s, value.windows[0]), strict=True)))
                for s in value.series
                if self._window_samples(s, value.windows[0])[0]
            ]
        out = [(labels, vals[0]) for labels, vals in value.series.values() if vals[0] is not None]
        return "vector", out

    def range(self, expr: str, start: float, end: float, step: float) -> tuple[str, Any]:
        """Evaluate at ``start, start+step, ... <= end``: ``("matrix", [(labels, [(t, v)])])``."""
        if step <= 0:
            raise QueryError("zero or negative query resolution step widths are not accepted")
        if end < start:
            raise QueryError("end timestamp must not be before start time")
        count = math.floor((end - start) / step + 1e-9) + 1
        if count > MAX_STEPS:
            raise QueryError(
                "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query "
                "resolution (?step=XX)"
            )
        times = [start + i * step for i in range(count)]
        node = parse(expr)
        if type(node).__name__ in ("MatrixSelector", "SubqueryExpr"):
            raise QueryError('invalid expression type "range vector" for range query, must be Scalar or instant Vector')
        value = self.fork((times[0], times[-1]))._safe_eval(node, times, expr)
        if isinstance(value, StringVal):
            raise QueryError('invalid expression type "string" for range query, must be Scalar or instant Vector')
        if isinstance(value, Scalar):
            return "matrix", [({}, list(zip(times, value.values, strict=True)))]
        assert isinstance(value, Vector)
        out = []
        for labels, vals in value.series.values():
            pts = [(t, v) for t, v in zip(times, vals, strict=True) if v is not None]
            if pts:
                out.append((labels, pts))
        return "matrix", out

    def fork(self, bounds: tuple[float, float]) -> Evaluator:
        """A copy for one query (``@ start()``/``end()`` bounds are per query; keeps threads apart)."""
        run = copy.copy(self)
        run._range_bounds = bounds
        return run

    # dispatch

    def _safe_eval(self, node: Any, times: list[float], expr: str) -> Value:
        """Evaluate; a failure that is not a QueryError is a devbox bug, reported as one (never a 500)."""
        try:
            return self._eval(node, times)
        except QueryError:
            raise
        except (ArithmeticError, TypeError, ValueError, AttributeError, IndexError, KeyError, RecursionError) as exc:
            LOG.exception("evaluating %r failed", expr)
            raise QueryError(f"devbox cannot evaluate this expression ({type(exc).__name__}: {exc})") from None

    def _eval(self, node: Any, times: list[float]) -> Value:
        kind = type(node).__name__
        handler = getattr(self, f"_eval_{kind}", None)
        if handler is None:
            raise QueryError(f"unsupported expression {kind}: {_short(node)}")
        return handler(node, times)

    def _eval_ParenExpr(self, node: Any, times: list[float]) -> Value:
        return self._eval(node.expr, times)

    def _eval_NumberLiteral(self, node: Any, times: list[float]) -> Value:
        return Scalar([float(node.val)] * len(times))

    def _eval_StringLiteral(self, node: Any, times: list[float]) -> Value:
        return StringVal(str(node.val))

    def _eval_UnaryExpr(self, node: Any, times: list[float]) -> Value:
        inner = self._eval(node.expr, times)
        if isinstance(inner, Scalar):
            return Scalar([-v for v in inner.values])
        if isinstance(inner, Vector):
            return Vector(
                {
                    key_of(lb): (lb, [None if v is None else -v for v in vals])
                    for lb, vals in ((_drop_name(lb), vals) for lb, vals in inner.series.values())
                }
            )
        raise QueryError("unary minus needs a scalar or an instant vector")

    # selectors

    def _matchers(self, node: Any) -> list[list[LabelMatcher]]:
        ops = {"Equal": "=", "NotEqual": "!=", "Re": "=~", "NotRe": "!~"}
        base: list[LabelMatcher] = []
        if node.name:
            base.append(LabelMatcher(NAME, "=", node.name))
        sets = [list(node.matchers.matchers)] if not node.matchers.or_matchers else node.matchers.or_matchers
        out = []
        for group in sets:
            ms = list(base)
            for m in group:
                op = ops[str(m.op).rsplit(".", 1)[-1]]
                if op in ("=~", "!~"):
                    _full_regex(m.value)
                ms.append(LabelMatcher(m.name, op, m.value))
            out.append(ms)
        return out

    def _select(self, node: Any, start: float, end: float) -> list[RawSeries]:
        found: dict[LabelKey, RawSeries] = {}
        for group in self._matchers(node):
            if not any(m.op in ("=", "=~") and not m.matches({}) for m in group) and not any(
                m.name == NAME for m in group
            ):
                raise QueryError("vector selector must contain at least one non-empty matcher")
            for s in self.source.select(group, start, end):
                found.setdefault(key_of(s.labels), s)
        return list(found.values())

    def _shift(self, node: Any, times: list[float]) -> list[float]:
        """Evaluation times after ``@`` and ``offset``."""
        out = list(times)
        at = getattr(node, "at", None)
        if at is not None:
            kind = str(at.type).rsplit(".", 1)[-1]
            if kind == "At":
                out = [at.at.timestamp()] * len(times)
            elif kind == "Start":
                out = [self._range_bounds[0]] * len(times)
            else:
                out = [self._range_bounds[1]] * len(times)
        offset = getattr(node, "offset", None)
        if offset is not None:
            delta = offset.total_seconds()
            out = [t - delta for t in out]
        return out

    _range_bounds: tuple[float, float] = (0.0, 0.0)

    def _eval_VectorSelector(self, node: Any, times: list[float]) -> Value:
        if node.name and node.name in self.indicators:
            return self._indicator(self.indicators[node.name], node, times)
        shifted = self._shift(node, times)
        lo, hi = min(shifted) - self.lookback, max(shifted)
        out = Vector()
        for s in self._select(node, lo, hi):
            vals = [None if (i := s.latest(t, self.lookback)) is None else s.vs[i] for t in shifted]
            if any(v is not None for v in vals):
                out.series[key_of(s.labels)] = (s.labels, vals)
        return out

    def _eval_MatrixSelector(self, node: Any, times: list[float]) -> Value:
        vs = node.vector_selector
        if vs.name and vs.name in self.indicators:
            raise QueryError(f"composite indicator {vs.name} cannot take a range; use it as an instant vector")
        rng = node.range.total_seconds()
        shifted = self._shift(vs, times)
        windows = [(t - rng, t) for t in shifted]
        series = self._select(vs, min(shifted) - rng, max(shifted))
        return Matrix(series, windows, rng)

    def _eval_SubqueryExpr(self, node: Any, times: list[float]) -> Value:
        rng = node.range.total_seconds()
        step = node.step.total_seconds() if node.step else 60.0
        shifted = self._shift(node, times)
        lo, hi = min(shifted) - rng, max(shifted)
        first = math.floor(lo / step) * step
        inner_times = []
        t = first
        while t <= hi:
            if t > lo:
                inner_times.append(t)
            t += step
        if len(inner_times) > MAX_STEPS * 10:
            raise QueryError("subquery has too many steps")
        if not inner_times:
            return Matrix([], [(t - rng, t) for t in shifted], rng)
        inner = self._eval(node.expr, inner_times)
        if isinstance(inner, Scalar):
            raise QueryError("subquery is only allowed on instant vector, got scalar")
        assert isinstance(inner, Vector)
        series = []
        for labels, vals in inner.series.values():
            pts = [(ts, v) for ts, v in zip(inner_times, vals, strict=True) if v is not None]
            series.append(RawSeries(labels, [p[0] for p in pts], [p[1] for p in pts]))
        return Matrix(series, [(t - rng, t) for t in shifted], rng)

    def _window_samples(self, s: RawSeries, window: tuple[float, float]) -> tuple[list[float], list[float]]:
        lo = bisect.bisect_right(s.ts, window[0])
        hi = bisect.bisect_right(s.ts, window[1])
        return s.ts[lo:hi], s.vs[lo:hi]

    # composite indicators

    def _indicator(self, ind: Indicator, node: Any, times: list[float], by: list[str] | None = None) -> Vector:
        extra = [m for m in self._matchers(node)[0] if m.name != NAME]
        value = self.eval_indicator(ind, times, filters=extra, by=by if by is not None else ind.by)
        return value

    def eval_indicator(
        self, ind: Indicator, times: list[float], *, filters: list[LabelMatcher], by: list[str]
    ) -> Vector:
        """The indicator's formula with every base metric filtered, rated and summed by ``by``."""

        def walk(n: Any) -> Value:
            kind = type(n).__name__
            if kind == "NumberLiteral":
                return Scalar([float(n.val)] * len(times))
            if kind == "ParenExpr":
                return walk(n.expr)
            if kind == "UnaryExpr":
                inner = walk(n.expr)
                return self._binary("*", Scalar([-1.0] * len(times)), inner, None, times)
            if kind == "BinaryExpr":
                return self._binary(str(n.op), walk(n.lhs), walk(n.rhs), None, times)
            base = self._base_for_indicator(n, times, filters, ind.window)
            summed = _aggregate("sum", base, by=by, without=False, times=times)
            if self._is_counter(n.name or "") and n.matchers.matchers:
                self._zero_fill(summed, n.name, times, filters, ind.window, by)
            return summed

        result = walk(ind.ast)
        if isinstance(result, Scalar):
            return Vector({(): ({}, list(result.values))})
        assert isinstance(result, Vector)
        return result

    def _zero_fill(
        self, summed: Vector, name: str, times: list[float], filters: list[LabelMatcher], window: float, by: list[str]
    ) -> None:
        """A filtered counter with no events in a group is 0 there, not absent: a service whose every
        call failed has a success rate of 0 (and alerts), not no success rate at all."""
        whole = self._base_for_indicator(parse(name), times, filters, window)
        for key, (labels, values) in _aggregate("sum", whole, by=by, without=False, times=times).series.items():
            if key not in summed.series:
                summed.series[key] = (labels, [None if v is None else 0.0 for v in values])

    def _base_for_indicator(self, n: Any, times: list[float], filters: list[LabelMatcher], window: float) -> Vector:
        groups = self._matchers(n)
        name = n.name or ""
        series: dict[LabelKey, RawSeries] = {}
        for group in groups:
            for s in self.source.select(group + filters, min(times) - max(window, self.lookback), max(times)):
                series.setdefault(key_of(s.labels), s)
        if self._is_counter(name):
            matrix = Matrix(list(series.values()), [(t - window, t) for t in times], window)
            return _range_fn("rate", matrix, times)
        out = Vector()
        for s in series.values():
            vals = [None if (i := s.latest(t, self.lookback)) is None else s.vs[i] for t in times]
            out.series[key_of(s.labels)] = (s.labels, vals)
        return out

    # functions

    def _eval_Call(self, node: Any, times: list[float]) -> Value:
        name = node.func.name
        args = [self._eval(a, times) for a in node.args]
        if name in RANGE_FUNCTIONS:
            if not args or not isinstance(args[-1], Matrix):
                raise QueryError(f"{name}() needs a range vector argument")
            params = [a.values for a in args[:-1] if isinstance(a, Scalar)]
            if name == "quantile_over_time":
                if not params:
                    raise QueryError("quantile_over_time(phi, range) needs phi")
                return _range_fn(name, args[-1], times, params[0])
            return _range_fn(name, args[-1], times)
        if name == "predict_linear":
            if len(args) != 2 or not isinstance(args[0], Matrix) or not isinstance(args[1], Scalar):
                raise QueryError("predict_linear(range vector, seconds) needs a range vector and a scalar")
            return _predict_linear(args[0], args[1].values, times)
        if name in ("absent_over_time", "present_over_time"):
            matrix = args[0]
            assert isinstance(matrix, Matrix)
            return _presence(name, matrix, node.args[0], times)
        fn = VECTOR_FUNCTIONS.get(name)
        if fn is not None:
            return fn(self, node, args, times)
        raise QueryError(f"function {name}() is not implemented by devbox")

    # aggregation

    def _eval_AggregateExpr(self, node: Any, times: list[float]) -> Value:
        op = str(node.op)
        inner = self._eval(node.expr, times)
        if not isinstance(inner, Vector):
            raise QueryError(f"expected type instant vector in aggregation expression, got {_kind(inner)}")
        mod = node.modifier
        labels = list(mod.labels) if mod is not None else []
        without = mod is not None and str(mod.type).endswith("Without")
        param = None
        if op in ("topk", "bottomk", "quantile", "count_values", "limitk"):
            pv = self._eval(node.param, times)
            param = pv
        if op in ("topk", "bottomk"):
            if not isinstance(param, Scalar):
                raise QueryError(f"{op} needs a scalar parameter")
            return _topk(op, inner, param.values, labels, without, times)
        if op == "quantile":
            if not isinstance(param, Scalar):
                raise QueryError("quantile needs a scalar parameter")
            return _aggregate(op, inner, by=labels, without=without, times=times, param=param.values)
        if op == "count_values":
            if not isinstance(param, StringVal):
                raise QueryError("count_values needs a string parameter")
            return _count_values(param.value, inner, labels, without, times)
        if op not in AGG_OPS:
            raise QueryError(f"aggregation {op} is not implemented by devbox")
        return _aggregate(op, inner, by=labels, without=without, times=times)

    # binary

    def _eval_BinaryExpr(self, node: Any, times: list[float]) -> Value:
        op = str(node.op)
        lhs, rhs = self._eval(node.lhs, times), self._eval(node.rhs, times)
        return self._binary(op, lhs, rhs, node.modifier, times)

    def _binary(self, op: str, lhs: Value, rhs: Value, mod: Any, times: list[float]) -> Value:
        return_bool = bool(mod is not None and mod.return_bool)
        for side in (lhs, rhs):
            if not isinstance(side, (Scalar, Vector)):
                raise QueryError(
                    f"binary expression must contain only scalar and instant vector types, got {_kind(side)}"
                )
        if op in SET_OPS:
            if not (isinstance(lhs, Vector) and isinstance(rhs, Vector)):
                raise QueryError(f"set operator {op} not allowed in binary scalar expression")
            return _set_op(op, lhs, rhs, mod, times)
        is_cmp = op in COMPARISONS
        if isinstance(lhs, Scalar) and isinstance(rhs, Scalar):
            if is_cmp and not return_bool:
                raise QueryError("comparisons between scalars must use BOOL modifier")
            return Scalar([_apply(op, a, b, return_bool) for a, b in zip(lhs.values, rhs.values, strict=True)])  # type: ignore[misc]
        if isinstance(lhs, Vector) and isinstance(rhs, Scalar):
            return _vector_scalar(op, lhs, rhs.values, is_cmp, return_bool, scalar_left=False)
        if isinstance(lhs, Scalar) and isinstance(rhs, Vector):
            return _vector_scalar(op, rhs, lhs.values, is_cmp, return_bool, scalar_left=True)
        assert isinstance(lhs, Vector) and isinstance(rhs, Vector)
        return _vector_vector(op, lhs, rhs, mod, is_cmp, return_bool, times)


def _kind(value: Value) -> str:
    return {Scalar: "scalar", StringVal: "string", Vector: "instant vector", Matrix: "range vector"}[type(value)]


def _looks_like_counter(name: str) -> bool:
    return name.endswith(("_total", "_count", "_sum", "_bucket"))


def _drop_name(labels: Labels) -> Labels:
    if NAME not in labels:
        return labels
    return {k: v for k, v in labels.items() if k != NAME}


# --- range functions ------------------------------------------------------------------------


def _extrapolated(
    ts: list[float], vs: list[float], window: tuple[float, float], *, counter: bool, rate: bool
) -> float | None:
    """Prometheus's extrapolatedRate (rate, increase, delta)."""
    if len(ts) < 2:
        return None
    result = vs[-1] - vs[0]
    if counter:
        prev = vs[0]
        for v in vs[1:]:
            if v < prev:
                result += prev
            prev = v
    range_start, range_end = window
    duration_to_start = ts[0] - range_start
    duration_to_end = range_end - ts[-1]
    sampled = ts[-1] - ts[0]
    if sampled <= 0:
        return None
    avg = sampled / (len(ts) - 1)
    threshold = avg * 1.1
    if duration_to_start >= threshold:
        duration_to_start = avg / 2
    if counter and result > 0 and vs[0] >= 0:
        to_zero = sampled * (vs[0] / result)
        if to_zero < duration_to_start:
            duration_to_start = to_zero
    if duration_to_end >= threshold:
        duration_to_end = avg / 2
    factor = (sampled + duration_to_start + duration_to_end) / sampled
    if rate:
        factor /= range_end - range_start
    return result * factor


def _instant_delta(ts: list[float], vs: list[float], *, rate: bool) -> float | None:
    if len(ts) < 2:
        return None
    last, prev = vs[-1], vs[-2]
    result = last - prev
    if rate:
        if last < prev:
            result = last
        dt = ts[-1] - ts[-2]
        if dt <= 0:
            return None
        result /= dt
    return result


def _quantile(q: float, values: list[float]) -> float:
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


def _variance(values: list[float]) -> float:
    """Population variance: Welford's algorithm with compensated sums, as Prometheus (same rounding)."""
    count = mean = c_mean = aux = c_aux = 0.0
    for v in values:
        count += 1
        delta = v - (mean + c_mean)
        mean, c_mean = _kahan_inc(delta / count, mean, c_mean)
        aux, c_aux = _kahan_inc(delta * (v - (mean + c_mean)), aux, c_aux)
    return (aux + c_aux) / count


def _deriv(ts: list[float], vs: list[float]) -> float | None:
    if len(ts) < 2:
        return None
    n = len(ts)
    t0 = ts[0]
    xs = [t - t0 for t in ts]
    mx, my = sum(xs) / n, sum(vs) / n
    cov = sum((x - mx) * (y - my) for x, y in zip(xs, vs, strict=True))
    var = sum((x - mx) ** 2 for x in xs)
    return cov / var if var else None


def _over_time(name: str, ts: list[float], vs: list[float], param: float | None) -> float | None:
    if not vs:
        return None
    if name == "rate":
        return None
    if name == "avg_over_time":
        return sum(vs) / len(vs)
    if name == "sum_over_time":
        return math.fsum(vs)
    if name == "min_over_time":
        return min(vs)
    if name == "max_over_time":
        return max(vs)
    if name == "count_over_time":
        return float(len(vs))
    if name == "last_over_time":
        return vs[-1]
    if name in ("stddev_over_time", "stdvar_over_time"):
        var = _variance(vs)
        return math.sqrt(var) if name == "stddev_over_time" else var
    if name == "quantile_over_time":
        return _quantile(param if param is not None else math.nan, vs)
    if name == "changes":
        return float(sum(1 for a, b in itertools.pairwise(vs) if a != b))
    if name == "resets":
        return float(sum(1 for a, b in itertools.pairwise(vs) if b < a))
    if name == "deriv":
        return _deriv(ts, vs)
    raise QueryError(f"function {name}() is not implemented by devbox")


RANGE_FUNCTIONS = frozenset(
    {
        "rate", "increase", "delta", "irate", "idelta", "deriv", "changes", "resets",
        "avg_over_time", "sum_over_time", "min_over_time", "max_over_time", "count_over_time",
        "last_over_time", "stddev_over_time", "stdvar_over_time", "quantile_over_time",
    }
)  # fmt: skip


def _range_fn(name: str, matrix: Matrix, times: list[float], param: list[float] | None = None) -> Vector:
    out = Vector()
    keep_name = name == "last_over_time"
    for s in matrix.series:
        vals: list[float | None] = []
        for i, window in enumerate(matrix.windows):
            lo = bisect.bisect_right(s.ts, window[0])
            hi = bisect.bisect_right(s.ts, window[1])
            ts, vs = s.ts[lo:hi], s.vs[lo:hi]
            if name in ("rate", "increase", "delta"):
                vals.append(_extrapolated(ts, vs, window, counter=name != "delta", rate=name == "rate"))
            elif name in ("irate", "idelta"):
                vals.append(_instant_delta(ts, vs, rate=name == "irate"))
            else:
                vals.append(_over_time(name, ts, vs, param[i] if param else None))
        if any(v is not None for v in vals):
            labels = s.labels if keep_name else _drop_name(s.labels)
            out.series[key_of(labels)] = (labels, vals)
    return out


def _regression(ts: list[float], vs: list[float], at: float) -> tuple[float, float] | None:
    """(slope, intercept at ``at``) by least squares, as Prometheus's linearRegression."""
    n = len(ts)
    if n < 2:
        return None
    xs = [t - at for t in ts]
    sx, sy = sum(xs), sum(vs)
    sxy = sum(x * y for x, y in zip(xs, vs, strict=True))
    sx2 = sum(x * x for x in xs)
    cov = sxy - sx * sy / n
    var = sx2 - sx * sx / n
    if var == 0:
        return 0.0, sy / n
    slope = cov / var
    return slope, sy / n - slope * sx / n


def _predict_linear(matrix: Matrix, seconds: list[float], times: list[float]) -> Vector:
    out = Vector()
    for s in matrix.series:
        vals: list[float | None] = []
        for i, window in enumerate(matrix.windows):
            lo = bisect.bisect_right(s.ts, window[0])
            hi = bisect.bisect_right(s.ts, window[1])
            fit = _regression(s.ts[lo:hi], s.vs[lo:hi], window[1])
            vals.append(None if fit is None else fit[0] * seconds[i] + fit[1])
        if any(v is not None for v in vals):
            labels = _drop_name(s.labels)
            out.series[key_of(labels)] = (labels, vals)
    return out


def _presence(name: str, matrix: Matrix, arg_node: Any, times: list[float]) -> Vector:
    present = [False] * len(times)
    out = Vector()
    for s in matrix.series:
        vals: list[float | None] = []
        for i, window in enumerate(matrix.windows):
            lo = bisect.bisect_right(s.ts, window[0])
            hi = bisect.bisect_right(s.ts, window[1])
            has = hi > lo
            present[i] = present[i] or has
            vals.append(1.0 if has else None)
        if name == "present_over_time" and any(v is not None for v in vals):
            labels = _drop_name(s.labels)
            out.series[key_of(labels)] = (labels, vals)
    if name == "present_over_time":
        return out
    labels = _absent_labels(arg_node.vector_selector if hasattr(arg_node, "vector_selector") else None)
    return Vector({key_of(labels): (labels, [None if p else 1.0 for p in present])})


def _absent_labels(selector: Any) -> Labels:
    if selector is None or type(selector).__name__ != "VectorSelector":
        return {}
    return {
        m.name: m.value
        for m in selector.matchers.matchers
        if str(m.op).endswith("Equal") and not str(m.op).endswith("NotEqual")
    }


# --- instant-vector functions ----------------------------------------------------------------


def _map_vector(fn: Callable[[float], float], value: Value) -> Vector:
    if not isinstance(value, Vector):
        raise QueryError("expected an instant vector argument")
    out = Vector()
    for labels, vals in value.series.values():
        lb = _drop_name(labels)
        out.series[key_of(lb)] = (lb, [None if v is None else fn(v) for v in vals])
    return out


def _safe(fn: Callable[[float], float]) -> Callable[[float], float]:
    def wrapped(v: float) -> float:
        try:
            return fn(v)
        except (ValueError, OverflowError):
            return math.nan

    return wrapped


def _ln(v: float) -> float:
    return math.log(v) if v > 0 else (-math.inf if v == 0 else math.nan)


def _simple(fn: Callable[[float], float]) -> Callable[[Evaluator, Any, list[Value], list[float]], Value]:
    return lambda ev, node, args, times: _map_vector(_safe(fn), args[0])


def _scalar_arg(args: list[Value], i: int, default: float | None = None) -> list[float]:
    if i >= len(args):
        if default is None:
            raise QueryError("missing scalar argument")
        return []
    value = args[i]
    if not isinstance(value, Scalar):
        raise QueryError(f"argument {i + 1} must be a scalar")
    return value.values


def _fn_round(ev: Evaluator, node: Any, args: list[Value], times: list[float]) -> Value:
    to = _scalar_arg(args, 1, 1.0) or [1.0] * len(times)
    out = Vector()
    vec = args[0]
    if not isinstance(vec, Vector):
        raise QueryError("round() needs an instant vector")
    for labels, vals in vec.series.values():
        lb = _drop_name(labels)
        out.series[key_of(lb)] = (
            lb,
            [None if v is None else math.floor(v * (1.0 / to[i]) + 0.5) / (1.0 / to[i]) for i, v in enumerate(vals)],
        )
    return out


def _fn_clamp(ev: Evaluator, node: Any, args: list[Value], times: list[float]) -> Value:
    name = node.func.name
    vec = args[0]
    if not isinstance(vec, Vector):
        raise QueryError(f"{name}() needs an instant vector")
    if name == "clamp":
        lo, hi = _scalar_arg(args, 1), _scalar_arg(args, 2)
    elif name == "clamp_min":
        lo, hi = _scalar_arg(args, 1), [math.inf] * len(times)
    else:
        lo, hi = [-math.inf] * len(times), _scalar_arg(args, 1)
    out = Vector()
    for labels, vals in vec.series.values():
        lb = _drop_name(labels)
        new = []
        for i, v in enumerate(vals):
            if v is None or (name == "clamp" and lo[i] > hi[i]):
                new.append(None)
            else:
                new.append(max(lo[i], min(hi[i], v)))
        out.series[key_of(lb)] = (lb, new)
    return out


def _fn_scalar(ev: Evaluator, node: Any, args: list[Value], times: list[float]) -> Value:
    vec = args[0]
    if not isinstance(vec, Vector):
        raise QueryError("scalar() needs an instant vector")
    out = []
    for i in range(len(times)):
        present = [vals[i] for _, vals in vec.series.values() if vals[i] is not None]
        out.append(present[0] if len(present) == 1 else math.nan)  # type: ignore[list-item]
    return Scalar(out)  # type: ignore[arg-type]


def _fn_vector(ev: Evaluator, node: Any, args: list[Value], times: list[float]) -> Value:
    values = _scalar_arg(args, 0)
    return Vector({(): ({}, list(values))})


def _fn_time(ev: Evaluator, node: Any, args: list[Value], times: list[float]) -> Value:
    return Scalar(list(times))


def _fn_timestamp(ev: Evaluator, node: Any, args: list[Value], times: list[float]) -> Value:
    arg = node.args[0]
    if type(arg).__name__ != "VectorSelector":
        return _map_vector(lambda v: v, args[0])
    shifted = ev._shift(arg, times)
    out = Vector()
    for s in ev._select(arg, min(shifted) - ev.lookback, max(shifted)):
        vals = [None if (i := s.latest(t, ev.lookback)) is None else s.ts[i] for t in shifted]
        lb = _drop_name(s.labels)
        if any(v is not None for v in vals):
            out.series[key_of(lb)] = (lb, vals)
    return out


def _fn_absent(ev: Evaluator, node: Any, args: list[Value], times: list[float]) -> Value:
    vec = args[0]
    if not isinstance(vec, Vector):
        raise QueryError("absent() needs an instant vector")
    present = [any(vals[i] is not None for _, vals in vec.series.values()) for i in range(len(times))]
    arg = node.args[0]
    labels = _absent_labels(arg if type(arg).__name__ == "VectorSelector" else None)
    return Vector({key_of(labels): (labels, [None if p else 1.0 for p in present])})


def _fn_sort(ev: Evaluator, node: Any, args: list[Value], times: list[float]) -> Value:
    vec = args[0]
    if not isinstance(vec, Vector):
        raise QueryError("sort() needs an instant vector")
    desc = node.func.name == "sort_desc"
    items = sorted(
        vec.series.items(),
        key=lambda kv: (kv[1][1][-1] is None, -(kv[1][1][-1] or 0) if desc else (kv[1][1][-1] or 0)),
    )
    return Vector(dict(items))


def _fn_label_replace(ev: Evaluator, node: Any, args: list[Value], times: list[float]) -> Value:
    vec = args[0]
    if not isinstance(vec, Vector) or not all(isinstance(a, StringVal) for a in args[1:5]) or len(args) != 5:
        raise QueryError("label_replace(vector, dst, replacement, src, regex) needs an instant vector and 4 strings")
    dst, repl, src, regex = (a.value for a in args[1:5])  # type: ignore[union-attr]
    if not _valid_label_name(dst):
        raise QueryError(f"invalid destination label name in label_replace(): {dst}")
    pattern = _full_regex(regex)
    go_repl = re.sub(r"\$\{?(\w+)\}?", r"\\g<\1>", repl)
    out = Vector()
    for labels, vals in vec.series.values():
        m = pattern.fullmatch(labels.get(src, ""))
        lb = dict(labels)
        if m is not None:
            try:
                value = m.expand(go_repl)
            except (IndexError, re.error):
                value = ""
            if value:
                lb[dst] = value
            else:
                lb.pop(dst, None)
        out.series[key_of(lb)] = (lb, vals)
    return out


def _fn_label_join(ev: Evaluator, node: Any, args: list[Value], times: list[float]) -> Value:
    vec = args[0]
    if not isinstance(vec, Vector) or len(args) < 3 or not all(isinstance(a, StringVal) for a in args[1:]):
        raise QueryError("label_join(vector, dst, separator, src...) needs an instant vector and strings")
    dst, sep, *srcs = (a.value for a in args[1:])  # type: ignore[union-attr]
    out = Vector()
    for labels, vals in vec.series.values():
        lb = dict(labels)
        joined = sep.join(labels.get(s, "") for s in srcs)
        if joined:
            lb[dst] = joined
        else:
            lb.pop(dst, None)
        out.series[key_of(lb)] = (lb, vals)
    return out


def _bucket_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus's bucketQuantile over (upper bound, cumulative count) pairs."""
    if math.isnan(q):
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    buckets = sorted(buckets)
    if len(buckets) < 2 or not math.isinf(buckets[-1][0]):
        return math.nan
    # enforce monotonicity like Prometheus
    fixed: list[tuple[float, float]] = []
    top = -math.inf
    for le, count in buckets:
        top = max(top, count)
        fixed.append((le, top))
    buckets = fixed
    total = buckets[-1][1]
    if total == 0:
        return math.nan
    rank = q * total
    b = next(i for i, (_, c) in enumerate(buckets) if c >= rank)
    if b == len(buckets) - 1:
        return buckets[-2][0]
    if b == 0 and buckets[0][0] <= 0:
        return buckets[0][0]
    start, end = 0.0, buckets[b][0]
    count = buckets[b][1]
    if b > 0:
        start = buckets[b - 1][0]
        count -= buckets[b - 1][1]
        rank -= buckets[b - 1][1]
    if count == 0:
        return end
    return start + (end - start) * (rank / count)


def _fn_histogram_quantile(ev: Evaluator, node: Any, args: list[Value], times: list[float]) -> Value:
    qs = _scalar_arg(args, 0)
    vec = args[1] if len(args) > 1 else None
    if not isinstance(vec, Vector):
        raise QueryError("histogram_quantile(phi, vector) needs an instant vector of _bucket series")
    groups: dict[LabelKey, tuple[Labels, list[tuple[float, list[float | None]]]]] = {}
    for labels, vals in vec.series.values():
        if "le" not in labels:
            continue
        try:
            le = float(labels["le"].replace("+Inf", "inf"))
        except ValueError:
            continue
        rest = {k: v for k, v in labels.items() if k not in ("le", NAME)}
        groups.setdefault(key_of(rest), (rest, []))[1].append((le, vals))
    out = Vector()
    for key, (labels, buckets) in groups.items():
        vals_out: list[float | None] = []
        for i in range(len(times)):
            points = [(le, vals[i]) for le, vals in buckets if vals[i] is not None]
            vals_out.append(_bucket_quantile(qs[i], points) if points else None)  # type: ignore[arg-type]
        out.series[key] = (labels, vals_out)
    return out


VECTOR_FUNCTIONS: dict[str, Callable[[Evaluator, Any, list[Value], list[float]], Value]] = {
    "abs": _simple(abs),
    "ceil": _simple(lambda v: float(math.ceil(v)) if math.isfinite(v) else v),
    "floor": _simple(lambda v: float(math.floor(v)) if math.isfinite(v) else v),
    "exp": _simple(math.exp),
    "ln": _simple(_ln),
    "log2": _simple(lambda v: _ln(v) / math.log(2)),
    "log10": _simple(lambda v: _ln(v) / math.log(10)),
    "sqrt": _simple(math.sqrt),
    "sgn": _simple(lambda v: float((v > 0) - (v < 0)) if not math.isnan(v) else v),
    "round": _fn_round,
    "clamp": _fn_clamp,
    "clamp_min": _fn_clamp,
    "clamp_max": _fn_clamp,
    "scalar": _fn_scalar,
    "vector": _fn_vector,
    "time": _fn_time,
    "timestamp": _fn_timestamp,
    "absent": _fn_absent,
    "sort": _fn_sort,
    "sort_desc": _fn_sort,
    "label_replace": _fn_label_replace,
    "label_join": _fn_label_join,
    "histogram_quantile": _fn_histogram_quantile,
}


def _valid_label_name(name: str) -> bool:
    return re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", name) is not None


# --- aggregation ----------------------------------------------------------------------------

AGG_OPS = frozenset({"sum", "avg", "min", "max", "count", "group", "stddev", "stdvar", "quantile"})


def _group_labels(labels: Labels, by: list[str], without: bool) -> Labels:
    if without:
        drop = set(by) | {NAME}
        return {k: v for k, v in labels.items() if k not in drop}
    return {k: labels[k] for k in by if k in labels}


def _aggregate(
    op: str, vec: Vector, *, by: list[str], without: bool, times: list[float], param: list[float] | None = None
) -> Vector:
    groups: dict[LabelKey, tuple[Labels, list[list[float | None]]]] = {}
    for labels, vals in vec.series.values():
        lb = _group_labels(labels, by, without)
        groups.setdefault(key_of(lb), (lb, []))[1].append(vals)
    out = Vector()
    for key, (labels, members) in groups.items():
        result: list[float | None] = []
        for i in range(len(times)):
            present = [m[i] for m in members if m[i] is not None]
            result.append(_agg_one(op, present, param[i] if param else None) if present else None)  # type: ignore[arg-type]
        if any(v is not None for v in result):
            out.series[key] = (labels, result)
    return out


def _agg_one(op: str, values: list[float], param: float | None) -> float:
    if op == "sum":
        return math.fsum(values) if all(math.isfinite(v) for v in values) else sum(values)
    if op == "avg":
        return sum(values) / len(values)
    if op == "min":
        real = [v for v in values if not math.isnan(v)]
        return min(real) if real else math.nan
    if op == "max":
        real = [v for v in values if not math.isnan(v)]
        return max(real) if real else math.nan
    if op == "count":
        return float(len(values))
    if op == "group":
        return 1.0
    if op in ("stddev", "stdvar"):
        var = _variance(values)
        return math.sqrt(var) if op == "stddev" else var
    if op == "quantile":
        return _quantile(param if param is not None else math.nan, values)
    raise QueryError(f"aggregation {op} is not implemented by devbox")


def _topk(op: str, vec: Vector, ks: list[float], by: list[str], without: bool, times: list[float]) -> Vector:
    groups: dict[LabelKey, list[LabelKey]] = {}
    for key, (labels, _) in vec.series.items():
        groups.setdefault(key_of(_group_labels(labels, by, without)), []).append(key)
    keep: dict[LabelKey, list[float | None]] = {k: [None] * len(times) for k in vec.series}
    for members in groups.values():
        for i in range(len(times)):
            k = int(ks[i]) if math.isfinite(ks[i]) else 0
            if k < 1:
                continue
            present = [(vec.series[m][1][i], m) for m in members if vec.series[m][1][i] is not None]
            present.sort(key=lambda p: (math.isnan(p[0]), -p[0] if op == "topk" else p[0]))  # type: ignore[operator]
            for value, m in present[:k]:
                keep[m][i] = value
    out = Vector()
    for key, vals in keep.items():
        if any(v is not None for v in vals):
            out.series[key] = (vec.series[key][0], vals)
    return out


def _count_values(label: str, vec: Vector, by: list[str], without: bool, times: list[float]) -> Vector:
    if not _valid_label_name(label):
        raise QueryError(f"invalid label name {label!r}")
    counts: dict[LabelKey, tuple[Labels, list[float | None]]] = {}
    for labels, vals in vec.series.values():
        base = _group_labels(labels, by, without)
        for i, v in enumerate(vals):
            if v is None:
                continue
            lb = {**base, label: _format_value(v)}
            entry = counts.setdefault(key_of(lb), (lb, [None] * len(times)))
            entry[1][i] = (entry[1][i] or 0.0) + 1.0
    return Vector(counts)


def _format_value(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(v) if v != int(v) or abs(v) >= 1e15 else str(int(v))


# --- binary operators -----------------------------------------------------------------------

COMPARISONS = frozenset({"==", "!=", ">", "<", ">=", "<="})
SET_OPS = frozenset({"and", "or", "unless"})


def _apply(op: str, a: float, b: float, return_bool: bool) -> float | None:
    """One arithmetic or comparison; comparisons give None (dropped) when false and not bool."""
    if op in COMPARISONS:
        hit = {
            "==": a == b, "!=": a != b, ">": a > b, "<": a < b, ">=": a >= b, "<=": a <= b,
        }[op]  # fmt: skip
        if return_bool:
            return 1.0 if hit else 0.0
        return a if hit else None
    try:
        if op == "+":
            return a + b
        if op == "-":
            return a - b
        if op == "*":
            return a * b
        if op == "/":
            if b == 0:
                return (
                    math.nan
                    if a == 0 or math.isnan(a)
                    else math.copysign(math.inf, a) * (1 if math.copysign(1, b) > 0 else -1)
                )
            return a / b
        if op == "%":
            return math.fmod(a, b) if b != 0 else math.nan
        if op == "^":
            return math.pow(a, b)
        if op == "atan2":
            return math.atan2(a, b)
    except (OverflowError, ValueError):
        return math.inf if op == "^" else math.nan
    raise QueryError(f"operator {op} is not implemented by devbox")


def _vector_scalar(
    op: str, vec: Vector, scalar: list[float], is_cmp: bool, return_bool: bool, *, scalar_left: bool
) -> Vector:
    out = Vector()
    for labels, vals in vec.series.values():
        new: list[float | None] = []
        for i, v in enumerate(vals):
            if v is None:
                new.append(None)
                continue
            a, b = (scalar[i], v) if scalar_left else (v, scalar[i])
            r = _apply(op, a, b, return_bool)
            if is_cmp and not return_bool and r is not None:
                r = v  # a filter keeps the vector's own value
            new.append(r)
        lb = labels if (is_cmp and not return_bool) else _drop_name(labels)
        if any(v is not None for v in new):
            out.series[key_of(lb)] = (lb, new)
    return out


def _signature(labels: Labels, mod: Any) -> LabelKey:
    matching = mod.matching if mod is not None else None
    if matching is not None and str(matching.type).endswith("Include"):
        names = set(matching.labels)
        return tuple(sorted((k, v) for k, v in labels.items() if k in names))
    drop = {NAME} | (set(matching.labels) if matching is not None else set())
    return tuple(sorted((k, v) for k, v in labels.items() if k not in drop))


def _result_labels(lhs: Labels, rhs: Labels, mod: Any, op: str, is_cmp: bool, return_bool: bool) -> Labels:
    card = str(mod.card).rsplit(".", 1)[-1] if mod is not None else "OneToOne"
    keep_name = is_cmp and not return_bool
    base = dict(lhs) if keep_name else _drop_name(lhs)
    matching = mod.matching if mod is not None else None
    if card == "OneToOne":
        if matching is not None and str(matching.type).endswith("Include"):
            names = set(matching.labels)
            base = {k: v for k, v in base.items() if k in names}
        elif matching is not None:
            drop = set(matching.labels)
            base = {k: v for k, v in base.items() if k not in drop}
    else:
        for name in mod.group_labels or []:
            if name in rhs:
                base[name] = rhs[name]
            else:
                base.pop(name, None)
    return base


def _vector_vector(
    op: str, lhs: Vector, rhs: Vector, mod: Any, is_cmp: bool, return_bool: bool, times: list[float]
) -> Vector:
    card = str(mod.card).rsplit(".", 1)[-1] if mod is not None else "OneToOne"
    if card == "OneToMany":
        # group_right: swap sides so "many" is always on the left, then swap operands back
        many, one, swapped = rhs, lhs, True
    else:
        many, one, swapped = lhs, rhs, False
    one_sigs = [(_signature(lb, mod), lb, vals) for lb, vals in one.series.values()]
    many_sigs = [(_signature(lb, mod), lb, vals) for lb, vals in many.series.values()]
    out = Vector()
    for i in range(len(times)):
        one_map: dict[LabelKey, tuple[Labels, float]] = {}
        for sig, lb, vals in one_sigs:
            v = vals[i]
            if v is None:
                continue
            if sig in one_map:
                side = "left" if swapped else "right"
                raise QueryError(
                    f"found duplicate series for the match group {dict(sig)} on the {side} hand-side of the "
                    "operation; many-to-many matching not allowed: matching labels must be unique on one side"
                )
            one_map[sig] = (lb, v)
        seen: set[LabelKey] = set()
        for sig, lb, vals in many_sigs:
            v = vals[i]
            if v is None or sig not in one_map:
                continue
            if card == "OneToOne":
                if sig in seen:
                    raise QueryError(
                        f"found duplicate series for the match group {dict(sig)} on the left hand-side of the "
                        "operation; many-to-many matching not allowed: matching labels must be unique on one side"
                    )
                seen.add(sig)
            olb, ov = one_map[sig]
            a, b = (ov, v) if swapped else (v, ov)
            r = _apply(op, a, b, return_bool)
            if r is None:
                continue
            if is_cmp and not return_bool:
                r = a if not swapped else b
            result_lb = _result_labels(lb, olb, mod, op, is_cmp, return_bool)
            key = key_of(result_lb)
            entry = out.series.get(key)
            if entry is None:
                entry = (result_lb, [None] * len(times))
                out.series[key] = entry
            elif entry[1][i] is not None:
                raise QueryError("multiple matches for labels: grouping labels must ensure unique matches")
            entry[1][i] = r
    return out


def _set_op(op: str, lhs: Vector, rhs: Vector, mod: Any, times: list[float]) -> Vector:
    rhs_sigs = [(_signature(lb, mod), vals) for lb, vals in rhs.series.values()]
    out = Vector()
    if op in ("and", "unless"):
        for key, (lb, vals) in lhs.series.items():
            sig = _signature(lb, mod)
            new: list[float | None] = []
            for i, v in enumerate(vals):
                hit = any(s == sig and rv[i] is not None for s, rv in rhs_sigs)
                keep = hit if op == "and" else not hit
                new.append(v if keep else None)
            if any(v is not None for v in new):
                out.series[key] = (lb, new)
        return out
    # or: everything on the left, plus right-hand series whose signature is absent on the left at that step
    lhs_sigs = [(_signature(lb, mod), vals) for lb, vals in lhs.series.values()]
    for key, (lb, vals) in lhs.series.items():
        out.series[key] = (lb, list(vals))
    for key, (lb, vals) in rhs.series.items():
        sig = _signature(lb, mod)
        new = []
        for i, v in enumerate(vals):
            taken = any(s == sig and lv[i] is not None for s, lv in lhs_sigs)
            new.append(None if taken else v)
        if any(v is not None for v in new):
            if key in out.series:
                merged = [a if a is not None else b for a, b in zip(out.series[key][1], new, strict=True)]
                out.series[key] = (lb, merged)
            else:
                out.series[key] = (lb, new)
    return out
