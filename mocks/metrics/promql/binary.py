"""Binary operators: arithmetic, comparisons (filtering and ``bool``) and the set operators, between
scalars and instant vectors, with ``on``/``ignoring`` and ``group_left``/``group_right``."""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import Any

from devbox.mocks.metrics.promql.errors import QueryError
from devbox.mocks.metrics.promql.values import (
    NAME,
    LabelKey,
    Labels,
    Scalar,
    Value,
    Vector,
    drop_name,
    key_of,
    kind_of,
)

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


def _divide(a: float, b: float) -> float | None:
    return a / b if b else _apply("/", a, b, False)


#: The arithmetic whose float result is the plain Python operation (never an exception: float +, -
#: and * overflow to infinity; division by zero goes through :func:`_apply`'s IEEE rule): applied
#: without :func:`_apply`'s dispatch per point.
_ARITHMETIC: dict[str, Callable[[float, float], float | None]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": _divide,
}


def _vector_scalar(
    op: str, vec: Vector, scalar: list[float], is_cmp: bool, return_bool: bool, *, scalar_left: bool
) -> Vector:
    out = Vector()
    fast = _ARITHMETIC.get(op)
    for labels, vals in vec.series.values():
        new: list[float | None]
        if fast is not None:
            if scalar_left:
                new = [None if v is None else fast(k, v) for k, v in zip(scalar, vals, strict=True)]
            else:
                new = [None if v is None else fast(v, k) for v, k in zip(vals, scalar, strict=True)]
            lb = drop_name(labels)
            if any(v is not None for v in new):
                out.series[key_of(lb)] = (lb, new)
            continue
        new = []
        for i, v in enumerate(vals):
            if v is None:
                new.append(None)
                continue
            a, b = (scalar[i], v) if scalar_left else (v, scalar[i])
            r = _apply(op, a, b, return_bool)
            if is_cmp and not return_bool and r is not None:
                r = v  # a filter keeps the vector's own value
            new.append(r)
        lb = labels if (is_cmp and not return_bool) else drop_name(labels)
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
    base = dict(lhs) if keep_name else drop_name(lhs)
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


Matched = list[tuple[LabelKey, Labels, list[float | None]]]


def _one_to_one(
    fast: Callable[[float, float], float | None], one: Matched, many: Matched, mod: Any, op: str
) -> Vector | None:
    """Arithmetic between one-to-one matched vectors when no match group has two series on a side
    and no two pairs give the same labels: then the pairs are the same at every step and each
    pair's column is computed in one pass. None otherwise: the step-by-step path finds (and
    refuses) the steps where series collide. The series come out in the step-by-step path's order
    (by the first step with a value, then the left side's order)."""
    index: dict[LabelKey, int] = {}
    for j, (sig, _, _) in enumerate(one):
        if sig in index:
            return None
        index[sig] = j
    if len({sig for sig, _, _ in many}) != len(many):
        return None
    rows = []
    for m, (sig, lb, vals) in enumerate(many):
        partner = index.get(sig)
        if partner is None:
            continue
        j = partner
        column = [None if a is None or b is None else fast(a, b) for a, b in zip(vals, one[j][2], strict=True)]
        first = next((i for i, r in enumerate(column) if r is not None), None)
        if first is not None:
            rows.append((first, m, _result_labels(lb, one[j][1], mod, op, False, False), column))
    rows.sort(key=lambda row: (row[0], row[1]))
    out = Vector()
    for _, _, labels, column in rows:
        key = key_of(labels)
        if key in out.series:
            return None
        out.series[key] = (labels, column)
    return out


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
    fast = _ARITHMETIC.get(op)
    if fast is not None and card == "OneToOne":
        matched = _one_to_one(fast, one_sigs, many_sigs, mod, op)
        if matched is not None:
            return matched
    # a matched pair's result labels depend on the pair alone: built once, not at every step
    paired: dict[tuple[int, int], tuple[Labels, LabelKey]] = {}
    out = Vector()
    for i in range(len(times)):
        one_map: dict[LabelKey, tuple[int, float]] = {}
        for j, (sig, _, vals) in enumerate(one_sigs):
            v = vals[i]
            if v is None:
                continue
            if sig in one_map:
                side = "left" if swapped else "right"
                raise QueryError(
                    f"found duplicate series for the match group {dict(sig)} on the {side} hand-side of the "
                    "operation; many-to-many matching not allowed: matching labels must be unique on one side"
                )
            one_map[sig] = (j, v)
        seen: set[LabelKey] = set()
        for m, (sig, lb, vals) in enumerate(many_sigs):
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
            j, ov = one_map[sig]
            a, b = (ov, v) if swapped else (v, ov)
            r = fast(a, b) if fast is not None else _apply(op, a, b, return_bool)
            if r is None:
                continue
            if is_cmp and not return_bool:
                r = a if not swapped else b
            labelled = paired.get((m, j))
            if labelled is None:
                result_lb = _result_labels(lb, one_sigs[j][1], mod, op, is_cmp, return_bool)
                labelled = paired[m, j] = (result_lb, key_of(result_lb))
            result_lb, key = labelled
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


def binary(op: str, lhs: Value, rhs: Value, mod: Any, times: list[float]) -> Value:
    """``lhs op rhs``; ``mod`` is the parser's modifier (``bool``, ``on``/``ignoring``, ``group_*``) or None."""
    return_bool = bool(mod is not None and mod.return_bool)
    for side in (lhs, rhs):
        if not isinstance(side, (Scalar, Vector)):
            raise QueryError(
                f"binary expression must contain only scalar and instant vector types, got {kind_of(side)}"
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


__all__ = ["COMPARISONS", "SET_OPS", "binary"]
