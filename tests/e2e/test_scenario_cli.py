"""`devbox scenario run` and `pytest` on scenario files, as subprocesses, as CI runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]

SCENARIOS = """
name: passing
seed: 5
steps:
  - traffic: {service: web, count: 5}
  - expect: {failover: {max_errors: 0}}
---
name: deliberately broken
steps:
  - fault: {service: web, error_rate: 1.0, status: 502}
  - traffic: {service: web, count: 4}
  - expect: {failover: {max_error_rate: 0.0}, within: 0}
"""


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONWARNINGS": "ignore", "GRPC_VERBOSITY": "ERROR"}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "web").mkdir()
    start = tmp_path / "web" / "start.sh"
    start.write_text("#!/bin/sh\nexec python3 -m http.server \"$PORT\" --bind 127.0.0.1\n")
    start.chmod(0o755)
    (tmp_path / "devbox.yaml").write_text(
        "project: e2e\nservices:\n  - {name: web, path: web, readiness: {http: /}}\n"
    )
    (tmp_path / "scenarios").mkdir()
    (tmp_path / "scenarios" / "web.scenario.yaml").write_text(textwrap.dedent(SCENARIOS))
    return tmp_path


def _devbox(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "devbox", *args], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout
    )


def test_run_exit_codes_junit_and_json(project: Path) -> None:
    done = _devbox("scenario", "run", "scenarios", "--junit", "out.xml", "--seed", "12", cwd=project)
    assert done.returncode == 1, done.stdout + done.stderr
    text = " ".join(done.stdout.split())
    assert "1/2 scenarios passed" in text
    assert "observed 4/4 failed (100.0%) 502 x4" in text
    cases = {c.get("name"): c for c in ET.parse(project / "out.xml").getroot().iter("testcase")}
    assert set(cases) == {"passing", "deliberately broken"}
    assert cases["passing"].find("failure") is None
    assert "seed: 12" in (cases["passing"].findtext("system-out") or "")

    ok = _devbox("scenario", "run", "scenarios", "-k", "pass", "--json", cwd=project)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    [result] = json.loads(ok.stdout)
    assert result["outcome"] == "passed" and result["seed"] == 5 and result["steps"][0]["step"] == "up"

    none = _devbox("scenario", "run", "scenarios", "-k", "nothing-matches", cwd=project)
    assert none.returncode == 2 and "no scenarios found" in none.stderr


def test_bad_file_is_reported_with_line_and_others_still_run(project: Path) -> None:
    (project / "scenarios" / "bad.scenario.yaml").write_text("name: typo\nsteps:\n  - trafic: {service: web}\n")
    done = _devbox("scenario", "run", "scenarios", "-k", "typo", cwd=project)
    assert done.returncode == 1
    assert "bad.scenario.yaml:3: steps[0]: unknown step kind 'trafic'" in " ".join(done.stdout.split())


def test_pytest_collects_scenario_files(project: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "scenarios/web.scenario.yaml"],
        cwd=project, env=_env(), capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "1 failed, 1 passed" in done.stdout
    assert "deliberately broken" in done.stdout and "observed 4/4 failed" in done.stdout


SHOP_SUITE = REPO / "scenarios" / "shop"
#: The shop's scenarios that run in the first of the suite's two halves (by file stem); every other
#: file, a new one too, runs in the second. Halves of about equal time (measured at a load of 14:
#: 115 s and 101 s), so that xdist's two workers run them side by side instead of one after another.
FIRST_HALF = ("release", "capacity", "tracing")
#: Run by their own test instead: budget.scenario.yaml three times over, with the change and without
#: (tests/e2e/test_budget_shop.py), which also checks what a run of it here would.
OWN_TEST = ("budget",)


def _run_shop_half(tmp_path: Path, *, first: bool) -> set[str]:
    """`devbox scenario run` on one half of the shop's scenario files, as CI runs the suite: it must
    pass and its JUnit report list every file of the half. Returns the scenario names listed."""
    files = sorted(f for f in SHOP_SUITE.glob("*.scenario.yaml")
                   if (f.name.split(".")[0] in FIRST_HALF) == first and f.name.split(".")[0] not in OWN_TEST)
    assert files, "no shop scenario files in this half"
    out = tmp_path / "shop.xml"
    args = [str(f.relative_to(REPO)) for f in files]
    done = _devbox("scenario", "run", *args, "--junit", str(out), cwd=REPO, timeout=400)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    cases = list(ET.parse(out).getroot().iter("testcase"))
    assert {Path(c.get("file") or "").name for c in cases} == {f.name for f in files}
    assert all(c.find("failure") is None and c.find("error") is None for c in cases)
    return {c.get("name") or "" for c in cases}


# What CI runs: every example scenario of the shop, each listed in a JUnit report. Two classes, so
# that xdist's loadscope (a scope per class) hands the halves to different workers.
@pytest.mark.slow
@pytest.mark.timeout(480)  # every scenario of a half on a fresh platform, one after another
class TestShopSuiteFirstHalf:
    def test_passes_with_junit(self, tmp_path: Path) -> None:
        names = _run_shop_half(tmp_path, first=True)
        assert len(names) >= len(FIRST_HALF)


@pytest.mark.slow
@pytest.mark.timeout(480)
class TestShopSuiteSecondHalf:
    def test_passes_with_junit(self, tmp_path: Path) -> None:
        names = _run_shop_half(tmp_path, first=False)
        assert len(names) >= 4 and "failover when an instance is killed under traffic" in names
