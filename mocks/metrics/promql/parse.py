"""Parsing PromQL text into the ``promql-parser`` AST the evaluator walks."""

from __future__ import annotations

from typing import Any

from devbox.mocks.metrics.promql.errors import QueryError
from devbox.mocks.metrics.promql.guard import check_text


def parse(expr: str) -> Any:
    """Parse PromQL with ``promql-parser``; raise QueryError with the parser's reason.

    The text is bounded first (:func:`~devbox.mocks.metrics.promql.guard.check_text`): the native
    parser crashes the process on deep input. Every PromQL text devbox parses comes through here.
    """
    if not expr or not expr.strip():
        raise QueryError("empty query")
    check_text(expr)
    import promql_parser as pp  # with the first query or formula: ~1.4 MB an idle platform skips

    try:
        return pp.parse(expr)
    except (ValueError, TypeError) as exc:
        raise QueryError(f"parse error: {exc}") from None
    except BaseException as exc:  # the Rust binding may panic on odd input
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        raise QueryError(f"parse error: {exc}") from None


def short(node: Any) -> str:
    """An AST node as text, cut to fit an error message."""
    text = str(node)
    return text if len(text) < 60 else text[:57] + "..."


__all__ = ["parse", "short"]
