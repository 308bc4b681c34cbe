"""The evaluator: walks the parsed AST, vectorised over the steps of a query.

Every node is evaluated once for all step timestamps, which keeps a 1 h range query of many series
cheap. A metric name the source does not store may be *computed* by a plug-in (a
:class:`ComputedMetric`: devbox's composite indicators are one, in
:mod:`devbox.mocks.metrics.indicators`); the engine itself knows nothing of them.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Mapping
from typing import Any, Protocol, cast

from devbox.mocks.metrics.promql.aggregation import AGG_OPS, aggregate, count_values, topk
from devbox.mocks.metrics.promql.binary import binary
from devbox.mocks.metrics.promql.errors import QueryError
from devbox.mocks.metrics.promql.functions import VECTOR_FUNCTIONS
from devbox.mocks.metrics.promql.guard import MAX_SAMPLES, MAX_STEPS, QUERY_TIMEOUT
from devbox.mocks.metrics.promql.parse import parse, short
from devbox.mocks.metrics.promql.range_functions import RANGE_FUNCTIONS, predict_linear, presence, range_fn
from devbox.mocks.metrics.promql.source import LabelMatcher, RawSeries, SampleBudget, SampleSource, full_regex
from devbox.mocks.metrics.promql.values import (
    NAME,
    LabelKey,
    Labels,
    Matrix,
    Scalar,
    StringVal,
    Value,
    Vector,
    drop_name,
    key_of,
    kind_of,
)

LOG = logging.getLogger(__name__)

LOOKBACK_SECONDS = 300.0
#: Steps one subquery may evaluate its inner expression at.
MAX_SUBQUERY_STEPS = MAX_STEPS * 10


class ComputedMetric(Protocol):
    """The hook: a metric name whose instant vector a plug-in computes instead of the source storing it."""

    @property
    def kind(self) -> str:
        """What it is called in errors, e.g. "composite indicator"."""
        ...

    def instant_vector(self, evaluator: Evaluator, filters: list[LabelMatcher], times: list[float]) -> Vector:
        """Its value at each step; ``filters`` are the selector's label matchers other than the name."""
        ...


