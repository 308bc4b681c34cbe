"""The indexer's lanes: two processes indexing one WAL store exactly what one does.

Real processes (the indexer child, its forked lane), a real WAL and SQLite file; the traces are
cut across records on purpose, so a trace's spans land in both lanes and the dependency links
kept at index time must still come out as linking each trace whole.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from devbox.mocks.tracing import indexer
from devbox.mocks.tracing.config import TracingConfig
from devbox.mocks.tracing.convert import to_otlp_request
from devbox.mocks.tracing.core import Collector
from devbox.mocks.tracing.indexer import IndexerProcess, Options, Report, index_batch
from devbox.mocks.tracing.models import Span
from devbox.mocks.tracing.store import LANE_SHARES, MIGRATIONS, SpanStore
from devbox.mocks.tracing.wal import OTLP_PROTOBUF, Position, WalWriter

from devbox.testing import wait_for

SERVICES = ("gateway", "orders", "inventory", "payment")


def _records(seed: int, traces: int, per_record: int) -> list[tuple[bytes, int]]:
    """OTLP exports of ``traces`` 6-span call chains, the spans shuffled across records."""
    rng = random.Random(seed)
    now = time.time_ns() // 1000
    spans: list[Span] = []
    for t in range(traces):
        trace_id = f"{seed:08x}{t:024x}"
        parent = None
        for k in range(6):
            service = SERVICES[k // 2 % len(SERVICES)]
            span_id = f"{t + 1:010x}{k:06x}"
            spans.append(Span(trace_id=trace_id, span_id=span_id, parent_id=parent, name=f"op-{k}",
                              kind="CLIENT" if k % 2 == 0 else "SERVER", service=service,
                              start_us=now - 60_000_000 + t * 1000 + k, duration_us=1000 - k,
                              error=rng.random() < 0.1, attributes={"http.route": f"/r{k}", "n": k},
                              resource={"service.name": service}))
            parent = span_id
    rng.shuffle(spans)
    return [(to_otlp_request(spans[i:i + per_record]).SerializeToString(), len(spans[i:i + per_record]))
            for i in range(0, len(spans), per_record)]


def _write(tmp: Path, records: list[tuple[bytes, int]], name: str) -> tuple[Path, Path, list[tuple[Position, int]]]:
    """A WAL of ``records`` and an empty (migrated) database; returns them and each record's (end, spans)."""
    wal_dir, db = tmp / f"wal-{name}", tmp / f"tracing-{name}.db"
    writer = WalWriter(wal_dir)
    ends = []
    for body, spans in records:
        ends.append((writer.append(OTLP_PROTOBUF, body, now_us=time.time_ns() // 1000, max_future_us=3_600_000_000,
                                   accepted=spans), spans))
    writer.close()
    SpanStore(db).close()  # the platform migrates the file before the indexer starts
    return wal_dir, db, ends


def _run(wal_dir: Path, db: Path, end: Position, lanes: int) -> list[tuple[Position, int, int]]:
    """The indexer process with ``lanes`` lanes until it reports ``end``; its reports (position, spans
    stored, spans acknowledged by the records past the position that a lane indexed already)."""
    reports: list[tuple[Position, int, int]] = []
    done = threading.Event()

    def on_report(kind: str, position: Position, count: int, report: Report) -> None:
        reports.append((position, count, report.indexed_ahead))
        if position >= end:
            done.set()

    indexer = IndexerProcess(wal_dir, db, _options(lanes), on_report)
    indexer.start()
    try:
        assert done.wait(60), f"{lanes} lane(s) did not index the WAL to {end} in 60 s; reports {reports[-3:]}"
    finally:
        indexer.stop()
    return reports


def _options(lanes: int) -> Options:
    return Options(indexed_keys=["http.route"], batch_spans=100, retention_interval_s=3600, max_age_us=10**15,
                   max_spans=10**9, lanes=lanes)


