"""Gray release gates and modes on one platform with tracing, metrics and alerting (the gates' data):
a slow new version fails ``p99>1.2x``, an alert rule on the new version's errors fails its gate, an
in-place release never runs more instances than before and fails no entry request, a paused release
stands still until resumed, and a service declared but not up is refused with a clear 4xx.

The fake services are uninstrumented: the fault proxy in front of each instance makes their SERVER
spans, tagged with the instance's version, from which metrics derives ``rpc_server_*{version=...}``.
One platform serves the whole module (releases run one at a time, each test with its own version).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from devbox.mocks.deploy.config import ServiceConfig

from devbox.config import ProjectConfig
from devbox.testing import PlatformThread, running_platform, wait_for
from tests import httpc
from tests.deploy_fakes import write_service
from tests.integration.test_entry_port import deployed, services

FINAL = ("succeeded", "rolled_back", "failed")
ALERT = "WebNewVersionErrors"
#: Any failed call of the broken version (v-broken) fires: the rule watches the new version alone.
RULES = {"name": "release", "rules": [{
    "alert": ALERT,
    "expr": 'sum(rpc_server_requests_total{callee="web",version="v-broken",status!="ok"}) > 0',
    "annotations": {"summary": "web v-broken fails calls"},
}]}


class EntryClient:
    """A steady client of one entry port (a new connection per request, as a curl loop); counts failures."""

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}/"
        self.stop = threading.Event()
        self.answers = 0
        self.failures: list[str] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=5, limits=httpx.Limits(max_keepalive_connections=0)) as http:
            while not self.stop.is_set():
                try:
                    answer = http.get(self.url)
                    if answer.status_code != 200:
                        self.failures.append(f"{answer.status_code} {answer.text[:200]}")
                    self.answers += 1
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))

    def __enter__(self) -> EntryClient:
        self.thread.start()
        wait_for(lambda: self.answers > 5, 20, "first answers at the entry")
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(10)


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatformThread]:
    root = tmp_path_factory.mktemp("release-gates")
    write_service(root / "svc")
    web = ServiceConfig(name="web", path="svc", replicas=2, drain=0.3, readiness={"http": "/healthz"})
    idle = ServiceConfig(name="idle", path="svc", replicas=0, readiness={"http": "/healthz"})
    config = ProjectConfig.for_tests(root, services=[web, idle], alerting={"interval": 0.2, "groups": [RULES]})
    with running_platform(config=config, components=["naming", "tracing", "metrics", "alerting", "deploy",
                                                     "faults"]) as p:
        assert deployed(p) == []
        yield p


def start(p: PlatformThread, **body: Any) -> dict[str, Any]:
    answer = httpc.post(p.url() + "/api/deploy/releases", json=body, timeout=30)
    assert answer.status_code == 202, answer.text
    return dict(answer.json())


def current(p: PlatformThread) -> dict[str, Any]:
    return dict(httpc.get(p.url() + "/api/deploy/releases/current").json())


def finished(p: PlatformThread, timeout: float = 60) -> dict[str, Any]:
    return wait_for(lambda: (rel := current(p))["state"] in FINAL and rel, timeout, "the release to finish")


def live_instances(p: PlatformThread) -> int:
    return sum(1 for key, dep in services(p).items() if key.startswith("web")
               for inst in dep["instances"] if inst["state"] not in ("stopped", "failed"))


@pytest.mark.slow  # 5-8 s of real processes: left out of make test-quick
def test_a_slow_new_version_fails_the_p99_gate_and_is_rolled_back_with_the_numbers(platform: PlatformThread) -> None:
    entry = services(platform)["web"]["front_port"]
    with EntryClient(entry):
        start(platform, service="web", version="v-slow", env={"FAKE_LATENCY": "0.25"}, batches=[50, 100],
              pause=40, gates=["p99>1.2x"])
        rel = finished(platform)
    assert rel["state"] == "rolled_back", rel
    failed = rel["gate_failed"]
    assert failed["gate"] == "p99>1.2x" and failed["kind"] == "p99" and failed["ok"] is False, failed
    assert failed["p99_seconds"] >= 0.2 and failed["p99_seconds"] > 1.2 * failed["old_p99_seconds"], failed
    assert "p99 of v-slow" in rel["reason"] and "rolled back because" in rel["reason"]
    assert rel["percent"] == 50 and len(rel["switch_seconds"]) == 1  # judged at the first batch
    dep = services(platform)["web"]
    assert "web@release" not in services(platform)
    assert dep["tags"].get("version") != "v-slow" and all(i["weight"] == 100 for i in dep["instances"])


def test_an_alert_rule_on_the_new_versions_errors_fires_and_rolls_back_naming_the_rule(
        platform: PlatformThread) -> None:
    entry = services(platform)["web"]["front_port"]
    with EntryClient(entry):
        start(platform, service="web", version="v-broken", env={"FAKE_ERROR_RATE": "1"}, batches=[10, 100],
              pause=40, gates=[ALERT])
        rel = finished(platform)
    assert rel["state"] == "rolled_back", rel
    assert rel["gate_failed"]["gate"] == ALERT and rel["gate_failed"]["kind"] == "alert", rel["gate_failed"]
    assert f"alert {ALERT} is firing" in rel["reason"], rel["reason"]
    kinds = [s["kind"] for s in rel["steps"]]
    assert kinds.index("release_gate") < kinds.index("release_rolled_back")
    assert "web@release" not in services(platform)


def test_in_place_release_adds_no_capacity_and_fails_no_entry_request(platform: PlatformThread) -> None:
    before = live_instances(platform)
    entry = services(platform)["web"]["front_port"]
    counts: list[int] = []
    with EntryClient(entry) as client:
        start(platform, service="web", version="v-inplace", batches=[50, 100], pause=0.5, in_place=True)
        rel = wait_for(lambda: (counts.append(live_instances(platform)) or current(platform)["state"] in FINAL)
                       and current(platform), 90, "the in-place release to finish")
    assert rel["state"] == "succeeded", rel
    assert before == 2 and max(counts) <= before, counts
    assert client.failures == [] and client.answers > 0
    dep = services(platform)["web"]
    assert dep["tags"]["version"] == "v-inplace" and dep["ready"] == 2 and "web@release" not in services(platform)


@pytest.mark.slow  # 5-8 s of real processes: left out of make test-quick
def test_a_paused_release_stands_still_until_resumed(platform: PlatformThread) -> None:
    start(platform, service="web", version="v-resumed", batches=[50, 100], pause=2)
    wait_for(lambda: current(platform)["batch"] == 0, 60, "the first batch")
    paused = httpc.post(platform.url() + "/api/deploy/releases/current/pause").json()
    assert paused["state"] == "paused" and "resume" in paused["explain"]
    assert current(platform)["state"] == "paused"
    resumed = httpc.post(platform.url() + "/api/deploy/releases/current/resume").json()
    assert resumed["state"] == "running"
    rel = finished(platform)
    assert rel["state"] == "succeeded", rel
    steps = rel["steps"]
    at = {s["kind"]: s["ts"] for s in steps}
    # nothing moved between the pause and the resume: no batch switched, the release did not finish
    assert not [s for s in steps if s["kind"] in ("release_batch", "release_done")
                and at["release_paused"] < s["ts"] < at["release_resumed"]], steps
    assert at["release_done"] > at["release_resumed"]
    assert services(platform)["web"]["tags"]["version"] == "v-resumed"


def test_a_service_declared_but_not_up_is_refused_clearly(platform: PlatformThread) -> None:
    answer = httpc.post(platform.url() + "/api/deploy/releases", json={"service": "idle"})
    assert 400 <= answer.status_code < 500, answer.text
    reason = answer.json()["reason"]
    assert "idle" in reason and "not up" in reason, reason
    nope = httpc.post(platform.url() + "/api/deploy/releases", json={"service": "nope"})
    assert nope.status_code == 404 and "not up" in nope.json()["reason"]


def test_a_gate_that_saw_no_calls_holds_the_batch_instead_of_promoting(platform: PlatformThread) -> None:
    # no client: v-quiet gets no call, so `success_rate<99` cannot judge; the batch is held, not promoted
    start(platform, service="web", version="v-quiet", batches=[50, 100], pause=0.5, gates=["success_rate<99"])
    held = wait_for(lambda: (rel := current(platform))["state"] == "paused" and rel, 60, "the release held")
    assert held["percent"] == 50, held
    [step] = [s for s in held["steps"] if s["message"].startswith("held at 50%")]
    assert "gate success_rate<99 not judged: 0 calls of v-quiet" in step["message"], step
    assert "devbox release resume" in step["message"], step
    answer = httpc.post(platform.url() + "/api/deploy/releases/current/rollback", timeout=60)
    assert answer.status_code == 200, answer.text
    assert finished(platform)["state"] == "rolled_back"
