"""The one exception hierarchy every protocol handler raises for a request it refuses.

Handlers (module-level functions in each mock's adapters) raise these with a reason written for
the user; they never build error responses by hand. Each listener translates them once, at its
edge, into its protocol's error shape (devbox JSON, Prometheus's envelope, Polaris's
``{code, info}``, gRPC status codes) — see ``ErrorShape`` in :mod:`devbox.platform.component`.
"""

from __future__ import annotations

from typing import Any

#: The gRPC status codes by name (grpc/doc/statuscodes.md; ``google.rpc.Code``), for listeners that
#: write a ``google.rpc.Status`` without loading protobuf.
GRPC_CODES = {
    "OK": 0, "CANCELLED": 1, "UNKNOWN": 2, "INVALID_ARGUMENT": 3, "DEADLINE_EXCEEDED": 4, "NOT_FOUND": 5,
    "ALREADY_EXISTS": 6, "PERMISSION_DENIED": 7, "RESOURCE_EXHAUSTED": 8, "FAILED_PRECONDITION": 9, "ABORTED": 10,
    "OUT_OF_RANGE": 11, "UNIMPLEMENTED": 12, "INTERNAL": 13, "UNAVAILABLE": 14, "DATA_LOSS": 15,
    "UNAUTHENTICATED": 16,
}


class ApiError(Exception):
    """A refused request. ``status`` is the HTTP status; ``code`` a short machine-readable word."""

    status = 400
    code = "bad_request"
    #: gRPC status name for gRPC listeners (``grpc.StatusCode[...]``).
    grpc_status = "INVALID_ARGUMENT"

    def __init__(self, reason: str, *, code: str | None = None, detail: dict[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        if code is not None:
            self.code = code
        #: Extra protocol-specific fields (e.g. Polaris's numeric code), for the listener's shape.
        self.detail = detail or {}


class BadRequest(ApiError):
    """Malformed or invalid input: what was wrong and what is allowed."""


class UnsupportedMediaType(BadRequest):
    """A Content-Type or Content-Encoding the endpoint does not read (HTTP 415)."""

    status = 415
    code = "unsupported_media_type"


class Unauthorized(ApiError):
    status = 401
    code = "unauthorized"
    grpc_status = "UNAUTHENTICATED"


class MethodNotAllowed(ApiError):
    """The path exists but not for this method (what the router answers, in the listener's shape)."""

    status = 405
    code = "method_not_allowed"
    grpc_status = "UNIMPLEMENTED"


class NotFound(ApiError):
    status = 404
    code = "not_found"
    grpc_status = "NOT_FOUND"


class Conflict(ApiError):
    status = 409
    code = "conflict"
    grpc_status = "ALREADY_EXISTS"


class TooLarge(ApiError):
    status = 413
    code = "too_large"
    grpc_status = "RESOURCE_EXHAUSTED"


class Unprocessable(ApiError):
    """Well-formed but cannot be executed (e.g. a query over its budget)."""

    status = 422
    code = "unprocessable"
    grpc_status = "FAILED_PRECONDITION"


class Busy(ApiError):
    """Back-pressure: try again later (OTLP clients retry a 429/503 with Retry-After)."""

    status = 503
    code = "busy"
    grpc_status = "UNAVAILABLE"

    def __init__(self, reason: str, *, retry_after: float = 1.0, **kwargs: Any) -> None:
        super().__init__(reason, **kwargs)
        self.retry_after = retry_after


class Unavailable(ApiError):
    """A component this request needs is not running."""

    status = 503
    code = "unavailable"
    grpc_status = "UNAVAILABLE"


__all__ = [
    "ApiError",
    "BadRequest",
    "Busy",
    "Conflict",
    "MethodNotAllowed",
    "NotFound",
    "TooLarge",
    "Unauthorized",
    "Unavailable",
    "Unprocessable",
]
