"""The in-memory head of recent samples answers exactly what SQLite holds, across out-of-order writes,
replaced seconds, compaction, its memory bound and a restart."""

from __future__ import annotations

import random
import time
from pathlib import Path

from devbox.mocks.metrics.promql import LabelMatcher, RawSeries
from devbox.mocks.metrics.store import MetricsStore, Point

NAME_X = [LabelMatcher("__name__", "=", "x_total")]


def _from_sqlite(store: MetricsStore, lo: int, hi: int) -> dict[tuple[tuple[str, str], ...], tuple[list, list]]:
    by_id = {sid: RawSeries(labels, [], []) for sid, labels in store.series_of(NAME_X)}
    store._select_stored(by_id, lo, hi, None)
    return {tuple(sorted(s.labels.items())): (s.ts, s.vs) for s in by_id.values() if s.ts}


def _selected(store: MetricsStore, lo: int, hi: int) -> dict[tuple[tuple[str, str], ...], tuple[list, list]]:
    return {tuple(sorted(s.labels.items())): (s.ts, s.vs) for s in store.select(NAME_X, lo, hi)}


def _assert_same(store: MetricsStore, now: int) -> None:
    for lo, hi in ((now - 4000, now), (now - 600, now - 300), (store.head.start - 50, store.head.start + 50)):
        assert _selected(store, lo, hi) == _from_sqlite(store, lo, hi), (lo, hi)


def _write_shuffled(store: MetricsStore, now: int, seed: int) -> None:
    rng = random.Random(seed)
    points = [
        Point("x_total", (("i", str(i)),), float(t), float(rng.randint(0, 1000)))
        for i in range(5)
        for t in range(now - 3000, now)
    ]
    rng.shuffle(points)  # late and out-of-order samples, and (second pass) replaced seconds
    for start in range(0, len(points), 1000):
        store.write(points[start : start + 1000])


def test_head_answers_as_sqlite_through_writes_compaction_and_restart(tmp_path: Path) -> None:
    now = int(time.time())
    store = MetricsStore(tmp_path / "m.db", head_seconds=2000)
    assert store.head_loaded.wait(10)
    assert store.head.start == now - 2000 or store.head.start == now - 1999  # a clock tick apart
    _write_shuffled(store, now, 1)
    _write_shuffled(store, now, 2)
    assert store.head.samples == 5 * (now - store.head.start)
    _assert_same(store, now)
    # a compaction rolls up what is older than 30 min: the head lets it go and still agrees
    store.compact(now=now, raw_seconds=1800, retention_seconds=86400)
    assert store.head.start == now - 1800
    _assert_same(store, now)
    store.close()
    again = MetricsStore(tmp_path / "m.db", head_seconds=2000)
    assert again.head_loaded.wait(10)  # loaded on a thread, off the platform's start
    assert again.head.start == now - 1800  # after the newest rolled-up minute, not before it
    assert again.head.samples == 5 * 1800
    _assert_same(again, now)
    again.close()


def test_head_stays_within_its_sample_bound(tmp_path: Path) -> None:
    now = int(time.time())
    store = MetricsStore(tmp_path / "m.db", head_seconds=4000, head_max_samples=5000)
    assert store.head_loaded.wait(10)
    _write_shuffled(store, now, 3)
    assert 0 < store.head.samples <= 5000
    assert store.head.start > now - 3000
    _assert_same(store, now)
    store.close()


def test_head_keeps_the_last_of_a_repeated_second_and_takes_a_resent_batch(tmp_path: Path) -> None:
    now = int(time.time())
    store = MetricsStore(tmp_path / "m.db")
    assert store.head_loaded.wait(10)
    batch = [Point("x_total", (), float(t), float(t)) for t in range(now - 10, now)]
    store.write(batch)
    store.write([Point("x_total", (), float(t), 2.0 * t) for t in range(now - 10, now)])  # same seconds again
    store.write([Point("x_total", (), float(now), 1.0), Point("x_total", (), float(now), 5.0)])  # one second twice
    store.write([Point("x_total", (), float(now - 20), 7.0), Point("x_total", (), float(now - 5), 9.0)])
    _assert_same(store, now + 1)
    (series,) = store.select(NAME_X, now - 30, now)
    assert series.vs[-1] == 5.0 and series.vs[0] == 7.0 and 9.0 in series.vs
    assert store.head.samples == 12
    store.close()


def test_last_value_comes_from_the_head(tmp_path: Path) -> None:
    now = int(time.time())
    store = MetricsStore(tmp_path / "m.db")
    assert store.head_loaded.wait(10)
    store.write([Point("x_total", (), float(now - 5), 3.0), Point("x_total", (), float(now - 9), 2.0)])
    assert store.last_value("x_total", ()) == 3.0
    store.close()


def test_queries_read_sqlite_until_the_head_is_loaded(tmp_path: Path) -> None:
    now = int(time.time())
    store = MetricsStore(tmp_path / "m.db")
    store.write([Point("x_total", (), float(t), float(t)) for t in range(now - 100, now)])
    store.close()
    again = MetricsStore(tmp_path / "m.db")
    with again._lock:  # the loader waits for this lock: nothing is in the head yet
        (series,) = again.select(NAME_X, now - 200, now)
        assert len(series.ts) == 100 and series.vs[-1] == now - 1
    assert again.head_loaded.wait(10) and again.head.samples == 100
    again.close()
