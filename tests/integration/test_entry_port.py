"""Stable entry ports: one address per service that survives reloads, restarts and port moves."""

from __future__ import annotations

import socket
import threading
from pathlib import Path
from typing import Any

import httpx
from devbox.mocks.deploy.config import ServiceConfig

from devbox.testing import PlatformThread, running_platform, wait_for
from tests import httpc
from tests.deploy_fakes import write_service

FAST_RESTART = {"backoff": 0.05, "factor": 2, "max_backoff": 0.2, "crash_loop": 5, "window": 60}


def services(p: PlatformThread) -> dict[str, Any]:
    return {d["key"]: d for d in httpc.get(p.url() + "/api/deploy/services").json()["services"]}


def events(p: PlatformThread, **params: Any) -> list[dict[str, Any]]:
    return httpc.get(p.url() + "/api/deploy/events", params=params).json()["events"]


def deployed(p: PlatformThread) -> list[str]:
    return p.call(p.component("deploy").wait_deployed(60), timeout=70)  # type: ignore[attr-defined]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_entry_reload_under_a_steady_client_fails_no_request(tmp_path: Path) -> None:
    folder = write_service(tmp_path / "gw", version="1")
    wanted = free_port()
    svc = ServiceConfig(name="gateway", path="gw", port=wanted, drain=0.6, readiness={"http": "/healthz"})
    with running_platform(tmp_path, components=["naming", "faults", "deploy"], services=[svc]) as p:
        assert deployed(p) == []
        dep = services(p)["gateway"]
        assert dep["front_port"] == wanted and dep["url"] == f"http://127.0.0.1:{wanted}"
        old_port = dep["instances"][0]["port"]
        assert old_port != wanted
        stop = threading.Event()
        seen: dict[str, int] = {}
        failures: list[str] = []

        def client() -> None:  # what a user's curl loop is: one address, a new connection per request
            with httpx.Client(timeout=5, limits=httpx.Limits(max_keepalive_connections=0)) as http:
                while not stop.is_set():
                    try:
                        answer = http.get(f"http://127.0.0.1:{wanted}/")
                        answer.raise_for_status()
                        version = answer.json()["version"]
                        seen[version] = seen.get(version, 0) + 1
                    except (httpx.HTTPError, ValueError) as exc:
                        failures.append(repr(exc))

        thread = threading.Thread(target=client)
        thread.start()
        try:
            wait_for(lambda: seen.get("1", 0) > 20, what="traffic", every=0.05)
            (folder / "VERSION").write_text("2\n")
            wait_for(lambda: events(p, kind="reloaded"), what="reload", every=0.05)
            wait_for(lambda: seen.get("2", 0) > 20, what="new version served", every=0.05)
        finally:
            stop.set()
            thread.join()
        assert failures == []
        assert services(p)["gateway"]["front_port"] == wanted
        assert services(p)["gateway"]["instances"][0]["port"] != old_port


def test_taken_port_while_down_moves_the_instance_behind_the_same_entry(tmp_path: Path) -> None:
    write_service(tmp_path / "svc")
    svc = ServiceConfig(name="web", path="svc", readiness={"http": "/healthz"}, restart=FAST_RESTART)
    with running_platform(tmp_path, components=["naming", "faults", "deploy"], services=[svc]) as p:
        assert deployed(p) == []
        dep = services(p)["web"]
        entry, inst = dep["front_port"], dep["instances"][0]
        squatter = socket.socket()
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            httpc.post(p.url() + f"/api/deploy/services/web/instances/{inst['name']}/stop").raise_for_status()

            def taken() -> bool:  # the stopped process's socket may close a moment after the stop answers
                try:
                    squatter.bind(("127.0.0.1", inst["port"]))
                except OSError:
                    return False
                return True

            wait_for(taken, timeout=10, what=f"the stopped instance's port {inst['port']} to be free to take")
            squatter.listen()
            moved = httpc.post(p.url() + f"/api/deploy/services/web/instances/{inst['name']}/start").json()
            assert moved["state"] == "ready" and moved["port"] != inst["port"]
            changed = events(p, kind="port_changed")
            assert changed and changed[0]["data"]["old_port"] == inst["port"]
            answer = wait_for(lambda: httpc.get(f"http://127.0.0.1:{entry}/").status_code == 200,
                              what="served at the entry", every=0.05)
            assert answer
        finally:
            squatter.close()
