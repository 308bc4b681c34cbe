"""The trace collector as a platform component (Tianjige): OTLP and Zipkin in, Zipkin and devbox
queries out, spans in ``<state_dir>/tracing.db``.

Listeners: ``otlp_http`` (``/v1/traces``), ``otlp_grpc`` (``TraceService``), ``zipkin``
(``/api/v2/...``, ``/config.json``); the OTLP and Zipkin routes are also on ``api``, with devbox's
own ``/api/traces...`` and ``/api/topology``. An export is acknowledged once its body is in the
WAL (``<state_dir>/tracing-wal``); the indexer process writes ``tracing.db``. After each of its
commits ``events.rpc_aggregates(aggregates=...)`` fires with the RPC counter increments the indexer
derived from the spans (:mod:`~devbox.mocks.tracing.rpcstats`, histogram bounds from
``metrics.rpc_buckets``), and ``events.spans_ingested(spans=...)`` with the spans — only while
anything listens to it: the spans then travel back from the indexer as objects, which takes OTLP
protobuf off its fast path, so a consumer that can work from aggregates should. Big bodies are
checked in a decode process, off the loop and its GIL; while ``tracing.max_pending_spans``
acknowledged spans wait to be indexed, exports are refused with 503 + Retry-After (gRPC
UNAVAILABLE), OTLP's retryable answers.

LIMITATIONS: see :mod:`devbox.mocks.tracing.convert` (what is kept of a span) and
:mod:`devbox.mocks.tracing.analysis` (how calls are derived).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from devbox.mocks.tracing import api, otlp, zipkin_api
from devbox.mocks.tracing.core import Collector
from fastapi import APIRouter

from devbox.platform.component import Component, PlatformContext
from devbox.platform.ports import TracesPort

LOG = logging.getLogger(__name__)


class TracingComponent(Component):
    name = "tracing"

    def __init__(self, ctx: PlatformContext) -> None:
        super().__init__(ctx)
        self.config = ctx.config.tracing
        #: Services that sent spans of their own (not made by devbox's proxies); None until asked.
        self._own: set[str] | None = None
        events = ctx.events
        self.collector = Collector(
            self.config, ctx.state_dir / "tracing.db",
            on_commit=lambda spans: events.spans_ingested.fire(spans=spans),
            listening=events.spans_ingested.listening,
            on_rpc=lambda aggregates: events.rpc_aggregates.fire(aggregates=aggregates),
            rpc_buckets=lambda: list(ctx.config.metrics.rpc_buckets) if events.rpc_aggregates.listening() else None,
            on_services=self._seen,
        )
        ctx.provide(TracesPort, self)

    def _seen(self, services: set[str]) -> None:
        if self._own is not None:
            self._own.update(services)

    # --- TracesPort ------------------------------------------------------------------------

    async def traces(self, trace_ids: list[str]) -> list[list[Any]]:
        return list(await self.collector.traces(trace_ids))

    async def dependencies(self, end_us: int, lookback_us: int) -> list[dict[str, Any]]:
        return await self.collector.dependencies(end_us, lookback_us)

    def services_seen(self) -> set[str]:
        """Services seen sending their own spans since the first call (which starts the watch)."""
        if self._own is None:
            self._own = set()
        return set(self._own)

    def http_routes(self) -> list[tuple[str, APIRouter]]:
        limit = self.ctx.config.platform.max_body_bytes
        ingest = otlp.http_router(self.collector, max_body_bytes=limit)
        zipkin = zipkin_api.router(self.collector, max_body_bytes=limit,
                                   autocomplete_keys=self.config.autocomplete_keys)
        return [
            ("otlp_http", ingest),
            ("api", ingest),
            ("zipkin", zipkin),
            ("zipkin", zipkin_api.ui_config_router()),
            ("api", zipkin),
            ("api", api.router(self.collector)),
        ]

    def grpc_services(self) -> list[tuple[str, Callable[[Any], None]]]:
        return [("otlp_grpc", otlp.grpc_registrar(self.collector))]

    async def start(self) -> None:
        await self.collector.start()

    async def stop(self) -> None:
        await self.collector.stop()

    def info(self) -> dict[str, Any]:
        return self.collector.info()
