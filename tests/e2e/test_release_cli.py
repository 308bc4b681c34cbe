"""`devbox release`, `release status|history|pause|rollback`, `devbox url` and the entry port in
`devbox status`, end to end: the real CLI as subprocesses against one `devbox up -d` project."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from devbox.testing import wait_for
from tests import httpc
from tests.deploy_fakes import write_service
from tests.e2e.test_cli_project import devbox, project
from tests.integration.test_entry_port import free_port

COMPONENTS = "naming,deploy,faults"


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, int]]:
    root = tmp_path_factory.mktemp("release-cli")
    write_service(root / "svc")
    port = free_port()
    project(root, f"""  - name: web
    path: svc
    replicas: 2
    port: {port}
    drain: 0.2
    readiness: {{http: /healthz}}
""")
    up = devbox("up", "-d", "--no-reload", "--components", COMPONENTS, cwd=root, timeout=120)
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        yield root, port
    finally:
        down = devbox("down", cwd=root)
        assert down.returncode == 0, down.stdout + down.stderr


def test_url_and_status_show_the_entry_port(shop: tuple[Path, int]) -> None:
    root, port = shop
    url = devbox("url", "web", cwd=root, check=True).stdout.strip()
    assert url == f"http://127.0.0.1:{port}"
    assert httpc.get(url + "/").status_code == 200
    status = devbox("status", cwd=root, check=True).stdout
    assert f"web :{port}" in status, status
    unknown = devbox("url", "nope", cwd=root)
    assert unknown.returncode != 0 and "no entry port for 'nope'" in unknown.stderr and "web" in unknown.stderr


def test_release_status_history_and_rollback_from_the_cli(shop: tuple[Path, int]) -> None:
    root, port = shop
    done = devbox("release", "web", "--version", "v2", "--batches", "50,100", "--pause", "0.5s", cwd=root,
                  timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "web v2" in done.stdout and "succeeded" in done.stdout and "traffic by instance weights" in done.stdout
    assert "release_batch: batch 2/2" in done.stdout
    status = json.loads(devbox("release", "status", "--json", cwd=root, check=True).stdout)
    assert status["state"] == "succeeded" and status["version"] == "v2" and len(status["switch_seconds"]) == 2
    assert json.loads(devbox("status", "--json", cwd=root, check=True).stdout)["services"][0]["tags"]["version"] == "v2"
    assert "version=v2" in httpc.get(f"http://127.0.0.1:{port}/").json()["tags"]

    nothing = devbox("release", "pause", cwd=root)
    assert nothing.returncode != 0 and "no release is running" in nothing.stderr

    started = devbox("release", "web", "--version", "v3", "--batches", "50,100", "--pause", "5m", "--detach",
                     "--json", cwd=root, check=True)
    assert json.loads(started.stdout)["state"] == "running"
    again = devbox("release", "web", "--version", "v4", cwd=root)
    assert again.returncode != 0 and "wait for it" in again.stderr
    api = json.loads((root / ".devbox" / "platform.json").read_text())["api"]
    wait_for(lambda: httpc.get(api + "/api/deploy/releases/current").json()["batch"] == 0, 60, "v3's first batch")
    paused = devbox("release", "pause", cwd=root, check=True).stdout
    assert "paused" in paused and "devbox release resume" in paused
    rolled = devbox("release", "rollback", cwd=root, timeout=60, check=True).stdout
    assert "rolled_back" in rolled and "rollback requested" in rolled

    history = json.loads(devbox("release", "history", "--json", cwd=root, check=True).stdout)
    assert [(r["version"], r["state"]) for r in history] == [("v3", "rolled_back"), ("v2", "succeeded")]
    listed = devbox("release", "history", cwd=root, check=True).stdout
    assert "web-v3-" in listed and "rolled_back" in listed
    assert "version=v2" in httpc.get(f"http://127.0.0.1:{port}/").json()["tags"]
