"""Aggregation operators: ``sum``/``avg``/``min``/``max``/``count``/``group``/``stddev``/``stdvar``/``quantile``,
``topk``/``bottomk`` and ``count_values``, with ``by``/``without``."""

from __future__ import annotations

import itertools
import math

from devbox.mocks.metrics.promql.errors import QueryError
from devbox.mocks.metrics.promql.stats import quantile, variance
from devbox.mocks.metrics.promql.values import (
    NAME,
    LabelKey,
    Labels,
    Vector,
    format_value,
    key_of,
    valid_label_name,
)

AGG_OPS = frozenset({"sum", "avg", "min", "max", "count", "group", "stddev", "stdvar", "quantile"})
#: Aggregations whose value over one sample is that sample (NaN and infinities included).
_IDENTITY_ON_ONE = frozenset({"sum", "avg", "min", "max"})


def _group_labels(labels: Labels, by: list[str], without: bool) -> Labels:
    if without:
        drop = set(by) | {NAME}
        return {k: v for k, v in labels.items() if k not in drop}
    return {k: labels[k] for k in by if k in labels}


def aggregate(
    op: str, vec: Vector, *, by: list[str], without: bool, times: list[float], param: list[float] | None = None
) -> Vector:
    groups: dict[LabelKey, tuple[Labels, list[list[float | None]]]] = {}
    for labels, vals in vec.series.values():
        lb = _group_labels(labels, by, without)
        groups.setdefault(key_of(lb), (lb, []))[1].append(vals)
    out = Vector()
    params = param if param else itertools.repeat(None)
    for key, (labels, members) in groups.items():
        if len(members) == 1 and op in _IDENTITY_ON_ONE:
            result: list[float | None] = list(members[0])  # a group of one is its member's values
            if any(v is not None for v in result):
                out.series[key] = (labels, result)
            continue
        # one column of member values per step (zip transposes in C)
        result = [
            _agg_one(op, present, p) if (present := [v for v in column if v is not None]) else None
            for column, p in zip(zip(*members, strict=True), params, strict=False)  # params may be endless
        ]
        if any(v is not None for v in result):
            out.series[key] = (labels, result)
    return out


def _agg_one(op: str, values: list[float], param: float | None) -> float:
    if op == "sum":
        try:
            return math.fsum(values)
        except (ValueError, OverflowError):  # inf - inf, or a finite sum past the float range
            return sum(values)
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
        var = variance(values)
        return math.sqrt(var) if op == "stddev" else var
    if op == "quantile":
        return quantile(param if param is not None else math.nan, values)
    raise QueryError(f"aggregation {op} is not implemented by devbox")


def topk(op: str, vec: Vector, ks: list[float], by: list[str], without: bool, times: list[float]) -> Vector:
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
            present.sort(key=lambda p: (math.isnan(p[0]), -p[0] if op == "topk" else p[0]))  # type: ignore[operator,arg-type]
            for value, m in present[:k]:
                keep[m][i] = value
    out = Vector()
    for key, vals in keep.items():
        if any(v is not None for v in vals):
            out.series[key] = (vec.series[key][0], vals)
    return out


def count_values(label: str, vec: Vector, by: list[str], without: bool, times: list[float]) -> Vector:
    if not valid_label_name(label):
        raise QueryError(f"invalid label name {label!r}")
    counts: dict[LabelKey, tuple[Labels, list[float | None]]] = {}
    for labels, vals in vec.series.values():
        base = _group_labels(labels, by, without)
        for i, v in enumerate(vals):
            if v is None:
                continue
            lb = {**base, label: format_value(v)}
            entry = counts.setdefault(key_of(lb), (lb, [None] * len(times)))
            entry[1][i] = (entry[1][i] or 0.0) + 1.0
    return Vector(counts)


__all__ = ["AGG_OPS", "aggregate", "count_values", "topk"]
