"""Request logs for user services: one key=value line per request, every record carrying its trace id.

    from devbox.sdk import logs
    logs.install(app)          # done by sdk.bootstrap(app)

What it installs (once per process):

- :class:`TraceContextFilter` on the root handler: every log record gets ``trace_id`` and
  ``span_id`` (32/16 hex digits of the current OpenTelemetry span, ``-`` outside a trace), so a
  line in ``.devbox/logs/<service>/<instance>.log`` links to its trace in the dashboard;
- a stderr handler at ``DEVBOX_LOG_LEVEL`` (default INFO) in logfmt when the process has none yet
  (a service that configured logging itself keeps its handlers; they only get the filter);
- :class:`RequestLogMiddleware` on the given ASGI app, and :func:`grpc_interceptor` for grpc.aio
  servers: ``method=GET path=/checkout/alice status=200 duration_ms=12.3`` at INFO (5xx at
  WARNING), probes (``/healthz``, gRPC health) at DEBUG so they do not drown the requests.

LIMITATIONS: the path is logged without its query string (it may hold secrets); streaming gRPC
calls are passed through unlogged.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any

LOG = logging.getLogger("devbox.request")

#: Paths the deploy pipeline probes every second or two; logged at DEBUG.
PROBE_PATHS = frozenset({"/healthz", "/health", "/ready", "/readyz", "/livez", "/grpc.health.v1.Health/Check"})
#: The line layout: logfmt, timestamp first so the logs API can select lines by time.
FORMAT = ("ts=%(asctime)s.%(msecs)03dZ level=%(levelname)s logger=%(name)s "
          "trace_id=%(trace_id)s span_id=%(span_id)s %(message)s")
DATEFMT = "%Y-%m-%dT%H:%M:%S"
_MARK = "_devbox_logs"


class TraceContextFilter(logging.Filter):
    """Adds ``trace_id``/``span_id`` of the current span to each record (``-`` when there is none)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "trace_id", None) is None:
            record.trace_id, record.span_id = current_ids()
        return True


def current_ids() -> tuple[str, str]:
    """The current span's trace and span id in hex, or ``("-", "-")`` (no OpenTelemetry, no span)."""
    try:
        from opentelemetry import trace
    except ImportError:
        return "-", "-"
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return "-", "-"
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")


def _value(v: object) -> str:
    text = str(v)
    return f'"{text}"' if (" " in text or '"' in text or not text) else text


def request_line(method: str, path: str, status: int, duration_ms: float) -> str:
    return f"method={method} path={_value(path)} status={status} duration_ms={duration_ms:.1f}"


def _log_request(method: str, path: str, status: int, started: float) -> None:
    level = logging.DEBUG if path in PROBE_PATHS else logging.WARNING if status >= 500 else logging.INFO
    LOG.log(level, request_line(method, path, status, (time.perf_counter() - started) * 1000))


def configure(level: str | int | None = None) -> None:
    """Install the filter (and a logfmt stderr handler if the process has no handler) once."""
    root = logging.getLogger()
    if getattr(root, _MARK, False):
        return
    setattr(root, _MARK, True)
    level = level or os.environ.get("DEVBOX_LOG_LEVEL", "INFO").upper()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        formatter = logging.Formatter(FORMAT, DATEFMT)
        formatter.converter = time.gmtime  # UTC, marked Z: the logs API selects lines by time
        handler.setFormatter(formatter)
        root.addHandler(handler)
        root.setLevel(level)
    elif root.level > logging.INFO:
        root.setLevel(level)
    if logging.getLevelName(level) != logging.DEBUG:
        # httpx logs every call at INFO, the naming client's heartbeats included: they would drown the requests
        for quiet in ("httpx", "httpcore"):
            logging.getLogger(quiet).setLevel(logging.WARNING)
    for existing in root.handlers:
        if not any(isinstance(f, TraceContextFilter) for f in existing.filters):
            existing.addFilter(TraceContextFilter())


class RequestLogMiddleware:
    """Pure ASGI middleware: one line per HTTP request, logged inside the request's server span."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client sees when the app raises before answering

        async def send_status(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            _log_request(scope.get("method", "-"), scope.get("path", "-"), status, started)


def grpc_interceptor() -> Any:
    """A grpc.aio server interceptor logging each unary call like :class:`RequestLogMiddleware`."""
    import grpc

    class RequestLogInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
        async def intercept_service(self, continuation: Any, details: Any) -> Any:
            handler = await continuation(details)
            if handler is None or handler.unary_unary is None:
                return handler
            inner, method = handler.unary_unary, details.method

            async def logged(request: Any, context: Any) -> Any:
                started = time.perf_counter()
                try:
                    answer = await inner(request, context)
                except Exception:
                    _log_request("grpc", method, 500, started)
                    raise
                code = context.code() if hasattr(context, "code") else None
                _log_request("grpc", method, 500 if code not in (None, grpc.StatusCode.OK, 0) else 200, started)
                return answer

            return grpc.unary_unary_rpc_method_handler(
                logged, request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)

    return RequestLogInterceptor()


def install(app: Any = None, *, level: str | int | None = None) -> None:
    """Configure logging (see :func:`configure`) and add the request log to ``app`` (once)."""
    configure(level)
    middleware = getattr(app, "user_middleware", None)
    if middleware is not None and not any(m.cls is RequestLogMiddleware for m in middleware):
        app.add_middleware(RequestLogMiddleware)
