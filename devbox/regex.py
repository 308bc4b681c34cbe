"""Regular expressions a user sends (matchers, routing rules) compiled with RE2, in linear time.

Python's ``re`` backtracks: ``(a+)+$`` against a hostile value takes exponential time while it
holds the event loop (a probe stalled every listener for ~10 s with one Alertmanager filter). RE2
cannot, and its syntax is Go's — what Prometheus, Alertmanager and Polaris themselves accept.
"""

from __future__ import annotations

import functools
from typing import Any

import re2  # type: ignore[import-untyped]

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # a bad user regex is a refusal, not a line on stderr


@functools.lru_cache(maxsize=512)
def compile_re2(pattern: str) -> Any:
    """``pattern`` compiled (remembered: the same patterns come back); ``ValueError`` with RE2's reason
    when it is not one RE2 reads (e.g. a backreference): callers name the pattern as the user wrote it."""
    try:
        return re2.compile(pattern, _OPTIONS)
    except re2.error as exc:
        reason = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise ValueError(reason) from None
