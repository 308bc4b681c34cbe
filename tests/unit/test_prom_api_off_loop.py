"""The Prometheus API's first query makes the PromQL evaluator (it loads with the first query, see
``MetricsCore.evaluator``) on the query pool, not on the event loop that serves every listener."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from devbox.mocks.metrics import promql
from devbox.mocks.metrics.config import MetricsConfig
from devbox.mocks.metrics.core import MetricsCore
from devbox.mocks.metrics.prom_api import PrometheusApi
from starlette.requests import Request


def _request(path: str, query: bytes) -> Request:
    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {"type": "http", "method": "GET", "path": path, "query_string": query, "headers": []}
    return Request(scope, receive)


@pytest.mark.parametrize(("path", "query"), [
    ("/api/v1/query", b"query=vector(1)&time=100"),
    ("/api/v1/query_range", b"query=vector(1)&start=0&end=60&step=15"),
])
def test_the_first_query_makes_the_evaluator_on_the_query_pool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               path: str, query: bytes) -> None:
    made_on: list[threading.Thread] = []
    real = promql.Evaluator

    def evaluator(*args: object, **kwargs: object) -> object:
        made_on.append(threading.current_thread())
        return real(*args, **kwargs)

    monkeypatch.setattr(promql, "Evaluator", evaluator)
    core = MetricsCore(tmp_path / "metrics.db", MetricsConfig())
    api = PrometheusApi(lambda: core, dict)
    handler = api.query if path.endswith("query") else api.query_range

    async def ask() -> tuple[bytes, threading.Thread]:
        response = await handler(_request(path, query))
        return bytes(response.body), threading.current_thread()

    try:
        body, loop_thread = asyncio.run(ask())
    finally:
        core.close()
    assert b'"status":"success"' in body
    assert len(made_on) == 1 and made_on[0] is not loop_thread
