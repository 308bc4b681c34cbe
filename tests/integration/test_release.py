"""Gray release in batches on a real platform with fake services: weights, retire, rollback, bad input."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import httpx
from devbox.mocks.deploy.config import ServiceConfig

from devbox.testing import PlatformThread, running_platform, wait_for
from tests import httpc
from tests.deploy_fakes import write_service
from tests.integration.test_entry_port import deployed, events, services

COMPONENTS = ["naming", "faults", "deploy"]


def release(p: PlatformThread, **body: Any) -> httpx.Response:
    return httpc.post(p.url() + "/api/deploy/releases", json=body)


def current(p: PlatformThread) -> dict[str, Any]:
    return httpc.get(p.url() + "/api/deploy/releases/current").json()


def test_release_shifts_by_weight_and_retires_the_old_version_with_no_failed_entry_request(tmp_path: Path) -> None:
    write_service(tmp_path / "svc")
    svc = ServiceConfig(name="web", path="svc", replicas=2, drain=0.3, readiness={"http": "/healthz"})
    with running_platform(tmp_path, components=COMPONENTS, services=[svc]) as p:
        assert deployed(p) == []
        entry = services(p)["web"]["front_port"]
        stop, failures, tags = threading.Event(), [], []

        def client() -> None:
            with httpx.Client(timeout=5) as http:
                while not stop.is_set():
                    try:
                        answer = http.get(f"http://127.0.0.1:{entry}/")
                        answer.raise_for_status()
                        tags.append(answer.json()["tags"])
                    except (httpx.HTTPError, ValueError) as exc:
                        failures.append(repr(exc))

        thread = threading.Thread(target=client)
        thread.start()
        try:
            started = release(p, service="web", version="v2", batches=[50, 100], pause=0.5)
            assert started.status_code == 202, started.text
            assert started.json()["traffic"]["method"] == "instance weights"
            done = wait_for(lambda: current(p)["state"] in ("succeeded", "rolled_back", "failed"),
                            what="release done", every=0.05)
            assert done
        finally:
            stop.set()
            thread.join()
        rel = current(p)
        assert rel["state"] == "succeeded", rel
        assert failures == []
        assert any("version=v2" in t for t in tags) and any("version=v2" not in t for t in tags)
        dep = services(p)["web"]
        assert "web@release" not in services(p)
        assert dep["tags"]["version"] == "v2" and dep["ready"] == 2
        assert all(i["weight"] == 100 for i in dep["instances"])
        assert len(rel["switch_seconds"]) == 2
        kinds = [e["kind"] for e in events(p, service="web")]
        assert kinds.count("release_batch") == 2 and "release_done" in kinds
        history = httpc.get(p.url() + "/api/deploy/releases").json()["history"]
        assert history[0]["id"] == rel["id"]


def test_bad_input_rollback_by_request_and_an_interrupted_release(tmp_path: Path) -> None:
    write_service(tmp_path / "svc")
    svc = ServiceConfig(name="web", path="svc", drain=0.2, readiness={"http": "/healthz"})
    with running_platform(tmp_path, components=COMPONENTS, services=[svc]) as p:
        assert deployed(p) == []
        bad = release(p, service="web", gates=["success_rate<<3"])
        assert bad.status_code == 400 and "not understood" in bad.json()["reason"]
        bad = release(p, service="web", gates=["NoSuchRule"])
        assert bad.status_code == 400 and "alerting" in bad.json()["reason"]
        assert release(p, service="nope").status_code == 404
        assert release(p, service="web", batches=[50, 20]).status_code == 400
        assert release(p, service="web", batches=[10, 100], pause=60).status_code == 202
        second = release(p, service="web", version="v3")
        assert second.status_code == 409 and "wait for it" in second.json()["reason"]
        wait_for(lambda: current(p)["batch"] == 0, what="batch 1", every=0.05)
        assert httpc.post(p.url() + "/api/deploy/releases/current/pause").json()["state"] == "paused"
        rolled = httpc.post(p.url() + "/api/deploy/releases/current/rollback", timeout=30).json()
        assert rolled["state"] == "rolled_back" and "rollback requested" in rolled["reason"]
        dep = services(p)["web"]
        assert "web@release" not in services(p) and dep["instances"][0]["weight"] == 100
        # a platform that dies mid-release: the state file says what happened, rollback closes it
        assert release(p, service="web", batches=[10, 100], pause=60).status_code == 202
        wait_for(lambda: current(p)["batch"] == 0, what="batch 1 again", every=0.05)
    state = json.loads((tmp_path / ".devbox" / "releases.json").read_text()) if (
        tmp_path / ".devbox" / "releases.json").exists() else None
    with running_platform(tmp_path, components=COMPONENTS, services=[svc]) as p:
        assert deployed(p) == []
        rel = current(p)
        assert rel["state"] == "interrupted" and "rollback" in rel["explain"], (rel, state)
        assert release(p, service="web").status_code == 409
        rolled = httpc.post(p.url() + "/api/deploy/releases/current/rollback").json()
        assert rolled["state"] == "rolled_back"