class Evaluator:
    """Evaluates PromQL against a :class:`SampleSource`, with optional computed metrics by name."""

    def __init__(
        self,
        source: SampleSource,
        *,
        computed: Mapping[str, ComputedMetric] | None = None,
        lookback: float = LOOKBACK_SECONDS,
        max_samples: int = MAX_SAMPLES,
        timeout: float = QUERY_TIMEOUT,
    ) -> None:
        self.source = source
        self.computed: Mapping[str, ComputedMetric] = computed or {}
        self.lookback = lookback
        self.max_samples = max_samples
        self.timeout = timeout
        self.budget = SampleBudget(max_samples)

    # entry points

    def instant(self, expr: str, at: float, *, deadline: float | None = None) -> tuple[str, Any]:
        """Evaluate at one time: ``("vector", [(labels, v)])``, ``("scalar", v)`` or ``("string", s)``.

        ``deadline`` (on :func:`time.monotonic`'s clock) defaults to ``timeout`` seconds from now.
        """
        node = parse(expr)
        value = self.fork((float(at), float(at)), deadline=deadline)._safe_eval(node, [float(at)], expr)
        if isinstance(value, Scalar):
            return "scalar", value.values[0]
        if isinstance(value, StringVal):
            return "string", value.value
        if isinstance(value, Matrix):
            return "matrix", [
                (s.labels, list(zip(*s.in_window(value.windows[0]), strict=True)))
                for s in value.series
                if s.in_window(value.windows[0])[0]
            ]
        out = [(labels, vals[0]) for labels, vals in value.series.values() if vals[0] is not None]
        return "vector", out

    def range(
        self, expr: str, start: float, end: float, step: float, *, deadline: float | None = None
    ) -> tuple[str, Any]:
        """Evaluate at ``start, start+step, ... <= end``: ``("matrix", [(labels, [(t, v)])])``."""
        kind, columns = self.range_columns(expr, start, end, step, deadline=deadline)
        return kind, [(labels, list(zip(ts, vs, strict=True))) for labels, ts, vs in columns]

    def range_columns(
        self, expr: str, start: float, end: float, step: float, *, deadline: float | None = None
    ) -> tuple[str, list[tuple[Labels, list[float], list[float]]]]:
        """:meth:`range` as columns: ``("matrix", [(labels, times, values)])``, the steps without a
        value left out (an answer of 72k points is encoded from these without a tuple per point)."""
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
        value = self.fork((times[0], times[-1]), deadline=deadline)._safe_eval(node, times, expr)
        if isinstance(value, StringVal):
            raise QueryError('invalid expression type "string" for range query, must be Scalar or instant Vector')
        if isinstance(value, Scalar):
            return "matrix", [({}, times, list(value.values))]
        assert isinstance(value, Vector)
        out = []
        # series with values at the same steps share one times list (the encoder formats it once)
        runs: dict[tuple[int, int], list[float]] = {}
        shared: dict[tuple[int, int, int], tuple[list[int], list[float]]] = {}
        for labels, vals in value.series.values():
            if None not in vals:
                out.append((labels, times, cast("list[float]", vals)))  # no None in it
                continue
            # the usual gaps are at the ends (a window filling up, a series that starts or stops
            # inside the range): one run of values is two slices, not a test per step
            lo, hi = 0, len(vals)
            while lo < hi and vals[lo] is None:
                lo += 1
            while hi > lo and vals[hi - 1] is None:
                hi -= 1
            if lo == hi:
                continue
            part = vals[lo:hi]
            if None not in part:
                stamps = runs.get((lo, hi))
                if stamps is None:
                    stamps = runs[lo, hi] = times[lo:hi]
                out.append((labels, stamps, cast("list[float]", part)))
                continue
            kept = [i for i, v in enumerate(vals) if v is not None]
            shape = (len(kept), kept[0], kept[-1])
            seen = shared.get(shape)
            if seen is None or seen[0] != kept:
                seen = shared[shape] = (kept, [times[i] for i in kept])
            out.append((labels, seen[1], cast("list[float]", [vals[i] for i in kept])))
        return "matrix", out

    def fork(self, bounds: tuple[float, float], *, deadline: float | None = None) -> Evaluator:
        """A copy for one query: its ``@ start()``/``end()`` bounds and its own budget and deadline
        (keeps concurrent queries apart)."""
        run = copy.copy(self)
        run._range_bounds = bounds
        run.budget = SampleBudget(self.max_samples, time.monotonic() + self.timeout if deadline is None else deadline)
        return run

    # dispatch

    def _safe_eval(self, node: Any, times: list[float], expr: str) -> Value:
        """Evaluate; a failure that is not a QueryError is a devbox bug, reported as one (never a 500)."""
        try:
            return self.evaluate(node, times)
        except QueryError:
            raise
        except (ArithmeticError, TypeError, ValueError, AttributeError, IndexError, KeyError, RecursionError) as exc:
            LOG.exception("evaluating %r failed", expr)
            raise QueryError(f"devbox cannot evaluate this expression ({type(exc).__name__}: {exc})") from None

    def evaluate(self, node: Any, times: list[float]) -> Value:
        self.budget.check_time()
        kind = type(node).__name__
        handler = getattr(self, f"_eval_{kind}", None)
        if handler is None:
            raise QueryError(f"unsupported expression {kind}: {short(node)}")
        value: Value = handler(node, times)
        return value

    def _eval_ParenExpr(self, node: Any, times: list[float]) -> Value:
        return self.evaluate(node.expr, times)

    def _eval_NumberLiteral(self, node: Any, times: list[float]) -> Value:
        return Scalar([float(node.val)] * len(times))

    def _eval_StringLiteral(self, node: Any, times: list[float]) -> Value:
        return StringVal(str(node.val))

    def _eval_UnaryExpr(self, node: Any, times: list[float]) -> Value:
        inner = self.evaluate(node.expr, times)
        if isinstance(inner, Scalar):
            return Scalar([-v for v in inner.values])
        if isinstance(inner, Vector):
            return Vector(
                {
                    key_of(lb): (lb, [None if v is None else -v for v in vals])
                    for lb, vals in ((drop_name(lb), vals) for lb, vals in inner.series.values())
                }
            )
        raise QueryError("unary minus needs a scalar or an instant vector")

    # selectors

    def matchers(self, node: Any) -> list[list[LabelMatcher]]:
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
                    full_regex(m.value)
                ms.append(LabelMatcher(m.name, op, m.value))
            out.append(ms)
        return out

    def select(self, node: Any, start: float, end: float) -> list[RawSeries]:
        found: dict[LabelKey, RawSeries] = {}
        for group in self.matchers(node):
            if not any(m.op in ("=", "=~") and not m.matches({}) for m in group) and not any(
                m.name == NAME for m in group
            ):
                raise QueryError("vector selector must contain at least one non-empty matcher")
            for s in self.source.select(group, start, end, budget=self.budget):
                found.setdefault(key_of(s.labels), s)
        return list(found.values())

    def shift(self, node: Any, times: list[float]) -> list[float]:
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
        if node.name and node.name in self.computed:
            filters = [m for m in self.matchers(node)[0] if m.name != NAME]
            return self.computed[node.name].instant_vector(self, filters, times)
        shifted = self.shift(node, times)
        lo, hi = min(shifted) - self.lookback, max(shifted)
        out = Vector()
        selected = self.select(node, lo, hi)
        self.budget.charge(len(selected) * len(times))  # the points this vector will hold
        for s in selected:
            vals = s.latest_at(shifted, self.lookback)
            if any(v is not None for v in vals):
                out.series[key_of(s.labels)] = (s.labels, vals)
        return out

    def _eval_MatrixSelector(self, node: Any, times: list[float]) -> Value:
        vs = node.vector_selector
        if vs.name and vs.name in self.computed:
            kind = self.computed[vs.name].kind
            raise QueryError(f"{kind} {vs.name} cannot take a range; use it as an instant vector")
        rng = node.range.total_seconds()
        shifted = self.shift(vs, times)
        windows = [(t - rng, t) for t in shifted]
        series = self.select(vs, min(shifted) - rng, max(shifted))
        return Matrix(series, windows, rng)

    def _eval_SubqueryExpr(self, node: Any, times: list[float]) -> Value:
        rng = node.range.total_seconds()
        step = node.step.total_seconds() if node.step else 60.0
        shifted = self.shift(node, times)
        lo, hi = min(shifted) - rng, max(shifted)
        if not (math.isfinite(lo) and math.isfinite(hi)) or step <= 0:
            raise QueryError("subquery range and step must be finite and positive")
        first = math.floor(lo / step) * step
        # counted before any step is built: [4h:1ms] would otherwise build 14.4M steps and then refuse
        expected = math.floor((hi - first) / step) + 1
        if expected > MAX_SUBQUERY_STEPS:
            raise QueryError(
                f"subquery would evaluate {expected:,} steps (at most {MAX_SUBQUERY_STEPS:,}); use a larger step"
            )
        if hi + step == hi or first + step == first:
            # far from now (a huge time or offset) a float second cannot hold the step: the steps
            # would all be one time (and a loop adding the step would never end)
            raise QueryError(f"subquery step {step:g}s is finer than a timestamp can be at time {hi:.6g}; "
                             "use a larger step or a time nearer to now")
        self.budget.charge(expected)
        # each step from its index: adding the step again and again would drift (and, far from now, stall)
        inner_times = [t for t in (first + i * step for i in range(expected)) if lo < t <= hi]
        if not inner_times:
            return Matrix([], [(t - rng, t) for t in shifted], rng)
        inner = self.evaluate(node.expr, inner_times)
        if isinstance(inner, Scalar):
            raise QueryError("subquery is only allowed on instant vector, got scalar")
        assert isinstance(inner, Vector)
        series = []
        for labels, vals in inner.series.values():
            pts = [(ts, v) for ts, v in zip(inner_times, vals, strict=True) if v is not None]
            series.append(RawSeries(labels, [p[0] for p in pts], [p[1] for p in pts]))
        return Matrix(series, [(t - rng, t) for t in shifted], rng)

    def _eval_Call(self, node: Any, times: list[float]) -> Value:
        name = node.func.name
        args = [self.evaluate(a, times) for a in node.args]
        if name in RANGE_FUNCTIONS:
            if not args or not isinstance(args[-1], Matrix):
                raise QueryError(f"{name}() needs a range vector argument")
            params = [a.values for a in args[:-1] if isinstance(a, Scalar)]
            if name == "quantile_over_time":
                if not params:
                    raise QueryError("quantile_over_time(phi, range) needs phi")
                return range_fn(name, args[-1], times, params[0])
            return range_fn(name, args[-1], times)
        if name == "predict_linear":
            if len(args) != 2 or not isinstance(args[0], Matrix) or not isinstance(args[1], Scalar):
                raise QueryError("predict_linear(range vector, seconds) needs a range vector and a scalar")
            return predict_linear(args[0], args[1].values, times)
        if name in ("absent_over_time", "present_over_time"):
            matrix = args[0]
            assert isinstance(matrix, Matrix)
            return presence(name, matrix, node.args[0], times)
        fn = VECTOR_FUNCTIONS.get(name)
        if fn is not None:
            return fn(self, node, args, times)
        raise QueryError(f"function {name}() is not implemented by devbox")

    # aggregation

    def _eval_AggregateExpr(self, node: Any, times: list[float]) -> Value:
        op = str(node.op)
        inner = self.evaluate(node.expr, times)
        if not isinstance(inner, Vector):
            raise QueryError(f"expected type instant vector in aggregation expression, got {kind_of(inner)}")
        mod = node.modifier
        labels = list(mod.labels) if mod is not None else []
        without = mod is not None and str(mod.type).endswith("Without")
        param = None
        if op in ("topk", "bottomk", "quantile", "count_values", "limitk"):
            pv = self.evaluate(node.param, times)
            param = pv
        if op in ("topk", "bottomk"):
            if not isinstance(param, Scalar):
                raise QueryError(f"{op} needs a scalar parameter")
            return topk(op, inner, param.values, labels, without, times)
        if op == "quantile":
            if not isinstance(param, Scalar):
                raise QueryError("quantile needs a scalar parameter")
            return aggregate(op, inner, by=labels, without=without, times=times, param=param.values)
        if op == "count_values":
            if not isinstance(param, StringVal):
                raise QueryError("count_values needs a string parameter")
            return count_values(param.value, inner, labels, without, times)
        if op not in AGG_OPS:
            raise QueryError(f"aggregation {op} is not implemented by devbox")
        return aggregate(op, inner, by=labels, without=without, times=times)

    # binary

    def _eval_BinaryExpr(self, node: Any, times: list[float]) -> Value:
        op = str(node.op)
        lhs, rhs = self.evaluate(node.lhs, times), self.evaluate(node.rhs, times)
        return binary(op, lhs, rhs, node.modifier, times)


__all__ = ["LOOKBACK_SECONDS", "MAX_SAMPLES", "MAX_STEPS", "QUERY_TIMEOUT", "ComputedMetric", "Evaluator"]
