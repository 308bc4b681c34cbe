"""The trace collector's core: accepts decoded spans, answers queries and analyses.

It owns the :class:`SpanStore` and its :class:`SpanWriter`; the protocol adapters (OTLP HTTP and
gRPC, Zipkin, the devbox API) only decode and encode. Every method that touches SQLite or runs an
analysis is a coroutine that does the work in a thread, so the platform loop never blocks.

LIMITATIONS: analyses read at most ``analysis_max_spans`` spans of their window (newest first)
and say so (``truncated``) when the window held more.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from devbox.mocks.tracing import analysis
from devbox.mocks.tracing.config import TracingConfig
from devbox.mocks.tracing.convert import Decoded
from devbox.mocks.tracing.models import Span
from devbox.mocks.tracing.store import SpanStore, SpanWriter, TraceQuery

from devbox.platform.errors import Busy

LOG = logging.getLogger(__name__)

DEFAULT_LOOKBACK_MS = 86_400_000
#: Bodies above this size are decoded in the decode pool rather than on the loop.
DECODE_INLINE_BYTES = 64 * 1024


def now_us() -> int:
    return time.time_ns() // 1000


class TraceNotFound(KeyError):
    """No span of this trace id is stored."""


class Collector:
    """Spans in (through :meth:`accept`), traces and analyses out."""

    def __init__(self, config: TracingConfig, db_path: Path, *,
                 on_commit: Callable[[list[Span]], None] | None = None) -> None:
        self.config = config
        self.db_path = db_path
        self._on_commit = on_commit
        self.store: SpanStore | None = None
        self.writer: SpanWriter | None = None
        self._retention: asyncio.Task[None] | None = None
        self.accepted = 0
        self.rejected = 0
        self.refused_busy = 0
        # Decoding has its own small pool: big exports never run on the loop, and a burst of them
        # cannot take the threads that queries (asyncio's default pool) run on.
        self._decoder = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="tracing-decode")
        self._decoding = 0

    @property
    def max_future_us(self) -> int:
        return int(self.config.max_future_skew_s * 1_000_000)

    async def start(self) -> None:
        self.store = await asyncio.to_thread(SpanStore, self.db_path, indexed_keys=self.config.autocomplete_keys)
        self.writer = SpanWriter(self.store, batch_spans=self.config.write_batch_spans, on_commit=self._on_commit)
        self.writer.start()
        self._retention = asyncio.create_task(self._retention_loop(), name="tracing-retention")

    async def stop(self) -> None:
        if self._retention is not None:
            self._retention.cancel()
            try:
                await self._retention
            except asyncio.CancelledError:
                pass
        if self.writer is not None:
            await self.writer.stop()
        if self.store is not None:
            self.store.close()
            self.store = None
        self._decoder.shutdown(wait=False, cancel_futures=True)

    async def _retention_loop(self) -> None:
        while True:
            try:
                await self.enforce_retention()
            except Exception:
                LOG.exception("tracing retention failed")
            await asyncio.sleep(self.config.retention_interval_s)

    async def enforce_retention(self) -> int:
        assert self.store is not None
        return await asyncio.to_thread(
            self.store.enforce_retention, now_us=now_us(),
            max_age_us=int(self.config.retention_hours * 3600 * 1_000_000), max_spans=self.config.max_spans,
        )

    # --- ingest ----------------------------------------------------------------------------

    def _check_room(self) -> None:
        """Back-pressure: refuse (429/503 + Retry-After, gRPC UNAVAILABLE — OTLP's retryable
        answers) while the writer holds more spans than it may, or every decoder is busy with a
        queue behind it, instead of letting exports wait for seconds."""
        pending = self.writer.pending if self.writer is not None else 0
        if pending >= self.config.max_pending_spans or self._decoding >= 8:
            self.refused_busy += 1
            raise Busy(f"the trace store is busy ({pending} spans waiting to be written); retry shortly",
                       retry_after=1.0)

    async def decode(self, fn: Callable[..., Decoded], body: Any, size: int) -> Decoded:
        """Run a decoder on ``body``: inline when small, else in the decode pool (never blocking
        the loop on a big body). Refuses with :class:`Busy` when ingest is saturated."""
        self._check_room()
        kwargs: dict[str, Any] = {"now_us": now_us(), "max_future_us": self.max_future_us}
        if size <= DECODE_INLINE_BYTES:
            return fn(body, **kwargs)
        self._decoding += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._decoder, lambda: fn(body, **kwargs))
        finally:
            self._decoding -= 1

    async def accept(self, decoded: Decoded) -> None:
        """Store the good spans of a decoded batch; returns after the commit."""
        assert self.writer is not None
        self.rejected += len(decoded.rejected)
        if decoded.rejected:
            LOG.info("rejected %d spans: %s", len(decoded.rejected), decoded.error_message(2))
        await self.writer.write(decoded.spans)
        self.accepted += len(decoded.spans)

    # --- queries ---------------------------------------------------------------------------

    async def trace(self, trace_id: str) -> list[Span]:
        assert self.store is not None
        spans = await asyncio.to_thread(self.store.trace, trace_id)
        if not spans:
            raise TraceNotFound(trace_id)
        return spans

    async def traces(self, trace_ids: list[str]) -> list[list[Span]]:
        assert self.store is not None
        store = self.store

        def load() -> list[list[Span]]:
            return [t for t in (store.trace(tid) for tid in trace_ids) if t]

        return await asyncio.to_thread(load)

    async def find(self, query: TraceQuery) -> list[str]:
        assert self.store is not None
        return await asyncio.to_thread(self.store.find_trace_ids, query)

    async def summaries(self, query: TraceQuery) -> list[dict[str, Any]]:
        assert self.store is not None
        store = self.store
        return await asyncio.to_thread(lambda: store.summaries(store.find_trace_ids(query)))

    async def services(self) -> list[str]:
        assert self.store is not None
        return await asyncio.to_thread(self.store.services)

    async def names(self, service: str, kind: str) -> list[str]:
        assert self.store is not None
        return await asyncio.to_thread(self.store.names, service, kind)

    async def tag_values(self, key: str) -> list[str]:
        assert self.store is not None
        return await asyncio.to_thread(self.store.tag_values, key)

    async def window(self, end_us: int, lookback_us: int) -> tuple[list[Span], bool]:
        assert self.store is not None
        return await asyncio.to_thread(self.store.spans_between, end_us - lookback_us, end_us,
                                       self.config.analysis_max_spans, details=False)

    # --- analyses --------------------------------------------------------------------------

    async def dependencies(self, end_us: int, lookback_us: int) -> list[dict[str, Any]]:
        spans, _ = await self.window(end_us, lookback_us)
        return await asyncio.to_thread(analysis.dependency_links, spans)

    async def topology(self, end_us: int, lookback_us: int, service: str | None = None) -> dict[str, Any]:
        spans, truncated = await self.window(end_us, lookback_us)
        result = await asyncio.to_thread(analysis.topology, spans, service)
        return {**result, "window": _window(end_us, lookback_us, len(spans), truncated)}

    async def fanout(self, end_us: int, lookback_us: int) -> dict[str, Any]:
        spans, truncated = await self.window(end_us, lookback_us)
        entries = await asyncio.to_thread(analysis.fanout, spans)
        return {"entries": entries, "window": _window(end_us, lookback_us, len(spans), truncated)}

    async def root_cause(self, trace_id: str) -> dict[str, Any]:
        spans = await self.trace(trace_id)
        return {"trace_id": trace_id, **await asyncio.to_thread(analysis.root_cause, spans)}

    async def critical_path(self, trace_id: str) -> dict[str, Any]:
        spans = await self.trace(trace_id)
        return {"trace_id": trace_id, **await asyncio.to_thread(analysis.critical_path, spans)}

    def info(self) -> dict[str, Any]:
        return {
            "spans_stored": self.store.count if self.store else 0,
            "spans_accepted": self.accepted,
            "spans_rejected": self.rejected,
            "exports_refused_busy": self.refused_busy,
        }


def _window(end_us: int, lookback_us: int, spans: int, truncated: bool) -> dict[str, Any]:
    return {"start_us": end_us - lookback_us, "end_us": end_us, "spans": spans, "truncated": truncated}
