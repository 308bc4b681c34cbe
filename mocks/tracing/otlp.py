"""OTLP adapters: ``POST /v1/traces`` (HTTP, protobuf or JSON) and ``TraceService/Export`` (gRPC).

Answers follow the OTLP spec: 200 with an ``ExportTraceServiceResponse`` in the request's content
type, ``partial_success`` (rejected span count and why) when some spans were bad; errors as a
``google.rpc.Status`` body with a 4xx (400 unreadable, 413 too large once decompressed, 415 wrong
content type or encoding) or 503 when the store cannot write (clients retry 503). Handlers raise
:mod:`devbox.platform.errors`; :func:`render_error` is the ``otlp_http`` listener's error shape.

LIMITATIONS: ``/v1/metrics`` and ``/v1/logs`` are not served here.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from devbox.mocks.tracing import wal
from devbox.mocks.tracing.convert import BadPayload
from devbox.mocks.tracing.core import Collector
from devbox.mocks.tracing.indexer import Verdict
from fastapi import APIRouter, Request, Response

from devbox.platform.errors import GRPC_CODES, ApiError, BadRequest, Busy, UnsupportedMediaType

if TYPE_CHECKING:  # protobuf (~3 MB with its C++ runtime) loads with the first export or error answered
    import grpc.aio
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

LOG = logging.getLogger(__name__)

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
EXPORT_METHOD = "Export"
SERVICE_NAME = "opentelemetry.proto.collector.trace.v1.TraceService"


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def ingest(collector: Collector, fmt: int, body: bytes, encoding: str, limit: int, *,
                 unreadable: str = "") -> Verdict:
    """Hand an export to the collector (checked, then appended to the WAL before this returns).
    An unreadable body is :class:`BadRequest` (``unreadable`` prefixes the reason); a store that
    cannot write is :class:`Busy` (clients retry)."""
    try:
        return await collector.ingest(fmt, body, encoding, limit)
    except BadPayload as exc:
        raise BadRequest(f"{unreadable}{exc}") from None
    except ApiError:
        raise
    except Exception as exc:
        LOG.exception("storing spans failed")
        raise Busy(f"spans could not be stored: {exc}") from exc


@contextmanager
def answering_in(as_json: bool) -> Iterator[None]:
    """Errors raised inside carry the request's encoding, so :func:`render_error` answers in it."""
    try:
        yield
    except ApiError as exc:
        exc.detail.setdefault("encoding", JSON if as_json else PROTOBUF)
        raise


def render_error(exc: ApiError) -> Response:
    """OTLP/HTTP's error shape: a ``google.rpc.Status`` in the request's encoding (JSON when unknown).

    The ``otlp_http`` listener's renderer (``Listener.errors``). In JSON it is written as protobuf-JSON
    writes a Status (``tests/unit/test_tracing_otlp_errors`` checks it byte for byte) without loading
    protobuf: a probe's 404 on this port does not cost an idle platform ~3 MB.
    """
    code = GRPC_CODES[exc.grpc_status]
    if exc.detail.get("encoding", JSON) == JSON:
        status = {**({"code": code} if code else {}), **({"message": exc.reason} if exc.reason else {})}
        return Response(json.dumps(status), status_code=exc.status, media_type=JSON)
    from google.rpc import status_pb2

    body = status_pb2.Status(code=code, message=exc.reason)
    return Response(body.SerializeToString(), status_code=exc.status, media_type=PROTOBUF)


def export_response(decoded: Verdict) -> trace_service_pb2.ExportTraceServiceResponse:
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

    response = trace_service_pb2.ExportTraceServiceResponse()
    if decoded.rejected:
        response.partial_success.rejected_spans = len(decoded.rejected)
        response.partial_success.error_message = decoded.error_message()
    return response


class HttpExport:
    """``POST /v1/traces``: OTLP/HTTP in protobuf or JSON, answered in the request's encoding."""

    def __init__(self, collector: Collector, *, max_body_bytes: int) -> None:
        self.collector = collector
        self.max_body_bytes = max_body_bytes

    async def export(self, request: Request) -> Response:
        kind = media_type(request)
        if kind not in (PROTOBUF, JSON):
            raise UnsupportedMediaType(f"Content-Type {kind or '(none)'!r} is not supported: send {PROTOBUF} or {JSON}")
        as_json = kind == JSON
        with answering_in(as_json):
            body = await request.body()
            decoded = await ingest(self.collector, wal.OTLP_JSON if as_json else wal.OTLP_PROTOBUF, body,
                                   request.headers.get("content-encoding", ""), self.max_body_bytes)
        message = export_response(decoded)
        if as_json:
            from google.protobuf import json_format

            return Response(json_format.MessageToJson(message, indent=None), media_type=JSON)
        return Response(message.SerializeToString(), media_type=PROTOBUF)


def http_router(collector: Collector, *, max_body_bytes: int) -> APIRouter:
    router = APIRouter(tags=["otlp"])
    router.add_api_route("/v1/traces", HttpExport(collector, max_body_bytes=max_body_bytes).export,
                         methods=["POST"], include_in_schema=False)
    return router


class TraceService:
    """``opentelemetry.proto.collector.trace.v1.TraceService`` on the platform's gRPC server.

    Registered with a bytes-in handler (no request deserializer): grpc would answer a body it
    cannot parse with UNKNOWN and parse a big one on the loop; here garbage or truncated bodies
    are INVALID_ARGUMENT and big ones are checked in the collector's decode process."""

    def __init__(self, collector: Collector) -> None:
        self.collector = collector

    async def Export(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        # BadRequest: the listener's edge aborts with INVALID_ARGUMENT; Busy: with UNAVAILABLE
        decoded = await ingest(self.collector, wal.OTLP_PROTOBUF, request, "", len(request) + 1)
        return bytes(export_response(decoded).SerializeToString())


def grpc_registrar(collector: Collector) -> Any:
    service = TraceService(collector)

    def register(server: grpc.aio.Server) -> None:
        import grpc  # called once a client's bytes loaded grpc

        handler = grpc.method_handlers_generic_handler(SERVICE_NAME, {
            EXPORT_METHOD: grpc.unary_unary_rpc_method_handler(service.Export),
        })
        server.add_generic_rpc_handlers((handler,))

    return register
