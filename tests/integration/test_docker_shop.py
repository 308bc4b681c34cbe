"""The shop's Python ``users`` service in a container under devbox, on the real engine (issue 11 §3):
``runtime: docker`` with no ``image:`` and no Dockerfile — the 123 convention on devbox's base image
(``devbox-base:bookworm``: Debian by debootstrap, python3, the shop's packages, devbox's SDK). Its
folder is copied unchanged; its start.sh runs as /usr/local/app/start.sh; it is ready, registered,
answers through its entry port and its own SDK spans reach tracing.

The base image takes minutes to build, so the suite never builds it: ``make install`` does where an
engine can start (``python -m tests.docker_images base``), and this test skips, saying how to build it,
where it is absent.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from devbox.mocks.deploy.config import ServiceConfig
from devbox.mocks.deploy.docker import BASE_IMAGE, LABEL, connect, missing_image

from devbox.platform.ports import NamingPort
from devbox.testing import EngineUnavailable, PlatformThread, docker_engine, running_platform, wait_for
from tests import httpc

pytestmark = pytest.mark.slow

SHOP = Path(__file__).resolve().parents[2] / "scenarios" / "shop"


def services(p: PlatformThread) -> dict[str, Any]:
    return {s["key"]: s for s in httpc.get(p.url() + "/api/deploy/services").json()["services"]}


def test_shop_users_runs_in_a_container_on_the_base_image(tmp_path: Path) -> None:
    try:
        docker_engine()
    except EngineUnavailable as exc:
        pytest.skip(f"no Docker engine: {exc}")
    client = connect()
    missing = missing_image(client, BASE_IMAGE)
    if missing:
        client.close()
        pytest.skip(f"{missing} (`make install` builds it where an engine can start)")
    shutil.copytree(SHOP / "users", tmp_path / "users", ignore=shutil.ignore_patterns("__pycache__"))
    svc = ServiceConfig(name="users", path="users", runtime="docker", readiness={"http": "/healthz"}, reload=False,
                        tags={"env": "base"})
    try:
        with running_platform(tmp_path, components=["naming", "faults", "deploy", "tracing"], services=[svc],
                              project="shop in docker") as p:
            assert p.call(p.component("deploy").wait_deployed(180), timeout=190) == []  # type: ignore[attr-defined]
            users = services(p)["users"]
            [inst] = users["instances"]
            assert inst["state"] == "ready"
            [container] = client.containers.list(filters={"label": f"{LABEL}={p.config.state_path}"})
            # the 123 convention: the image is the folder on the base; the container is told how to start
            assert container.attrs["Config"]["Cmd"] == ["/usr/local/app/start.sh"]
            assert container.attrs["Config"]["WorkingDir"] == "/usr/local/app"

            naming = p.platform.ctx.lookup(NamingPort)  # type: ignore[union-attr]
            assert naming is not None
            assert [i.id for i in naming.instances(naming.namespace, "users") if i.healthy] == [inst["id"]]

            alice = httpc.get(users["url"] + "/users/alice", timeout=10).json()
            assert alice["name"] == "Alice" and alice["served_by"] == {
                "service": "users", "instance": inst["id"], "env": "base"}

            def own_spans() -> list[dict[str, Any]]:
                httpc.get(users["url"] + "/users/bob", timeout=10)
                found = httpc.get(p.url("zipkin") + "/api/v2/traces", params={"serviceName": "users"}).json()
                return [s for t in found for s in t if s["localEndpoint"]["serviceName"] == "users"
                        and "devbox.span.source" not in s.get("tags", {})]

            # the SDK may ship a request's inner spans before its server span: wait for the server span itself
            spans = wait_for(lambda: [s for s in own_spans() if s["kind"] == "SERVER"], timeout=60,
                             what="a SERVER span the users container's SDK sent to tracing")
            assert any(s["kind"] == "SERVER" for s in spans)
    finally:
        client.close()
