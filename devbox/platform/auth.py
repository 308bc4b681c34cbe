"""The platform token, on every listener: which credentials count (the gRPC interceptor that checks
them is :class:`devbox.platform.grpc_server.TokenInterceptor`).

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
from collections.abc import Iterable

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
