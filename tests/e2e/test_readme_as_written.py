"""The README's commands, each run as written, in bash, the way a new user types them: `devbox up -f
scenarios/shop/devbox.yaml` from the repository's root (in the foreground, as the README shows it),
then "in another shell in `scenarios/shop/`" the quick tour, the faults, the gray releases and the
snapshot/diff/why blocks, line by line. The only edits: a placeholder (TRACE_ID, RUN_A, RUN_B) is
replaced by a real id, and the copy of the shop listens on ephemeral ports (two test workers run at
once). Lines run by another test instead (the whole scenario suite, the load block, the budget
pair) are listed in ELSEWHERE, and that test is checked to hold the line.

Each line must exit 0, except where the README itself says otherwise (a broken release is rolled
back: exit 1). Lines a user runs while something else is going on (`release pause` while a release
runs, `logs --follow`, `snapshot load`) run beside it, as in a second shell.
"""

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from devbox.testing import wait_for

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
PORTS = ("api", "otlp_http", "otlp_grpc", "zipkin", "polaris_grpc", "polaris_http", "prometheus", "alertmanager")
SHOP_READY = {"gateway": 1, "orders": 2, "inventory": 1, "payment": 1, "users": 2}

#: README lines another place runs: that file, and what in it runs the line. `scenario run .` in the
#: shop's folder is the shop's whole suite (minutes): test_scenario_cli runs the same files with
#: --junit, in two halves so both test workers share it, instead of this module running it again.
ELSEWHERE = {
    "make install": (".ci/run", "make install"),
    "make test": (".ci/run", "make test"),
    "devbox scenario run . --junit out.xml": ("tests/e2e/test_scenario_cli.py",
                                              '_devbox("scenario", "run", *args, "--junit"'),
    # two load runs to diff: the load block's test has them (this module would make two more)
    "devbox diff load:RUN_A load:RUN_B": ("tests/e2e/test_load_cli.py", '["diff", f"load:{run_a}", f"load:{run_b}"]'),
    # the budget pair (the suite's halves leave budget.scenario.yaml to it): test_budget_shop
    "devbox scenario run budget.scenario.yaml --snapshot base": ("tests/e2e/budget_shop.py", '"--snapshot"'),
    "devbox scenario run budget.scenario.yaml --baseline base": ("tests/e2e/budget_shop.py", '"--baseline"'),
}
#: Whole blocks another test runs line by line: the README section's heading -> that test.
BLOCKS_ELSEWHERE = {"## Load tests and capacity": "tests/e2e/test_load_cli.py"}

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(600)]


def bash_blocks() -> list[list[str]]:
    """Every ```bash block of the README, as its command lines (comments and blank lines dropped)."""
    blocks = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), re.S):
        blocks.append([line.strip() for line in block.splitlines() if shlex.split(line, comments=True)])
    return blocks


def block_after(marker: str) -> list[str]:
    """The first bash block after ``marker`` (a heading or a sentence of the README)."""
    text = README.read_text().split(marker, 1)[1]
    found = re.search(r"```bash\n(.*?)```", text, re.S)
    assert found, f"no bash block after {marker!r}"
    return [line.strip() for line in found.group(1).splitlines() if shlex.split(line, comments=True)]


def commands(line: str) -> list[str]:
    """A README line's commands: `devbox naming ls; devbox naming show users` is two (a shell loop is one);
    comments dropped."""
    line = re.sub(r"\s+#\s.*$", "", line).strip()
    parts = [part.strip() for part in line.split(";") if part.strip()]
    return parts if all(part.startswith("devbox ") for part in parts) else [line]


