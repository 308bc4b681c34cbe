from __future__ import annotations

import socket
from pathlib import Path

import pytest

from devbox.config import ProjectConfig
from devbox.platform.platform import PortInUse
from devbox.testing import PlatformThread, running_platform
from tests import httpc


def test_platform_serves_health_and_info(tmp_path: Path) -> None:
    with running_platform(tmp_path) as p:
        assert httpc.get(p.url("api") + "/healthz").json()["status"] == "ok"
        info = httpc.get(p.url("api") + "/api/platform").json()
        assert info["listeners"]["api"]["port"] == p.platform.ctx.addresses["api"][1]
        assert (tmp_path / ".devbox").is_dir()


def test_taken_port_is_reported_by_name(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = ProjectConfig.for_tests(tmp_path)
        config.platform.ports.api = port
        with pytest.raises(PortInUse, match=rf"api: port {port}"):
            PlatformThread(config).start()


def test_oversized_body_is_refused(tmp_path: Path) -> None:
    with running_platform(tmp_path, platform={"max_body_bytes": 1000}) as p:
        r = httpc.post(p.url("api") + "/api/platform", content=b"x" * 5000)
        assert r.status_code == 413
        assert "too large" in r.json()["error"]


def test_token_required_when_set(tmp_path: Path) -> None:
    with running_platform(tmp_path, platform={"token": "s3cret"}) as p:
        assert httpc.get(p.url("api") + "/api/platform").status_code == 401
        ok = httpc.get(p.url("api") + "/api/platform", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        assert httpc.get(p.url("api") + "/healthz").status_code == 200
