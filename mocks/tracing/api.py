"""devbox's own tracing API on the ``api`` listener: trace lists, one trace, root cause, critical
path, topology and fan-out. JSON errors ``{"error", "reason"}``; the CLI and dashboard read it.

Routes: ``GET /api/traces`` (service, errors, min_duration µs, lookback ms, limit, probes),
``GET /api/traces/fanout``, ``GET /api/traces/{id}``, ``GET /api/traces/{id}/why``,
``GET /api/traces/{id}/critical-path``, ``GET /api/topology`` (service, lookback ms, end ms).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from devbox.mocks.tracing.core import Collector, TraceNotFound, now_us
from devbox.mocks.tracing.store import TraceQuery
from devbox.mocks.tracing.zipkin_api import MAX_MS, MAX_US, normalise_trace_id
from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

DEFAULT_WINDOW_MS = 3_600_000
#: Root span names of readiness/health probes, left out of trace lists unless asked for.
PROBE_NAMES = ("GET /healthz", "GET /health", "GET /readyz", "GET /livez", "/grpc.health.v1.Health/Check",
               "/grpc.health.v1.Health/Watch")


def _error(status: int, error: str, reason: str) -> JSONResponse:
    return JSONResponse({"error": error, "reason": reason}, status_code=status)


def _window(end_ms: int | None, lookback_ms: int) -> tuple[int, int]:
    return (end_ms * 1000 if end_ms is not None else now_us()), lookback_ms * 1000


def router(collector: Collector) -> APIRouter:
    r = APIRouter(prefix="/api", tags=["tracing"])

    async def _load(trace_id: str, what: Any) -> Any:
        try:
            tid = normalise_trace_id(trace_id)
        except ValueError as exc:
            return _error(400, "invalid trace id", str(exc))
        try:
            return await what(tid)
        except TraceNotFound:
            return _error(404, "trace not found", f"no span of trace {tid} is stored (expired, or never sent?)")

    @r.get("/traces")
    async def list_traces(
        service: str | None = None,
        errors: bool = False,
        min_duration: int | None = Query(None, ge=0, le=MAX_US, description="µs"),
        lookback: int = Query(DEFAULT_WINDOW_MS, gt=0, le=MAX_MS, description="ms"),
        end: int | None = Query(None, ge=0, le=MAX_MS, description="epoch ms"),
        limit: int = Query(20, ge=1, le=1000),
        probes: bool = Query(False, description="Include traces of health probes (GET /healthz, grpc.health)."),
    ) -> Any:
        end_us, look_us = _window(end, lookback)
        query = TraceQuery(service=service or None, trace_min_duration_us=min_duration, errors_only=errors,
                           start_us=end_us - look_us, end_us=end_us, limit=limit,
                           exclude_roots=() if probes else PROBE_NAMES)
        return {"traces": await collector.summaries(query)}

    @r.get("/traces/fanout")
    async def fanout(lookback: int = Query(DEFAULT_WINDOW_MS, gt=0, le=MAX_MS),
                     end: int | None = Query(None, ge=0, le=MAX_MS)) -> Any:
        return await collector.fanout(*_window(end, lookback))

    @r.get("/traces/{trace_id}")
    async def get_trace(trace_id: str) -> Any:
        async def load(tid: str) -> Any:
            spans = await collector.trace(tid)
            return {"trace_id": tid, "spans": [dataclasses.asdict(s) for s in spans]}

        return await _load(trace_id, load)

    @r.get("/traces/{trace_id}/why")
    async def why(trace_id: str) -> Any:
        return await _load(trace_id, collector.root_cause)

    @r.get("/traces/{trace_id}/critical-path")
    async def critical_path(trace_id: str) -> Any:
        return await _load(trace_id, collector.critical_path)

    @r.get("/topology")
    async def topology(service: str | None = None, lookback: int = Query(DEFAULT_WINDOW_MS, gt=0, le=MAX_MS),
                       end: int | None = Query(None, ge=0, le=MAX_MS)) -> Any:
        end_us, look_us = _window(end, lookback)
        try:
            return await collector.topology(end_us, look_us, service or None)
        except KeyError:
            return _error(404, "unknown service",
                          f"no span or call of service {service!r} in the last {lookback} ms")

    return r
