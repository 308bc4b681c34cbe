"""The tracing check process (exports checked off the platform's GIL): replies reach their requests
in order, also after a request gave up on its reply."""

from __future__ import annotations

import json
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
