"""Bind first (issue 15, platform up <= 1 s): every listener answers from the moment it is bound —
HTTP with 503 "starting" and Retry-After, gRPC with UNAVAILABLE — while a slow component starts,
never "connection refused"; once the platform is up, the same listeners serve the real apps."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from fastapi import APIRouter

from devbox.assembly import SPECS
from devbox.config import ProjectConfig
from devbox.platform.component import Component, ComponentSpec, PlatformContext
from devbox.platform.platform import Platform
from devbox.testing import starting_in_background, wait_for
from tests import httpc

#: Released by the test: the slow component's start() waits on it.
GATE = threading.Event()


class SlowComponent(Component):
    """A component whose start() takes as long as the test wants, serving one route on ``api``."""

    name = "slow"

    def __init__(self, ctx: PlatformContext) -> None:
        super().__init__(ctx)
        self.router = APIRouter()
        self.router.add_api_route("/api/slow", self.hello, methods=["GET"])

    def http_routes(self) -> list[tuple[str, APIRouter]]:
        return [("api", self.router)]

    async def hello(self) -> dict[str, str]:
        return {"hello": "slow"}

    async def start(self) -> None:
        await asyncio.to_thread(GATE.wait, 60)


@pytest.fixture()
def starting(tmp_path: Path) -> Iterator[tuple[Platform, dict[str, Any]]]:
    """A platform (naming + the slow component) whose start() runs on a background loop."""
    GATE.clear()
    specs = [*SPECS, ComponentSpec(name="slow", factory=f"{__name__}:SlowComponent", after=("naming",))]
    platform = Platform(ProjectConfig.for_tests(tmp_path), components=["naming", "slow"], specs=specs)
    with starting_in_background(platform, GATE) as outcome:
        yield platform, outcome


def test_listeners_answer_starting_while_a_slow_component_starts_then_serve(
    starting: tuple[Platform, dict[str, Any]],
) -> None:
    platform, outcome = starting
    wait_for(lambda: {"api", "polaris_http", "polaris_grpc"} <= set(platform.ctx.addresses), 30,
             "the listeners to be bound")
    api = platform.ctx.url("api")

    health = httpc.get(f"{api}/healthz", timeout=30)  # bound and listening: no "connection refused"
    assert health.status_code == 503
    assert health.json()["status"] == "starting"
    refused = httpc.get(f"{api}/api/slow", timeout=5)
    assert refused.status_code == 503
    assert refused.json()["error"] == "starting" and refused.json()["reason"]
    assert refused.headers["retry-after"] == "1"
    polaris = httpc.get(platform.ctx.url("polaris_http") + "/naming/v1/instances", timeout=5)
    assert polaris.status_code == 503 and polaris.json()["error"] == "starting"
    with grpc.insecure_channel(platform.ctx.target("polaris_grpc")) as channel:
        with pytest.raises(grpc.RpcError) as raised:
            channel.unary_unary("/v1.PolarisGRPC/Discover")(b"", timeout=5)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "starting" in (raised.value.details() or "")
    assert "started" not in outcome and "error" not in outcome

    GATE.set()
    wait_for(lambda: "started" in outcome or "error" in outcome, 30, "the platform to be up")
    assert "error" not in outcome, outcome.get("error")
    assert httpc.get(f"{api}/healthz", timeout=5).json()["status"] == "ok"
    assert httpc.get(f"{api}/api/slow", timeout=5).json() == {"hello": "slow"}
    assert httpc.get(platform.ctx.url("polaris_http") + "/healthz", timeout=5).status_code != 503
    with grpc.insecure_channel(platform.ctx.target("polaris_grpc")) as channel:
        with pytest.raises(grpc.RpcError) as raised:  # the real servicer table: an unknown method
            channel.unary_unary("/no.Such/Method")(b"", timeout=5)
    assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED
