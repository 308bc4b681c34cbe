"""The metrics component: ingest (spans, OTLP, custom reports, scrapes), storage, query APIs.

It wires; the work is in :mod:`~devbox.mocks.metrics.core` and the protocol adapters. Other
components query it through :class:`devbox.platform.ports.MetricsQueryPort` (alerting, the
dashboard, scenarios), which raises :class:`~devbox.platform.ports.PortError` with the reason on bad
PromQL.

LIMITATIONS: see :mod:`devbox.mocks.metrics.promql` (PromQL subset) and :mod:`devbox.mocks.metrics.store`
(rollups keep the last value per minute).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from devbox.mocks.metrics.core import MetricsCore
from devbox.mocks.metrics.promql import QueryError

from devbox.platform.component import Component
from devbox.platform.ports import MetricsQueryPort, PortError, RangeSeries, Sample

if TYPE_CHECKING:
    import grpc.aio
    from devbox.mocks.metrics.scrape import Scraper
    from fastapi import APIRouter

    from devbox.platform.component import PlatformContext

LOG = logging.getLogger(__name__)

COMPACT_EVERY = 60.0
IDLE_FLUSH = 5.0


class MetricsQueries:
    """:class:`MetricsQueryPort` over the metrics core: PromQL for the other components, evaluated on
    the metrics query pool with its timeout (the sync methods wait for it from the caller's worker
    thread; the async one awaits it without holding a thread)."""

    def __init__(self, get_core: Callable[[], MetricsCore]) -> None:
        self._get_core = get_core

    def query_instant(self, expr: str, at: float) -> list[Sample]:
        """Evaluate PromQL at ``at``; a scalar result is one sample with no labels."""
        core = self._get_core()
        try:
            return core.queries.call(lambda deadline: core.query_instant(expr, at, deadline))
        except QueryError as exc:
            raise PortError(str(exc)) from None

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[RangeSeries]:
        """Evaluate PromQL at every step from ``start`` to ``end``."""
        core = self._get_core()
        try:
            return core.queries.call(lambda deadline: core.query_range(expr, start, end, step, deadline))
        except QueryError as exc:
            raise PortError(str(exc)) from None

    async def query_range_async(self, expr: str, start: float, end: float, step: float) -> list[RangeSeries]:
        """:meth:`query_range` for a caller on the event loop."""
        core = self._get_core()
        try:
            return await core.queries.run(lambda deadline: core.query_range(expr, start, end, step, deadline))
        except QueryError as exc:
            raise PortError(str(exc)) from None


class MetricsComponent(Component):
    name = "metrics"

    def __init__(self, ctx: PlatformContext) -> None:
        super().__init__(ctx)
        self.config = ctx.config.metrics
        self.core: MetricsCore | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._scraper: Scraper | None = None
        self.error_note: str | None = None
        ctx.provide(MetricsQueryPort, MetricsQueries(lambda: self._core))

    @property
    def _core(self) -> MetricsCore:
        if self.core is None:
            raise RuntimeError("the metrics component is not started")
        return self.core

    # --- lifecycle --------------------------------------------------------------------------

    def http_routes(self) -> list[tuple[str, APIRouter]]:
        from devbox.mocks.metrics.api import api_router
        from devbox.mocks.metrics.otlp import otlp_http_router
        from devbox.mocks.metrics.prom_api import prometheus_router

        get = lambda: self._core  # noqa: E731 - routers resolve the core lazily, after start()
        # /api/v1/rules and /alerts are the rule evaluator's: alerting serves them when it is hosted
        serve_rules = not self.ctx.has("alerting")
        return [
            ("api", api_router(get)),
            ("otlp_http", otlp_http_router(get, max_body_bytes=self.ctx.config.platform.max_body_bytes)),
            ("prometheus", prometheus_router(get, self.ctx.states, serve_rules=serve_rules)),
        ]

    def grpc_services(self) -> list[tuple[str, Callable[[grpc.aio.Server], None]]]:
        from devbox.mocks.metrics.otlp import register_grpc

        return [("otlp_grpc", lambda server: register_grpc(server, lambda: self._core))]

    async def start(self) -> None:
        path = self.ctx.state_dir / "metrics.db"
        self.core = await asyncio.to_thread(MetricsCore, path, self.config)
        self.ctx.events.rpc_aggregates.add_listener(self._on_rpc)
        self._tasks.append(asyncio.create_task(self._flush_loop(), name="metrics:flush"))
        self._tasks.append(asyncio.create_task(self._compact_loop(), name="metrics:compact"))
        from devbox.mocks.metrics.scrape import Scraper

        self._scraper = Scraper(self.ctx, self.core, self.config)
        self._tasks.append(asyncio.create_task(self._scraper.run(), name="metrics:scrape"))

    async def stop(self) -> None:
        with contextlib.suppress(ValueError):
            self.ctx.events.rpc_aggregates.remove_listener(self._on_rpc)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self._scraper is not None:
            await self._scraper.close()
        if self.core is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.core.flush_derived)
            self.core.close()
            self.core = None

    def info(self) -> dict[str, Any]:
        if self.core is None:
            return {}
        return {
            "series": self.core.store.series_count(),
            "points_written": self.core.store.points_written,
            "indicators": sorted(self.core.indicators),
            "rpc_reports_error": self.error_note,
            "scrape_targets": list(self._scraper.last.values()) if self._scraper is not None else [],
        }

    # --- background work --------------------------------------------------------------------

    def _on_rpc(self, aggregates: dict[Any, list[Any]]) -> None:
        # increments the trace indexer derived from spans (not the spans: see tracing.rpcstats)
        if self.core is not None:
            self.core.add_rpc(aggregates)

    async def _flush_loop(self) -> None:
        """Write the span-derived RPC counters: each second while spans arrive, else every
        ``IDLE_FLUSH`` seconds like a scrape would, so idle services show a rate of 0, not a gap."""
        idle = 0.0
        while True:
            await asyncio.sleep(1.0)
            idle += 1.0
            if self.core is None:
                continue
            everything = idle >= IDLE_FLUSH and self.core.rpc.has_series()
            if self.core.rpc_dirty() or everything:
                if everything:
                    idle = 0.0
                try:
                    await asyncio.to_thread(self.core.flush_derived, everything=everything)
                except ValueError as exc:  # the series limit: say it once, not every second
                    if str(exc) != self.error_note:
                        LOG.warning("RPC metrics from spans are not stored: %s", exc)
                        self.error_note = str(exc)
                except Exception:
                    LOG.exception("writing RPC metrics failed")
                else:
                    self.error_note = None

    async def _compact_loop(self) -> None:
        while True:
            await asyncio.sleep(COMPACT_EVERY)
            if self.core is None:
                continue
            try:
                result = await asyncio.to_thread(
                    self.core.store.compact,
                    now=time.time(),
                    raw_seconds=self.config.raw_minutes * 60,
                    retention_seconds=self.config.retention_hours * 3600,
                )
                LOG.debug("metrics compaction: %s", result)
            except Exception:
                LOG.exception("metrics compaction failed")
