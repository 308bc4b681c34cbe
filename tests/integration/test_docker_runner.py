"""The Docker runner on a real engine (started as /work/shared/DOCKER.md says, or found at DOCKER_HOST;
skipped, with the reason, only where none can run): a Go service FROM scratch built from its
Dockerfile, run under devbox — ready, registered in naming, injected env, its output in the instance
log, paused/unpaused by SIGSTOP/SIGCONT, hot-reloaded (rebuild + rolling replace), restarted with
backoff after a crash, and removed on stop; a Dockerfile that does not build (the build log's tail
in the error) and an engine that is not running (what to start)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker  # type: ignore[import-untyped]
import httpx
import pytest
from devbox.mocks.deploy import core
from devbox.mocks.deploy.config import ServiceConfig
from devbox.mocks.deploy.docker import (
    BASE_IMAGE,
    LABEL,
    connect,
    container_start,
    dockerfile_123,
    engine_problem,
    image_tag,
    missing_image,
    needs_build,
    run_123,
)

from devbox.platform.ports import NamingPort
from devbox.testing import EngineUnavailable, PlatformThread, docker_engine, running_platform, wait_for
from tests import httpc
from tests.docker_images import write_go_service


@pytest.fixture(scope="module")
def engine() -> Iterator[Any]:
    try:
        docker_engine()
    except EngineUnavailable as exc:
        pytest.skip(f"no Docker engine: {exc}")
    client = connect()
    yield client
    client.close()


def services(p: PlatformThread) -> dict[str, Any]:
    return {s["service"]: s for s in httpc.get(p.url() + "/api/deploy/services").json()["services"]}


def events(p: PlatformThread, **params: Any) -> list[dict[str, Any]]:
    return httpc.get(p.url() + "/api/deploy/events", params=params).json()["events"]


def registered_ports(p: PlatformThread, service: str) -> list[int]:
    assert p.platform is not None
    registry = p.platform.ctx.lookup(NamingPort)
    assert registry is not None

    async def read() -> list[int]:
        return sorted(i.port for i in registry.instances("default", service) if i.healthy)

    return p.call(read())


def deployed(p: PlatformThread, timeout: float = 120) -> list[str]:
    return p.call(p.component("deploy").wait_deployed(timeout), timeout=timeout + 10)  # type: ignore[attr-defined]


def answer(port: int) -> dict[str, str] | None:
    try:
        response = httpc.get(f"http://127.0.0.1:{port}/", timeout=2)
    except httpx.HTTPError:
        return None
    return response.json() if response.status_code == 200 else None


def test_go_container_runs_registered_reloaded_and_removed(tmp_path: Path, engine: Any) -> None:
    folder = write_go_service(tmp_path / "hello", version="v1")
    svc = ServiceConfig(name="hello", path="hello", runtime="docker", readiness={"http": "/healthz"}, drain=0.1,
                        tags={"env": "base"})
    with running_platform(tmp_path, components=["naming", "deploy"], services=[svc], project="Go Box") as p:
        assert deployed(p) == []
        [inst] = services(p)["hello"]["instances"]
        assert inst["state"] == "ready"
        assert registered_ports(p, "hello") == [inst["port"]]
        got = answer(inst["port"])
        assert got == {"instance": inst["id"], "version": "v1", "service": "hello"}
        assert [e["kind"] for e in events(p, kind="built")]  # the image build is a deploy step
        assert engine.images.get(image_tag("Go Box", "hello"))
        [container] = engine.containers.list(filters={"label": f"{LABEL}={p.config.state_path}"})
        env = dict(item.split("=", 1) for item in container.attrs["Config"]["Env"])
        assert env["PORT"] == str(inst["port"]) and env["DEVBOX_INSTANCE_ID"] == inst["id"]
        assert env["DEVBOX_TAGS"] == "env=base"
        assert container.attrs["Config"]["Cmd"] == ["/app"]  # the image's own command: `start` not set
        config_dir = str(p.config.state_path / "run" / "hello")
        assert {(m["Source"], m["Destination"], m["RW"]) for m in container.attrs["Mounts"]} == {
            (config_dir, config_dir, False)}  # $DEVBOX_INSTANCE_CONFIG is valid inside
        assert container.attrs["HostConfig"]["NetworkMode"] == "host"
        log = p.config.state_path / "logs" / "hello" / f"{inst['name']}.log"
        wait_for(lambda: "go service v1 starting" in log.read_text() and "GET /" in log.read_text(),
                 timeout=20, what="the container's output in the instance log")

        base = p.url() + f"/api/deploy/services/hello/instances/{inst['name']}/signal"
        assert httpc.post(base, json={"signal": "SIGSTOP"}).status_code == 200
        wait_for(lambda: engine.containers.get(container.id).status == "paused", timeout=20, what="paused")
        assert httpc.post(base, json={"signal": "SIGCONT"}).status_code == 200
        wait_for(lambda: engine.containers.get(container.id).status == "running", timeout=20, what="unpaused")

        # hot reload: a changed file → rebuild the image → new container registered → old one removed
        (folder / "VERSION").write_text("v2\n")
        wait_for(lambda: events(p, kind="reloaded"), timeout=120, what="reload")
        [new] = services(p)["hello"]["instances"]
        assert new["name"] != inst["name"] and answer(new["port"])["version"] == "v2"  # type: ignore[index]
        assert registered_ports(p, "hello") == [new["port"]]
        wait_for(lambda: container.id not in {c.id for c in engine.containers.list(all=True)}, timeout=30,
                 what="the old container removed")
    assert engine.containers.list(all=True, filters={"label": f"{LABEL}={p.config.state_path}"}) == []


def test_crashing_container_restarts_with_backoff(tmp_path: Path, engine: Any) -> None:
    write_go_service(tmp_path / "crashy")
    svc = ServiceConfig(name="crashy", path="crashy", runtime="docker", readiness={"http": "/healthz"}, reload=False,
                        env={"GO_EXIT_AFTER": "1.5"}, restart={"backoff": 0.2, "crash_loop": 50})
    with running_platform(tmp_path, components=["naming", "deploy"], services=[svc]) as p:
        assert deployed(p) == []
        restarted = wait_for(lambda: events(p, kind="restarted"), timeout=60, what="a restart after the crash")
        crashed = events(p, kind="crashed")
        assert crashed and crashed[0]["data"]["exit_code"] == 3
        assert restarted[0]["instance"] == crashed[0]["instance"]
        wait_for(lambda: services(p)["crashy"]["instances"][0]["restarts"] >= 1, what="restart counted")


def test_dockerfile_that_fails_to_build_shows_the_log_tail(tmp_path: Path, engine: Any) -> None:
    folder = write_go_service(tmp_path / "broken")
    (folder / "Dockerfile").write_text("FROM scratch\nCOPY missing-file /x\n")
    svc = ServiceConfig(name="broken", path="broken", runtime="docker", reload=False)
    with running_platform(tmp_path, components=["naming", "deploy"], services=[svc]) as p:
        [error] = deployed(p)
        assert "build `docker build -t devbox/devbox-broken:dev` failed" in error
        assert "missing-file" in error  # the engine's own words, from the build log's tail
        [failed] = events(p, kind="build_failed")
        assert any("missing-file" in line for line in failed["data"]["tail"])


def test_image_tags_and_preflight(tmp_path: Path) -> None:
    assert image_tag("My Shop", "users") == "devbox/my-shop-users:dev"
    (tmp_path / "svc").mkdir()
    problems = core.preflight([ServiceConfig(name="a", path="svc", runtime="docker"),
                               ServiceConfig(name="b", path="svc", runtime="docker", image="python:3.11")], tmp_path)
    assert problems == [f"service a: runtime docker needs a Dockerfile, `image:`, or a start script (./start.sh) in "
                        f"{tmp_path / 'svc'} to run on devbox's base image devbox-base:bookworm"]
    # the 123 convention: image: plus a folder with start.sh is built on top of it; image: alone runs as is
    svc = ServiceConfig(name="b", path="svc", runtime="docker", image="devbox-base:bookworm")
    assert not needs_build(svc, tmp_path / "svc")
    (tmp_path / "svc" / "start.sh").write_text("#!/bin/sh\nexec ./server\n")
    assert needs_build(svc, tmp_path / "svc")
    # the 123 default: a start.sh and no image: runs on devbox's base image
    assert core.preflight([ServiceConfig(name="a", path="svc", runtime="docker")], tmp_path) == []
    assert dockerfile_123("devbox-base:bookworm") == "FROM devbox-base:bookworm\nCOPY . /usr/local/app/\n"
    assert run_123() == ("/usr/local/app", ["/usr/local/app/start.sh"])
    # what the instance's container runs: image: plus the folder is the image built with the folder
    built = ("devbox/p-b:dev", "/usr/local/app", ["/usr/local/app/start.sh"])
    assert container_start(svc, tmp_path / "svc", "p") == built
    (tmp_path / "svc" / "start.sh").unlink()
    assert container_start(svc, tmp_path / "svc", "p") == ("devbox-base:bookworm", None, None)  # image: as it is
    custom = ServiceConfig(name="c", path="svc", runtime="docker", image="x:1", start="serve --port $PORT")
    assert container_start(custom, tmp_path / "svc", "p") == ("x:1", None, ["/bin/sh", "-c", "serve --port $PORT"])
    assert run_123("python3 app.py") == ("/usr/local/app", ["/bin/sh", "-c", "python3 app.py"])


def test_engine_not_running_says_what_to_start(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    problem = engine_problem(timeout=2)
    assert problem is not None
    assert f"no Docker engine answers at unix://{tmp_path}/no-engine.sock" in problem
    assert "dockerd" in problem and "DOCKER_HOST" in problem
    write_go_service(tmp_path / "svc")
    svc = ServiceConfig(name="boxed", path="svc", runtime="docker", reload=False)
    with running_platform(tmp_path, components=["naming", "deploy"], services=[svc]) as p:
        [error] = deployed(p, 30)
        assert error.startswith("services with runtime docker cannot start: no Docker engine answers")



def test_missing_base_or_image_says_how_to_get_it(tmp_path: Path, engine: Any) -> None:
    class NoImages:
        class images:  # the SDK's attribute: client.images.get
            @staticmethod
            def get(name: str) -> Any:
                raise docker.errors.ImageNotFound(f"No such image: {name}")

    assert "build it with `devbox docker base`" in (missing_image(NoImages(), BASE_IMAGE) or "")
    folder = tmp_path / "svc"
    folder.mkdir()
    (folder / "start.sh").write_text("#!/bin/sh\nexec ./server\n")
    svc = ServiceConfig(name="absent", path="svc", runtime="docker", image="devbox-test/absent:none", reload=False)
    with running_platform(tmp_path, components=["naming", "deploy"], services=[svc]) as p:
        [error] = deployed(p)
        assert "devbox-test/absent:none is not on this engine and devbox pulls nothing" in error
