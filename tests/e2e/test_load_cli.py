"""The README's "Load tests and capacity" commands, each run as written, through the real CLI
against a copy of the shop (`devbox up --detach`, ports 0): runs kept, the ramp finds a saturation
point, the capacity report prints instances needed, a prediction error and writes its HTML page;
bad input exits non-zero, writes nothing. Also through the CLI: a Ctrl-C mid-run keeps what was
measured, and a master waiting for a remote worker gets one from `devbox load worker`."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from devbox.load import locust
from devbox.testing import wait_for
from tests.e2e.learn_shop import running_shop

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600),
              pytest.mark.skipif(not locust.available(), reason="locust not installed")]


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Load tests and capacity", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "the README's load section has no bash block"
    return [line.strip() for line in block.group(1).splitlines() if shlex.split(line, comments=True)]


ENV = {**os.environ, "COLUMNS": "220"}  # wide tables: run ids are not cut


def devbox(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "devbox", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, env=ENV)


def devbox_bg(args: list[str], cwd: Path, out: Path) -> subprocess.Popen[bytes]:
    """A devbox command left running, its output in ``out`` (read it after it ended)."""
    with out.open("wb") as f:
        return subprocess.Popen([sys.executable, "-m", "devbox", *args], cwd=cwd, stdout=f, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=ENV)


def kept(shop: Path) -> set[Path]:
    return set((shop / ".devbox" / "load").glob("*"))


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    base = tmp_path_factory.mktemp("load-e2e")
    # the repository's layout: the shop in scenarios/shop, its locustfile in loadtests/ two folders up
    shutil.copytree(ROOT / "loadtests", base / "loadtests", ignore=shutil.ignore_patterns("__pycache__"))
    with running_shop(base / "scenarios", timeout=120) as (shop, _):
        yield shop


def test_readme_load_commands_run_as_written(shop: Path) -> None:
    before = kept(shop)
    commands = readme_commands()
    assert any(c.startswith("devbox load ramp") for c in commands)
    assert any(c.startswith("devbox capacity") for c in commands)
    for command in commands:
        argv = shlex.split(command, comments=True)
        assert argv[0] == "devbox", command
        done = devbox(argv[1:], shop)
        assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
        if argv[1:3] == ["load", "ramp"]:  # the step where --until held is the saturation point
            assert re.search(r"^saturation: .+ at \d+ users \(step \d+\)$", done.stdout, re.M), done.stdout
        if argv[1:3] == ["load", "ls"]:
            assert done.stdout.count("-run-") >= 2 and "-ramp-" in done.stdout, done.stdout
        if argv[1] == "capacity":
            assert "instances needed" in done.stdout and "first bottleneck" in done.stdout, done.stdout
            ramp = json.loads(devbox(["load", "show", "--json"], shop).stdout)
            if len(ramp["steps"]) > 1:  # the ramp's step 1 predicts its later steps
                # a number: no bound, a busy machine's figure is in the README's Benchmarks
                assert re.search(r"largest prediction error: -?\d+(\.\d+)?% ", done.stdout), done.stdout
    runs = sorted(kept(shop) - before)
    assert len(runs) == 3
    for run in runs:
        record = json.loads((run / "run.json").read_text())
        assert record["steps"][0]["total"]["requests"] > 0
        assert (run / "report.html").is_file() or (run / "step-01" / "report.html").is_file()
    # `--workers 2`: a Locust master and two worker processes, the master counting both as they report ready
    [distributed] = [r for r in runs if json.loads((r / "run.json").read_text())["params"].get("workers") == 2]
    assert (distributed / "worker-1.log").is_file() and (distributed / "worker-2.log").is_file()
    log = (distributed / "locust.log").read_text()
    assert re.search(r"reported as ready\. 2 workers connected", log), log[-2000:]
    ramp = next(r for r in runs if "-ramp-" in r.name)
    page = (ramp / "capacity.html").read_text()
    assert "<script" in page and "Instances needed" in page
    # the README's `devbox diff load:RUN_A load:RUN_B` (its snapshot section), on this section's two runs
    run_a, run_b = [r.name for r in runs if "-ramp-" not in r.name]
    diff = devbox(["diff", f"load:{run_a}", f"load:{run_b}"], shop)
    # exit 1 with the findings when the runs differ (as diff(1) does), 0 when they do not: either may be true of
    # two short load runs on a busy machine
    found = bool(re.search(r"\d+ finding\(s\)", diff.stdout))
    said = (diff.returncode, found, "no significant difference" in diff.stdout)
    assert said in ((1, True, False), (0, False, True)) and "Traceback" not in diff.stderr, diff.stdout + diff.stderr


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


def test_ctrl_c_mid_run_keeps_what_was_measured(shop: Path) -> None:
    before = kept(shop)
    proc = devbox_bg(["load", "--users", "2", "--time", "120s"], shop, shop / "interrupted.out")
    try:

        def measuring() -> Path | None:
            for folder in kept(shop) - before:
                snap = locust.LiveStats(folder / "locust").read()
                if snap.total is not None and snap.total.requests > 0:
                    return folder
            return None

        folder = wait_for(measuring, timeout=90, what="the run's first measured requests")
        proc.send_signal(signal.SIGINT)  # what a Ctrl-C in its terminal does
        assert proc.wait(timeout=120) == 0, (shop / "interrupted.out").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
    record = json.loads((folder / "run.json").read_text())
    assert record["status"] == "interrupted" and record["steps"][0]["interrupted"] is True
    assert record["total"]["requests"] > 0 and record["ended_at"] - record["started_at"] < 110
    # Locust 2.47 writes no HTML report when stopped by SIGTERM: the CSVs and its JSON are what is kept
    for name in ("locust_stats.csv", "locust_stats_history.csv", "locust.json"):
        assert (folder / name).is_file(), name


def test_a_remote_worker_joins_the_master(shop: Path) -> None:
    """The two-machine recipe on one machine: the master runs no worker of its own and waits for one
    from `devbox load worker`, a separate process that finds the master by host and port."""
    before = kept(shop)
    port = str(locust.free_port())
    master = devbox_bg(["load", "--users", "2", "--time", "5s", "--remote-workers", "1", "--master-port", port,
                        "--advertise", "localhost", "--json"], shop, shop / "master.out")
    worker = devbox_bg(["load", "worker", "--master", "127.0.0.1", "--master-port", port], shop, shop / "worker.out")
    try:
        assert master.wait(timeout=180) == 0, (shop / "master.out").read_text()
        assert worker.wait(timeout=60) == 0, (shop / "worker.out").read_text()  # the master's end ends it
    finally:
        for proc in (master, worker):
            if proc.poll() is None:
                proc.kill()
    [folder] = kept(shop) - before
    record = json.loads((folder / "run.json").read_text())
    assert record["status"] == "complete" and record["params"]["remote_workers"] == 1
    assert record["total"]["requests"] > 0
    assert record["target"]["loaded"].startswith("http://localhost:")  # the worker loaded the advertised host
    assert not list(folder.glob("worker-*.log"))  # no local worker: every request came from the remote one
    assert "reported as ready. 1 workers connected" in (folder / "locust.log").read_text()
