"""The tracing check process (exports checked off the platform's GIL): replies reach their requests
in order, also after a request gave up on its reply."""

from __future__ import annotations

import json
import threading
import time

from devbox.mocks.tracing import wal
from devbox.mocks.tracing.indexer import CheckProcess


def _zipkin(n: int) -> bytes:
    now_us = time.time_ns() // 1000
    return json.dumps([{"traceId": f"{i + 1:032x}", "id": f"{i + 1:016x}", "name": "get", "timestamp": now_us,
                        "duration": 10, "localEndpoint": {"serviceName": "users"}} for i in range(n)]).encode()


def test_a_cancelled_check_leaves_the_next_ones_answered() -> None:
    """A request's task cancelled while its check runs (a server shutting down) cancels its future;
    the reply that comes after must not end the reply thread (every later check waited forever)."""
    checks = CheckProcess()
    try:
        now_us = time.time_ns() // 1000
        args = ("", 10 * 2**20, now_us, 3_600_000_000)
        gone = checks.submit(wal.ZIPKIN_JSON, _zipkin(200), *args)
        assert gone.cancel()
        later = [checks.submit(wal.ZIPKIN_JSON, _zipkin(n), *args) for n in (1, 2, 3)]
        assert [f.result(timeout=60).accepted for f in later] == [1, 2, 3]
    finally:
        checks.stop()


def test_stop_ends_the_child_and_its_reply_thread_through_eof() -> None:
    """stop() closes only the end it writes: the child reads EOF and exits, the reply thread reads EOF
    and closes the rest. (It closed both ends under the reply thread, which raised there — a read of a
    handle gone None — seen in a platform's stop under load.)"""
    for _ in range(5):
        checks = CheckProcess()
        now_us = time.time_ns() // 1000
        assert checks.submit(wal.ZIPKIN_JSON, _zipkin(3), "", 2**20, now_us, 3_600_000_000).result(60).accepted == 3
        replies = [t for t in threading.enumerate() if t.name == "tracing-check-replies"]
        proc = checks._proc
        checks.stop()
        assert proc is not None and proc.returncode is not None
        for thread in replies:
            thread.join(timeout=30)
            assert not thread.is_alive()


def test_the_pool_starts_a_second_process_only_when_checks_overlap() -> None:
    from devbox.mocks.tracing.indexer import CheckPool

    from devbox.testing import wait_for

    pool = CheckPool(2)
    try:
        now_us = time.time_ns() // 1000
        args = ("", 10 * 2**20, now_us, 3_600_000_000)
        pool.start()
        for n in range(1, 6):  # one at a time, as one exporter sends: one process does
            assert pool.submit(wal.ZIPKIN_JSON, _zipkin(n), *args).result(timeout=60).accepted == n
        assert pool.processes == 1

        def overlapping() -> bool:  # checks in flight together: another starts (in the background)
            for pending in [pool.submit(wal.ZIPKIN_JSON, _zipkin(2000), *args) for _ in range(4)]:
                assert pending.result(timeout=60).accepted == 2000
            return pool.processes == 2

        wait_for(overlapping, timeout=60, what="a second check process")
        futures = [pool.submit(wal.ZIPKIN_JSON, _zipkin(n), *args) for n in range(1, 41)]
        assert [f.result(timeout=60).accepted for f in futures] == list(range(1, 41))
        children = [p._proc for p in pool._running]
        assert len({c.pid for c in children if c is not None}) == 2
    finally:
        pool.stop()
    assert all(c is not None and c.returncode is not None for c in children)