def _index(tmp: Path, records: list[tuple[bytes, int]], lanes: int
           ) -> tuple[Path, list[tuple[Position, int, int]], list[tuple[Position, int]]]:
    wal_dir, db, ends = _write(tmp, records, str(lanes))
    return db, _run(wal_dir, db, ends[-1][0], lanes), ends


def _assert_counts_exact(reports: list[tuple[Position, int, int]], ends: list[tuple[Position, int]]) -> None:
    positions = [position for position, *_ in reports]
    assert positions == sorted(positions)  # the least position of the lanes: never backwards
    for position, count, ahead in reports:
        # the platform counts the spans of records past the position as waiting in the WAL, less those
        # a lane indexed already: what is left must be the spans of the records up to the position
        assert count - ahead == sum(spans for end, spans in ends if end <= position), (position, count, ahead)


def _content(db: Path) -> dict[str, list[tuple[object, ...]]]:
    conn = sqlite3.connect(db)
    try:
        return {
            "spans": conn.execute("SELECT trace_id, span_id, kind, service, zipkin FROM spans "
                                  "ORDER BY trace_id, span_id, kind").fetchall(),
            "links": conn.execute("SELECT minute, parent, child, calls, errors, sum_us, max_us, hist FROM links "
                                  "ORDER BY 1, 2, 3").fetchall(),
            "service_minutes": conn.execute("SELECT * FROM service_minutes ORDER BY 1, 2").fetchall(),
            "names": conn.execute("SELECT * FROM names ORDER BY 1, 2, 3").fetchall(),
            "tag_values": conn.execute("SELECT * FROM tag_values ORDER BY 1, 2").fetchall(),
        }
    finally:
        conn.close()


def test_two_lanes_store_what_one_lane_stores(tmp_path: Path) -> None:
    records = _records(seed=7, traces=150, per_record=30)  # 900 spans in 30 records, batches of ~100
    one, _, _ = _index(tmp_path, records, lanes=1)
    two, reports, ends = _index(tmp_path, records, lanes=2)
    assert reports[-1][1] == 900  # the lead counts the other lane's spans too
    _assert_counts_exact(reports, ends)
    positions = [position for position, *_ in reports]
    a, b = _content(one), _content(two)
    assert len(a["spans"]) == 900 and a["links"]
    for table in a:
        assert a[table] == b[table], table
    store = SpanStore(two)
    try:
        assert store.wal_position() == positions[-1]  # both lanes committed their way to the end
    finally:
        store.close()


def _crashed_uneven(tmp: Path, records: list[tuple[bytes, int]], name: str
                    ) -> tuple[Path, Path, list[tuple[Position, int]]]:
    """The state a kill -9 leaves when lane 1 of 2 had indexed all its records and lane 0 none."""
    wal_dir, db, ends = _write(tmp, records, name)
    store = SpanStore(db, indexed_keys=["http.route"])
    try:
        store.reset_lanes(2)
        position = Position(0, 0)
        while True:
            _, end = index_batch(store, wal_dir, position, 100, False, None, set(), lane=(1, 2))
            if end == position:
                break
            position = end
        assert 0 < store.count < sum(spans for _, spans in records)
        assert store.lane_positions() == [Position(0, 0), ends[-1][0]]
    finally:
        store.close()
    return wal_dir, db, ends


def test_a_restart_after_a_crash_between_uneven_lanes_counts_every_span_once(tmp_path: Path) -> None:
    records = _records(seed=11, traces=150, per_record=30)
    one, _, _ = _index(tmp_path, records, lanes=1)
    for lanes in (2, 1):  # the same lanes resume from their own positions; another number from the least
        wal_dir, db, ends = _crashed_uneven(tmp_path, records, f"crashed-{lanes}")
        reports = _run(wal_dir, db, ends[-1][0], lanes)
        assert reports[0][0] == Position(0, 0)  # "ready": nothing certainly indexed yet, lane 0 is at the start
        _assert_counts_exact(reports, ends)
        assert reports[-1][1] == 900
        assert _content(db) == _content(one), lanes


