"""The trace collector's core: acknowledges exports once they are in the WAL, answers queries.

Write path (issue 15): an export is checked (:func:`~devbox.mocks.tracing.indexer.check`: inline
for small bodies, in a decode process for big ones), its body appended to the WAL
(:mod:`~devbox.mocks.tracing.wal`) and the export acknowledged; the indexer process
(:class:`~devbox.mocks.tracing.indexer.IndexerProcess`) decodes and writes SQLite in big
transactions and reports back, and the collector hands each report on: the RPC counter
increments of the commit to ``on_rpc`` (while ``rpc_buckets()`` says someone counts calls), the
services that sent spans of their own to ``on_services``, and the spans themselves to
``on_commit`` only while ``listening()`` (that takes OTLP protobuf off the indexer's fast path).
Back-pressure is keyed on the WAL lag (acknowledged spans not yet indexed). Queries read SQLite
through their own connection (WAL mode: readers do not block the writer) in a thread, after waiting
— at most 2 s — until what was acknowledged before them is indexed, so an export followed by a
query sees its spans.

Memory bound under saturating ingest: the platform process holds no span queue — only request
bodies in flight and an entry per export waiting in the WAL, which back-pressure caps at
``max_pending_spans`` of lag and :data:`MAX_PENDING_RECORDS` exports; the indexer holds at
most one batch (``write_batch_spans`` spans, or 32 MB of bodies) decoded at a time.

LIMITATIONS: fan-out reads at most ``analysis_max_spans`` spans of its window (newest first) and
says so (``truncated``) when the window held more; dependencies and topology read the per-minute
counts the indexer keeps (:mod:`~devbox.mocks.tracing.links`) and are never truncated.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from devbox.mocks.tracing import analysis, wal
from devbox.mocks.tracing.config import TracingConfig
from devbox.mocks.tracing.indexer import (
    CheckPool,
    IndexerProcess,
    Options,
    Report,
    Verdict,
    check,
    lane_indexed,
)
from devbox.mocks.tracing.models import Span
from devbox.mocks.tracing.rpcstats import Aggregates
from devbox.mocks.tracing.store import SpanStore, TraceQuery
from devbox.mocks.tracing.wal import Position, WalWriter, read_records

from devbox.platform.errors import Busy

LOG = logging.getLogger(__name__)

DEFAULT_LOOKBACK_MS = 86_400_000
#: Bodies above this size are checked in the decode process rather than on the loop. OTLP protobuf
#: is checked without building span objects, but still ~10 µs a span on a busy machine: a 512-span
#: batch (28 kB) held the loop ~5-20 ms, and 64 exporters' batches back to back kept every listener
#: (/healthz) waiting behind them. Below these sizes the hop to the process costs more than the check.
DECODE_INLINE_BYTES = 16 * 1024
DECODE_INLINE_PROTOBUF_BYTES = 8 * 1024
#: Exports (and bytes of them) waiting for or in the decode process at once; more are refused
#: (503 + Retry-After). A queue of small batches there is cheap; the byte bound keeps big ones in check.
MAX_DECODING = 128
MAX_DECODING_BYTES = 256 * 1024 * 1024
WAL_INLINE_BYTES = 1024 * 1024  # bigger records are appended to the WAL on a thread
#: Acknowledged exports (WAL records) waiting to be indexed at most: the platform keeps one small
#: entry per record (~200 bytes: its end and span count) for the lag, so with exports of a span or
#: two ``max_pending_spans`` alone would not bound its memory (~100 MB here).
MAX_PENDING_RECORDS = 500_000
#: How often the free space of the WAL's disk is looked at (``shutil.disk_usage``: a statvfs call).
DISK_CHECK_EVERY_S = 0.5
#: A query does not wait for the indexer (read-your-writes) while more than this many spans wait and
#: the indexing rate could not catch up within the wait anyway: during a burst's drain (minutes at
#: the WAL's bound) every query would otherwise take the whole wait and then answer the same.
NO_WAIT_LAG_SPANS = 200_000


def now_us() -> int:
    return time.time_ns() // 1000


class TraceNotFound(KeyError):
    """No span of this trace id is stored."""


class Collector:
    """Spans in (through :meth:`ingest`: checked, appended to the WAL, acknowledged), traces and
    analyses out (read from SQLite, which the indexer process writes)."""

    def __init__(self, config: TracingConfig, db_path: Path, *,
                 on_commit: Callable[[list[Span]], None] | None = None,
                 listening: Callable[[], bool] = lambda: True,
                 on_rpc: Callable[[Aggregates], None] | None = None,
                 rpc_buckets: Callable[[], list[float] | None] = lambda: None,
                 on_services: Callable[[set[str]], None] | None = None) -> None:
        self.config = config
        self.db_path = db_path
        self.wal_dir = db_path.parent / "tracing-wal"
        self._on_commit = on_commit
        self._listening = listening
        self._on_rpc = on_rpc
        self._rpc_buckets = rpc_buckets
        self._on_services = on_services
        self.store: SpanStore | None = None
        self.wal: WalWriter | None = None
        self.indexer: IndexerProcess | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.accepted = 0
        self.rejected = 0
        self.refused_busy = 0
        #: (end position, accepted spans) of each appended record not yet indexed, oldest first
        self._unindexed: collections.deque[tuple[Position, int]] = collections.deque()
        self._lag_spans = 0
        self._indexed_at = Position(0, 0)
        self._indexed_count = 0  # spans in the store
        self._indexed_ahead = 0  # acknowledged spans of records past _indexed_at a lane indexed already
        self._index_rate = 0.0  # spans indexed a second, smoothed over the indexer's reports
        self._rate_mark = (0.0, 0)  # (monotonic time, indexed count) of the last report that moved
        self._progress = asyncio.Event()
        self._indexer_up = asyncio.Event()  # its first report came (it imported and opened the db)
        self._want_spans = False
        self._want_rpc: list[float] | None = None
        # All but small bodies are read in a separate process (spawned on first need): decoding
        # shares the GIL with the loop when it runs in a thread, and stalls every listener.
        self._decoder = CheckPool(config.check_processes or min(os.cpu_count() or 1, 2))
        self._decoder_start: asyncio.Task[None] | None = None  # started with the first export
        self._decoding = 0
        self._decoding_bytes = 0
        self._appending = asyncio.Lock()
        self._disk_free = 0
        self._disk_checked = -DISK_CHECK_EVERY_S  # monotonic time of the last look

    @property
    def max_future_us(self) -> int:
        return int(self.config.max_future_skew_s * 1_000_000)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.store = await asyncio.to_thread(SpanStore, self.db_path, indexed_keys=self.config.autocomplete_keys)
        self.wal = await asyncio.to_thread(WalWriter, self.wal_dir, fsync_interval_s=self.config.wal_fsync_interval_s)
        # what a crash left in the WAL past the indexed position: replayed by the indexer, counted now
        # as waiting; those records an indexer lane ahead of the others already stored are counted as
        # stored, not as waiting, as the indexer counts them (indexer.run)
        positions, shares = self.store.lane_positions(), self.store.lane_shares()
        indexed = min(positions, default=Position(0, 0))
        self._indexed_at = indexed
        # (position, spans, already indexed) of each record, not the records: the WAL may hold up to
        # max_pending_spans (~1.3 GB)
        records = await asyncio.to_thread(lambda: [(rec.end, rec.accepted, lane_indexed(rec, positions, shares))
                                                   for rec in read_records(self.wal_dir, indexed)])
        self._indexed_count = self.store.count
        self._indexed_ahead = sum(accepted for _, accepted, ahead in records if ahead)
        for end, accepted, _ in records:
            self._unindexed.append((end, accepted))
            self._lag_spans += accepted
        options = Options(indexed_keys=list(self.config.autocomplete_keys), batch_spans=self.config.write_batch_spans,
                          retention_interval_s=self.config.retention_interval_s,
                          max_age_us=int(self.config.retention_hours * 3600 * 1_000_000),
                          max_spans=self.config.max_spans,
                          lanes=self.config.index_lanes or min(os.cpu_count() or 1, 4))
        self.indexer = IndexerProcess(self.wal_dir, self.db_path, options, self._report)
        self._sync_listening()
        if records or self._indexed_count:
            # a crash's records to replay, or spans stored whose retention runs in the indexer
            self.start_indexer()

    def start_indexer(self) -> None:
        """Start the indexer process, if it is not running yet. A collector with nothing stored starts it
        with its first acknowledged export: a platform that never sees a span does not spend the
        process's start-up (~0.3 s of CPU, and its lanes' ~45 MB) on it."""
        if self.indexer is not None and not self.indexer.started:
            self.indexer.start()

    async def stop(self) -> None:
        if self.indexer is not None:
            await self._caught_up(10.0)  # index what was acknowledged, so a restart starts clean
            await asyncio.to_thread(self.indexer.stop)
            self.indexer = None
        if self.wal is not None:
            self.wal.close()
            self.wal = None
        if self.store is not None:
            self.store.close()
            self.store = None
        if self._decoder_start is not None:
            with contextlib.suppress(Exception):  # a start that failed: submit tries again, and says why
                await self._decoder_start
        await asyncio.to_thread(self._decoder.stop)

    async def enforce_retention(self) -> int:
        """Retention runs in the indexer process (the one writer); here for tools and tests."""
        assert self.store is not None
        return await asyncio.to_thread(
            self.store.enforce_retention, now_us=now_us(),
            max_age_us=int(self.config.retention_hours * 3600 * 1_000_000), max_spans=self.config.max_spans,
        )

    # --- indexer reports (on its reader thread, handed to the loop) ------------------------

    def _report(self, kind: str, position: Position, count: int, report: Report) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._indexed, kind, position, count, report)

    def _indexed(self, kind: str, position: Position, count: int, report: Report) -> None:
        self._indexer_up.set()
        self._indexed_at = max(self._indexed_at, position)
        now = time.monotonic()
        then, before = self._rate_mark
        if count != before:
            if then and now > then:
                self._index_rate = 0.7 * self._index_rate + 0.3 * max(count - before, 0) / (now - then)
            self._rate_mark = (now, count)
        self._indexed_count = count
        self._indexed_ahead = report.indexed_ahead
        while self._unindexed and self._unindexed[0][0] <= position:
            self._lag_spans -= self._unindexed.popleft()[1]
        self._progress.set()
        self._progress = asyncio.Event()
        handlers: list[tuple[Callable[[Any], None] | None, Any]] = [
            (self._on_services, report.own_services), (self._on_rpc, report.aggregates),
            (self._on_commit, report.spans)]
        for handler, value in handlers:
            if value and handler is not None:
                try:
                    handler(value)
                except Exception:
                    LOG.exception("indexer report listener %r failed", handler)

    def _sync_listening(self) -> None:
        want = self._on_commit is not None and self._listening()
        if want != self._want_spans and self.indexer is not None:
            self._want_spans = want
            self.indexer.want_spans(want)
        buckets = self._rpc_buckets() if self._on_rpc is not None else None
        if buckets != self._want_rpc and self.indexer is not None:
            self._want_rpc = buckets
            self.indexer.want_rpc(buckets)

    async def _caught_up(self, timeout: float = 2.0) -> bool:
        """Wait (at most ``timeout``) until everything acknowledged so far is indexed: a query
        right after an export sees it. False when the wait timed out."""
        if self.wal is None or self.indexer is None or not self.indexer.started:
            return True  # not started: nothing was acknowledged since the platform started, nor left before
        target = self.wal.position
        if not self._indexer_up.is_set():  # still starting (its imports take ~1 s on a busy machine)
            try:
                await asyncio.wait_for(self._indexer_up.wait(), 10.0)
            except TimeoutError:
                return False
        if self._lag_spans > max(NO_WAIT_LAG_SPANS, 2 * self._index_rate * timeout):
            return False  # a burst is being indexed: the wait would time out and answer the same
        deadline = time.monotonic() + timeout
        while self._indexed_at < target:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                await asyncio.wait_for(self._progress.wait(), left)
            except TimeoutError:
                return False
        return True

    # --- ingest ----------------------------------------------------------------------------

    def _check_room(self, size: int) -> None:
        """Back-pressure: refuse (503 + Retry-After, gRPC UNAVAILABLE — OTLP's retryable answers)
        while the WAL holds more acknowledged spans not yet indexed than it may, or the decode
        process has too many exports (or bytes) queued, instead of letting the lag (and the time
        to queryable) grow without bound."""
        if (self._lag_spans >= self.config.max_pending_spans or len(self._unindexed) >= MAX_PENDING_RECORDS
                or self._decoding >= MAX_DECODING
                or (self._decoding and self._decoding_bytes + size > MAX_DECODING_BYTES)):
            raise self._refuse(f"the trace store is busy ({self._lag_spans} spans in {len(self._unindexed)} exports "
                               "waiting to be indexed); retry shortly", retry_after=1.0)
        now = time.monotonic()
        if now - self._disk_checked >= DISK_CHECK_EVERY_S:
            self._disk_checked = now
            self._disk_free = shutil.disk_usage(self.wal_dir).free
        if self._disk_free - size < self.config.wal_min_free_mb * 1024 * 1024:
            raise self._refuse(f"the disk holding the trace WAL ({self.wal_dir}) has {self._disk_free // 2**20} MB "
                               f"free, under tracing.wal_min_free_mb ({self.config.wal_min_free_mb}); free some space",
                               retry_after=5.0)

    def _refuse(self, reason: str, *, retry_after: float) -> Busy:
        """Back-pressure's answer (503 + Retry-After), counted in ``exports_refused_busy``."""
        self.refused_busy += 1
        return Busy(reason, retry_after=retry_after)

    async def ingest(self, fmt: int, body: bytes, encoding: str, limit: int) -> Verdict:
        """Check one export, append it to the WAL, return what was accepted. Raises
        :class:`BadPayload` / ``TooLarge`` for an unreadable body, :class:`Busy` when saturated."""
        self._check_room(len(body))
        assert self.wal is not None
        if self._decoder_start is None:
            # the decode process starts with the first export, in the background: its start-up (~0.2 s of
            # CPU) is not spent by a platform that never sees a span, and is under way when a later big
            # export needs it (a big first export waits for it)
            self._decoder_start = asyncio.create_task(asyncio.to_thread(self._decoder.start))
        now = now_us()
        compressed = encoding.strip().lower() not in ("", "identity")
        size = len(body) * (4 if compressed else 1)
        inline = size <= (DECODE_INLINE_PROTOBUF_BYTES if fmt == wal.OTLP_PROTOBUF else DECODE_INLINE_BYTES)
        if inline:
            verdict = check(fmt, body, encoding, limit, now, self.max_future_us)
        else:
            self._decoding += 1
            self._decoding_bytes += len(body)
            try:
                # the decoder's sender thread writes the body down the pipe (a 52 MiB export held
                # the loop ~0.8 s when that ran here)
                pending = self._decoder.submit(fmt, body, encoding, limit, now, self.max_future_us)
                verdict = await asyncio.wrap_future(pending)
            finally:
                self._decoding -= 1
                self._decoding_bytes -= len(body)
        self.rejected += len(verdict.rejected)
        if verdict.rejected:
            LOG.info("rejected %d spans: %s", len(verdict.rejected), verdict.error_message(2))
        if verdict.accepted:
            self._sync_listening()
            record = verdict.body if verdict.body is not None else body
            verdict.body = None
            # appends stay in order (the lag bookkeeping pops them by position); a big record, or
            # one that closes a segment (an fsync of up to 64 MiB), is written on a thread (52 MiB
            # took ~0.1 s on the loop)
            async with self._appending:
                try:
                    if len(record) <= WAL_INLINE_BYTES and not self.wal.rotates_at(len(record)):
                        end = self.wal.append(fmt, record, now_us=now, max_future_us=self.max_future_us,
                                              accepted=verdict.accepted)
                    else:
                        end = await asyncio.to_thread(self.wal.append, fmt, record, now_us=now,
                                                      max_future_us=self.max_future_us, accepted=verdict.accepted)
                except OSError as exc:  # a full disk, mostly: the record was cut back, nothing acknowledged
                    self._disk_checked = -DISK_CHECK_EVERY_S
                    raise self._refuse(f"the trace WAL ({self.wal_dir}) could not be written: {exc.strerror or exc}",
                                       retry_after=5.0) from exc
                self._unindexed.append((end, verdict.accepted))
            self._lag_spans += verdict.accepted
            self.start_indexer()
            if self.indexer is not None:
                self.indexer.nudge()
            self.accepted += verdict.accepted
            if verdict.own and self._on_services is not None:
                # known now rather than once indexed: `trace: auto` waits on it, the index may lag minutes
                self._on_services(verdict.own)
        return verdict

    # --- queries ---------------------------------------------------------------------------

    async def trace(self, trace_id: str) -> list[Span]:
        assert self.store is not None
        await self._caught_up()
        spans = await asyncio.to_thread(self.store.trace, trace_id)
        if not spans:
            raise TraceNotFound(trace_id)
        return spans

    async def trace_zipkin(self, trace_id: str) -> bytes:
        """A trace as Zipkin's JSON array (stored JSON, concatenated); :class:`TraceNotFound`."""
        assert self.store is not None
        await self._caught_up()
        body = await asyncio.to_thread(self.store.trace_zipkin, trace_id)
        if body is None:
            raise TraceNotFound(trace_id)
        return body

    async def traces_zipkin(self, trace_ids: list[str]) -> bytes:
        """Zipkin's list of traces (JSON), leaving out the unknown ids."""
        assert self.store is not None
        await self._caught_up()
        store = self.store

        def load() -> bytes:
            parts = [t for t in (store.trace_zipkin(tid) for tid in trace_ids) if t is not None]
            return b"[" + b",".join(parts) + b"]"

        return await asyncio.to_thread(load)

    async def traces(self, trace_ids: list[str]) -> list[list[Span]]:
        assert self.store is not None
        await self._caught_up()
        store = self.store

        def load() -> list[list[Span]]:
            return [t for t in (store.trace(tid) for tid in trace_ids) if t]

        return await asyncio.to_thread(load)

    async def find(self, query: TraceQuery) -> list[str]:
        assert self.store is not None
        await self._caught_up()
        return await asyncio.to_thread(self.store.find_trace_ids, query)

    async def summaries(self, query: TraceQuery) -> list[dict[str, Any]]:
        assert self.store is not None
        await self._caught_up()
        store = self.store
        return await asyncio.to_thread(lambda: store.summaries(store.find_trace_ids(query)))

    async def services(self) -> list[str]:
        assert self.store is not None
        await self._caught_up()
        return await asyncio.to_thread(self.store.services)

    async def names(self, service: str, kind: str) -> list[str]:
        assert self.store is not None
        await self._caught_up()
        return await asyncio.to_thread(self.store.names, service, kind)

    async def tag_values(self, key: str) -> list[str]:
        assert self.store is not None
        await self._caught_up()
        return await asyncio.to_thread(self.store.tag_values, key)

    async def window(self, end_us: int, lookback_us: int) -> tuple[list[Span], bool]:
        assert self.store is not None
        await self._caught_up()
        return await asyncio.to_thread(self.store.spans_between, end_us - lookback_us, end_us,
                                       self.config.analysis_max_spans, details=False)

    # --- analyses --------------------------------------------------------------------------

    async def dependencies(self, end_us: int, lookback_us: int) -> list[dict[str, Any]]:
        """Zipkin's dependency links, from the counts the indexer keeps per minute (links.py)."""
        assert self.store is not None
        await self._caught_up()
        return await asyncio.to_thread(self.store.dependency_links, end_us - lookback_us, end_us)

    async def topology(self, end_us: int, lookback_us: int, service: str | None = None) -> dict[str, Any]:
        assert self.store is not None
        await self._caught_up()
        graph, spans = await asyncio.to_thread(self.store.topology_graph, end_us - lookback_us, end_us)
        result = analysis.topology_of(graph, service)
        return {**result, "window": _window(end_us, lookback_us, spans, False)}

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
            # acknowledged spans are stored (in the WAL) before they are indexed; a resent span is
            # counted again until the indexer finds it already there
            "spans_stored": self._indexed_count + self._lag_spans - self._indexed_ahead,
            "spans_indexed": self._indexed_count,
            "wal_lag_spans": self._lag_spans,
            "index_rate_spans_s": round(self._index_rate),
            "spans_accepted": self.accepted,
            "spans_rejected": self.rejected,
            "exports_refused_busy": self.refused_busy,
        }


def _window(end_us: int, lookback_us: int, spans: int, truncated: bool) -> dict[str, Any]:
    return {"start_us": end_us - lookback_us, "end_us": end_us, "spans": spans, "truncated": truncated}
