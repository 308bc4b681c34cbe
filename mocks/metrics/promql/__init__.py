"""PromQL evaluation over devbox's stored samples: a generic engine, free of devbox's own indicators.

Parsing is done by the ``promql-parser`` package (a binding of a real PromQL parser); this module
only walks its AST. Evaluation is vectorised over the steps of a range query: every node is
evaluated once for all step timestamps, which keeps a 1 h range query of many series cheap.

- ``values``: what expressions evaluate to (scalar, string, instant vector, range vector);
- ``source``: label matchers and the :class:`SampleSource` the evaluator reads (the store, or a list);
- ``parse``: PromQL text to the ``promql-parser`` AST; ``errors``: :class:`QueryError`;
- ``evaluator``: the AST walk, selectors, ``offset``/``@``, subqueries, and the :class:`ComputedMetric`
  hook through which devbox's composite indicators (:mod:`devbox.mocks.metrics.indicators`) plug in;
- ``range_functions`` / ``functions`` / ``aggregation`` / ``binary``: the operators; ``stats``: the
  quantile and variance they share.

What is covered: instant selectors with ``=``, ``!=``, ``=~``, ``!~`` (and ``or`` matcher sets),
range selectors, ``offset`` and ``@``, subqueries, ``rate``/``increase``/``irate``/``delta``/
``idelta``/``deriv``/``changes``/``resets``/``*_over_time``, the math and label functions,
``histogram_quantile``, ``sum``/``avg``/``min``/``max``/``count``/``group``/``stddev``/``stdvar``/
``topk``/``bottomk``/``quantile``/``count_values`` with ``by``/``without``, arithmetic, comparison
(filtering and ``bool``) and set operators between scalars and vectors, with ``on``/``ignoring``
and ``group_left``/``group_right``. Staleness: an instant selector sees the newest sample within
the 5 minute lookback, like Prometheus.

Hostile queries: the text is bounded before parsing (``guard``), label regexes are RE2 (linear
time), and every query has a timeout and a sample budget charged before the work it pays for.

LIMITATIONS: no native histograms, no staleness markers (a series stops being visible 5 minutes
after its last sample rather than at once);
``double_exponential_smoothing``, ``limitk``, ``sort_by_label``, ``info`` and the date functions
are not implemented (they answer a ``QueryError`` that names them). Checked against Prometheus's
own engine by ``tests/integration/test_metrics_promql_oracle.py``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Bound now: the function shares its module's name, which importing ``promql.parse`` would otherwise
# leave as this package's attribute. The module is light (the native parser loads with the first parse).
from devbox.mocks.metrics.promql.parse import parse

if TYPE_CHECKING:
    from devbox.mocks.metrics.promql.errors import QueryError
    from devbox.mocks.metrics.promql.evaluator import LOOKBACK_SECONDS, ComputedMetric, Evaluator
    from devbox.mocks.metrics.promql.guard import MAX_SAMPLES, MAX_STEPS, QUERY_TIMEOUT
    from devbox.mocks.metrics.promql.source import (
        LabelMatcher,
        Labels,
        ListSource,
        RawSeries,
        SampleBudget,
        SampleSource,
    )
    from devbox.mocks.metrics.promql.values import (
        NAME,
        LabelKey,
        Matrix,
        Scalar,
        StringVal,
        Value,
        Vector,
        format_value,
        format_values,
        key_of,
    )

#: Where each name of :data:`__all__` lives, imported with its first use (PEP 562): the store needs the
#: matchers and values, not the evaluator and its operators, which load with the first query or
#: indicator evaluated (~0.7 MB of an idle platform). ``tests/unit/test_start_imports`` checks the
#: map against ``__all__``.
_HOME = {
    "QueryError": "errors",
    "LOOKBACK_SECONDS": "evaluator", "ComputedMetric": "evaluator", "Evaluator": "evaluator",
    "MAX_SAMPLES": "guard", "MAX_STEPS": "guard", "QUERY_TIMEOUT": "guard",
    "parse": "parse",  # bound above
    **dict.fromkeys(["LabelMatcher", "Labels", "ListSource", "RawSeries", "SampleBudget", "SampleSource"], "source"),
    **dict.fromkeys(["NAME", "LabelKey", "Matrix", "Scalar", "StringVal", "Value", "Vector", "format_value",
                     "format_values", "key_of"], "values"),
}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


__all__ = [
    "LOOKBACK_SECONDS",
    "MAX_SAMPLES",
    "MAX_STEPS",
    "NAME",
    "QUERY_TIMEOUT",
    "ComputedMetric",
    "Evaluator",
    "LabelKey",
    "LabelMatcher",
    "Labels",
    "ListSource",
    "Matrix",
    "QueryError",
    "RawSeries",
    "SampleBudget",
    "SampleSource",
    "Scalar",
    "StringVal",
    "Value",
    "Vector",
    "format_value",
    "format_values",
    "key_of",
    "parse",
]