def _restarted(db: Path) -> tuple[dict[str, int], dict[str, int]]:
    """A platform's collector (two lanes) started on ``db`` and the WAL beside it: its figures before the
    indexer's first report, and once it caught up."""

    async def restart() -> tuple[dict[str, int], dict[str, int]]:
        collector = Collector(TracingConfig(index_lanes=2), db)
        await collector.start()
        try:
            started = collector.info()
            assert await collector._caught_up(60)
            return started, collector.info()
        finally:
            await collector.stop()

    return asyncio.run(restart())


def test_the_platform_restarted_on_uneven_lanes_reports_what_was_acknowledged(tmp_path: Path) -> None:
    records = _records(seed=13, traces=150, per_record=30)
    wal_dir, db, _ = _crashed_uneven(tmp_path, records, "platform")
    wal_dir.rename(db.parent / "tracing-wal")  # where the collector keeps its WAL

    started, caught_up = _restarted(db)
    assert started["spans_stored"] == 900 and started["wal_lag_spans"] == 900
    assert caught_up["spans_stored"] == 900 and caught_up["wal_lag_spans"] == 0


def test_a_store_left_uneven_under_the_former_lane_shares_counts_every_span_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A kill -9 under the lane shares before 2026-12-03 (even: a hash of the place modulo the lanes),
    restarted by this devbox, whose lead takes a smaller share: read with the shares they were written
    under, the positions count every span once, and the lanes resume from the least."""
    records = _records(seed=17, traces=150, per_record=30)
    one, _, _ = _index(tmp_path, records, lanes=1)
    current = indexer.lane_of
    monkeypatch.setattr(indexer, "lane_of", lambda rec, lanes, shares=1: current(rec, lanes, 1))
    wal_dir, db, ends = _crashed_uneven(tmp_path, records, "former")
    monkeypatch.undo()
    assert any(current(rec, 2, 1) != current(rec, 2) for rec in _wal_records(wal_dir))  # the shares differ here
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO wal_lane_shares VALUES (1)")  # what the migration left in a store of then
    conn.commit()
    conn.close()
    reports = _run(wal_dir, db, ends[-1][0], 2)
    _assert_counts_exact(reports, ends)
    assert reports[-1][1] == 900
    assert _content(db) == _content(one)
    store = SpanStore(db)
    try:
        assert store.lane_shares() == LANE_SHARES == 2
    finally:
        store.close()


def _wal_records(wal_dir: Path) -> list:
    from devbox.mocks.tracing.wal import read_records

    return list(read_records(wal_dir, Position(0, 0)))


def test_the_migration_marks_a_store_whose_lanes_ran_under_the_former_shares(tmp_path: Path) -> None:
    fresh = SpanStore(tmp_path / "fresh.db")
    try:
        assert fresh.lane_shares() == LANE_SHARES  # nothing was indexed under other shares
        fresh.reset_lanes(2)
    finally:
        fresh.close()
    conn = sqlite3.connect(tmp_path / "fresh.db")  # as the devbox before the shares left it
    conn.execute("DROP TABLE wal_lane_shares")
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) - 1}")
    conn.close()
    before = SpanStore(tmp_path / "fresh.db")
    try:
        assert before.lane_shares() == 1
        assert before.reset_lanes(2) == [Position(0, 0)] * 2  # resumed from the least, under the new shares
        assert before.lane_shares() == LANE_SHARES
    finally:
        before.close()


def test_an_indexer_waits_until_the_one_of_a_killed_platform_is_gone(tmp_path: Path) -> None:
    """After a kill -9 of the platform its indexer finishes the batch in hand before it notices: the
    next one starts writing only once it has exited (a lane committing after the new one read the
    positions had its spans counted nowhere)."""
    import fcntl
    import os

    records = _records(seed=19, traces=20, per_record=30)
    wal_dir, db, ends = _write(tmp_path, records, "fenced")
    old = os.open(str(db) + ".indexer-lock", os.O_RDWR | os.O_CREAT, 0o600)  # the killed platform's indexer
    fcntl.flock(old, fcntl.LOCK_EX)
    reports: list[tuple[Position, int]] = []
    indexer_ = IndexerProcess(wal_dir, db, _options(2), lambda kind, position, count, report:
                              reports.append((position, count)))
    indexer_.start()
    try:
        inode = os.fstat(old).st_ino

        def waiting() -> bool:  # the new indexer blocked on the lock (a "->" waiter in /proc/locks)
            lines = Path("/proc/locks").read_text().splitlines()
            return any("->" in line and line.split()[6].endswith(f":{inode}") for line in lines)

        wait_for(waiting, 30, "the new indexer to wait for the old one")
        assert reports == []  # nothing indexed, nothing reported while the old indexer lives
        os.close(old)  # the old indexer exits
        deadline = time.monotonic() + 60
        while not (reports and reports[-1][0] >= ends[-1][0]) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert reports and reports[-1] == (ends[-1][0], 120)
    finally:
        indexer_.stop()


#: Runs the indexer's lead in this (fresh) process; its store, opened again after the lanes are forked,
#: opens only once the other lane has committed: the order a busy machine can give them.
LATE_LEAD = """
import os, sqlite3, sys, threading, time
from devbox.mocks.tracing import indexer, store, wal
from devbox.mocks.tracing.child import Duplex

