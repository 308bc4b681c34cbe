"""The 007-style short form compiled to PromQL: ``indicator{filter} comparison threshold``.

Its own module because both the config model (which checks that a short rule compiles) and the
rule loader (which builds :class:`~devbox.mocks.alerting.models.Rule` from it) need it: here it
depends on neither, so config and rules no longer import each other.
"""

from __future__ import annotations

import math
import re
from typing import Protocol

from devbox.mocks.alerting.matchers import parse_matchers

_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


class ShortForm(Protocol):
    """What compiling needs of a short-form rule (``config.ShortRuleSpec`` has these fields)."""

    indicator: str
    filter: dict[str, str] | list[str]
    by: list[str] | None
    aggregate: str
    comparison: str
    threshold: float


def compile_short(spec: ShortForm) -> str:
    """``indicator{filter} comparison threshold``, aggregated by ``by`` first when given."""
    if isinstance(spec.filter, dict):
        matchers = [f'{k}="{_escape(v)}"' for k, v in spec.filter.items()]
        for name in spec.filter:
            if not _LABEL_NAME.match(name):
                raise ValueError(f"filter dimension {name!r} is not a valid label name")
    else:
        matchers = [str(m) for item in spec.filter for m in parse_matchers(item)]
    selector = spec.indicator + ("{" + ",".join(matchers) + "}" if matchers else "")
    if spec.by is not None:
        selector = f"{spec.aggregate} by ({', '.join(spec.by)}) ({selector})"
    threshold = repr(spec.threshold) if math.isfinite(spec.threshold) else None
    if threshold is None:
        raise ValueError("threshold must be a finite number")
    return f"{selector} {spec.comparison} {threshold}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')
