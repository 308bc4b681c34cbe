"""The README's "Load tests and capacity" commands, each run as written, through the real CLI
against a copy of the shop (`devbox up --detach`, ports 0): runs kept, the ramp stops, the capacity
report prints instances needed and writes its HTML page; bad input exits non-zero, writes nothing."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from devbox.load import locust

ROOT = Path(__file__).resolve().parents[2]
SHOP = ROOT / "scenarios" / "shop"
PORTS = ("api", "otlp_http", "otlp_grpc", "zipkin", "polaris_grpc", "polaris_http", "prometheus", "alertmanager")

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600),
              pytest.mark.skipif(not locust.available(), reason="locust not installed")]


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Load tests and capacity", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "the README's load section has no bash block"
    return [line.strip() for line in block.group(1).splitlines() if shlex.split(line, comments=True)]


def devbox(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "220"}  # wide tables: run ids are not cut
    return subprocess.run([sys.executable, "-m", "devbox", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, env=env)


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    base = tmp_path_factory.mktemp("load-e2e")
    shop = base / "scenarios" / "shop"  # the repository's layout: loadtests/ two folders up
    shutil.copytree(SHOP, shop, ignore=shutil.ignore_patterns("*_pb2*.py", "__pycache__", ".devbox",
                                                              "*.scenario.yaml"))
    shutil.copytree(ROOT / "loadtests", base / "loadtests", ignore=shutil.ignore_patterns("__pycache__"))
    config = yaml.safe_load((shop / "devbox.yaml").read_text())
    config["platform"] = {"ports": dict.fromkeys(PORTS, 0)}
    with (shop / "devbox.yaml").open("w") as out:
        yaml.safe_dump(config, out, sort_keys=False)
    up = devbox(["up", "--detach", "--no-reload"], shop, timeout=120)
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        deadline = time.monotonic() + 120
        while True:
            status = devbox(["status", "--json"], shop, timeout=30)
            services = json.loads(status.stdout)["services"] if status.returncode == 0 else []
            ready = {s["service"]: s["ready"] for s in services}
            if ready == {"gateway": 1, "orders": 2, "inventory": 1, "payment": 1, "users": 2}:
                break
            assert time.monotonic() < deadline, f"shop not ready: {ready} {status.stderr}"
            time.sleep(0.5)
        yield shop
    finally:
        devbox(["down"], shop, timeout=60)


def test_readme_load_commands_run_as_written(shop: Path) -> None:
    commands = readme_commands()
    assert any(c.startswith("devbox load ramp") for c in commands)
    assert any(c.startswith("devbox capacity") for c in commands)
    for command in commands:
        argv = shlex.split(command, comments=True)
        assert argv[0] == "devbox", command
        done = devbox(argv[1:], shop)
        assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
        if argv[1:3] == ["load", "ls"]:
            assert done.stdout.count("-run-") >= 2 and "-ramp-" in done.stdout, done.stdout
        if argv[1] == "capacity":
            assert "instances needed" in done.stdout and "first bottleneck" in done.stdout, done.stdout
            ramp = json.loads(devbox(["load", "show", "--json"], shop).stdout)
            if len(ramp["steps"]) > 1:  # the ramp's step 1 predicts its later steps
                assert "largest prediction error" in done.stdout, done.stdout
    runs = sorted((shop / ".devbox" / "load").iterdir())
    assert len(runs) == 3
    for run in runs:
        record = json.loads((run / "run.json").read_text())
        assert record["steps"][0]["total"]["requests"] > 0
        assert (run / "report.html").is_file() or (run / "step-01" / "report.html").is_file()
    ramp = next(r for r in runs if "-ramp-" in r.name)
    page = (ramp / "capacity.html").read_text()
    assert "<script" in page and "Instances needed" in page


def test_bad_input_exits_non_zero_and_keeps_nothing(shop: Path, tmp_path: Path) -> None:
    before = sorted((shop / ".devbox" / "load").glob("*"))
    unknown = devbox(["load", "--target", "nosuch", "--time", "2s"], shop)
    assert unknown.returncode == 2 and "unknown target service 'nosuch'" in unknown.stderr, unknown.stderr
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('boom at import')\n")
    bad_file = devbox(["load", "--locustfile", str(broken), "--time", "2s"], shop)
    assert bad_file.returncode == 2 and "does not import" in bad_file.stderr and "boom" in bad_file.stderr
    mix = devbox(["capacity", "--target", "GET /nope=5/s"], shop)
    assert mix.returncode == 2 and "unknown entry 'GET /nope'" in mix.stderr, mix.stderr
    assert sorted((shop / ".devbox" / "load").glob("*")) == before