wal_dir, db, end_segment, end_offset = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
lead, opened = os.getpid(), []


class LateStore(store.SpanStore):
    def __init__(self, path, **kwargs):
        opened.append(path)
        if os.getpid() == lead and len(opened) == 2:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                with sqlite3.connect(path) as conn:
                    if conn.execute("SELECT count(*) FROM spans").fetchone()[0]:
                        break
                time.sleep(0.01)
            else:
                raise SystemExit("the other lane committed nothing in 30 s")
        super().__init__(path, **kwargs)


store.SpanStore = LateStore
lead_reads, test_writes = os.pipe()
test_reads, lead_writes = os.pipe()
mine, theirs = Duplex(test_reads, test_writes), Duplex(lead_reads, lead_writes)
options = indexer.Options(indexed_keys=["http.route"], batch_spans=100, retention_interval_s=3600,
                          max_age_us=10**15, max_spans=10**9, lanes=2)
runner = threading.Thread(target=indexer.run, args=(wal_dir, db, options, theirs))
runner.start()
while True:
    kind, segment, offset, count, *_ = mine.recv()
    if wal.Position(segment, offset) >= wal.Position(end_segment, end_offset):
        break
mine.send(("stop",))
runner.join(30)
print(count)
"""


def test_a_lane_that_commits_before_the_lead_opens_its_store_is_counted_once(tmp_path: Path) -> None:
    import subprocess
    import sys

    records = _records(seed=11, traces=150, per_record=30)  # 900 spans in 30 records
    wal_dir, db, ends = _write(tmp_path, records, "late")
    end = ends[-1][0]
    done = subprocess.run([sys.executable, "-c", LATE_LEAD, str(wal_dir), str(db), str(end.segment), str(end.offset)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.split()[-1]) == 900, done.stdout + done.stderr
    assert sqlite3.connect(db).execute("SELECT count(*) FROM spans").fetchone()[0] == 900


def test_an_append_wakes_every_idle_lane_at_once(tmp_path: Path) -> None:
    """The platform nudges the lanes after each append (an eventfd each), so an idle lane may wait long
    (0.45 % of a core a lane went into waking every 0.1 s to look) and still index a new record at once
    (after a pause: 58 → 8 ms from acknowledgement to queryable). Here the lanes' idle wait is an hour:
    only the nudge can make them index the records appended after they went idle."""
    records = _records(seed=11, traces=60, per_record=30)  # 12 records, both lanes get some of each half
    wal_dir, db, ends = _write(tmp_path, records[:6], "nudge")
    reports: list[tuple[Position, int]] = []
    seen = threading.Condition()

    def on_report(kind: str, position: Position, count: int, report: Report) -> None:
        with seen:
            reports.append((position, count))
            seen.notify_all()

    def reached(end: Position) -> bool:
        return bool(reports) and reports[-1][0] >= end

    options = dataclasses.replace(_options(2), idle_wait_min_s=3600.0, idle_wait_max_s=3600.0)
    process = IndexerProcess(wal_dir, db, options, on_report)
    process.start()
    try:
        with seen:
            assert seen.wait_for(lambda: reached(ends[-1][0]), 60), f"first half not indexed: {reports[-3:]}"
        writer = WalWriter(wal_dir)
        try:
            later = [writer.append(OTLP_PROTOBUF, body, now_us=time.time_ns() // 1000, max_future_us=3_600_000_000,
                                   accepted=spans) for body, spans in records[6:]]
        finally:
            writer.close()
        process.nudge()
        with seen:
            assert seen.wait_for(lambda: reached(later[-1]), 60), f"not woken by the nudge: {reports[-3:]}"
        assert reports[-1][1] == 360
    finally:
        process.stop()


def test_without_eventfd_the_lanes_look_on_their_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not Linux (no eventfd): no nudge, and the lanes look at the WAL every 0.1 s at most, as before it."""
    monkeypatch.delattr(indexer.os, "eventfd")
    records = _records(seed=13, traces=40, per_record=30)
    wal_dir, db, ends = _write(tmp_path, records, "no-eventfd")
    reports = _run(wal_dir, db, ends[-1][0], lanes=2)
    assert reports[-1][1] == 240


