"""Embedded time-series storage: SQLite under the state dir, 1 s buckets rolled up to 1 min.

Series are (metric name, label set); their ids and labels are kept in memory for matching, the
samples live in SQLite. Samples are bucketed to the second (a later write to the same second
replaces the earlier one: counters are cumulative, gauges keep their last value). Samples older
than ``raw_minutes`` are rolled up into ``samples_1m`` keeping the last sample of each minute
(exact for counters, "last value" for gauges); everything older than the retention is deleted.

Writes are committed before :meth:`MetricsStore.write` returns, so whatever an API call
acknowledged survives ``kill -9`` (WAL, ``synchronous=NORMAL``).

Recent samples are also kept in memory, in a *head* (:class:`Head`, like Prometheus's head block):
per series two ``array('d')`` columns of timestamps and values, holding exactly the stored samples
at or after ``Head.start``. Writes go to SQLite first and, once committed, to the head; a query reads
the part of its range at or after ``Head.start`` from the head (sliced under the lock: a consistent
snapshot that costs a memcpy) and only the older part from SQLite. Reading 72k samples out of SQLite
was most of the cost of a query over an hour. The head is rebuilt from SQLite on start and is
bounded: it covers at most ``head_seconds`` (3 h) and at most ``head_max_samples`` samples (4M, i.e.
64 MB of columns plus ~100 bytes per series); past that its start moves forward. Compaction moves
the start to the rollup cutoff, so the head never holds samples SQLite has rolled up.

Older samples are read through a read-only connection per query thread (WAL: readers see committed
data and do not block the writer), in one read transaction so a concurrent compaction cannot move
rows between the two tables mid-read; series are matched on a copy of the in-memory index.

LIMITATIONS: the rollup keeps the last value of each minute, so a gauge's peaks inside a minute
older than ``raw_minutes`` are lost; one writer connection (serialised by a lock); a query reaching
before the head's start reads that part from SQLite (tens of ms per 100k samples).
"""

from __future__ import annotations

import bisect
import itertools
import json
import logging
import math
import operator
import sqlite3
import threading
import time
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, cast

from devbox.mocks.metrics.promql import NAME, LabelMatcher, RawSeries, SampleBudget

from devbox.platform.store import Database

LOG = logging.getLogger(__name__)

MIGRATIONS = [
    """
    CREATE TABLE series (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        labels TEXT NOT NULL,
        UNIQUE (name, labels)
    );
    CREATE TABLE metadata (
        name TEXT PRIMARY KEY,
        type TEXT NOT NULL,
        help TEXT NOT NULL DEFAULT '',
        unit TEXT NOT NULL DEFAULT '',
        dimensions TEXT NOT NULL DEFAULT '[]'
    );
    CREATE TABLE samples (
        series_id INTEGER NOT NULL,
        ts INTEGER NOT NULL,
        value REAL NOT NULL,
        PRIMARY KEY (series_id, ts)
    ) WITHOUT ROWID;
    CREATE TABLE samples_1m (
        series_id INTEGER NOT NULL,
        ts INTEGER NOT NULL,
        value REAL NOT NULL,
        PRIMARY KEY (series_id, ts)
    ) WITHOUT ROWID;
    """,
]


class Point(NamedTuple):
    """One sample to store. ``labels`` (sorted pairs) excludes ``__name__``. A tuple: batches are large."""

    name: str
    labels: tuple[tuple[str, str], ...]
    ts: float
    value: float


@dataclass
class MetricInfo:
    name: str
    type: str
    help: str = ""
    unit: str = ""
    dimensions: tuple[str, ...] = ()


def _clamp(t: float) -> float:
    """Keep query bounds inside SQLite's integer range (a PromQL ``@ 1e300`` must not overflow)."""
    if math.isnan(t):
        return 0.0
    return max(-(2.0**62), min(2.0**62, t))


