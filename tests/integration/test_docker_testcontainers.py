"""devbox.testing.service_container: a service image run by testcontainers against a devbox platform
(host network, devbox's env injected, readiness waited for), on the real engine."""

from __future__ import annotations

from pathlib import Path

import pytest
from devbox.mocks.deploy.docker import connect

from devbox.testing import EngineUnavailable, docker_engine, running_platform, service_container
from tests import httpc
from tests.docker_images import write_go_service


def test_service_image_runs_against_a_devbox_platform(tmp_path: Path) -> None:
    try:
        docker_engine()
    except EngineUnavailable as exc:
        pytest.skip(f"no Docker engine: {exc}")
    folder = write_go_service(tmp_path / "img", version="tc-1")
    client = connect()
    client.images.build(path=str(folder), tag="devbox-test/go-hello:tc", rm=True)
    with running_platform(tmp_path, components=["naming"]) as p:
        with service_container("devbox-test/go-hello:tc", p, service="hello") as c:
            got = httpc.get(c.url + "/").json()
            assert got["version"] == "tc-1" and got["service"] == "hello"
            assert c.env["DEVBOX_NAMING_HTTP"] == p.url("polaris_http")
            assert "go service tc-1 starting" in c.container.get_logs()[0].decode()
            cid = c.container.get_wrapped_container().id
    assert cid not in {x.id for x in client.containers.list(all=True)}
    client.close()