@dataclass
class Shell:
    """Runs README lines with bash in one folder, with devbox on PATH (as `make install` leaves it)."""

    cwd: Path
    env: dict[str, str]

    def run(self, line: str, *, timeout: float = 120, ok: tuple[int, ...] = (0,)) -> str:
        done = subprocess.run(["bash", "-c", line], cwd=self.cwd, env=self.env, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
        assert done.returncode in ok, f"`{line}` exited {done.returncode}\n{done.stdout}\n{done.stderr}"
        assert "Traceback" not in done.stdout + done.stderr, f"`{line}`\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def start(self, line: str, out: Path, *, exec_: bool = True) -> subprocess.Popen[bytes]:
        """A line left running, as in a second shell; its output goes to ``out``."""
        with out.open("wb") as f:
            return subprocess.Popen(["bash", "-c", f"exec {line}" if exec_ else line], cwd=self.cwd, env=self.env,
                                    stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)

    def json(self, line: str) -> Any:
        return json.loads(self.run(line))


def stop(proc: subprocess.Popen[bytes], timeout: float = 60, sig: int = signal.SIGINT) -> int:
    """Ctrl-C (or ``kill %1``'s SIGTERM), as a user stops a command; the exit code."""
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
    return proc.wait(timeout)


@dataclass
class Shop:
    root: Path  # the copy of the repository's layout
    shell: Shell  # in scenarios/shop/
    up: subprocess.Popen[bytes]
    up_log: Path


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    root = tmp_path_factory.mktemp("readme")
    shop_dir = root / "scenarios" / "shop"
    shutil.copytree(ROOT / "scenarios" / "shop", shop_dir,
                    ignore=shutil.ignore_patterns("*_pb2*.py", "__pycache__", ".devbox", "*.scenario.yaml"))
    shutil.copytree(ROOT / "loadtests", root / "loadtests", ignore=shutil.ignore_patterns("__pycache__"))
    config = yaml.safe_load((shop_dir / "devbox.yaml").read_text())
    config["platform"] = {"ports": dict.fromkeys(PORTS, 0)}
    (shop_dir / "devbox.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("COLUMNS", None)

    [setup] = [b for b in bash_blocks() if "make install" in b[0]]
    up_line = next(line for line in setup if line.startswith("devbox up"))
    up_log = root / "up.log"
    up = Shell(root, env).start(commands(up_line)[0], up_log)
    shell = Shell(shop_dir, env)
    try:
        def ready() -> bool:
            assert up.poll() is None, f"`{up_line}` ended: {up_log.read_text()}"
            done = subprocess.run(["devbox", "status", "--json"], cwd=shop_dir, env=env, capture_output=True,
                                  text=True, timeout=30)
            if done.returncode:
                return False
            return {s["service"]: s["ready"] for s in json.loads(done.stdout)["services"]} == SHOP_READY

        wait_for(ready, timeout=180, every=0.5, what="every shop instance ready after the README's `devbox up`")
        yield Shop(root, shell, up, up_log)
    finally:
        if up.poll() is None:
            subprocess.run(["devbox", "down"], cwd=shop_dir, env=env, capture_output=True, timeout=60)
            if up.poll() is None:
                stop(up, 60)


#: The README text before each bash block this module runs (a new block must be added here or elsewhere).
BLOCKS_HERE = ("## Set up, run, test", "Or, in another shell in `scenarios/shop/`", "Break things on purpose",
               "Release a new version in gray batches", "## Snapshots, diffs, and why an alert fired")


def test_every_bash_block_of_the_readme_is_run() -> None:
    covered = [block_after(marker) for marker in (*BLOCKS_HERE, *BLOCKS_ELSEWHERE)]
    assert sorted(map(tuple, covered)) == sorted(map(tuple, bash_blocks()))


def test_lines_not_run_here_are_run_as_written_elsewhere() -> None:
    for line, (where, evidence) in ELSEWHERE.items():
        assert evidence in (ROOT / where).read_text(), f"{where} does not run `{line}`"
    for heading, where in BLOCKS_ELSEWHERE.items():
        assert "readme_commands" in (ROOT / where).read_text() and heading in (ROOT / where).read_text()


def trace_id(shell: Shell) -> str:
    traces = shell.json("devbox traces ls --errors --json")["traces"]
    failed = [t for t in traces if t["root_service"] == "gateway"]
    assert failed, traces
    return str(failed[0]["trace_id"])


def test_the_quick_tour(shop: Shop, tmp_path: Path) -> None:
    sh = shop.shell
    lines = block_after("Or, in another shell in `scenarios/shop/`")
    assert lines[0].startswith("devbox status") and lines[-1].startswith("devbox down")
    gw = ""
    for line in lines[:-1]:  # `devbox down` ends the module (the last test)
        for command in commands(line):
            if command in ELSEWHERE:
                continue
            if command.startswith("GW=$(devbox url gateway)"):
                gw = sh.run("devbox url gateway").strip()
                assert re.fullmatch(r"http://127\.0\.0\.1:\d+", gw), gw
                sh.env["GW"] = gw
                continue
            if command.startswith("curl"):
                out = sh.run(command)
                assert out.strip(), command
                continue
            if "--follow" in command:
                log = tmp_path / "follow.log"
                follow = sh.start(command, log)
                wait_for(lambda log=log: "devbox: starting" in log.read_text() or "Uvicorn running" in log.read_text(),
                         timeout=30, what=f"`{command}` printing orders' log")
                assert stop(follow) in (0, 130, -signal.SIGINT), log.read_text()
                assert "Traceback" not in log.read_text()
                continue
            if "TRACE_ID" in command:
                command = command.replace("TRACE_ID", trace_id(sh))
            out = sh.run(command)
            if command.startswith("devbox traces why"):
                assert "payment" in out, out
            if command == "devbox status":
                assert re.search(r"gateway\s+:\d+", out), out
    assert gw


def test_faults_block(shop: Shop) -> None:
    sh = shop.shell
    for line in block_after("Break things on purpose"):
        for command in commands(line):
            out = sh.run(command)
            if command == "devbox faults ls":
                assert "payment" in out and "users" in out and "orders" in out, out

    def orders_back() -> bool:
        services = shop.shell.json("devbox status --json")["services"]
        return {s["service"]: s["ready"] for s in services} == SHOP_READY

    wait_for(orders_back, timeout=90, every=0.5, what="orders-2 restarted after `devbox faults kill`")


def test_release_block(shop: Shop, tmp_path: Path) -> None:
    sh = shop.shell
    sh.env.setdefault("GW", sh.run("devbox url gateway").strip())
    lines = block_after("Release a new version in gray batches")
    traffic, first, broken, in_place, status, pause_resume, rollback, history, stop_traffic = lines
    assert traffic.split("#")[0].strip().endswith("&") and stop_traffic.startswith("kill %1")
    assert "--in-place" in in_place and "PAYMENT_ERROR_RATE" in broken
    loop = sh.start(commands(traffic)[0].removesuffix("&").strip(), tmp_path / "traffic.log", exec_=False)
    try:
        # the first release runs in one shell; status, pause and resume are asked from another while it runs
        log = tmp_path / "release.log"
        running = sh.start(commands(first)[0], log)

        def current() -> dict[str, Any] | None:
            out = sh.run("devbox release status --json", ok=(0, 1))  # 1: "no release yet", before it is accepted
            rel: dict[str, Any] | None = json.loads(out) if out.strip() else None
            return rel if rel and rel.get("state") in ("running", "paused") else None

        wait_for(current, timeout=60, every=0.5, what="the release running")
        assert "batch" in sh.run(commands(status)[0])
        pause, resume = commands(pause_resume)
        assert "paused" in sh.run(pause)
        assert "running" in sh.run(resume)
        if running.wait(240) != 0 or "succeeded" not in log.read_text():
            errors = sh.run("devbox traces ls --errors --service payment --json --lookback 5m")
            pytest.fail(f"the healthy release did not succeed:\n{log.read_text()}\npayment's failing traces: {errors}")

        out = sh.run(commands(broken)[0], timeout=240, ok=(1,))  # the README: a broken v3 is rolled back
        assert "rolled back" in out and "success_rate<99" in out, out

        # the in-place release, and `release rollback` from another shell while it runs
        log = tmp_path / "in-place.log"
        running = sh.start(commands(in_place)[0], log)
        wait_for(current, timeout=60, every=0.5, what="the in-place release running")
        sh.run(commands(rollback)[0], timeout=120)
        assert running.wait(240) == 1, log.read_text()
        assert "rolled" in log.read_text(), log.read_text()
    finally:
        stop(loop, sig=signal.SIGTERM)  # `kill %1` (SIGTERM): curl exits 130 on Ctrl-C, and bash loops on
    states = [r["state"] for r in sh.json(commands(history)[0])]
    assert states[:3] == ["rolled_back", "rolled_back", "succeeded"], states  # newest first


def test_snapshot_diff_and_why_block(shop: Shop, tmp_path: Path) -> None:
    sh = shop.shell
    lines = block_after("## Snapshots, diffs, and why an alert fired")
    for line in lines:
        for command in commands(line):
            if command in ELSEWHERE:
                continue
            if command.startswith("devbox snapshot load"):
                log = tmp_path / "snapshot-load.log"
                loaded = sh.start(command, log)
                wait_for(lambda log=log: "DEVBOX_API=" in log.read_text(), timeout=60, what="`snapshot load` serving")
                api = re.search(r"DEVBOX_API=(\S+)", log.read_text())
                assert api, log.read_text()
                naming = Shell(sh.cwd, {**sh.env, "DEVBOX_API": api.group(1)}).run("devbox naming ls")
                assert "users" in naming, naming
                assert stop(loaded) in (0, 130, -signal.SIGINT), log.read_text()
                continue
            if command.startswith("devbox why ShopSuccessRateLow"):
                out = why_after_it_fired(sh, command, tmp_path)
                assert "payment" in out and re.search(r"\d", out), out
                continue
            # `devbox diff` exits 1 when the two differ (as diff(1) does): either answer is the README's
            sh.run(command, timeout=180, ok=(0, 1) if command.startswith("devbox diff") else (0,))
    assert (sh.cwd / "diff.html").is_file()


def why_after_it_fired(sh: Shell, command: str, tmp_path: Path) -> str:
    """`devbox why ALERT` is about an alert that fired: payment made to fail under traffic (the README's
    faults line) until the alert has fired, unless an earlier block's broken release already made it."""
    sh.env.setdefault("GW", sh.run("devbox url gateway").strip())
    loop = sh.start("while sleep 0.05; do curl -s -o /dev/null $GW/checkout/alice; done", tmp_path / "why.log",
                    exec_=False)
    sh.run("devbox faults add payment --errors 0.3 --status 503")
    try:
        def answered() -> str | None:
            done = subprocess.run(["bash", "-c", command], cwd=sh.cwd, env=sh.env, capture_output=True, text=True,
                                  timeout=120, stdin=subprocess.DEVNULL)
            if done.returncode == 2 and "has not fired" in done.stderr:
                return None
            assert done.returncode == 0 and "Traceback" not in done.stderr, f"`{command}`: {done.stderr}"
            return done.stdout

        return wait_for(answered, timeout=180, every=2, what="ShopSuccessRateLow fired and explained")
    finally:
        stop(loop, sig=signal.SIGTERM)
        sh.run("devbox faults rm all")


def test_zz_down_stops_the_foreground_up(shop: Shop) -> None:
    lines = block_after("Or, in another shell in `scenarios/shop/`")
    shop.shell.run(commands(lines[-1])[0], timeout=60)
    assert shop.up.wait(60) == 0, shop.up_log.read_text()
    # and leaves nothing running: every instance (and whatever it started) is gone with the platform
    wait_for(lambda: _processes_under(shop.shell.cwd) == [], timeout=30, every=0.2,
             what="no process left under the shop's folder")


def _processes_under(folder: Path) -> list[str]:
    found = []
    for proc in psutil.process_iter():
        try:
            if Path(proc.cwd()).is_relative_to(folder):
                found.append(" ".join(proc.cmdline()))
        except (psutil.Error, OSError):
            continue
    return found
