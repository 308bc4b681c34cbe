"""Zipkin v2 HTTP API: ``POST /api/v2/spans`` (JSON or proto3) and the query endpoints.

Follows ``specs/zipkin2-api.yaml`` plus what the real server and its UI also use
(``/remoteServices``, ``/traceMany``, ``/config.json``). Errors are plain text, as the real
server answers them (:func:`render_error`, the ``zipkin`` listener's renderer; handlers raise
:mod:`devbox.platform.errors`): 400 undecodable or partly bad (the good spans of the batch are kept and the
message says how many), 404 ``"<id> not found"``, 413 too large, 415 wrong content type.

Names follow the real server: span and service names are answered lower-cased and matched
case-insensitively (devbox's own API keeps the case they were sent in). ``annotationQuery``
matches tags (``k=v``) and tag keys or annotation values (a bare word), at most
:data:`~devbox.mocks.tracing.store.MAX_QUERY_TERMS` terms.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from devbox.mocks.tracing import wal
from devbox.mocks.tracing.core import DEFAULT_LOOKBACK_MS, Collector, TraceNotFound, now_us
from devbox.mocks.tracing.otlp import ingest, media_type
from devbox.mocks.tracing.store import TooManyTerms, TraceQuery, parse_annotation_query
from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import PlainTextResponse

from devbox.platform.errors import ApiError, BadRequest, NotFound, UnsupportedMediaType

LOG = logging.getLogger(__name__)

#: Largest epoch-ms / µs values accepted in queries (year 2286; keeps µs arithmetic inside int64).
MAX_MS = 10**13
MAX_US = 2**62
_HEX_ID = re.compile(r"^[0-9a-f]{16,32}$")
MAX_LIMIT = 1000
SPAN_TYPES = ("", "application/json", "application/x-protobuf", "text/plain")


def normalise_trace_id(text: str) -> str:
    """A query's trace id as stored (32 lowercase hex); :class:`BadRequest` with a reason otherwise."""
    tid = text.strip().lower()
    if not _HEX_ID.match(tid):
        raise BadRequest(f"{text!r} is not a trace id: 16 to 32 lowercase hex characters", code="invalid trace id")
    return tid.rjust(32, "0")


def render_error(exc: ApiError) -> Response:
    """Zipkin's error shape: the reason as plain text (the ``zipkin`` listener's renderer)."""
    return PlainTextResponse(exc.reason, status_code=exc.status)


def _json(data: Any, status: int = 200) -> Response:
    return Response(json.dumps(data, separators=(",", ":")), status_code=status, media_type="application/json")


def _raw_json(body: bytes) -> Response:
    """JSON already rendered (traces: each span's Zipkin JSON is stored at index time)."""
    return Response(body, media_type="application/json")


def _lowered(names: list[str]) -> list[str]:
    """Names as the Zipkin server answers them: lower-cased, each once, sorted."""
    return sorted({n.lower() for n in names})


