"""Zipkin v2 HTTP API: ``POST /api/v2/spans`` (JSON or proto3) and the query endpoints.

Follows ``specs/zipkin2-api.yaml`` plus what the real server and its UI also use
(``/remoteServices``, ``/traceMany``, ``/config.json``). Errors are plain text, as the real
server answers them: 400 undecodable or partly bad (the good spans of the batch are kept and the
message says how many), 404 ``"<id> not found"``, 413 too large, 415 wrong content type.

LIMITATIONS: span names and service names are matched as given (the real server lower-cases
them); ``annotationQuery`` words match tag keys only (annotations are not stored).
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from devbox.mocks.tracing import convert
from devbox.mocks.tracing.convert import BadPayload
from devbox.mocks.tracing.core import DEFAULT_LOOKBACK_MS, Collector, TraceNotFound, now_us
from devbox.mocks.tracing.models import Span
from devbox.mocks.tracing.otlp import BadEncoding, TooLarge, decompress, media_type
from devbox.mocks.tracing.store import TraceQuery, parse_annotation_query
from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import PlainTextResponse

LOG = logging.getLogger(__name__)

#: Largest epoch-ms / µs values accepted in queries (year 2286; keeps µs arithmetic inside int64).
MAX_MS = 10**13
MAX_US = 2**62
_HEX_ID = re.compile(r"^[0-9a-f]{16,32}$")
MAX_LIMIT = 1000


def normalise_trace_id(text: str) -> str:
    """A query's trace id as stored (32 lowercase hex); ValueError with a reason otherwise."""
    tid = text.strip().lower()
    if not _HEX_ID.match(tid):
        raise ValueError(f"{text!r} is not a trace id: 16 to 32 lowercase hex characters")
    return tid.rjust(32, "0")


def _json(data: Any, status: int = 200) -> Response:
    return Response(json.dumps(data, separators=(",", ":")), status_code=status, media_type="application/json")


def _text(message: str, status: int) -> PlainTextResponse:
    return PlainTextResponse(message, status_code=status)


def _trace_json(spans: list[Span]) -> list[dict[str, Any]]:
    return [convert.to_zipkin(s) for s in spans]


def router(collector: Collector, *, max_body_bytes: int, autocomplete_keys: list[str]) -> APIRouter:
    r = APIRouter(prefix="/api/v2", tags=["zipkin"])

    @r.post("/spans", status_code=202, include_in_schema=False)
    async def post_spans(request: Request) -> Response:
        kind = media_type(request)
        if kind not in ("", "application/json", "application/x-protobuf", "text/plain"):
            return _text(f"Content-Type {kind!r} is not supported: send application/json or "
                         "application/x-protobuf", 415)
        body = await request.body()
        try:
            raw = decompress(body, request.headers.get("content-encoding", ""), max_body_bytes)
            decode = convert.from_zipkin_proto if kind == "application/x-protobuf" else convert.from_zipkin_json
            decoded = decode(raw, now_us=now_us(), max_future_us=collector.max_future_us)
        except BadEncoding as exc:
            return _text(str(exc), 415)
        except TooLarge as exc:
            return _text(str(exc), 413)
        except BadPayload as exc:
            return _text(f"Cannot decode spans: {exc}", 400)
        try:
            await collector.accept(decoded)
        except Exception as exc:
            LOG.exception("storing spans failed")
            return _text(f"spans could not be stored: {exc}", 503)
        if decoded.rejected:
            return _text(f"stored {len(decoded.spans)} span(s); {decoded.error_message()}", 400)
        return Response(status_code=202)

    @r.get("/services")
    async def services() -> Response:
        return _json(await collector.services())

    @r.get("/spans")
    async def span_names(service_name: str = Query(..., alias="serviceName")) -> Response:
        return _json(await collector.names(service_name, "span"))

    @r.get("/remoteServices")
    async def remote_services(service_name: str = Query(..., alias="serviceName")) -> Response:
        return _json(await collector.names(service_name, "remote"))

    @r.get("/traces")
    async def traces(
        service_name: str | None = Query(None, alias="serviceName"),
        remote_service_name: str | None = Query(None, alias="remoteServiceName"),
        span_name: str | None = Query(None, alias="spanName"),
        annotation_query: str | None = Query(None, alias="annotationQuery"),
        min_duration: int | None = Query(None, alias="minDuration", ge=0, le=MAX_US),
        max_duration: int | None = Query(None, alias="maxDuration", ge=0, le=MAX_US),
        end_ts: int | None = Query(None, alias="endTs", ge=0, le=MAX_MS),
        lookback: int | None = Query(None, ge=0, le=MAX_MS),
        limit: int = Query(10, ge=1),
    ) -> Response:
        end_us = end_ts * 1000 if end_ts is not None else now_us()
        look_us = (lookback if lookback is not None else DEFAULT_LOOKBACK_MS) * 1000
        query = TraceQuery(
            service=service_name or None, remote_service=remote_service_name or None,
            span_name=span_name if span_name not in (None, "", "all") else None,
            tags=parse_annotation_query(annotation_query or ""), min_duration_us=min_duration,
            max_duration_us=max_duration, start_us=end_us - look_us, end_us=end_us, limit=min(limit, MAX_LIMIT),
        )
        ids = await collector.find(query)
        return _json([_trace_json(t) for t in await collector.traces(ids)])

    @r.get("/trace/{trace_id}")
    async def trace(trace_id: str) -> Response:
        try:
            tid = normalise_trace_id(trace_id)
            spans = await collector.trace(tid)
        except ValueError as exc:
            return _text(str(exc), 400)
        except TraceNotFound:
            return _text(f"{trace_id} not found", 404)
        return _json(_trace_json(spans))

    @r.get("/traceMany")
    async def trace_many(trace_ids: str = Query(..., alias="traceIds")) -> Response:
        parts = [p for p in trace_ids.split(",") if p.strip()]
        try:
            ids = list(dict.fromkeys(normalise_trace_id(p) for p in parts))
        except ValueError as exc:
            return _text(str(exc), 400)
        if len(ids) < 2:
            return _text("traceIds needs at least two distinct trace ids; use /trace/{traceId} for one", 400)
        return _json([_trace_json(t) for t in await collector.traces(ids)])

    @r.get("/dependencies")
    async def dependencies(end_ts: int = Query(..., alias="endTs", ge=0, le=MAX_MS),
                           lookback: int | None = Query(None, ge=0, le=MAX_MS)) -> Response:
        look_ms = lookback if lookback is not None else DEFAULT_LOOKBACK_MS
        return _json(await collector.dependencies(end_ts * 1000, look_ms * 1000))

    @r.get("/autocompleteKeys")
    async def autocomplete_keys_() -> Response:
        return _json(list(autocomplete_keys))

    @r.get("/autocompleteValues")
    async def autocomplete_values(key: str = Query(...)) -> Response:
        return _json(await collector.tag_values(key))

    return r


def ui_config_router() -> APIRouter:
    """``/config.json``, which the Zipkin UI fetches before anything else."""
    r = APIRouter(tags=["zipkin"])

    @r.get("/config.json", include_in_schema=False)
    @r.get("/zipkin/config.json", include_in_schema=False)
    async def config() -> Response:
        return _json({
            "environment": "devbox", "queryLimit": 10, "defaultLookback": 900_000, "searchEnabled": True,
            "suggestLens": False, "dependency": {"enabled": True, "lowErrorRate": 0.5, "highErrorRate": 0.75},
        })

    return r
