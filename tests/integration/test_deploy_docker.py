"""The Docker runner: against a real engine where one is reachable (skipped, saying so, elsewhere),
and its plumbing (docker CLI arguments, env, pause/unpause, rm on stop) against a stand-in ``docker``
executable that runs the container's command as a local process."""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path

import httpx
import pytest
from devbox.mocks.deploy import core
from devbox.mocks.deploy.config import ServiceConfig
from devbox.mocks.deploy.docker import engine_problem, image_tag, run_args

from devbox.testing import running_platform, wait_for
from tests.deploy_fakes import SERVER, write_service

FAKE_DOCKER = textwrap.dedent(
    f'''\
    #!{sys.executable}
    """Stand-in docker CLI: `run` execs `sh -c CMD` (or ./start.sh of the image's folder) locally."""
    import json, os, signal, sys
    from pathlib import Path
    state = Path(os.environ["FAKE_DOCKER_STATE"])
    state.mkdir(exist_ok=True)
    args = sys.argv[1:]
    with (state / "calls.jsonl").open("a") as fh:
        fh.write(json.dumps(args) + "\\n")
    cmd = args[0]
    if cmd == "version":
        print("fake-1.0")
    elif cmd == "run":
        env, name, i = dict(os.environ), None, 1
        while args[i].startswith("-"):
            flag = args[i]
            if flag in ("--rm", "--init"):
                i += 1
                continue
            value = args[i + 1]
            if flag == "-e":
                key, _, val = value.partition("=")
                env[key] = val
            elif flag == "--name":
                name = value
            i += 2
        image, command = args[i], args[i + 1:]
        (state / f"{{name}}.pid").write_text(str(os.getpid()))
        os.chdir(state / "images" / image.replace("/", "_").replace(":", "_"))
        os.execvpe(command[0] if command else "./start.sh", command or ["./start.sh"], env)
    elif cmd in ("pause", "unpause", "kill", "rm"):
        name = args[-1]
        pid_file = state / f"{{name}}.pid"
        if pid_file.exists():
            sig = {{"pause": "SIGSTOP", "unpause": "SIGCONT", "rm": "SIGKILL"}}.get(cmd) or args[2]
            try:
                os.kill(int(pid_file.read_text()), getattr(signal, sig))
            except ProcessLookupError:
                pass
            if cmd == "rm":
                pid_file.unlink()
    elif cmd == "build":
        tag = args[args.index("-t") + 1]
        folder = state / "images" / tag.replace("/", "_").replace(":", "_")
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("server.py", "start.sh", "VERSION"):
            (folder / name).write_bytes(Path(name).read_bytes())
        (folder / "start.sh").chmod(0o755)
    '''
)


def test_run_args_and_preflight(tmp_path: Path) -> None:
    args = run_args(image="shop/users:1", name="devbox-x-users-1", env={"PORT": "5000", "A": "b c"},
                    command=None, state_dir=tmp_path, mounts=[tmp_path / "run"])
    assert args[:9] == ["docker", "run", "--rm", "--init", "--name", "devbox-x-users-1", "--network", "host",
                        "--label"]
    assert args[9] == f"devbox.state={tmp_path}"
    assert ["-v", f"{tmp_path}/run:{tmp_path}/run:ro"] == args[10:12]
    assert args[12:] == ["-e", "A=b c", "-e", "PORT=5000", "shop/users:1"]
    assert run_args(image="i", name="n", env={}, command="./run.sh", state_dir=tmp_path, mounts=[])[-3:] == [
        "sh", "-c", "./run.sh"]
    assert image_tag("My Shop", "users") == "devbox/my-shop-users:dev"
    (tmp_path / "svc").mkdir()
    problems = core.preflight([ServiceConfig(name="a", path="svc", runtime="docker"),
                               ServiceConfig(name="b", path="svc", runtime="docker", image="python:3.11")], tmp_path)
    assert problems == [f"service a: runtime docker needs `image:` or a Dockerfile in {tmp_path / 'svc'}"]


def test_docker_runner_plumbing_with_a_stand_in_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(FAKE_DOCKER)
    (bin_dir / "docker").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_DOCKER_STATE", str(tmp_path / "docker"))
    folder = write_service(tmp_path / "svc")
    (folder / "Dockerfile").write_text("FROM python:3.11-slim\nCOPY . /app\nCMD [\"/app/start.sh\"]\n")
    svc = ServiceConfig(name="boxed", path="svc", runtime="docker", readiness={"http": "/healthz"}, drain=0.1,
                        reload=False, tags={"env": "base"})
    with running_platform(tmp_path, components=["naming", "deploy"], services=[svc], project="Box") as p:
        assert p.call(p.component("deploy").wait_deployed(30)) == []  # type: ignore[attr-defined]
        [inst] = httpx.get(p.url() + "/api/deploy/services").json()["services"][0]["instances"]
        assert httpx.get(f"http://127.0.0.1:{inst['port']}/").json()["tags"] == "env=base"
        calls = [json.loads(line) for line in (tmp_path / "docker" / "calls.jsonl").read_text().splitlines()]
        assert ["build", "-t", "devbox/box-boxed:dev", "."] in calls
        run = next(c for c in calls if c[0] == "run")
        assert f"PORT={inst['port']}" in run and f"DEVBOX_INSTANCE_ID={inst['id']}" in run
        assert run[-1] == "devbox/box-boxed:dev"  # the image's own command: start not set
        base = p.url() + f"/api/deploy/services/boxed/instances/{inst['name']}/signal"
        assert httpx.post(base, json={"signal": "SIGSTOP"}).status_code == 200
        paused = ["pause", run[run.index("--name") + 1]]
        calls_file = tmp_path / "docker" / "calls.jsonl"
        wait_for(lambda: paused in [json.loads(line) for line in calls_file.read_text().splitlines()],
                 timeout=30, every=0.05, what=f"docker {paused}")
        httpx.post(base, json={"signal": "SIGCONT"})
    calls = [json.loads(line) for line in (tmp_path / "docker" / "calls.jsonl").read_text().splitlines()]
    assert ["rm", "-f", run[run.index("--name") + 1]] in calls


@pytest.mark.slow
@pytest.mark.skipif(engine_problem(timeout=3) is not None,
                    reason=f"no Docker engine here: {engine_problem(timeout=3)}")
def test_container_on_a_real_engine(tmp_path: Path) -> None:
    folder = tmp_path / "svc"
    folder.mkdir()
    (folder / "server.py").write_text(SERVER)
    (folder / "Dockerfile").write_text(
        "FROM python:3.11-slim\nWORKDIR /app\nCOPY server.py .\nCMD [\"python\", \"server.py\"]\n"
    )
    svc = ServiceConfig(name="real", path="svc", runtime="docker", readiness={"http": "/healthz", "timeout": 120},
                        reload=False, build_timeout=600)
    with running_platform(tmp_path, components=["naming", "deploy"], services=[svc]) as p:
        assert p.call(p.component("deploy").wait_deployed(700), timeout=710) == []  # type: ignore[attr-defined]
        [inst] = httpx.get(p.url() + "/api/deploy/services").json()["services"][0]["instances"]
        assert httpx.get(f"http://127.0.0.1:{inst['port']}/").json()["instance"] == inst["id"]
