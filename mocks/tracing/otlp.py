"""OTLP adapters: ``POST /v1/traces`` (HTTP, protobuf or JSON) and ``TraceService/Export`` (gRPC).

Answers follow the OTLP spec: 200 with an ``ExportTraceServiceResponse`` in the request's content
type, ``partial_success`` (rejected span count and why) when some spans were bad; errors as a
``google.rpc.Status`` body with a 4xx (400 unreadable, 413 too large once decompressed, 415 wrong
content type or encoding) or 503 when the store cannot write (clients retry 503).

LIMITATIONS: ``/v1/metrics`` and ``/v1/logs`` are not served here.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from typing import Any

import grpc
from devbox.mocks.tracing import convert
from devbox.mocks.tracing.convert import BadPayload, Decoded
from devbox.mocks.tracing.core import Collector, now_us
from fastapi import APIRouter, Request, Response
from google.protobuf import json_format
from google.rpc import code_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

LOG = logging.getLogger(__name__)

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
#: Bodies above this size are decoded in a worker thread rather than on the loop.
DECODE_INLINE_BYTES = 64 * 1024


class TooLarge(Exception):
    pass


class BadEncoding(Exception):
    pass


def decompress(body: bytes, encoding: str, limit: int) -> bytes:
    """Undo ``Content-Encoding`` (gzip, deflate — zlib or raw — or identity), refusing bombs."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding in ("gzip", "x-gzip"):
        wbits = 16 + zlib.MAX_WBITS
    elif encoding == "deflate":
        wbits = zlib.MAX_WBITS if body[:1] == b"\x78" else -zlib.MAX_WBITS
    else:
        raise BadEncoding(f"Content-Encoding {encoding!r} is not supported (use gzip, deflate or none)")
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise BadPayload(f"body is not valid {encoding}: {exc}") from None
    if len(out) > limit:
        raise TooLarge(f"body is over {limit} bytes once decompressed")
    if not inflater.eof:
        raise BadPayload(f"body is truncated {encoding} data")
    return out


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def _status_response(status: int, code: int, message: str, as_json: bool) -> Response:
    body = status_pb2.Status(code=code, message=message)
    if as_json:
        return Response(json_format.MessageToJson(body, indent=None), status_code=status, media_type=JSON)
    return Response(body.SerializeToString(), status_code=status, media_type=PROTOBUF)


def export_response(decoded: Decoded) -> trace_service_pb2.ExportTraceServiceResponse:
    response = trace_service_pb2.ExportTraceServiceResponse()
    if decoded.rejected:
        response.partial_success.rejected_spans = len(decoded.rejected)
        response.partial_success.error_message = decoded.error_message()
    return response


def http_router(collector: Collector, *, max_body_bytes: int) -> APIRouter:
    router = APIRouter(tags=["otlp"])

    @router.post("/v1/traces", include_in_schema=False)
    async def export(request: Request) -> Response:
        kind = media_type(request)
        if kind not in (PROTOBUF, JSON):
            return _status_response(
                415, code_pb2.INVALID_ARGUMENT,
                f"Content-Type {kind or '(none)'!r} is not supported: send {PROTOBUF} or {JSON}", as_json=True,
            )
        as_json = kind == JSON
        body = await request.body()
        try:
            raw = decompress(body, request.headers.get("content-encoding", ""), max_body_bytes)
            decode = convert.from_otlp_json if as_json else convert.from_otlp_protobuf
            kwargs: dict[str, Any] = {"now_us": now_us(), "max_future_us": collector.max_future_us}
            if len(raw) > DECODE_INLINE_BYTES:
                decoded = await asyncio.to_thread(decode, raw, **kwargs)
            else:
                decoded = decode(raw, **kwargs)
        except BadEncoding as exc:
            return _status_response(415, code_pb2.INVALID_ARGUMENT, str(exc), as_json)
        except TooLarge as exc:
            return _status_response(413, code_pb2.RESOURCE_EXHAUSTED, str(exc), as_json)
        except BadPayload as exc:
            return _status_response(400, code_pb2.INVALID_ARGUMENT, str(exc), as_json)
        try:
            await collector.accept(decoded)
        except Exception as exc:
            LOG.exception("storing spans failed")
            response = _status_response(503, code_pb2.UNAVAILABLE, f"spans could not be stored: {exc}", as_json)
            response.headers["Retry-After"] = "1"
            return response
        message = export_response(decoded)
        if as_json:
            return Response(json_format.MessageToJson(message, indent=None), media_type=JSON)
        return Response(message.SerializeToString(), media_type=PROTOBUF)

    return router


class TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    """``opentelemetry.proto.collector.trace.v1.TraceService`` on the platform's gRPC server."""

    def __init__(self, collector: Collector) -> None:
        self.collector = collector

    async def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.aio.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        kwargs: dict[str, Any] = {"now_us": now_us(), "max_future_us": self.collector.max_future_us}
        if request.ByteSize() > DECODE_INLINE_BYTES:
            decoded = await asyncio.to_thread(convert.from_otlp_request, request, **kwargs)
        else:
            decoded = convert.from_otlp_request(request, **kwargs)
        try:
            await self.collector.accept(decoded)
        except Exception as exc:
            LOG.exception("storing spans failed")
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"spans could not be stored: {exc}")
        return export_response(decoded)


def grpc_registrar(collector: Collector) -> Any:
    def register(server: grpc.aio.Server) -> None:
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(TraceService(collector), server)

    return register
