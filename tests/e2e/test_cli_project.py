"""`devbox up/status/logs/down/init/schema` end to end: the real CLI as subprocesses, real services."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests import httpc
from tests.deploy_fakes import write_service

pytestmark = pytest.mark.e2e

#: Only the components these tests need, so other mocks' work in progress cannot break them.
COMPONENTS = "naming,deploy"
EPHEMERAL = """
platform:
  ports: {api: 0, otlp_http: 0, otlp_grpc: 0, zipkin: 0, polaris_grpc: 0, polaris_http: 0, prometheus: 0,
          alertmanager: 0}
"""


def devbox(*args: str, cwd: Path, timeout: float = 60, check: bool = False) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    env.pop("DEVBOX_API", None)
    result = subprocess.run([sys.executable, "-m", "devbox", *args], cwd=cwd, capture_output=True, text=True,
                            timeout=timeout, env=env)
    if check and result.returncode != 0:
        raise AssertionError(f"devbox {' '.join(args)} -> {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


def project(tmp_path: Path, services: str, *, platform: str = EPHEMERAL) -> Path:
    (tmp_path / "devbox.yaml").write_text(f"project: e2e\n{platform}\nservices:\n{services}")
    return tmp_path


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_gone(pids: list[int], timeout: float = 15) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = [p for p in pids if alive(p)]
        if not left:
            return []
        time.sleep(0.05)
    return [p for p in pids if alive(p)]


def read_line(stream: Any, timeout: float = 30) -> str:
    """The next line of a subprocess pipe, without its newline; fails instead of hanging."""
    ready, _, _ = select.select([stream], [], [], timeout)
    assert ready, f"no output within {timeout}s"
    return bytes(stream.readline()).decode().rstrip("\n")


def instance_pids(status: dict[str, Any]) -> list[int]:
    return [i["pid"] for d in status["services"] for i in d["instances"] if i["pid"]]


HELLO = """  - name: hello
    path: svc
    replicas: 2
    readiness: {http: /healthz}
    tags: {env: base}
