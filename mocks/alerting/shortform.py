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
    min_volume: int | None
    volume: str | None
    volume_window: float


def compile_short(spec: ShortForm) -> str:
    """``indicator{filter} comparison threshold``, aggregated by ``by`` first when given, and only
    where the ``volume`` counter rose by ``min_volume`` or more over ``volume_window``."""
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
    condition = f"{selector} {spec.comparison} {threshold}"
    if spec.min_volume is None or spec.volume is None:
        return condition
    # a rate over two calls is noise: the group must also have seen min_volume events of the
    # volume counter in the window; with no 'by' the whole volume counts (one group)
    dims = ", ".join(spec.by or [])
    grouping = f" by ({dims})" if spec.by else ""
    volume = f"sum{grouping} (increase({spec.volume}[{_window(spec.volume_window)}]))"
    return f"({condition}) and on({dims}) ({volume} >= {spec.min_volume})"


def _window(seconds: float) -> str:
    """A PromQL range for ``seconds`` (milliseconds when not whole seconds)."""
    return f"{int(seconds)}s" if float(seconds).is_integer() else f"{round(seconds * 1000)}ms"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')