def _append_rows(by_id: dict[int, RawSeries], rows: list[tuple[int, float, float]]) -> None:
    """Append (series id, ts, value) rows, sorted by id then ts, to their series (a repeated ts replaces).

    Rows of one table are unique and ordered per series (its primary key), so a run of rows is
    appended whole (transposed in C); only where a run overlaps what is there (the rolled-up and the
    raw table meeting) does it merge row by row.
    """
    for sid, run in itertools.groupby(rows, key=_SID):
        group = list(run)
        series = by_id[sid]
        ts_list, vs_list = series.ts, series.vs
        if not ts_list or ts_list[-1] < group[0][1]:
            ts_list.extend(map(_TS, group))
            vs_list.extend(map(_VALUE, group))
            continue
        for _, ts, value in group:
            if ts_list[-1] >= ts:
                if ts_list[-1] == ts:
                    vs_list[-1] = value
                continue
            ts_list.append(ts)
            vs_list.append(value)


_SID, _TS, _VALUE = operator.itemgetter(0), operator.itemgetter(1), operator.itemgetter(2)
#: fields of a :class:`Point` (itemgetter maps in C; attribute access per point does not)
_NAME, _LABELS, _POINT_TS, _POINT_VALUE = (operator.itemgetter(i) for i in range(4))
_SID_TS = operator.itemgetter(0, 1)


class Head:
    """Owns the in-memory columns of recent samples: per series id, sorted timestamps and values.

    Invariant: for every series, the columns hold exactly the committed samples with ``ts >= start``
    (one per second, as SQLite's primary key keeps them). Not thread-safe: the store calls it under
    its lock.
    """

    def __init__(self, start: int, max_samples: int) -> None:
        self.start = start
        self.max_samples = max_samples
        self.samples = 0
        self._cols: dict[int, tuple[array[float], array[float]]] = {}

    def add(self, rows: Iterable[tuple[int, int, float]]) -> None:
        """Add committed (series id, ts, value) rows; a repeated ts replaces (INSERT OR REPLACE).

        Rows come sorted by (series, ts) from :meth:`MetricsStore.write`, so each series' run is
        handled whole: appended when it is newer than the column, or its values written over the
        column's when it covers seconds the column already has (a re-sent batch); anything else
        (duplicate seconds in one batch, interleaving) goes row by row.
        """
        start, cols = self.start, self._cols
        added = 0
        for sid, run in itertools.groupby(rows, key=_SID):
            group = list(run)
            stamps = list(map(_TS, group))
            if min(stamps) < start:  # late samples older than the head: SQLite alone keeps them
                group = [r for r in group if r[1] >= start]
                if not group:
                    continue
                stamps = list(map(_TS, group))
            if not all(map(operator.lt, stamps, stamps[1:])):  # unsorted, or a second twice
                added += self._add_rows(cols, sid, group)
                continue
            col = cols.get(sid)
            if col is None:
                cols[sid] = (array("d", stamps), array("d", map(_VALUE, group)))
                added += len(group)
                continue
            ts_col, vs_col = col
            if ts_col[-1] < stamps[0]:
                ts_col.extend(stamps)
                vs_col.extend(map(_VALUE, group))
                added += len(group)
                continue
            i = bisect.bisect_left(ts_col, stamps[0])
            if ts_col[i : i + len(stamps)] == array("d", stamps):
                vs_col[i : i + len(stamps)] = array("d", map(_VALUE, group))
                continue
            added += self._add_rows(cols, sid, group)
        self.samples += added
        if self.samples > self.max_samples:
            self._shrink()

    @staticmethod
    def _add_rows(
        cols: dict[int, tuple[array[float], array[float]]], sid: int, rows: list[tuple[int, int, float]]
    ) -> int:
        """Row by row, in the order given (a later row of the same second wins); returns how many were new."""
        added = 0
        for _, ts, value in rows:
            col = cols.get(sid)
            if col is None:
                col = cols[sid] = (array("d"), array("d"))
            ts_col, vs_col = col
            if not ts_col or ts_col[-1] < ts:
                ts_col.append(ts)
                vs_col.append(value)
                added += 1
                continue
            i = bisect.bisect_left(ts_col, ts)
            if ts_col[i] == ts:
                vs_col[i] = value
            else:
                ts_col.insert(i, ts)
                vs_col.insert(i, value)
                added += 1
        return added

    def advance(self, start: int) -> None:
        """Forget samples before ``start`` (compaction rolled them up, or the head is full)."""
        if start <= self.start:
            return
        self.start = start
        for sid, (ts_col, vs_col) in list(self._cols.items()):
            cut = bisect.bisect_left(ts_col, start)
            if cut:
                del ts_col[:cut]
                del vs_col[:cut]
                self.samples -= cut
            if not ts_col:
                del self._cols[sid]

    def _shrink(self) -> None:
        """Move the start forward by a quarter of the span held until 90 % of the bound is left."""
        while self.samples > self.max_samples * 0.9 and self._cols:
            oldest = min(ts[0] for ts, _ in self._cols.values())
            newest = max(ts[-1] for ts, _ in self._cols.values())
            cut = math.floor(oldest + (newest - oldest) / 4) + 1
            LOG.info(
                "metrics head holds %d samples (bound %d): it now starts at %d", self.samples, self.max_samples, cut
            )
            self.advance(cut)

    def drop(self, sid: int) -> None:
        col = self._cols.pop(sid, None)
        if col is not None:
            self.samples -= len(col[0])

    def window(self, sid: int, lo: int, hi: int) -> tuple[array[float], array[float]]:
        """Timestamps and values of one series in ``[lo, hi]`` (copies: the caller reads them unlocked)."""
        col = self._cols.get(sid)
        if col is None:
            return _EMPTY, _EMPTY
        ts_col, vs_col = col
        i, j = bisect.bisect_left(ts_col, lo), bisect.bisect_right(ts_col, hi)
        return ts_col[i:j], vs_col[i:j]

    def last(self, sid: int) -> float | None:
        col = self._cols.get(sid)
        return col[1][-1] if col else None