"""


def test_up_detach_status_logs_down(tmp_path: Path) -> None:
    write_service(tmp_path / "svc")
    root = project(tmp_path, HELLO)
    up = devbox("up", "--detach", "--components", COMPONENTS, cwd=root)
    assert up.returncode == 0, up.stdout + up.stderr
    runtime = json.loads((root / ".devbox" / "platform.json").read_text())
    pid = int((root / ".devbox" / "devbox.pid").read_text())
    try:
        assert runtime["pid"] == pid and alive(pid)
        status = json.loads(devbox("status", "--json", cwd=root, check=True).stdout)
        [dep] = status["services"]
        assert dep["service"] == "hello" and dep["ready"] == 2
        assert {i["state"] for i in dep["instances"]} == {"ready"} and all(i["healthy"] for i in dep["instances"])
        pids = instance_pids(status)
        answer = httpc.get(f"http://127.0.0.1:{dep['instances'][0]['port']}/").json()
        assert answer["instance"] == dep["instances"][0]["id"]

        logs = devbox("logs", "hello", cwd=root, check=True).stdout
        assert "hello-1 | fake service listening" in logs and "hello-2 | fake service listening" in logs
        one = devbox("logs", "hello", "--instance", "hello-2", "--grep", "listening", cwd=root, check=True).stdout
        assert one.strip().startswith("fake service listening on") and len(one.strip().splitlines()) == 1
        follow = subprocess.Popen([sys.executable, "-m", "devbox", "logs", "hello", "--follow", "-n", "1"], cwd=root,
                                  stdout=subprocess.PIPE, bufsize=0)  # unbuffered: select() sees every byte
        try:
            assert follow.stdout is not None
            # the past lines come first: once they are out, it is following from the files' ends
            assert read_line(follow.stdout).startswith("hello-1 | ")
            assert read_line(follow.stdout).startswith("hello-2 | ")
            httpc.post(runtime["api"] + "/api/deploy/services/hello/instances/hello-1/kill")
            assert read_line(follow.stdout).startswith("hello-1 | --- devbox: starting './start.sh'")
        finally:
            follow.terminate()
            follow.wait(10)

        events = httpc.get(runtime["api"] + "/api/deploy/events", params={"kind": "ready"}).json()["events"]
        assert len(events) == 2

        again = devbox("up", "--components", COMPONENTS, cwd=root)
        assert again.returncode == 2 and "already running" in again.stderr
    finally:
        down = devbox("down", cwd=root)
    assert down.returncode == 0 and "stopped" in down.stdout
    assert not alive(pid)
    assert wait_gone(pids) == []
    assert not (root / ".devbox" / "platform.json").exists()
    assert devbox("status", cwd=root).returncode == 3


def test_ctrl_c_stops_everything_with_no_orphans(tmp_path: Path) -> None:
    write_service(tmp_path / "svc")
    (tmp_path / "svc" / "start.sh").write_text(
        # a start.sh that forks its server (no exec) and a grandchild: the process group catches all
        f"#!/bin/sh\nsleep 300 &\n{sys.executable} server.py\n"
    )
    root = project(tmp_path, HELLO)
    proc = subprocess.Popen([sys.executable, "-m", "devbox", "up", "--components", COMPONENTS], cwd=root,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "service(s) ready" in line:
                break
        assert any("platform ready in" in line for line in lines), lines
        runtime = json.loads((root / ".devbox" / "platform.json").read_text())
        status = httpc.get(runtime["api"] + "/api/deploy/services").json()
        pgids = instance_pids(status)
        members = [int(p) for p in os.listdir("/proc") if p.isdigit() and _pgid(int(p)) in pgids]
        assert len(members) >= 4  # 2 x (sh, sleep, python)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert wait_gone(members) == []
    assert not (root / ".devbox" / "platform.json").exists()


@pytest.mark.parametrize("rich", [False, True], ids=["plain", "rich"])
def test_a_reader_that_goes_away_costs_the_lines_not_the_shutdown(tmp_path: Path, rich: bool) -> None:
    """`devbox up | head -1`: the pipe closes after the first line; the platform keeps running, and
    Ctrl-C still stops its services and removes its runtime file (a write to the closed pipe raised
    BrokenPipeError, which skipped both). Also with rich forced on (TTY_INTERACTIVE=1: the live
    table), whose own answer to a broken pipe is to exit the process."""
    write_service(tmp_path / "svc")
    root = project(tmp_path, HELLO)
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE")}
    if rich:
        env["TTY_INTERACTIVE"] = "1"
    proc = subprocess.Popen([sys.executable, "-m", "devbox", "up", "--components", COMPONENTS], cwd=root,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        assert proc.stdout is not None
        assert "platform ready in" in read_line(proc.stdout)
        proc.stdout.close()  # the reader goes: every later line (events, "ready", "stopping…") hits a closed pipe
        runtime = json.loads((root / ".devbox" / "platform.json").read_text())
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status = httpc.get(runtime["api"] + "/api/deploy/services").json()
            if [i["state"] for d in status["services"] for i in d["instances"]] == ["ready", "ready"]:
                break
            time.sleep(0.05)
        pids = instance_pids(status)
        assert len(pids) == 2 and proc.poll() is None
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
        stderr = proc.stderr.read().decode() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr, stderr
    assert wait_gone(pids) == []
    assert not (root / ".devbox" / "platform.json").exists()


def test_devbox_killed_outright_leaves_instances_that_down_reaps(tmp_path: Path) -> None:
    write_service(tmp_path / "svc")
    # no exec: the server is a grandchild that outlives sh when devbox is SIGKILLed
    (tmp_path / "svc" / "start.sh").write_text(f"#!/bin/sh\n{sys.executable} server.py\n")
    root = project(tmp_path, HELLO)
    assert devbox("up", "-d", "--no-reload", "--components", COMPONENTS, cwd=root).returncode == 0
    runtime = json.loads((root / ".devbox" / "platform.json").read_text())
    status = httpc.get(runtime["api"] + "/api/deploy/services").json()
    members = [int(p) for p in os.listdir("/proc") if p.isdigit() and _pgid(int(p)) in instance_pids(status)]
    os.kill(runtime["pid"], signal.SIGKILL)
    assert wait_gone([runtime["pid"]]) == []
    assert [p for p in members if alive(p)]  # orphans, until:
    result = devbox("down", cwd=root)
    assert "leftover instance process" in result.stderr and "nothing to stop" in result.stdout
    assert wait_gone(members) == []


def test_devbox_killed_outright_takes_an_execing_instance_with_it(tmp_path: Path) -> None:
    # start.sh execs its server (the convention): the server is the process devbox spawned, which
    # Linux kills when devbox dies (a scenario run killed at its timeout left whole shops running)
    write_service(tmp_path / "svc")
    root = project(tmp_path, HELLO)
    assert devbox("up", "-d", "--no-reload", "--components", COMPONENTS, cwd=root).returncode == 0
    runtime = json.loads((root / ".devbox" / "platform.json").read_text())
    status = httpc.get(runtime["api"] + "/api/deploy/services").json()
    members = [int(p) for p in os.listdir("/proc") if p.isdigit() and _pgid(int(p)) in instance_pids(status)]
    assert members
    os.kill(runtime["pid"], signal.SIGKILL)
    assert wait_gone([runtime["pid"], *members]) == []
    devbox("down", cwd=root)  # the stale platform.json


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


@pytest.mark.parametrize(
    ("services", "code", "message"),
    [
        ("  - name: a\n    path: svc\n    colour: red\n", 2, "colour: unknown key (allowed: name, path"),
        ("  - name: a\n    path: empty\n", 2, "service a: start script ./start.sh not found"),
        ("  - name: a\n    path: svc\n    build: \"echo compiling; echo 'error: no such module' >&2; exit 3\"\n",
         1, "error: no such module"),
        ("  - name: a\n    path: svc\n    env: {FAKE_UNREADY: '1'}\n    readiness: {http: /healthz, timeout: 1}\n",
         1, "not ready after 1s"),
    ],
    ids=["unknown-key", "missing-start-sh", "build-fails", "never-ready"],
)
def test_failed_up_says_why_and_leaves_nothing_running(tmp_path: Path, services: str, code: int, message: str) -> None:
    write_service(tmp_path / "svc")
    (tmp_path / "empty").mkdir()
    root = project(tmp_path, services)
    result = devbox("up", "--components", COMPONENTS, cwd=root)
    assert result.returncode == code, result.stdout + result.stderr
    assert message in result.stderr, result.stderr
    if code == 2 and "start script" not in message:
        assert "devbox.yaml:" in result.stderr  # file and line
    if "not ready" in message:
        assert "fake service listening" in result.stderr
    assert not (root / ".devbox" / "platform.json").exists()
    leftovers = [p for p in os.listdir("/proc") if p.isdigit() and _cwd(int(p)) == tmp_path / "svc"]
    assert leftovers == []


def _cwd(pid: int) -> Path | None:
    try:
        return Path(os.readlink(f"/proc/{pid}/cwd"))
    except OSError:
        return None


def test_taken_port_is_reported_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        root = project(tmp_path, "  []\n", platform=f"platform:\n  ports: {{api: {port}, polaris_http: 0}}\n")
        result = devbox("up", "--components", COMPONENTS, cwd=root)
        assert result.returncode == 2
        assert f"api: port {port} on 127.0.0.1 is taken" in result.stderr
        assert "held by" not in result.stderr  # not a devbox's
        # a devbox's (its machine-wide card says so): named, with the command that stops it
        cards = tmp_path / "cache" / "devbox" / "running"
        cards.mkdir(parents=True)
        (cards / f"{os.getpid()}.json").write_text(json.dumps({
            "pid": os.getpid(), "project": "shop", "config": "/src/shop/devbox.yaml",
            "listeners": {"api": ["127.0.0.1", port]}}))
        result = devbox("up", "--components", COMPONENTS, cwd=root)
    assert result.returncode == 2
    said = " ".join(result.stderr.split())
    assert "held by the devbox of project shop" in said and "`devbox down -f /src/shop/devbox.yaml`" in said, said
    assert not (root / ".devbox" / "platform.json").exists()


def test_init_writes_a_project_that_comes_up(tmp_path: Path) -> None:
    result = devbox("init", "demo", cwd=tmp_path, check=True)
    root = tmp_path / "demo"
    assert "wrote" in result.stdout and os.access(root / "hello" / "start.sh", os.X_OK)
    assert devbox("init", "demo", cwd=tmp_path).returncode == 2  # no silent overwrite
    text = (root / "devbox.yaml").read_text()
    assert text.startswith("# devbox.yaml")
    (root / "devbox.yaml").write_text(text + EPHEMERAL)
    try:
        up = devbox("up", "-d", "--no-reload", "--components", COMPONENTS, cwd=root)
        assert up.returncode == 0, up.stdout + up.stderr
        status = json.loads(devbox("status", "--json", cwd=root, check=True).stdout)
        [dep] = status["services"]
        assert dep["service"] == "hello" and dep["ready"] == 1 and dep["reload"] is False
        answer = httpc.get(f"http://127.0.0.1:{dep['instances'][0]['port']}/").json()
        assert answer["hello"] == "world" and answer["tags"] == "env=base"
    finally:
        devbox("down", cwd=root)


def test_schema_is_json_schema_of_the_config(tmp_path: Path) -> None:
    schema = json.loads(devbox("schema", cwd=tmp_path, check=True).stdout)
    service = schema["$defs"]["ServiceConfig"]["properties"]
    assert {"name", "path", "build", "start", "replicas", "readiness", "register", "restart"} <= set(service)


def _maps_grpc(pid: int) -> bool:
    """Whether grpc's native library is mapped into process ``pid``."""
    return "cygrpc" in Path(f"/proc/{pid}/maps").read_text()


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads /proc/PID/maps (Linux)")
def test_an_idle_platform_loads_grpc_only_when_a_grpc_client_connects(tmp_path: Path) -> None:
    """grpc (~13 MB with its server) is loaded by a gRPC listener's first bytes: `devbox up` of an
    empty project with every component serves without it, a port probe that only connects leaves it
    unloaded, and a Polaris call then gets its answer."""
    import grpc
    from devbox.mocks.naming.polaris_pb import protos

    root = project(tmp_path, "  []\n")
    assert devbox("up", "-d", cwd=root).returncode == 0
    try:
        runtime = json.loads((root / ".devbox" / "platform.json").read_text())
        assert not _maps_grpc(runtime["pid"])
        listeners = httpc.get(runtime["api"] + "/api/platform").json()["listeners"]
        for name in ("polaris_grpc", "otlp_grpc"):
            socket.create_connection(("127.0.0.1", listeners[name]["port"]), timeout=30).close()
        httpc.get(runtime["api"] + "/healthz")  # answered after the probes' connections were handled
        assert not _maps_grpc(runtime["pid"])
        pb = protos()
        with grpc.insecure_channel(f"127.0.0.1:{listeners['polaris_grpc']['port']}") as channel:
            answer = pb.grpcapi.PolarisGRPCStub(channel).RegisterInstance(pb.service.Instance(
                service={"value": "lazy"}, namespace={"value": "default"}, host={"value": "127.0.0.1"},
                port={"value": 9000}), timeout=30)
        assert answer.code.value == 200000
        assert _maps_grpc(runtime["pid"])
    finally:
        devbox("down", cwd=root)
