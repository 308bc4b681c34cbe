"""The deploy logs API (GET /api/deploy/logs) over a log folder laid out as deploy writes it:
selection by service/instance, search by text and trace id, time windows, follow by cursor with a
long-poll, and a 4xx with its reason for every bad input."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from devbox.mocks.deploy.logs_api import LogsApi, line_time
from fastapi import FastAPI

from devbox.platform.edge import default_error_response
from devbox.platform.errors import ApiError

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
OTHER = "00f067aa0ba902b700f067aa0ba902b7"


def stamp(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)) + f".{int(at * 1000) % 1000:03d}Z"


def line(at: float, trace: str, path: str, status: int = 200) -> str:
    return (f"ts={stamp(at)} level=INFO logger=devbox.request trace_id={trace} span_id=00f067aa0ba902b7 "
            f"method=GET path={path} status={status} duration_ms=3.1\n")


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    root = tmp_path / "logs"
    (root / "orders").mkdir(parents=True)
    (root / "payment").mkdir()
    (root / "orders" / "orders-1.log").write_text(
        "--- devbox: starting 'python app.py' at 10:00:00\n" + line(1000.0, TRACE, "/orders")
        + "Traceback (most recent call last):\n" + line(1010.0, OTHER, "/orders/7"))
    (root / "orders" / "orders-2.log").write_text(line(1005.0, OTHER, "/orders"))
    (root / "orders" / "build.log").write_text("pip install ok\n")
    (root / "payment" / "payment-1.log").write_text(line(1001.0, TRACE, "/authorize", 503))
    return root


class Client:
    """GET on the app in-process (starlette's TestClient warns about httpx here)."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    def get(self, path: str, params: dict[str, Any]) -> httpx.Response:
        async def one() -> httpx.Response:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://t") as c:
                return await c.get(path, params=params)
        return asyncio.run(one())


@pytest.fixture
def client(logs: Path) -> Client:
    app = FastAPI()
    app.add_exception_handler(ApiError, lambda _r, exc: default_error_response(exc))  # type: ignore[arg-type]
    app.include_router(LogsApi(logs).router())
    return Client(app)


def test_a_service_s_lines_from_every_instance_in_time_order(client: Client) -> None:
    body = client.get("/api/deploy/logs", params={"service": "orders"}).json()
    assert [(x["instance"], x["ts"]) for x in body["lines"] if x["ts"]] == [
        ("orders-1", 1000.0), ("orders-1", 1000.0), ("orders-2", 1005.0), ("orders-1", 1010.0)]
    assert not any("pip install" in x["line"] for x in body["lines"])  # the build log only when asked
    assert body["files"] == ["orders/orders-1", "orders/orders-2"]
    build = client.get("/api/deploy/logs", params={"service": "orders", "instance": "build"}).json()
    assert [x["line"] for x in build["lines"]] == ["pip install ok"]


def test_a_trace_id_finds_its_lines_across_services(client: Client) -> None:
    body = client.get("/api/deploy/logs", params={"trace_id": TRACE.upper()}).json()
    assert [(x["service"], x["instance"], x["trace_id"]) for x in body["lines"]] == [
        ("orders", "orders-1", TRACE), ("payment", "payment-1", TRACE)]
    assert "status=503" in body["lines"][1]["line"]


def test_search_window_instance_and_limit(client: Client) -> None:
    get = lambda **p: client.get("/api/deploy/logs", params={"service": "orders", **p}).json()["lines"]  # noqa: E731
    assert [x["line"] for x in get(q="TRACEBACK")] == ["Traceback (most recent call last):"]
    assert [x["ts"] for x in get(since=1004, until=1011)] == [1005.0, 1010.0]
    assert {x["instance"] for x in get(instance="orders-2")} == {"orders-2"}
    newest = client.get("/api/deploy/logs", params={"service": "orders", "limit": 1}).json()
    assert newest["truncated"] and newest["lines"][0]["ts"] == 1010.0


def test_follow_returns_only_new_lines_and_long_polls(client: Client, logs: Path) -> None:
    first = client.get("/api/deploy/logs", params={"service": "payment"}).json()
    again = client.get("/api/deploy/logs", params={"service": "payment", "after": first["cursor"]}).json()
    assert again["lines"] == [] and again["cursor"] == first["cursor"]

    def write_later() -> None:
        time.sleep(0.3)  # the writer of the scenario, not a wait: the long-poll below must outlast it
        with (logs / "payment" / "payment-1.log").open("a") as fh:
            fh.write(line(1020.0, OTHER, "/authorize"))

    writer = threading.Thread(target=write_later)
    writer.start()
    started = time.monotonic()
    polled = client.get("/api/deploy/logs", params={"service": "payment", "after": first["cursor"], "wait": 10}).json()
    writer.join()
    assert [x["ts"] for x in polled["lines"]] == [1020.0]
    assert time.monotonic() - started < 9  # answered when the line came, not at the end of the wait


@pytest.mark.parametrize(("params", "status", "error"), [
    ({"trace_id": "not-hex"}, 400, "bad trace id"),
    ({"trace_id": "abc"}, 400, "bad trace id"),
    ({"service": "../etc"}, 400, "bad name"),
    ({"instance": "orders-1"}, 400, "instance without service"),
    ({"service": "orders", "since": 10, "until": 5}, 400, "bad window"),
    ({"service": "orders", "after": "garbage"}, 400, "bad cursor"),
    ({"service": "orders", "wait": 5}, 400, "wait without cursor"),
    ({"service": "nosuch"}, 404, "no logs"),
    ({"service": "orders", "instance": "orders-9"}, 404, "no logs"),
])
def test_bad_input_is_a_4xx_with_a_reason(client: Client, params: dict, status: int, error: str) -> None:
    r = client.get("/api/deploy/logs", params=params)
    assert r.status_code == status and r.json()["error"] == error and r.json()["reason"]


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 100000}, {"wait": 99}, {"q": "x" * 500}])
def test_out_of_range_parameters_are_rejected(client: Client, params: dict) -> None:
    assert client.get("/api/deploy/logs", params={"service": "orders", **params}).status_code in (400, 422)


def test_line_time_reads_the_sdk_stamp_and_iso_offsets() -> None:
    assert line_time("ts=1970-01-01T00:16:40.250Z level=INFO") == 1000.25
    assert line_time("1970-01-01T01:16:40+01:00 something") == 1000.0
    assert line_time("--- devbox: starting") is None
