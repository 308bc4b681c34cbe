"""The indexer's lanes: two processes indexing one WAL store exactly what one does.

Real processes (the indexer child, its forked lane), a real WAL and SQLite file; the traces are
cut across records on purpose, so a trace's spans land in both lanes and the dependency links
kept at index time must still come out as linking each trace whole.
"""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from pathlib import Path

from devbox.mocks.tracing.convert import to_otlp_request
from devbox.mocks.tracing.indexer import IndexerProcess, Options, Report
from devbox.mocks.tracing.models import Span
from devbox.mocks.tracing.store import SpanStore
from devbox.mocks.tracing.wal import OTLP_PROTOBUF, Position, WalWriter

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


def _index(tmp: Path, records: list[tuple[bytes, int]], lanes: int
           ) -> tuple[Path, list[tuple[Position, int]], list[tuple[Position, int]]]:
    wal_dir, db = tmp / f"wal-{lanes}", tmp / f"tracing-{lanes}.db"
    writer = WalWriter(wal_dir)
    ends = []
    for body, spans in records:
        ends.append((writer.append(OTLP_PROTOBUF, body, now_us=time.time_ns() // 1000, max_future_us=3_600_000_000,
                                   accepted=spans), spans))
    end = writer.position
    writer.close()
    SpanStore(db).close()  # the platform migrates the file before the indexer starts
    reports: list[tuple[Position, int]] = []
    done = threading.Event()

    def on_report(kind: str, position: Position, count: int, report: Report) -> None:
        reports.append((position, count))
        if position >= end:
            done.set()

    indexer = IndexerProcess(wal_dir, db, Options(indexed_keys=["http.route"], batch_spans=100,
                                                  retention_interval_s=3600, max_age_us=10**15, max_spans=10**9,
                                                  lanes=lanes), on_report)
    indexer.start()
    try:
        assert done.wait(60), f"{lanes} lane(s) did not index the WAL to {end} in 60 s; reports {reports[-3:]}"
    finally:
        indexer.stop()
    return db, reports, ends


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
    positions = [position for position, _ in reports]
    assert positions == sorted(positions)  # the least position of the lanes: never backwards
    for position, count in reports:
        # the platform adds the spans of records past the position (still in the WAL): a count that
        # held a lane's spans from past it would count them twice
        assert count == sum(spans for end, spans in ends if end <= position), (position, count)
    a, b = _content(one), _content(two)
    assert len(a["spans"]) == 900 and a["links"]
    for table in a:
        assert a[table] == b[table], table
    store = SpanStore(two)
    try:
        assert store.wal_position() == positions[-1]  # both lanes committed their way to the end
    finally:
        store.close()
