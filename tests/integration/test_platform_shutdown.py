"""Stopping the platform answers its long-polls instead of waiting them out (issue 14 §2).

A naming watch or a log follow waits by design; before ``Component.before_listeners_close`` the
HTTP server waited 2 s for them and then cancelled them with
``ERROR: Cancel N running task(s), timeout graceful shutdown exceeded``.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from devbox.testing import running_platform, wait_for
from tests import httpc


class _Errors(logging.Handler):
    """Every record at ERROR or above, from any thread."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _in_background(call: Any) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["response"] = call()
        except Exception as exc:  # reported by the assertions below
            out["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def test_stop_answers_pending_long_polls_at_once_and_logs_no_error(tmp_path: Path) -> None:
    logs = tmp_path / ".devbox" / "logs" / "orders"
    logs.mkdir(parents=True)
    (logs / "orders-1.log").write_text("ts=2026-05-01T10:00:00Z started\n")
    errors = _Errors()
    with running_platform(tmp_path, components=["naming", "deploy"]) as p:
        # uvicorn configures its own loggers when the servers are made: listen once they are
        for name in ("", "uvicorn"):
            logging.getLogger(name).addHandler(errors)
        try:
            api = p.url("api")
            cursor = httpc.get(f"{api}/api/deploy/logs", params={"service": "orders"}).json()["cursor"]
            watch, watched = _in_background(lambda: httpc.get(
                f"{api}/api/naming/watch", params={"service": "orders", "revision": "", "timeout": 60}, timeout=60))
            follow, followed = _in_background(lambda: httpc.get(
                f"{api}/api/deploy/logs", params={"service": "orders", "after": cursor, "wait": 25}, timeout=60))
            naming = p.component("naming").service  # type: ignore[attr-defined]
            logs_api = p.component("deploy").logs_api  # type: ignore[attr-defined]
            wait_for(lambda: naming.watching >= 1, 10, "the naming watch to be waiting")
            wait_for(lambda: logs_api.following >= 1, 10, "the log follow to be waiting")
            started = time.monotonic()
            p.stop()  # the with block's own stop is then a no-op
            took = time.monotonic() - started
        finally:
            for name in ("", "uvicorn"):
                logging.getLogger(name).removeHandler(errors)
    watch.join(10)
    follow.join(10)
    assert took < 1.0, f"stopping took {took:.2f}s with long-polls pending"
    assert watched.get("response") is not None and watched["response"].status_code == 200, watched
    assert watched["response"].json()["service"] == "orders"
    assert followed.get("response") is not None and followed["response"].status_code == 200, followed
    assert followed["response"].json()["lines"] == []
    assert [r.getMessage() for r in errors.records] == []

