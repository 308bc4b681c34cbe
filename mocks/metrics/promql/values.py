"""The values PromQL expressions evaluate to, vectorised over the steps of a query, and label helpers."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from devbox.mocks.metrics.promql.source import Labels, RawSeries

LabelKey = tuple[tuple[str, str], ...]
NAME = "__name__"


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


def kind_of(value: Value) -> str:
    """The PromQL type name of a value, for error messages."""
    return {Scalar: "scalar", StringVal: "string", Vector: "instant vector", Matrix: "range vector"}[type(value)]


def drop_name(labels: Labels) -> Labels:
    if NAME not in labels:
        return labels
    return {k: v for k, v in labels.items() if k != NAME}


def valid_label_name(name: str) -> bool:
    return re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", name) is not None


def format_value(v: float) -> str:
    """A sample value as Prometheus writes it (in JSON answers and ``count_values`` labels)."""
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if v == int(v) and abs(v) < 1e15:
        return str(int(v))
    return repr(float(v))


def format_values(values: Sequence[float]) -> list[str]:
    """:func:`format_value` of every value, each distinct value formatted once.

    Formatting is the cost of a large answer (``repr`` of a float with 17 digits takes most of a
    microsecond), while answers repeat values often: zeros, idle series, gauges that hold still,
    rates of counters that move in steps. A strided sample of the answer says first whether
    repeats are common (when they are not, the look-ups would only add cost); then the distinct
    values are found in one C-level pass (``dict.fromkeys``). ``-0.0`` and ``0.0`` are one key, which
    is right: both are written ``0``; each NaN object is its own key.
    """
    sample = values[:: max(1, len(values) // _SAMPLE)]
    if len(set(sample)) > len(sample) * _DISTINCT_SHARE:
        return _format_each(values)
    distinct = dict.fromkeys(values)
    if len(distinct) > len(values) * _DISTINCT_SHARE:
        return _format_each(values)
    keys = list(distinct)
    texts = dict(zip(keys, _format_each(keys), strict=True))
    return list(map(texts.__getitem__, values))


#: Above this share of distinct values, :func:`format_values` formats every value (the look-ups
#: would cost more than the formatting they save).
_DISTINCT_SHARE = 0.8
#: Values :func:`format_values` samples to judge whether the answer repeats values.
_SAMPLE = 512


def _format_each(values: Sequence[float]) -> list[str]:
    """:func:`format_value` of every value: integral ones (``str(int(v))``; all of them, the common
    case of counts, in one C loop) and the rest (``repr``, one C loop) by kind, only the non-finite
    ones one by one."""
    import numpy as np
    column = np.asarray(values, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        finite = np.isfinite(column)
        whole = finite & (column == np.trunc(column)) & (np.abs(column) < 1e15)
    if whole.all():  # -0.0 becomes "0" as in format_value
        return list(map(str, column.astype(np.int64).tolist()))
    out = list(map(repr, values))
    integral = np.flatnonzero(whole)
    if integral.size:
        for k, text in zip(integral.tolist(), map(str, column[integral].astype(np.int64).tolist()), strict=True):
            out[k] = text
    if not finite.all():
        for k in np.flatnonzero(~finite).tolist():
            out[k] = format_value(values[k])
    return out


__all__ = [
    "NAME",
    "LabelKey",
    "Labels",
    "Matrix",
    "Scalar",
    "StringVal",
    "Value",
    "Vector",
    "drop_name",
    "format_value",
    "format_values",
    "key_of",
    "kind_of",
    "valid_label_name",
]
