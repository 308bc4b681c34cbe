"""The one error the PromQL engine raises."""

from __future__ import annotations


class QueryError(Exception):
    """The query cannot be parsed or evaluated; ``str()`` is the reason, suitable for a user."""


__all__ = ["QueryError"]
