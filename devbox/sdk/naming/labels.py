"""Routing labels of the current request: OTel baggage, explicit overrides, and how they travel.

Owns the context variable behind :func:`routing_labels`, :func:`current_labels` (baggage merged with
those overrides), the W3C ``baggage`` header codec the transports propagate labels with, and
:class:`RoutingLabelsMiddleware`, which turns an incoming ``baggage`` header back into labels when
tracing (and so OTel's propagator) is off. OpenTelemetry is imported on first use, never at import.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import urllib.parse
from collections.abc import Iterator, Mapping
from typing import Any

#: Explicit routing labels of the current context (used on top of OTel baggage).
_LABELS: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar("devbox_routing_labels",
                                                                                   default=None)


@functools.cache
def otel_api() -> tuple[Any, Any] | None:
    """The OTel API modules (baggage, trace), imported on first use; None without OTel."""
    try:
        from opentelemetry import baggage, trace
    except ImportError:  # pragma: no cover - OTel is a dependency, but the SDK must not need it
        return None
    return baggage, trace


def current_labels() -> dict[str, str]:
    """Routing labels of the current context: OTel baggage, then :func:`routing_labels` on top."""
    labels: dict[str, str] = {}
    otel = otel_api()
    if otel is not None:
        entries = otel[0].get_all()
        if entries:
            labels.update({str(k): str(v) for k, v in entries.items()})
    extra = _LABELS.get()
    if extra:
        labels.update(extra)
    return labels


@contextlib.contextmanager
def routing_labels(**labels: str) -> Iterator[dict[str, str]]:
    """Route calls made inside the block with these labels (also when tracing is off)."""
    merged = {**(_LABELS.get() or {}), **labels}
    token = _LABELS.set(merged)
    try:
        yield merged
    finally:
        _LABELS.reset(token)


def baggage_header(labels: Mapping[str, str]) -> str:
    """W3C baggage header value for ``labels``."""
    quote = urllib.parse.quote
    return ",".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in sorted(labels.items()))


def parse_baggage(value: str) -> dict[str, str]:
    """Labels from a W3C baggage header value (properties after ';' are dropped)."""
    out: dict[str, str] = {}
    for member in value.split(","):
        key, sep, rest = member.partition("=")
        if sep and key.strip():
            out[urllib.parse.unquote(key.strip())] = urllib.parse.unquote(rest.split(";", 1)[0].strip())
    return out


class RoutingLabelsMiddleware:
    """ASGI middleware: incoming ``baggage`` becomes this request's routing labels, so labels flow
    along the call chain even when tracing (and thus OTel's propagator) is off."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        raw = dict(scope.get("headers") or []).get(b"baggage")
        if not raw:
            await self.app(scope, receive, send)
            return
        token = _LABELS.set({**(_LABELS.get() or {}), **parse_baggage(raw.decode("latin-1"))})
        try:
            await self.app(scope, receive, send)
        finally:
            _LABELS.reset(token)