class ZipkinApi:
    """The ``/api/v2`` handlers over one collector."""

    def __init__(self, collector: Collector, *, max_body_bytes: int, autocomplete_keys: list[str]) -> None:
        self.collector = collector
        self.max_body_bytes = max_body_bytes
        self.autocomplete_keys = list(autocomplete_keys)

    async def post_spans(self, request: Request) -> Response:
        kind = media_type(request)
        if kind not in SPAN_TYPES:
            raise UnsupportedMediaType(
                f"Content-Type {kind!r} is not supported: send application/json or application/x-protobuf"
            )
        body = await request.body()
        fmt = wal.ZIPKIN_PROTO if kind == "application/x-protobuf" else wal.ZIPKIN_JSON
        decoded = await ingest(self.collector, fmt, body, request.headers.get("content-encoding", ""),
                               self.max_body_bytes, unreadable="Cannot decode spans: ")
        if decoded.rejected:
            raise BadRequest(f"stored {decoded.accepted} span(s); {decoded.error_message()}")
        return Response(status_code=202)

    async def services(self) -> Response:
        return _json(_lowered(await self.collector.services()))

    async def span_names(self, service_name: str = Query(..., alias="serviceName")) -> Response:
        return _json(_lowered(await self.collector.names(service_name, "span")))

    async def remote_services(self, service_name: str = Query(..., alias="serviceName")) -> Response:
        return _json(_lowered(await self.collector.names(service_name, "remote")))

    async def traces(
        self,
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
        try:
            terms = parse_annotation_query(annotation_query or "")
        except TooManyTerms as exc:
            raise BadRequest(str(exc), code="annotationQuery too long") from None
        query = TraceQuery(
            service=service_name or None, remote_service=remote_service_name or None,
            span_name=span_name if span_name not in (None, "", "all") else None,
            tags=terms, min_duration_us=min_duration,
            max_duration_us=max_duration, start_us=end_us - look_us, end_us=end_us, limit=min(limit, MAX_LIMIT),
        )
        ids = await self.collector.find(query)
        return _raw_json(await self.collector.traces_zipkin(ids))

    async def trace(self, trace_id: str) -> Response:
        try:
            return _raw_json(await self.collector.trace_zipkin(normalise_trace_id(trace_id)))
        except TraceNotFound:
            raise NotFound(f"{trace_id} not found") from None

    async def trace_many(self, trace_ids: str = Query(..., alias="traceIds")) -> Response:
        parts = [p for p in trace_ids.split(",") if p.strip()]
        ids = list(dict.fromkeys(normalise_trace_id(p) for p in parts))
        if len(ids) < 2:
            raise BadRequest("traceIds needs at least two distinct trace ids; use /trace/{traceId} for one")
        return _raw_json(await self.collector.traces_zipkin(ids))

    async def dependencies(self, end_ts: int = Query(..., alias="endTs", ge=0, le=MAX_MS),
                           lookback: int | None = Query(None, ge=0, le=MAX_MS)) -> Response:
        look_ms = lookback if lookback is not None else DEFAULT_LOOKBACK_MS
        return _json(await self.collector.dependencies(end_ts * 1000, look_ms * 1000))

    async def autocomplete_keys_(self) -> Response:
        return _json(self.autocomplete_keys)

    async def autocomplete_values(self, key: str = Query(...)) -> Response:
        return _json(await self.collector.tag_values(key))


def router(collector: Collector, *, max_body_bytes: int, autocomplete_keys: list[str]) -> APIRouter:
    api = ZipkinApi(collector, max_body_bytes=max_body_bytes, autocomplete_keys=autocomplete_keys)
    r = APIRouter(prefix="/api/v2", tags=["zipkin"])
    r.add_api_route("/spans", api.post_spans, methods=["POST"], status_code=202, include_in_schema=False)
    r.add_api_route("/services", api.services, methods=["GET"])
    r.add_api_route("/spans", api.span_names, methods=["GET"])
    r.add_api_route("/remoteServices", api.remote_services, methods=["GET"])
    r.add_api_route("/traces", api.traces, methods=["GET"])
    r.add_api_route("/trace/{trace_id}", api.trace, methods=["GET"])
    r.add_api_route("/traceMany", api.trace_many, methods=["GET"])
    r.add_api_route("/dependencies", api.dependencies, methods=["GET"])
    r.add_api_route("/autocompleteKeys", api.autocomplete_keys_, methods=["GET"])
    r.add_api_route("/autocompleteValues", api.autocomplete_values, methods=["GET"])
    return r


async def ui_config() -> Response:
    """``/config.json``, which the Zipkin UI fetches before anything else."""
    return _json({
        "environment": "devbox", "queryLimit": 10, "defaultLookback": 900_000, "searchEnabled": True,
        "suggestLens": False, "dependency": {"enabled": True, "lowErrorRate": 0.5, "highErrorRate": 0.75},
    })


def ui_config_router() -> APIRouter:
    r = APIRouter(tags=["zipkin"])
    r.add_api_route("/config.json", ui_config, methods=["GET"], include_in_schema=False)
    r.add_api_route("/zipkin/config.json", ui_config, methods=["GET"], include_in_schema=False)
    return r
