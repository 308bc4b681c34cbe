"""Functions over instant vectors and scalars: math, ``round``/``clamp*``, ``scalar``/``vector``/``time``/
``timestamp``, ``absent``, ``sort*``, ``label_replace``/``label_join`` and ``histogram_quantile``.

Each takes ``(engine, call node, evaluated arguments, step times)``; ``engine`` is the slice of the
evaluator a function may use (``timestamp()`` re-reads its selector's samples).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any, Protocol

from devbox.mocks.metrics.promql.errors import QueryError
from devbox.mocks.metrics.promql.range_functions import absent_labels
from devbox.mocks.metrics.promql.source import RawSeries, full_regex
from devbox.mocks.metrics.promql.values import (
    NAME,
    LabelKey,
    Labels,
    Scalar,
    StringVal,
    Value,
    Vector,
    drop_name,
    key_of,
    valid_label_name,
)


class Engine(Protocol):
    """What a function may ask of the evaluator calling it."""

    lookback: float

    def shift(self, node: Any, times: list[float]) -> list[float]: ...
    def select(self, node: Any, start: float, end: float) -> list[RawSeries]: ...


Function = Callable[[Engine, Any, list[Value], list[float]], Value]


def _map_vector(fn: Callable[[float], float], value: Value) -> Vector:
    if not isinstance(value, Vector):
        raise QueryError("expected an instant vector argument")
    out = Vector()
    for labels, vals in value.series.values():
        lb = drop_name(labels)
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


def _simple(fn: Callable[[float], float]) -> Function:
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


def _fn_round(ev: Engine, node: Any, args: list[Value], times: list[float]) -> Value:
    to = _scalar_arg(args, 1, 1.0) or [1.0] * len(times)
    out = Vector()
    vec = args[0]
    if not isinstance(vec, Vector):
        raise QueryError("round() needs an instant vector")
    # Prometheus: floor(v * 1/to + 0.5) / (1/to) in IEEE arithmetic, so round(x, 0) is NaN (1/0 = +Inf)
    inverse = [1.0 / t if t else math.copysign(math.inf, t) for t in to]
    for labels, vals in vec.series.values():
        lb = drop_name(labels)
        out.series[key_of(lb)] = (lb, [None if v is None else _round_to(v, inverse[i]) for i, v in enumerate(vals)])
    return out


def _round_to(value: float, inverse: float) -> float:
    scaled = value * inverse + 0.5
    return (math.floor(scaled) if math.isfinite(scaled) else scaled) / inverse


def _fn_clamp(ev: Engine, node: Any, args: list[Value], times: list[float]) -> Value:
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
        lb = drop_name(labels)
        new: list[float | None] = []
        for i, v in enumerate(vals):
            if v is None or (name == "clamp" and lo[i] > hi[i]):
                new.append(None)
            else:
                new.append(max(lo[i], min(hi[i], v)))
        out.series[key_of(lb)] = (lb, new)
    return out


def _fn_scalar(ev: Engine, node: Any, args: list[Value], times: list[float]) -> Value:
    vec = args[0]
    if not isinstance(vec, Vector):
        raise QueryError("scalar() needs an instant vector")
    out: list[float] = []
    for i in range(len(times)):
        present = [v for _, vals in vec.series.values() if (v := vals[i]) is not None]
        out.append(present[0] if len(present) == 1 else math.nan)
    return Scalar(out)


def _fn_vector(ev: Engine, node: Any, args: list[Value], times: list[float]) -> Value:
    values = _scalar_arg(args, 0)
    return Vector({(): ({}, list(values))})


def _fn_time(ev: Engine, node: Any, args: list[Value], times: list[float]) -> Value:
    return Scalar(list(times))


def _fn_timestamp(ev: Engine, node: Any, args: list[Value], times: list[float]) -> Value:
    arg = node.args[0]
    if type(arg).__name__ != "VectorSelector":
        return _map_vector(lambda v: v, args[0])
    shifted = ev.shift(arg, times)
    out = Vector()
    for s in ev.select(arg, min(shifted) - ev.lookback, max(shifted)):
        vals = s.latest_at(shifted, ev.lookback, stamps=True)
        lb = drop_name(s.labels)
        if any(v is not None for v in vals):
            out.series[key_of(lb)] = (lb, vals)
    return out


def _fn_absent(ev: Engine, node: Any, args: list[Value], times: list[float]) -> Value:
    vec = args[0]
    if not isinstance(vec, Vector):
        raise QueryError("absent() needs an instant vector")
    present = [any(vals[i] is not None for _, vals in vec.series.values()) for i in range(len(times))]
    arg = node.args[0]
    labels = absent_labels(arg if type(arg).__name__ == "VectorSelector" else None)
    return Vector({key_of(labels): (labels, [None if p else 1.0 for p in present])})


def _fn_sort(ev: Engine, node: Any, args: list[Value], times: list[float]) -> Value:
    vec = args[0]
    if not isinstance(vec, Vector):
        raise QueryError("sort() needs an instant vector")
    desc = node.func.name == "sort_desc"
    items = sorted(
        vec.series.items(),
        key=lambda kv: (kv[1][1][-1] is None, -(kv[1][1][-1] or 0) if desc else (kv[1][1][-1] or 0)),
    )
    return Vector(dict(items))


def _fn_label_replace(ev: Engine, node: Any, args: list[Value], times: list[float]) -> Value:
    vec = args[0]
    if not isinstance(vec, Vector) or not all(isinstance(a, StringVal) for a in args[1:5]) or len(args) != 5:
        raise QueryError("label_replace(vector, dst, replacement, src, regex) needs an instant vector and 4 strings")
    dst, repl, src, regex = (a.value for a in args[1:5])  # type: ignore[union-attr]
    if not valid_label_name(dst):
        raise QueryError(f"invalid destination label name in label_replace(): {dst}")
    pattern = full_regex(regex)
    # Go's $1/${name} expansion; a backslash is literal in Go, so it is escaped for expand()
    go_repl = re.sub(r"\$\{?(\w+)\}?", r"\\g<\1>", repl.replace("\\", "\\\\"))
    out = Vector()
    for labels, vals in vec.series.values():
        m = pattern.fullmatch(labels.get(src, ""))
        lb = dict(labels)
        if m is not None:
            try:
                value = m.expand(go_repl)
            except (IndexError, ValueError):  # a group the regex does not have
                value = ""
            if value:
                lb[dst] = value
            else:
                lb.pop(dst, None)
        out.series[key_of(lb)] = (lb, vals)
    return out


def _fn_label_join(ev: Engine, node: Any, args: list[Value], times: list[float]) -> Value:
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


def _fn_histogram_quantile(ev: Engine, node: Any, args: list[Value], times: list[float]) -> Value:
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


VECTOR_FUNCTIONS: dict[str, Function] = {
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


__all__ = ["VECTOR_FUNCTIONS", "Engine", "Function"]