_EMPTY: array[float] = array("d")
#: a head start no query reaches (the head is not loaded yet); within SQLite's integer range
_NEVER = 2**62 + 1

#: How far back the head reaches at most (compaction's rollup cutoff may keep it shorter).
HEAD_SECONDS = 3 * 3600
#: Most samples the head holds (16 bytes each in its columns).
HEAD_MAX_SAMPLES = 4_000_000


class MetricsStore:
    """Series index and the head of recent samples in memory, every sample in SQLite."""

    def __init__(
        self,
        path: Path,
        *,
        max_series: int = 200_000,
        head_seconds: float = HEAD_SECONDS,
        head_max_samples: int = HEAD_MAX_SAMPLES,
    ) -> None:
        self.max_series = max_series
        self.db = Database(path, MIGRATIONS)
        self._lock = threading.RLock()
        self._ids: dict[tuple[str, tuple[tuple[str, str], ...]], int] = {}
        self._series: dict[int, tuple[str, dict[str, str]]] = {}
        self._by_name: dict[str, list[int]] = {}
        self.meta: dict[str, MetricInfo] = {}
        self.points_written = 0
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._closed = False
        self._load()
        self.head = self._empty_head(head_seconds, head_max_samples)
        #: set once the head holds what SQLite holds from its start; until then queries read SQLite
        self.head_loaded = threading.Event()
        # on a thread: a million samples take a second to load, and the platform's start waits for no one
        threading.Thread(target=self._load_head, name="metrics-head", daemon=True).start()

    def _load(self) -> None:
        with self.db.lock:
            for sid, name, labels in self.db.conn.execute("SELECT id, name, labels FROM series"):
                self._index(sid, name, tuple(tuple(p) for p in json.loads(labels)))
            for name, kind, help_, unit, dims in self.db.conn.execute(
                "SELECT name, type, help, unit, dimensions FROM metadata"
            ):
                self.meta[name] = MetricInfo(name, kind, help_, unit, tuple(json.loads(dims)))

    def _empty_head(self, seconds: float, max_samples: int) -> Head:
        """A head starting ``seconds`` ago, or after the newest rolled-up minute if that is later."""
        with self.db.lock:
            rolled = self.db.conn.execute("SELECT MAX(ts) FROM samples_1m").fetchone()[0]
        start = math.floor(time.time() - seconds)
        if rolled is not None:
            start = max(start, int(rolled) + 1)
        return Head(start, max_samples)

    def _load_head(self) -> None:
        """Fill the head from SQLite's raw samples since its start.

        Holds the store's lock throughout (writers and queries wait, for about a second per million
        samples). A write that slipped in before is both in the head and in what is read here: the
        same values, and a repeated second replaces.
        """
        started = time.perf_counter()
        try:
            with self._lock:
                if self._closed:
                    return
                conn = self._reader()
                conn.execute("BEGIN")
                try:
                    cursor = conn.execute(
                        "SELECT series_id, ts, value FROM samples WHERE ts >= ? ORDER BY series_id, ts",
                        (self.head.start,),
                    )
                    while rows := cursor.fetchmany(65536):
                        self.head.add(rows)
                finally:
                    conn.execute("COMMIT")
                self.head_loaded.set()
        except sqlite3.Error:  # closed while loading: nothing reads this store any more
            LOG.debug("metrics head not loaded", exc_info=True)
            return
        LOG.debug("metrics head: %d samples from %d loaded in %.3f s", self.head.samples, self.head.start,
                  time.perf_counter() - started)  # fmt: skip

    def _index(self, sid: int, name: str, labels: tuple[tuple[str, str], ...]) -> None:
        self._ids[(name, labels)] = sid
        self._series[sid] = (name, dict(labels))
        self._by_name.setdefault(name, []).append(sid)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for conn in self._readers:
                conn.close()
            self._readers.clear()
        self.db.close()

    # --- writing ----------------------------------------------------------------------------

    def write(self, points: Sequence[Point], metadata: Iterable[MetricInfo] = ()) -> int:
        """Store points (and metric metadata) in one transaction; returns how many were stored."""
        metadata = list(metadata)
        if not points and not metadata:
            return 0
        # whole-batch passes in C (map/zip) rather than attribute look-ups per point: a batch is large
        values = list(map(_POINT_VALUE, points))
        if not all(map(math.isfinite, values)):
            bad = next(p for p in points if not math.isfinite(p.value))
            raise ValueError(f"{bad.name}: value {bad.value} is not a finite number")
        keys = list(zip(map(_NAME, points), map(_LABELS, points), strict=True))
        sids = list(map(self._ids.get, keys))
        fresh = {key for key, sid in zip(keys, sids, strict=True) if sid is None} if None in sids else set()
        if fresh and len(self._series) + len(fresh) > self.max_series:
            raise ValueError(
                f"storing this would make {len(self._series) + len(fresh)} series, over the limit of "
                f"{self.max_series} (metrics.max_series): a label probably carries ids or timestamps"
            )
        with self._lock, self.db.lock:
            conn = self.db.conn
            conn.execute("BEGIN IMMEDIATE")
            created: list[tuple[int, str, tuple[tuple[str, str], ...]]] = []
            try:
                if fresh:
                    for i, sid in enumerate(sids):
                        if sid is None:
                            key = keys[i]
                            sid = self._ids.get(key)
                            if sid is None:
                                cur = conn.execute(
                                    "INSERT INTO series (name, labels) VALUES (?, ?)", (key[0], json.dumps(key[1]))
                                )
                                sid = self._ids[key] = int(cur.lastrowid or 0)
                                created.append((sid, *key))
                            sids[i] = sid
                # sorted by (series, ts): SQLite's B-tree is walked in order and the head appends; the
                # sort is stable, so of two samples of one second the later one still wins
                ids = cast("list[int]", sids)  # every None was just filled in
                rows = sorted(zip(ids, map(int, map(_POINT_TS, points)), values, strict=True), key=_SID_TS)
                conn.executemany("INSERT OR REPLACE INTO samples (series_id, ts, value) VALUES (?, ?, ?)", rows)
                for info in metadata:
                    old = self.meta.get(info.name)
                    if old is not None and (old.type, old.help, old.unit, old.dimensions) == (
                        info.type, info.help, info.unit, info.dimensions
                    ):  # fmt: skip
                        continue
                    conn.execute(
                        "INSERT OR REPLACE INTO metadata (name, type, help, unit, dimensions) VALUES (?, ?, ?, ?, ?)",
                        (info.name, info.type, info.help, info.unit, json.dumps(list(info.dimensions))),
                    )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                for _sid, name, labels in created:
                    self._ids.pop((name, labels), None)
                raise
            for sid, name, labels in created:
                self._series[sid] = (name, dict(labels))
                self._by_name.setdefault(name, []).append(sid)
            for info in metadata:
                self.meta[info.name] = info
            self.head.add(rows)
            self.points_written += len(rows)
            return len(rows)

    # --- reading ----------------------------------------------------------------------------

    def series_count(self) -> int:
        """How many series the store holds."""
        return len(self._series)

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._by_name)

    def series_of(self, matchers: Sequence[LabelMatcher]) -> list[tuple[int, dict[str, str]]]:
        """(id, labels with __name__) of every series matching all matchers.

        The index is copied under the lock and matched outside it: a slow matcher must never make
        writers wait (label dicts are never changed once indexed, so the copy is shallow).
        """
        exact = next((m.value for m in matchers if m.name == NAME and m.op == "="), None)
        with self._lock:
            if exact is not None:
                candidates = [(sid, self._series[sid]) for sid in self._by_name.get(exact, ())]
            else:
                candidates = list(self._series.items())
        out = []
        for sid, (name, labels) in candidates:
            full = {NAME: name, **labels}
            if all(m.matches(full) for m in matchers):
                out.append((sid, full))
        return out

    def _reader(self) -> sqlite3.Connection:
        """This thread's read connection: WAL readers see committed data and never block the writer
        (reading through the writer's connection would hold its lock for the whole read)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(
                f"file:{self.db.path}?mode=ro", uri=True, check_same_thread=False, isolation_level=None
            )
            conn.execute("PRAGMA busy_timeout=5000")
            self._local.conn = conn
            with self._lock:
                self._readers.append(conn)
        return conn

    def select(
        self, matchers: Sequence[LabelMatcher], start: float, end: float, *, budget: SampleBudget | None = None
    ) -> list[RawSeries]:
        """The promql :class:`SampleSource` interface; ``budget`` is charged per sample read.

        The part of ``[start, end]`` at or after the head's start comes from the head; only what
        lies before it is read from SQLite.
        """
        import numpy as np
        found = self.series_of(matchers)
        if not found:
            return []
        lo, hi = math.floor(_clamp(start)), math.floor(_clamp(end))
        with self._lock:  # one consistent snapshot of the head (slices are copies)
            head_start = self.head.start if self.head_loaded.is_set() else _NEVER
            recent = [self.head.window(sid, max(lo, head_start), hi) for sid, _ in found] if hi >= head_start else []
        by_id = {sid: RawSeries(labels, [], []) for sid, labels in found}
        if lo < head_start:
            self._select_stored(by_id, lo, min(hi, head_start - 1), budget)
        if recent:
            if budget is not None:
                budget.charge(sum(len(ts) for ts, _ in recent))
            for sid, (ts, vs) in zip(by_id, recent, strict=True):
                if not ts:
                    continue
                series = by_id[sid]
                if series.ts:  # SQLite's part ends before the head's starts: appending keeps the order
                    series.ts.extend(ts)
                    series.vs.extend(vs)
                else:  # all from the head: its columns (the slices are copies), lists only if asked for
                    arrays = (np.frombuffer(ts, dtype=np.float64), np.frombuffer(vs, dtype=np.float64))
                    by_id[sid] = RawSeries(series.labels, arrays=arrays)
        return [s for s in by_id.values() if len(s)]

    def _select_stored(self, by_id: dict[int, RawSeries], lo: int, hi: int, budget: SampleBudget | None) -> None:
        ids = list(by_id)
        conn = self._reader()
        conn.execute("BEGIN")  # one snapshot for both tables: a compaction moves rows between them
        try:
            for chunk_start in range(0, len(ids), 500):
                chunk = ids[chunk_start : chunk_start + 500]
                marks = ",".join("?" * len(chunk))
                # rolled-up rows are older than raw ones: read them first, each table in primary-key
                # order (no sort needed), and append per series
                for table in ("samples_1m", "samples"):
                    sql = (
                        f"SELECT series_id, CAST(ts AS REAL), value FROM {table} WHERE series_id IN ({marks}) "
                        "AND ts BETWEEN ? AND ? ORDER BY series_id, ts"
                    )
                    cursor = conn.execute(sql, (*chunk, lo, hi))
                    while rows := cursor.fetchmany(8192):
                        if budget is not None:
                            budget.charge(len(rows))
                        _append_rows(by_id, rows)
        finally:
            conn.execute("COMMIT")

    def active(self, ids: Sequence[int], start: float, end: float) -> set[int]:
        """The ids among ``ids`` that have a sample in [start, end]."""
        lo, hi = math.floor(_clamp(start)), math.floor(_clamp(end))
        out: set[int] = set()
        with self.db.lock:
            for chunk_start in range(0, len(ids), 500):
                chunk = ids[chunk_start : chunk_start + 500]
                marks = ",".join("?" * len(chunk))
                for table in ("samples", "samples_1m"):
                    rows = self.db.conn.execute(
                        f"SELECT DISTINCT series_id FROM {table} WHERE series_id IN ({marks}) AND ts BETWEEN ? AND ?",
                        (*chunk, lo, hi),
                    )
                    out.update(r[0] for r in rows)
        return out

    def last_value(self, name: str, labels: tuple[tuple[str, str], ...]) -> float | None:
        """The newest stored value of one series (to continue a running total after a restart)."""
        sid = self._ids.get((name, labels))
        if sid is None:
            return None
        with self._lock:
            recent = self.head.last(sid) if self.head_loaded.is_set() else None
        if recent is not None:
            return recent
        with self.db.lock:
            row = self.db.conn.execute(
                "SELECT value FROM (SELECT ts, value FROM samples WHERE series_id = ? "
                "UNION ALL SELECT ts, value FROM samples_1m WHERE series_id = ?) ORDER BY ts DESC LIMIT 1",
                (sid, sid),
            ).fetchone()
        return None if row is None else float(row[0])

    def latest(self) -> list[tuple[dict[str, str], float, float]]:
        """(labels with __name__, ts, value) of each series' newest raw sample (for /metrics)."""
        with self.db.lock:
            rows = self.db.conn.execute("SELECT series_id, MAX(ts), value FROM samples GROUP BY series_id").fetchall()
        out = []
        with self._lock:
            for sid, ts, value in rows:
                if sid in self._series:
                    name, labels = self._series[sid]
                    out.append(({NAME: name, **labels}, float(ts), value))
        return out

    def stats(self) -> dict[str, int]:
        with self.db.lock:
            raw = self.db.conn.execute("SELECT COUNT(*) FROM samples").fetchone()[0]
            rolled = self.db.conn.execute("SELECT COUNT(*) FROM samples_1m").fetchone()[0]
        return {"series": len(self._series), "samples_1s": raw, "samples_1m": rolled, "metrics": len(self._by_name)}

    # --- maintenance ------------------------------------------------------------------------

    def compact(self, *, now: float, raw_seconds: float, retention_seconds: float) -> dict[str, int]:
        """Roll raw samples older than ``raw_seconds`` up to one per minute; drop past retention."""
        cutoff = int(now - raw_seconds)
        expire = int(now - retention_seconds)
        with self._lock, self.db.lock:
            conn = self.db.conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(
                    "INSERT OR REPLACE INTO samples_1m (series_id, ts, value) "
                    "SELECT series_id, MAX(ts), value FROM samples WHERE ts < ? GROUP BY series_id, ts / 60",
                    (cutoff,),
                )
                rolled = conn.execute("DELETE FROM samples WHERE ts < ?", (cutoff,)).rowcount
                expired = conn.execute("DELETE FROM samples_1m WHERE ts < ?", (expire,)).rowcount
                expired += conn.execute("DELETE FROM samples WHERE ts < ?", (expire,)).rowcount
                dead = [
                    r[0]
                    for r in conn.execute(
                        "SELECT id FROM series WHERE id NOT IN (SELECT series_id FROM samples) "
                        "AND id NOT IN (SELECT series_id FROM samples_1m)"
                    )
                ]
                if dead and expired:
                    conn.executemany("DELETE FROM series WHERE id = ?", [(d,) for d in dead])
                else:
                    dead = []
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            self.head.advance(cutoff)  # the head never holds what SQLite now keeps per minute
            for sid in dead:
                self.head.drop(sid)
                name, labels = self._series.pop(sid)
                self._ids.pop((name, tuple(sorted(labels.items()))), None)
                ids = self._by_name.get(name, [])
                if sid in ids:
                    ids.remove(sid)
                if not ids:
                    self._by_name.pop(name, None)
        return {"rolled_up": rolled, "expired": expired, "series_dropped": len(dead)}
