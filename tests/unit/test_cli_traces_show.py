"""`devbox traces show`: span events and annotations appear under their span in the waterfall."""

from __future__ import annotations

from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from devbox.cli import build_app

T = "4bf92f3577b34da6a3ce929d0e0e4736"


def _span(sid: str, parent: str | None, service: str, name: str, start: int, dur: int, **extra: Any) -> dict[str, Any]:
    return {"trace_id": T, "span_id": sid, "parent_id": parent, "name": name, "kind": "SERVER", "service": service,
            "start_us": start, "duration_us": dur, **extra}


SPANS = [
    _span("a000000000000001", None, "orders", "POST /orders", 1_000_000, 9_000),
    _span("a000000000000002", "a000000000000001", "payment", "POST /authorize", 1_002_000, 4_000, error=True,
          status_message="card declined",
          events=[{"name": "exception", "time_us": 1_003_500, "attributes": {
              "exception.type": "ValueError", "exception.message": "card declined",
              "exception.stacktrace": "Traceback ...\nValueError: card declined"}},
              {"name": "retrying", "time_us": 1_002_500, "attributes": {"attempt": 2}}],
          annotations=[[1_002_100, "handler.start"]]),
]


class FakeApi:
    def __init__(self, *_: Any, **__: Any) -> None:
        pass

    def get(self, path: str, **_: Any) -> Any:
        if path.endswith("/critical-path"):
            return {"segments": [{"span_id": "a000000000000001"}], "services": [{"service": "orders", "share": 1.0}]}
        return {"trace_id": T, "spans": SPANS}


def test_waterfall_shows_events_and_annotations_under_their_span(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("devbox.cli.traces.Api", FakeApi)
    # the CLI's console takes its width when devbox.cli.common is first imported (by whichever test
    # did so in this worker): give this test a wide one of its own rather than depend on that order
    monkeypatch.setattr("devbox.cli.traces.console", Console(width=200))
    result = CliRunner().invoke(build_app(), ["traces", "show", T], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    at = next(i for i, line in enumerate(lines) if "POST /authorize" in line)
    under = lines[at + 1: at + 4]
    # in time order, indented one level under the span, with the offset from the span's start
    assert "↳ +100µs handler.start" in under[0]
    assert "↳ +500µs retrying attempt=2" in under[1]
    assert "↳ +1.5ms exception ValueError: card declined" in under[2]
    assert "Traceback" not in result.output  # the stack stays in --json
    assert under[2].index("↳") > lines[at].index("POST /authorize")
