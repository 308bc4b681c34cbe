"""devbox's own tracing API on the ``api`` listener: trace lists, one trace, root cause, critical
path, topology and fan-out. Handlers raise :mod:`devbox.platform.errors`; the ``api`` listener
renders them as ``{"error", "reason"}``. The CLI and dashboard read it.

Routes: ``GET /api/traces`` (service, errors, min_duration µs, lookback ms, limit, probes),
``GET /api/traces/fanout`` (lookback, end, probes), ``GET /api/traces/services``, ``GET /api/traces/{id}``,
``GET /api/traces/{id}/why``, ``GET /api/traces/{id}/critical-path``,
``GET /api/topology`` (service, lookback ms, end ms).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

from devbox.mocks.tracing.core import Collector, TraceNotFound, now_us
from devbox.mocks.tracing.store import TraceQuery
from devbox.mocks.tracing.zipkin_api import MAX_MS, MAX_US, normalise_trace_id
from fastapi import APIRouter, Query

from devbox.platform.errors import NotFound

DEFAULT_WINDOW_MS = 3_600_000
#: Root span names of readiness/health probes, left out of trace lists unless asked for.
PROBE_NAMES = ("GET /healthz", "GET /health", "GET /readyz", "GET /livez", "/grpc.health.v1.Health/Check",
               "/grpc.health.v1.Health/Watch", "grpc.health.v1.Health/Check", "grpc.health.v1.Health/Watch")


def _window(end_ms: int | None, lookback_ms: int) -> tuple[int, int]:
    return (end_ms * 1000 if end_ms is not None else now_us()), lookback_ms * 1000


class TracesApi:
    """devbox's ``/api/traces...`` and ``/api/topology`` handlers over one collector."""

    def __init__(self, collector: Collector) -> None:
        self.collector = collector

    async def list_traces(
        self,
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
        return {"traces": await self.collector.summaries(query)}

    async def fanout(self, lookback: int = Query(DEFAULT_WINDOW_MS, gt=0, le=MAX_MS),
                     end: int | None = Query(None, ge=0, le=MAX_MS),
                     probes: bool = Query(False, description="Include health-probe entries, as /api/traces.")) -> Any:
        result = await self.collector.fanout(*_window(end, lookback))
        if not probes:
            result["entries"] = [e for e in result["entries"] if e["operation"] not in PROBE_NAMES]
        return result

    async def services(self) -> Any:
        """Every service name that sent a span (still stored): ``devbox status`` shows senders that
        are not in devbox.yaml, e.g. an unrelated tool exporting to the default ports."""
        return {"services": await self.collector.services()}

    async def get_trace(self, trace_id: str) -> Any:
        tid = normalise_trace_id(trace_id)
        async with _stored(tid):
            spans = await self.collector.trace(tid)
        return {"trace_id": tid, "spans": [dataclasses.asdict(s) for s in spans]}

    async def why(self, trace_id: str) -> Any:
        tid = normalise_trace_id(trace_id)
        async with _stored(tid):
            return await self.collector.root_cause(tid)

    async def critical_path(self, trace_id: str) -> Any:
        tid = normalise_trace_id(trace_id)
        async with _stored(tid):
            return await self.collector.critical_path(tid)

    async def topology(self, service: str | None = None, lookback: int = Query(DEFAULT_WINDOW_MS, gt=0, le=MAX_MS),
                       end: int | None = Query(None, ge=0, le=MAX_MS)) -> Any:
        end_us, look_us = _window(end, lookback)
        try:
            return await self.collector.topology(end_us, look_us, service or None)
        except KeyError:
            raise NotFound(f"no span or call of service {service!r} in the last {lookback} ms",
                           code="unknown service") from None


@contextlib.asynccontextmanager
async def _stored(trace_id: str) -> AsyncIterator[None]:
    """A trace the collector does not hold is a 404 that says why it may be missing."""
    try:
        yield
    except TraceNotFound:
        raise NotFound(f"no span of trace {trace_id} is stored (expired, or never sent?)",
                       code="trace not found") from None


def router(collector: Collector) -> APIRouter:
    api = TracesApi(collector)
    r = APIRouter(prefix="/api", tags=["tracing"])
    r.add_api_route("/traces", api.list_traces, methods=["GET"])
    r.add_api_route("/traces/fanout", api.fanout, methods=["GET"])
    r.add_api_route("/traces/services", api.services, methods=["GET"])
    r.add_api_route("/traces/{trace_id}", api.get_trace, methods=["GET"])
    r.add_api_route("/traces/{trace_id}/why", api.why, methods=["GET"])
    r.add_api_route("/traces/{trace_id}/critical-path", api.critical_path, methods=["GET"])
    r.add_api_route("/topology", api.topology, methods=["GET"])
    return r
