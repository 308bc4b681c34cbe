"""The real polaris-java SDK (Maven Central, ``com.tencent.polaris:polaris-all``) against devbox's
Polaris gRPC port: a second real client beside polaris-go (issue 13).

The probe in ``tests/peers/polaris-java/`` (one ``Main.java``) registers an instance with a TTL and
heartbeats it, discovers the service until the instance is healthy, picks one instance, picks with
caller arguments (so the routing rule decides), then deregisters and waits until its consumer no
longer sees the instance. It prints one JSON line per step. ``--hold`` makes it stop before the
deregister until the test has read devbox's console.

Building: ``mvn -o`` when ``make install`` has pre-fetched the artifacts into ``~/.m2``, otherwise
one online ``dependency:go-offline`` first (bounded by ``FETCH_TIMEOUT``); the build is kept under
``build/peers/polaris-java/<hash of the probe's sources>`` so later runs start the JVM at once. The
test skips, saying why, only when ``mvn``/``java`` are absent or Maven Central cannot give the
artifacts; a compile error fails it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from devbox.polaris.routing import multi_env_rule
from devbox.testing import PlatformThread, running_platform, wait_for
from tests import httpc
from tests.integration.test_naming_polaris_fidelity import TWO_SUB_RULES

PROBE_SRC = Path(__file__).resolve().parents[1] / "peers" / "polaris-java"
# Built once per content of the probe's sources, kept between runs (build/ is not in git).
BUILD_ROOT = Path(__file__).resolve().parents[2] / "build" / "peers" / "polaris-java"
FETCH_TIMEOUT = 420  # s: a cold ~/.m2 downloads polaris-all (~40 MB) and Maven's plugins once
BUILD_TIMEOUT = 240  # s: compiling one file offline; ~30 s on a loaded 2-core box
# The JVM's C2 compiler and parallel GC only cost CPU in a run this short, on a shared 2-core box.
JAVA_OPTS = ["-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC"]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(FETCH_TIMEOUT + 2 * BUILD_TIMEOUT + 60)]


@dataclass(frozen=True)
class Probe:
    java: str
    classpath: str

    def command(self, addr: str, *args: str) -> list[str]:
        return [self.java, *JAVA_OPTS, "-cp", self.classpath, "devbox.peers.Main", "--addr", addr, *args]


def _mvn(mvn: str, build: Path, *goals: str, offline: bool, timeout: float) -> subprocess.CompletedProcess[str]:
    cmd = [mvn, "-B", "-q", *(["-o"] if offline else []), "-f", str(PROBE_SRC / "pom.xml"),
           f"-Dprobe.build={build}", *goals]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        pytest.fail(f"`{' '.join(cmd)}` did not finish in {timeout:g} s (no answer is not a 'no'):\n{out[-2000:]}")


def _sources_key() -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in PROBE_SRC.rglob("*") if p.is_file() and "target" not in p.parts):
        digest.update(str(path.relative_to(PROBE_SRC)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def _cached(build: Path, java: str) -> Probe | None:
    classpath_file = build / "classpath.txt"
    if not (build / "classes" / "devbox" / "peers" / "Main.class").is_file() or not classpath_file.is_file():
        return None
    jars = classpath_file.read_text().strip()
    if not all(Path(jar).is_file() for jar in jars.split(":")):  # ~/.m2 was emptied since
        return None
    return Probe(java, f"{build / 'classes'}:{jars}")


@pytest.fixture(scope="module")
def probe() -> Probe:
    mvn, java = shutil.which("mvn"), shutil.which("java")
    if mvn is None or java is None:
        pytest.skip("mvn or java is not installed: the polaris-java real-client test cannot build its probe")
    build = BUILD_ROOT / _sources_key()
    cached = _cached(build, java)
    if cached is not None:
        return cached
    shutil.rmtree(build, ignore_errors=True)
    goals = ("compile", "dependency:build-classpath", f"-Dmdep.outputFile={build / 'classpath.txt'}")
    done = _mvn(mvn, build, *goals, offline=True, timeout=BUILD_TIMEOUT)
    if done.returncode != 0:  # not pre-fetched by `make install`: fetch once into ~/.m2
        fetched = _mvn(mvn, build, "dependency:go-offline", offline=False, timeout=FETCH_TIMEOUT)
        if fetched.returncode != 0:
            pytest.skip("Maven Central could not give polaris-java's artifacts:\n"
                        + (fetched.stdout + fetched.stderr)[-2000:])
        done = _mvn(mvn, build, *goals, offline=True, timeout=BUILD_TIMEOUT)
    assert done.returncode == 0, f"building the polaris-java probe failed:\n{(done.stdout + done.stderr)[-4000:]}"
    built = _cached(build, java)
    assert built is not None, f"mvn succeeded but left no probe under {build}"
    return built


class Run:
    """One probe process: its JSON lines by step, read as they come."""

    def __init__(self, probe: Probe, platform: PlatformThread, workdir: Path, *args: str) -> None:
        workdir.mkdir()
        self.stderr_path = workdir / "stderr.txt"
        self._stderr = self.stderr_path.open("w")
        self.proc = subprocess.Popen(
            probe.command(platform.target("polaris_grpc"), "--workdir", str(workdir), *args),
            cwd=workdir, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, text=True,
        )
        self.steps: dict[str, dict[str, Any]] = {}

    def read_until(self, step: str) -> dict[str, Any]:
        """Read lines until ``step`` (the probe bounds each of its waits, so this ends)."""
        assert self.proc.stdout is not None
        while step not in self.steps:
            line = self.proc.stdout.readline()
            if not line:
                self.proc.wait(timeout=30)
                raise AssertionError(f"probe ended (exit {self.proc.returncode}) before {step!r}; "
                                     f"steps {self.steps}\n{self.stderr_path.read_text()[-4000:]}")
            seen = json.loads(line)
            self.steps[seen.pop("step")] = seen
            assert "error" not in self.steps, f"{self.steps}\n{self.stderr_path.read_text()[-4000:]}"
        return self.steps[step]

    def release(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()

    def finish(self) -> None:
        self.read_until("gone")
        assert self.proc.wait(timeout=30) == 0, self.stderr_path.read_text()[-4000:]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._stderr.close()


def _console_instances(platform: PlatformThread, service: str) -> dict[str, dict[str, Any]]:
    r = httpc.get(platform.url("polaris_http") + "/naming/v1/instances",
                  params={"service": service, "namespace": "default"})
    assert r.status_code == 200, r.text
    return {f"{i['host']}:{i['port']}": i for i in r.json().get("instances", [])}


def _others(platform: PlatformThread, service: str) -> None:
    r = httpc.post(platform.url("polaris_http") + "/naming/v1/instances", json=[
        {"service": service, "namespace": "default", "host": "127.0.0.2", "port": 18081, "metadata": {"env": "base"}},
        {"service": service, "namespace": "default", "host": "127.0.0.3", "port": 18082,
         "metadata": {"env": "feature-x"}},
    ])
    assert r.json()["code"] == 200000, r.text


def test_polaris_java_registers_heartbeats_routes_and_deregisters(probe: Probe, tmp_path: Path) -> None:
    service = "java-provider"
    with running_platform(tmp_path, components=["naming"]) as platform:
        changes: list[tuple[str, str]] = []
        platform.platform.events.instance_changed.add_listener(  # type: ignore[union-attr]
            lambda **kw: changes.append((kw["instance_id"], kw["change"]))
        )
        _others(platform, service)
        # the feature-env rule with a base fallback, as two v2 sub-rules posted on the console
        rule = json.loads(json.dumps(TWO_SUB_RULES).replace("go-provider", service))
        r = httpc.post(platform.url("polaris_http") + "/naming/v2/routings", json=[rule])
        assert r.json()["code"] == 200000, r.text

        run = Run(probe, platform, tmp_path / "run", "--service", service, "--port", "18080", "--expect", "3",
                  "--wait", "30", "--route-values", "feature-x,other", "--hold", "1")
        try:
            registered = run.read_until("register")
            java_id = registered["instance_id"]
            assert registered["exists"] is False
            seen = run.read_until("discover")
            assert seen["all"] == ["127.0.0.1:18080", "127.0.0.2:18081", "127.0.0.3:18082"]
            assert seen["healthy"] == 3
            # what the SDK sent came back whole through Discover
            assert seen["self"] == {"id": java_id, "healthy": True, "weight": 100, "protocol": "http",
                                    "version": "1.0.0", "metadata": {"env": "java"}}
            # polaris-java runs its rule router only for a request that names its caller (unlike
            # polaris-go, which routes even a plain GetInstances): devbox sends every instance, the
            # client decides
            one = run.read_until("one")
            assert one["instances"] == seen["all"] and one["one"] in seen["all"]
            # env=feature-x matches sub-rule 1 (the feature instance); anything else sub-rule 2 (base)
            assert run.read_until("routed")["routed"] == {"feature-x": ["127.0.0.3:18082"],
                                                          "other": ["127.0.0.2:18081"]}

            run.read_until("hold")
            # devbox's console shows the SDK's instance as Polaris would: the id Polaris derives,
            # heartbeat-checked with the TTL the SDK asked for, healthy because heartbeats arrive
            listed = _console_instances(platform, service)["127.0.0.1:18080"]
            assert listed["id"] == java_id
            assert listed["healthy"] is True and listed["isolate"] is False
            assert listed["enable_health_check"] is True
            assert listed["health_check"]["heartbeat"]["ttl"] == 2
            assert (listed["protocol"], listed["version"], listed["metadata"]) == ("http", "1.0.0", {"env": "java"})
            run.release()
            done = run.read_until("deregister")
            assert done["result"] == "ok" and done["heartbeats"] >= 1 and done["heartbeat_error"] is None
            run.finish()
        finally:
            run.close()
        assert run.steps["gone"]["all"] == ["127.0.0.2:18081", "127.0.0.3:18082"]
        # register, the first heartbeat (unhealthy -> healthy) and the deregister all reached devbox
        assert [c for i, c in changes if i == java_id][:2] == ["registered", "healthy"]
        assert (java_id, "deregistered") in changes
        assert sorted(_console_instances(platform, service)) == ["127.0.0.2:18081", "127.0.0.3:18082"]


def test_polaris_java_follows_devbox_multi_env_rule(probe: Probe, tmp_path: Path) -> None:
    """devbox's own multi-environment rule (a PARAMETER destination label, then ``IN base,``) as
    polaris-java reads it: env=X goes to X's instances, an env without instances to base."""
    service = "java-multi-env"
    with running_platform(tmp_path, components=["naming"]) as platform:
        _others(platform, service)
        rule = multi_env_rule(service=service).model_dump(mode="json")
        registry = platform.component("naming").registry  # type: ignore[attr-defined]

        async def put_rule() -> None:
            registry.put_rule(rule)

        platform.call(put_rule())
        run = Run(probe, platform, tmp_path / "run", "--service", service, "--port", "18090", "--expect", "3",
                  "--wait", "30", "--route-values", "feature-x,nowhere")
        try:
            assert run.read_until("routed")["routed"] == {"feature-x": ["127.0.0.3:18082"],
                                                          "nowhere": ["127.0.0.2:18081"]}
            run.finish()
        finally:
            run.close()
        wait_for(lambda: "127.0.0.1:18090" not in _console_instances(platform, service), 10,
                 "the probe's instance to leave devbox's registry")