def test_the_platform_restarted_amid_resent_batches_counts_what_is_stored(tmp_path: Path) -> None:
    """Exporters retry, and a load generator sends the same batches again: acknowledged again, stored
    once. A kill -9 left lane 1 of 2 ahead through three copies of the same records. The platform
    subtracted what those records acknowledged from what the store held, and showed a negative
    ``spans_indexed`` until the lanes caught up."""
    records = _records(seed=17, traces=50, per_record=30)
    wal_dir, db, _ = _crashed_uneven(tmp_path, records * 3, "resent")
    store = SpanStore(db)
    stored = store.count
    store.close()
    lane_one = sum(rec.accepted for rec in _wal_records(wal_dir) if indexer.lane_of(rec, 2) == 1)
    assert 0 < stored < lane_one  # lane 1 met copies of spans it had stored
    wal_dir.rename(db.parent / "tracing-wal")

    started, caught_up = _restarted(db)
    assert started["spans_indexed"] == stored
    assert started["wal_lag_spans"] == 900  # every record is past the least position
    assert started["spans_stored"] == stored + 900 - lane_one  # lane 0's records are waiting
    assert caught_up["spans_indexed"] == caught_up["spans_stored"] == 300
    assert caught_up["wal_lag_spans"] == 0


def test_two_lanes_under_resent_batches_count_what_is_stored(tmp_path: Path) -> None:
    records = _records(seed=19, traces=150, per_record=30)
    wal_dir, db, ends = _write(tmp_path, records * 4, "resent-lanes")
    reports = _run(wal_dir, db, ends[-1][0], 2)
    assert [position for position, *_ in reports] == sorted(position for position, *_ in reports)
    counts = [count for _, count, _ in reports]
    assert counts == sorted(counts) and 0 <= counts[0] and counts[-1] == 900  # the spans stored, each once
    for position, _, ahead in reports:  # at most what the records past the position acknowledged
        assert 0 <= ahead <= sum(spans for end, spans in ends if end > position), (position, ahead)
    assert reports[-1][2] == 0
