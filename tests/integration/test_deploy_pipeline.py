"""The deploy pipeline on a real platform (ephemeral ports) with real processes: fake stdlib services."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from devbox.mocks.deploy.config import ServiceConfig

from devbox.platform.ports import NamingPort
from devbox.testing import PlatformThread, running_platform, wait_for
from tests import httpc
from tests.deploy_fakes import write_service

FAST_RESTART = {"backoff": 0.05, "factor": 2, "max_backoff": 0.2, "crash_loop": 3, "window": 60}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def services(p: PlatformThread) -> dict[str, Any]:
    return {d["key"]: d for d in httpc.get(p.url() + "/api/deploy/services").json()["services"]}


def events(p: PlatformThread, **params: Any) -> list[dict[str, Any]]:
    return httpc.get(p.url() + "/api/deploy/events", params=params).json()["events"]


def naming(p: PlatformThread) -> NamingPort:
    """Naming as the other components see it (its registry stays naming's own)."""
    assert p.platform is not None
    port = p.platform.ctx.lookup(NamingPort)
    assert port is not None
    return port


def registry_view(p: PlatformThread, service: str) -> list[tuple[int, bool]]:
    registry = naming(p)

    async def read() -> list[tuple[int, bool]]:
        return [(i.port, i.healthy) for i in registry.instances("default", service)]

    return p.call(read())


def platform(tmp_path: Path, *svcs: ServiceConfig, **overrides: Any) -> Any:
    return running_platform(tmp_path, components=["naming", "deploy"], services=list(svcs), **overrides)


def deployed(p: PlatformThread) -> list[str]:
    return p.call(p.component("deploy").wait_deployed(60), timeout=70)  # type: ignore[attr-defined]


def test_lifecycle_ready_registered_injected_then_stopped(tmp_path: Path) -> None:
    write_service(tmp_path / "svc")
    svc = ServiceConfig(name="hello", path="svc", replicas=2, tags={"env": "base"}, readiness={"http": "/healthz"})
    with platform(tmp_path, svc) as p:
        assert deployed(p) == []
        dep = services(p)["hello"]
        assert dep["ready"] == 2 and {i["state"] for i in dep["instances"]} == {"ready"}
        pids = [i["pid"] for i in dep["instances"]]
        assert sorted(registry_view(p, "hello")) == sorted((i["port"], True) for i in dep["instances"])
        for inst in dep["instances"]:
            answer = httpc.get(f"http://127.0.0.1:{inst['port']}/").json()
            assert answer["instance"] == inst["id"] and answer["tags"] == "env=base"
            facts = yaml.safe_load(Path(inst["config"]).read_text())
            assert facts["instance"] == {"id": inst["id"], "name": inst["name"], "host": "127.0.0.1",
                                         "port": inst["port"]}
            assert facts["platform"]["api"] == p.url() and facts["tags"] == {"env": "base"}
            assert "fake service listening" in Path(inst["log"]).read_text()
            assert Path(inst["log"]) == tmp_path / ".devbox" / "logs" / "hello" / f"{inst['name']}.log"
        kinds = [e["kind"] for e in events(p, service="hello")]
        assert kinds.count("started") == 2 and kinds.count("ready") == 2 and kinds.count("registered") == 2
    assert not any(alive(pid) for pid in pids)
    from devbox.mocks.deploy.store import EventStore

    stored = EventStore(tmp_path / ".devbox" / "deploy.db")
    assert [e.kind.value for e in stored.list(kind="stopped")] == ["stopped", "stopped"]
    assert len(stored.list(kind="deregistered")) == 2
    stored.close()


def test_killed_instance_is_restarted_with_backoff_then_crash_loop_stops_it(tmp_path: Path) -> None:
    write_service(tmp_path / "svc")
    svc = ServiceConfig(name="fragile", path="svc", restart=FAST_RESTART, readiness={"http": "/healthz"})
    with platform(tmp_path, svc) as p:
        assert deployed(p) == []
        inst = services(p)["fragile"]["instances"][0]
        name, port = inst["name"], inst["port"]
        for round_ in (1, 2):
            old_pid = services(p)["fragile"]["instances"][0]["pid"]
            r = httpc.post(p.url() + f"/api/deploy/services/fragile/instances/{name}/kill")
            assert r.status_code == 200, r.text
            wait_for(what="restart", check=lambda n=round_: len(events(p, kind="restarted")) == n)
            now = services(p)["fragile"]["instances"][0]
            assert now["restarts"] == round_ and now["state"] == "ready" and now["port"] == port
            assert now["pid"] != old_pid and not alive(old_pid)
            assert registry_view(p, "fragile") == [(port, True)]
        crashed = events(p, kind="crashed")
        assert "signal SIGKILL" in crashed[0]["message"] and "restart #1 in 0.05s" in crashed[0]["message"]
        assert "restart #2 in 0.10s" in crashed[1]["message"]
        # the third crash within the window is a crash loop: reported, not retried
        httpc.post(p.url() + f"/api/deploy/services/fragile/instances/{name}/kill")
        loop_event = wait_for(what="crash loop", check=lambda: events(p, kind="crash_loop"))[0]
        assert "crash loop: 3 crashes within 60s; not restarting" in loop_event["message"]
        now = services(p)["fragile"]["instances"][0]
        assert now["state"] == "crashloop" and now["pid"] is None
        assert registry_view(p, "fragile") in ([], [(port, False)])
        # a user can start it again by hand
        r = httpc.post(p.url() + f"/api/deploy/services/fragile/instances/{name}/start")
        assert r.status_code == 200 and r.json()["state"] == "ready"


def test_service_crashing_on_its_own_is_restarted(tmp_path: Path) -> None:
    write_service(tmp_path / "svc")
    svc = ServiceConfig(name="flaky", path="svc", env={"FAKE_CRASH_AFTER": "1.5"},
                        restart={**FAST_RESTART, "crash_loop": 2}, readiness={"http": "/healthz", "timeout": 10})
    with platform(tmp_path, svc) as p:
        assert deployed(p) == []
        crash = wait_for(what="a crash", check=lambda: events(p, kind="crashed"))[0]
        assert "exited with code 1" in crash["message"] and crash["data"]["tail"]
        wait_for(what="crash loop", check=lambda: events(p, kind="crash_loop"))
        assert services(p)["flaky"]["instances"][0]["state"] == "crashloop"


@pytest.mark.parametrize(
    ("env", "expected", "log_line"),
    [
        ({"FAKE_UNREADY": "1"}, "not ready after 1.5s (http check on port", "fake service listening"),
        ({"FAKE_EXIT": "3"}, "exited with code 3 before becoming ready", "exiting on purpose"),
    ],
)
def test_instance_that_never_gets_ready_fails_with_its_last_log_lines(
    tmp_path: Path, env: dict[str, str], expected: str, log_line: str
) -> None:
    write_service(tmp_path / "svc")
    svc = ServiceConfig(name="bad", path="svc", env=env, readiness={"http": "/healthz", "timeout": 1.5})
    with platform(tmp_path, svc) as p:
        errors = deployed(p)
        assert len(errors) == 1 and expected in errors[0] and log_line in errors[0]
        inst = services(p)["bad"]["instances"][0]
        assert inst["state"] == "failed" and inst["pid"] is None
        assert events(p, kind="not_ready")[0]["data"]["tail"]
        assert registry_view(p, "bad") == []


def test_failing_build_stops_the_deploy_with_its_output(tmp_path: Path) -> None:
    write_service(tmp_path / "svc")
    svc = ServiceConfig(name="broken", path="svc", build="echo compiling; echo 'syntax error on line 3' >&2; exit 4")
    good = ServiceConfig(name="good", path="svc", build="echo fine > built.txt")
    with platform(tmp_path, svc, good) as p:
        errors = deployed(p)
        assert len(errors) == 1
        assert "build `echo compiling" in errors[0] and "exit code 4" in errors[0]
        assert "syntax error on line 3" in errors[0]
        assert services(p)["broken"]["instances"] == []
        assert services(p)["good"]["ready"] == 1
        assert [e["service"] for e in events(p, kind="build_failed")] == ["broken"]
        assert [e["service"] for e in events(p, kind="built")] == ["good"]


def test_hot_reload_replaces_instances_without_a_failed_request(tmp_path: Path) -> None:
    folder = write_service(tmp_path / "svc", version="1")
    svc = ServiceConfig(name="web", path="svc", replicas=2, drain=0.6, readiness={"http": "/healthz"})
    with platform(tmp_path, svc) as p:
        assert deployed(p) == []
        registry = naming(p)

        async def resolve() -> list[int]:
            return [i.port for i in registry.instances("default", "web") if i.healthy and not i.isolated]

        stop = threading.Event()
        seen: dict[str, int] = {}
        failures: list[str] = []

        def client() -> None:
            # a client as an SDK would be: resolve through the registry, cache it briefly, round-robin
            cached: list[int] = []
            cached_at = 0.0
            n = 0
            with httpx.Client(timeout=5) as http:
                while not stop.is_set():
                    if time.monotonic() - cached_at > 0.2 or not cached:
                        cached, cached_at = p.call(resolve()), time.monotonic()
                    if not cached:
                        failures.append("no instance in the registry")
                        continue
                    n += 1
                    port = cached[n % len(cached)]
                    try:
                        version = http.get(f"http://127.0.0.1:{port}/").json()["version"]
                        seen[version] = seen.get(version, 0) + 1
                    except httpx.HTTPError as exc:
                        failures.append(f"{port}: {exc!r}")
                    time.sleep(0.01)

        thread = threading.Thread(target=client)
        thread.start()
        try:
            wait_for(what="traffic", check=lambda: seen.get("1", 0) > 20)
            (folder / "VERSION").write_text("2\n")
            wait_for(what="reload", check=lambda: events(p, kind="reloaded"), timeout=30)
            wait_for(what="new version served", check=lambda: seen.get("2", 0) > 20)
        finally:
            stop.set()
            thread.join()
        assert failures == []
        dep = services(p)["web"]
        assert [i["name"] for i in dep["instances"]] == ["web-3", "web-4"] and dep["ready"] == 2
        assert dep["reloads"] == 1 and "VERSION" in events(p, kind="reload")[0]["message"]
        kinds = [e["kind"] for e in events(p, service="web")]
        # the new instance is registered before the old one is deregistered
        assert kinds.index("registered", 4) < kinds.index("deregistered")


def test_reload_with_a_failing_build_keeps_the_old_instances(tmp_path: Path) -> None:
    folder = write_service(tmp_path / "svc")
    (folder / "build.sh").write_text("#!/bin/sh\ngrep -q ok BUILD_OK\n")
    (folder / "BUILD_OK").write_text("ok\n")
    svc = ServiceConfig(name="web", path="svc", build="sh build.sh", drain=0.1)
    with platform(tmp_path, svc) as p:
        assert deployed(p) == []
        before = services(p)["web"]["instances"][0]
        (folder / "BUILD_OK").write_text("failing\n")
        wait_for(what="reload failure", check=lambda: events(p, kind="reload_failed"))
        after = services(p)["web"]["instances"]
        assert [(i["name"], i["state"], i["pid"]) for i in after] == [(before["name"], "ready", before["pid"])]


def test_instance_actions_scale_and_overrides(tmp_path: Path) -> None:
    write_service(tmp_path / "svc")
    svc = ServiceConfig(name="api", path="svc", drain=0.1, reload=False, readiness={"http": "/healthz"})
    with platform(tmp_path, svc, naming={"heartbeat_ttl": 1.5}) as p:
        assert deployed(p) == []
        base = p.url() + "/api/deploy/services/api"
        name = services(p)["api"]["instances"][0]["name"]
        # SIGSTOP: the probe fails, devbox stops heartbeating, naming sees it unhealthy; SIGCONT heals
        assert httpc.post(f"{base}/instances/{name}/signal", json={"signal": "SIGSTOP"}).status_code == 200
        wait_for(what="unhealthy", check=lambda: services(p)["api"]["instances"][0]["state"] == "unhealthy")
        port = services(p)["api"]["instances"][0]["port"]
        wait_for(what="naming unhealthy", check=lambda: registry_view(p, "api") == [(port, False)])
        assert httpc.post(f"{base}/instances/{name}/signal", json={"signal": "cont"}).status_code == 200
        wait_for(what="healthy again", check=lambda: registry_view(p, "api") == [(port, True)])
        # stop / start by hand
        assert httpc.post(f"{base}/instances/{name}/stop").json()["state"] == "stopped"
        assert registry_view(p, "api") == []
        assert httpc.post(f"{base}/instances/{name}/start").json()["state"] == "ready"
        # scale up and down
        assert httpc.post(f"{base}/scale", json={"replicas": 3}, timeout=30).json()["ready"] == 3
        assert len(registry_view(p, "api")) == 3
        assert httpc.post(f"{base}/scale", json={"replicas": 1}, timeout=30).json()["ready"] == 1
        # a feature environment beside the base one: same service, other tags
        r = httpc.post(f"{base}/start", json={"group": "feature-x", "tags": {"env": "feature-x"}}, timeout=30)
        assert r.status_code == 200, r.text
        feature = r.json()["instances"][0]
        assert httpc.get(f"http://127.0.0.1:{feature['port']}/").json()["tags"] == "env=feature-x"
        assert len(registry_view(p, "api")) == 2
        # bad input: 4xx with a reason
        assert httpc.post(f"{base}/instances/nope/kill").status_code == 404
        assert httpc.post(p.url() + "/api/deploy/services/nope/scale", json={"replicas": 1}).status_code == 404
        bad_signal = httpc.post(f"{base}/instances/{name}/signal", json={"signal": "SIGWHAT"})
        assert bad_signal.status_code == 409 and "unknown signal" in bad_signal.json()["reason"]
        assert httpc.post(f"{base}/scale", json={"replicas": -1}).status_code == 400
        assert httpc.get(p.url() + "/api/deploy/events", params={"kind": "exploded"}).status_code == 400
        assert httpc.post(f"{base}/instances/{name}/signal", json={}).status_code == 400


def test_no_services_runs_the_platform_alone(tmp_path: Path) -> None:
    with platform(tmp_path) as p:
        assert deployed(p) == []
        body = httpc.get(p.url() + "/api/deploy/services").json()
        assert body == {"services": [], "phase": {}, "deploying": False, "errors": []}


def test_saving_a_fix_replaces_a_crash_looping_instance(tmp_path: Path) -> None:
    folder = write_service(tmp_path / "svc")
    svc = ServiceConfig(name="loopy", path="svc", drain=0.1, restart={**FAST_RESTART, "crash_loop": 1})
    with platform(tmp_path, svc) as p:
        assert deployed(p) == []
        httpc.post(p.url() + "/api/deploy/services/loopy/instances/loopy-1/kill")
        wait_for(what="crash loop", check=lambda: events(p, kind="crash_loop"))
        (folder / "VERSION").write_text("fixed\n")
        wait_for(what="reload", check=lambda: events(p, kind="reloaded"))
        [inst] = services(p)["loopy"]["instances"]
        assert inst["name"] == "loopy-2" and inst["state"] == "ready"
        assert httpc.get(f"http://127.0.0.1:{inst['port']}/").json()["version"] == "fixed"


def test_self_registering_service_is_awaited_and_not_registered_by_devbox(tmp_path: Path) -> None:
    write_service(tmp_path / "svc")
    svc = ServiceConfig(name="own", path="svc", register="self", env={"FAKE_SELF_REGISTER": "0.5"}, reload=False)
    with platform(tmp_path, svc) as p:
        assert deployed(p) == []
        [inst] = services(p)["own"]["instances"]
        assert registry_view(p, "own") == [(inst["port"], True)]
        [event] = events(p, kind="registered")
        assert event["data"]["by"] == "self" and "registered itself" in event["message"]
        assert inst["registered"] is False  # devbox neither heartbeats nor deregisters it
