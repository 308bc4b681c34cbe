"""Bounds on PromQL text, checked in Python before the native parser sees it, and on a query's work.

``promql-parser`` is a Rust parser behind a Python binding: deep recursion in it overflows the
native stack and kills the whole process (a segfault is not an exception: every listener and the
supervised services go with it). Measured on the pinned binding: a chain of 5,000 ``1+1+...``
terms (10 kB) and 100,000 nested parentheses crash it; 3,000 nested parentheses take 2 s with the
GIL held. So the text is refused before parsing when it is longer, deeper or has longer operator
chains than any query a person or a dashboard writes. The bounds are far below the crash
thresholds (16x and more), so parsing in a subprocess is not needed; the evaluator walks the AST
recursively too, and these bounds keep it within Python's recursion limit.

Counting is cheap and linear: string literals and comments are blanked first (their content is
neither nesting nor operators), then brackets and operator tokens are counted.
"""

from __future__ import annotations

import re

from devbox.mocks.metrics.promql.errors import QueryError

#: Refuse range queries with more steps than this (Prometheus refuses > 11000 points per series).
MAX_STEPS = 11000
#: Samples one query may read plus points it may hold per step (Prometheus's query.max-samples is
#: 50M for Go's 16-byte samples; a Python float in a list costs ~4x that, and this is a dev box).
MAX_SAMPLES = 5_000_000
#: Seconds a query may run, from when it was submitted (Prometheus's default is 2 min).
QUERY_TIMEOUT = 30.0
#: Longest query text accepted (characters). Long label-value alternations fit easily.
MAX_QUERY_CHARS = 65_536
#: Deepest nesting of ``(``, ``[`` and ``{`` accepted (function calls and aggregations nest by parentheses).
MAX_NESTING = 64
#: Most operators (binary, unary, range/subquery brackets) accepted: each is one level of the AST
#: when they chain (``1+1+1...`` is a left-deep tree).
MAX_OPERATORS = 256

# Linear-time patterns (no nested quantifiers): strings with escapes, raw strings, comments.
_BLANK = re.compile(r'"(?:[^"\\\n]|\\.)*"|\'(?:[^\'\\\n]|\\.)*\'|`[^`]*`|#[^\n]*')
_BRACKETS = re.compile(r"[()\[\]{}]")
_OPERATORS = re.compile(r"==|!=|<=|>=|[-+*/%^<>\[]|\b(?:and|or|unless|atan2)\b")
_OPEN = frozenset("([{")


def check_text(expr: str) -> None:
    """Refuse PromQL text that is too long, too deeply nested or has too many operators.

    Raises :class:`QueryError` naming the bound (it becomes a 400 with that reason).
    """
    if len(expr) > MAX_QUERY_CHARS:
        raise QueryError(f"query is {len(expr)} characters long; devbox accepts at most {MAX_QUERY_CHARS}")
    code = _BLANK.sub('""', expr)
    depth = deepest = 0
    for match in _BRACKETS.finditer(code):
        if match.group() in _OPEN:
            depth += 1
            if depth > deepest:
                deepest = depth
        elif depth > 0:
            depth -= 1
    if deepest > MAX_NESTING:
        raise QueryError(
            f"query nests {deepest} levels of brackets; devbox accepts at most {MAX_NESTING} "
            "(split it, or use a recording of the inner part)"
        )
    operators = sum(1 for _ in _OPERATORS.finditer(code))
    if operators > MAX_OPERATORS:
        raise QueryError(
            f"query has {operators} operators; devbox accepts at most {MAX_OPERATORS} in one expression "
            "(use a regex matcher or an aggregation instead of a long chain)"
        )


__all__ = ["MAX_NESTING", "MAX_OPERATORS", "MAX_QUERY_CHARS", "MAX_SAMPLES", "MAX_STEPS", "QUERY_TIMEOUT",
           "check_text"]
