"""Benchmark of the scenario runner on the bundled example (scenarios/shop).

Figures, each against a baseline measured in the same run:
  1. the services' own start: every instance's start.sh run bare, in parallel, until all answer
     their readiness check (no devbox; the function of bench_up.py);
  2. one scenario's set-up (a fresh platform + the whole shop up and healthy in naming, fault
     proxies in front) and teardown (services stopped, platform stopped, state removed), in the
     runner's own process — as a ratio to (1);
  3. the wall time of the example suite, `devbox scenario run scenarios/shop --json` as a
     subprocess (what CI runs), with each scenario's time and its set-up share.

Usage: python bench/bench_scenarios.py [--skip-suite]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHOP = REPO / "scenarios" / "shop"


def _bench_up():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("bench_up", REPO / "bench" / "bench_up.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def bare_start() -> float:
    up = _bench_up()
    root, config = up.prepare(SHOP, 28040)
    return float(up.bare_start(root, config))


def setup_teardown(rounds: int = 2) -> list[tuple[float, float]]:
    from devbox.config import load_config
    from devbox.scenario.model import UpStep
    from devbox.scenario.session import Session

    project = load_config(SHOP / "devbox.yaml")
    out = []
    for _ in range(rounds):
        session = Session(project, seed=1)
        t0 = time.perf_counter()
        session.up(UpStep())
        t1 = time.perf_counter()
        session.close()
        out.append((t1 - t0, time.perf_counter() - t1))
    return out


def suite() -> tuple[float, list[dict[str, object]]]:
    env = {**os.environ, "GRPC_VERBOSITY": "ERROR"}
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "devbox", "scenario", "run", str(SHOP), "--json"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        print(done.stdout[-3000:], done.stderr[-2000:])
    return wall, json.loads(done.stdout or "[]")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-suite", action="store_true")
    args = parser.parse_args()
    bare = bare_start()
    print(f"services' own start (bare start.sh, all ready):   {bare:6.2f} s   (baseline)")
    for i, (up, down) in enumerate(setup_teardown(), 1):
        print(f"scenario set-up #{i} (platform + shop healthy):   {up:6.2f} s   ({up / bare:.2f}x bare start)")
        print(f"scenario teardown #{i}:                           {down:6.2f} s   ({down / bare:.2f}x bare start)")
    if args.skip_suite:
        return
    wall, results = suite()
    passed = sum(1 for r in results if r["outcome"] == "passed")
    print(f"example suite wall time ({passed}/{len(results)} passed):          {wall:6.2f} s   "
          f"({wall / bare:.1f}x bare start)")
    for r in results:
        up = r.get("up_seconds") or 0.0
        secs = float(r["seconds"])  # type: ignore[arg-type]
        print(f"  {r['name'][:58]:58s} {secs:6.2f} s (set-up {up:5.2f} s = {up / secs:.0%})")  # type: ignore[index]


if __name__ == "__main__":
    main()
