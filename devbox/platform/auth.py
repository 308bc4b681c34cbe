"""The platform token, on every listener: which credentials count and the gRPC interceptor.

A client proves it knows ``platform.token`` with any of: ``Authorization: Bearer T``,
``X-Devbox-Token: T``, ``X-Polaris-Token: T`` (what Polaris SDKs send; on the Polaris listeners
the same header also carries per-service tokens, so it is one candidate among several, not the
only one looked at), and — for browsers on HTTP only — the ``devbox_token`` cookie that a
``?token=T`` link sets (see :class:`devbox.platform.http.TokenMiddleware`). On gRPC the same
names are read from the call's metadata (OTLP exporters send ``OTEL_EXPORTER_OTLP_HEADERS`` as
metadata, so ``Authorization=Bearer%20T`` works for them unchanged).
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import grpc

LOG = logging.getLogger(__name__)

#: Header (and gRPC metadata) names that may carry the token as their whole value.
TOKEN_HEADERS = ("x-devbox-token", "x-polaris-token")
#: The cookie a ``?token=`` link sets for the dashboard.
COOKIE = "devbox_token"
#: What a refused client is told.
HOW = "send the platform token as Authorization: Bearer <token> (or X-Devbox-Token / X-Polaris-Token)"


def candidates(pairs: Iterable[tuple[str, str]]) -> list[str]:
    """Every value in ``pairs`` (header or metadata name/value) that may be the token."""
    found = []
    for key, value in pairs:
        name = key.lower()
        if name == "authorization":
            scheme, _, rest = value.strip().partition(" ")
            if scheme.lower() == "bearer" and rest.strip():
                found.append(rest.strip())
        elif name in TOKEN_HEADERS and value:
            found.append(value.strip())
    return found


def matches(token: str, given: Iterable[str]) -> bool:
    """True when any of ``given`` is ``token`` (constant-time per comparison)."""
    expected = token.encode()
    ok = False
    for value in given:
        ok |= hmac.compare_digest(value.encode(), expected)
    return ok


def _refuse_unary(reason: str) -> Callable[[Any, Any], Awaitable[Any]]:
    async def refuse(_request: Any, context: Any) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, reason)

    return refuse


def _refuse_streaming(reason: str) -> Callable[[Any, Any], Any]:
    async def refuse(_request: Any, context: Any) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, reason)
        yield  # pragma: no cover - abort raises; this only makes the function a generator

    return refuse


class TokenInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc has no type stubs
    """Refuses every call on a gRPC listener whose metadata does not carry the platform token,
    with UNAUTHENTICATED, before the servicer sees a byte of the request."""

    def __init__(self, token: str) -> None:
        self.token = token

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Any]], handler_call_details: Any
    ) -> Any:
        handler = await continuation(handler_call_details)
        pairs = handler_call_details.invocation_metadata or ()
        metadata = [(str(k), v if isinstance(v, str) else "") for k, v in pairs]
        if handler is None or matches(self.token, candidates(metadata)):
            return handler
        LOG.info("gRPC %s refused: no or wrong platform token", handler_call_details.method)
        reason = f"unauthorized: {HOW}"
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(_refuse_unary(reason))
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(_refuse_unary(reason))
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(_refuse_streaming(reason))
        return grpc.stream_stream_rpc_method_handler(_refuse_streaming(reason))
