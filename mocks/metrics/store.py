"""Embedded time-series storage: SQLite under the state dir, 1 s buckets rolled up to 1 min.

Series are (metric name, label set); their ids and labels are kept in memory for matching, the
samples live in SQLite. Samples are bucketed to the second (a later write to the same second
replaces the earlier one: counters are cumulative, gauges keep their last value). Samples older
than ``raw_minutes`` are rolled up into ``samples_1m`` keeping the last sample of each minute
(exact for counters, "last value" for gauges); everything older than the retention is deleted.

Writes are committed before :meth:`MetricsStore.write` returns, so whatever an API call
acknowledged survives ``kill -9`` (WAL, ``synchronous=NORMAL``).

Queries never hold the writer's locks: series are matched on a copy of the in-memory index, and
samples are read through a read-only connection per query thread (WAL: readers see committed data
and do not block the writer), in one read transaction so a concurrent compaction cannot move rows
between the two tables mid-read.

LIMITATIONS: the rollup keeps the last value of each minute, so a gauge's peaks inside a minute
older than ``raw_minutes`` are lost; one writer connection (serialised by a lock); every query
reads its samples from SQLite (no in-memory head block as Prometheus has), which is most of the
cost of a query over few steps.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import operator
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

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


class MetricsStore:
    """Series index in memory, samples in SQLite."""

    def __init__(self, path: Path, *, max_series: int = 200_000) -> None:
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
        self._load()

    def _load(self) -> None:
        with self.db.lock:
            for sid, name, labels in self.db.conn.execute("SELECT id, name, labels FROM series"):
                self._index(sid, name, tuple(tuple(p) for p in json.loads(labels)))
            for name, kind, help_, unit, dims in self.db.conn.execute(
                "SELECT name, type, help, unit, dimensions FROM metadata"
            ):
                self.meta[name] = MetricInfo(name, kind, help_, unit, tuple(json.loads(dims)))

    def _index(self, sid: int, name: str, labels: tuple[tuple[str, str], ...]) -> None:
        self._ids[(name, labels)] = sid
        self._series[sid] = (name, dict(labels))
        self._by_name.setdefault(name, []).append(sid)

    def close(self) -> None:
        with self._lock:
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
        fresh = set()
        for p in points:
            if not math.isfinite(p.value):
                raise ValueError(f"{p.name}: value {p.value} is not a finite number")
            if (p.name, p.labels) not in self._ids:
                fresh.add((p.name, p.labels))
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
                rows = []
                for p in points:
                    key = (p.name, p.labels)
                    sid = self._ids.get(key)
                    if sid is None:
                        cur = conn.execute(
                            "INSERT INTO series (name, labels) VALUES (?, ?)", (p.name, json.dumps(p.labels))
                        )
                        sid = int(cur.lastrowid or 0)
                        self._ids[key] = sid
                        created.append((sid, p.name, p.labels))
                    rows.append((sid, int(p.ts), p.value))
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
        """The promql :class:`SampleSource` interface; ``budget`` is charged per sample read."""
        found = self.series_of(matchers)
        if not found:
            return []
        by_id = {sid: RawSeries(labels, [], []) for sid, labels in found}
        lo, hi = math.floor(_clamp(start)), math.floor(_clamp(end))
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
        return [s for s in by_id.values() if s.ts]

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
            for sid in dead:
                name, labels = self._series.pop(sid)
                self._ids.pop((name, tuple(sorted(labels.items()))), None)
                ids = self._by_name.get(name, [])
                if sid in ids:
                    ids.remove(sid)
                if not ids:
                    self._by_name.pop(name, None)
        return {"rolled_up": rolled, "expired": expired, "series_dropped": len(dead)}
