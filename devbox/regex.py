"""Regular expressions a user sends (matchers, routing rules) compiled with RE2, in linear time.

Python's ``re`` backtracks: ``(a+)+$`` against a hostile value takes exponential time while it
holds the event loop (a probe stalled every listener for ~10 s with one Alertmanager filter). RE2
cannot, and its syntax is Go's — what Prometheus, Alertmanager and Polaris themselves accept.
"""

from __future__ import annotations

import functools
import re
from typing import Any


@functools.lru_cache(maxsize=512)
def compile_re2(pattern: str) -> Any:
    """``pattern`` compiled (remembered: the same patterns come back); ``ValueError`` with RE2's reason
    when it is not one RE2 reads (e.g. a backreference): callers name the pattern as the user wrote it.

    google-re2 is one of devbox's dependencies: the platform always has it. A service using devbox's
    SDK in an environment of its own without it (an exported stack's image) gets Python's ``re``: the
    routing rules it evaluates were checked by the platform, and the labels are its own callers'."""
    try:
        import re2  # type: ignore[import-untyped]  # on first use: the SDK imports this module in every service
    except ImportError:
        try:
            return re.compile(pattern)
        except re.error as exc:
            raise ValueError(str(exc)) from None
    try:
        return re2.compile(pattern, _options(re2))
    except re2.error as exc:
        reason = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise ValueError(reason) from None


@functools.cache
def _options(re2: Any) -> Any:
    options = re2.Options()
    options.log_errors = False  # a bad user regex is a refusal, not a line on stderr
    return options
