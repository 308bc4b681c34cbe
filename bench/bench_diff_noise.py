"""Issue 16's "no false findings from noise across three repeats", measured on the real shop.

Each repeat, on a fresh copy of scenarios/shop (tests/e2e/budget_shop.py: the change and the runs):
  1. ``devbox scenario run budget.scenario.yaml --snapshot base`` on the unchanged shop;
  2. the same with the deliberate change (one more users call per checkout, 50 ms added in orders'
     quote) and ``--baseline base``: the run must fail (budgets broken);
  3. ``devbox diff base changed``: exactly the two findings (fan-out users 2 → 3, orders' quote
     slower by its own time), nothing else;
  4. unless --pairs-only, the unchanged shop once more against base: it must pass, and
     ``devbox diff base same`` must find nothing (two runs of one code, noise only).

Prints per repeat each run's time and exit code, the findings and the run-wide factor on own time the
diff compared beyond (how much busier one run's machine was), then a verdict per repeat;
exits 1 when a repeat found a false finding or missed one of the two.

Usage: python bench/bench_diff_noise.py [--repeats 3] [--pairs-only] [--keep DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ (the shop's change) from a checkout
from tests.e2e.budget_shop import EXPECTED, ShopCopy, describe, found


def timed_run(shop: ShopCopy, label: str, **kw: str) -> int:
    t0 = time.perf_counter()
    done = shop.run(**kw)
    print(f"  run {label:<8} exit {done.returncode}  {time.perf_counter() - t0:6.1f} s", flush=True)
    if done.returncode not in (0, 1):
        print(done.stdout[-3000:], done.stderr[-2000:])
    return done.returncode


def _scale(answer: dict[str, Any]) -> str:
    """The run-wide factor on own time the diff compared beyond (how much busier the machine was)."""
    return f"; every operation's own time x{answer['summary'].get('own_time_scale', 1.0):.2f}"


def repeat(n: int, root: Path, pairs_only: bool) -> list[str]:
    """One repeat; returns what went wrong (empty: as expected)."""
    print(f"repeat {n}", flush=True)
    wrong: list[str] = []
    shop = ShopCopy.make(root / f"shop-{n}")
    if timed_run(shop, "base", snapshot="base") != 0:
        return ["the unchanged base run failed"]
    shop.apply_change()
    if timed_run(shop, "changed", baseline="base", snapshot="changed") != 1:
        wrong.append("the changed run did not fail its budgets")
    shop.revert()
    _, answer = shop.diff("base", "changed")
    print(f"  diff base changed: {len(answer['findings'])} finding(s){_scale(answer)}\n{describe(answer)}")
    if found(answer) - EXPECTED:
        wrong.append(f"false finding(s): {sorted(found(answer) - EXPECTED)}")
    if EXPECTED - found(answer):
        wrong.append(f"missed: {sorted(EXPECTED - found(answer))}")
    if not pairs_only:
        if timed_run(shop, "same", baseline="base", snapshot="same") != 0:
            wrong.append("the unchanged run failed against base")
        _, answer = shop.diff("base", "same")
        print(f"  diff base same: {len(answer['findings'])} finding(s){_scale(answer)}\n{describe(answer)}")
        if answer["findings"]:
            wrong.append(f"false finding(s) between two unchanged runs: {sorted(found(answer))}")
    print(f"  repeat {n}: " + ("as expected" if not wrong else "WRONG: " + "; ".join(wrong)), flush=True)
    return wrong


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pairs-only", action="store_true", help="Skip the second unchanged run of each repeat.")
    parser.add_argument("--keep", metavar="DIR", help="Keep the shop copies (and their snapshots) under DIR.")
    args = parser.parse_args()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-diff-noise-") as tmp:
        root = Path(args.keep) if args.keep else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        results = [repeat(n, root, args.pairs_only) for n in range(1, args.repeats + 1)]
    bad = sum(1 for r in results if r)
    print(f"{args.repeats - bad}/{args.repeats} repeats as expected (exactly the two findings"
          f"{'' if args.pairs_only else '; none between unchanged runs'}) in {time.perf_counter() - t0:.0f} s")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
