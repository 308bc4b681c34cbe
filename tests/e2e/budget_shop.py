"""The shop's CI budget (scenarios/shop/budget.scenario.yaml) around a deliberate change, on a copy of
the shop: shared by tests/e2e/test_budget_shop.py and bench/bench_diff_noise.py.

The change is issue 16's: the gateway's checkout calls users once more (a third call beside the two
it makes, in parallel with them), and orders' quote — on every checkout's path — sleeps 50 ms. A
diff of a run before it and a run with it should say exactly that: :data:`EXPECTED`.

Every run is ``devbox scenario run`` as a subprocess (a fresh platform on ephemeral ports, its state
under the copy's .devbox), so two pytest-xdist workers never collide.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SHOP = Path(__file__).resolve().parents[2] / "scenarios" / "shop"
SCENARIO = "budget.scenario.yaml"

#: (file, anchor, replacement): each anchor occurs once in the shop's code.
EDITS = (
    ("gateway/app.py",
     '        _call(request.app.state.http, "orders", "GET", "http://orders/quote", params=params),\n',
     '        _call(request.app.state.http, "orders", "GET", "http://orders/quote", params=params),\n'
     '        _call(request.app.state.http, "users", "GET", f"http://users/users/{user}"),  # the extra call\n'),
    ("gateway/app.py", "    profile, quote = found\n", "    profile, quote = found[:2]\n"),
    ("orders/app.py", "    profile, product = await _user_and_product(request, user, sku)\n",
     "    profile, product = await _user_and_product(request, user, sku)\n"
     "    await asyncio.sleep(0.05)  # the added 50 ms\n"),
)

#: The diff's findings for the change, as (kind, subject): nothing else may be found.
EXPECTED = {("fanout", "gateway:get /checkout/{user} → users"), ("latency", "orders:get /quote")}


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONWARNINGS": "ignore", "GRPC_VERBOSITY": "ERROR"}


def devbox(*args: str, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "devbox", *args], cwd=cwd, env=env(), capture_output=True,
                          text=True, timeout=timeout)


@dataclass
class ShopCopy:
    """A copy of scenarios/shop that owns its .devbox (snapshots) and can carry the change or not."""

    root: Path
    originals: dict[str, str] = field(default_factory=dict)

    @classmethod
    def make(cls, dest: Path) -> ShopCopy:
        # copy2 keeps mtimes: the generated gRPC stubs stay newer than the .proto, so builds are no-ops
        shutil.copytree(SHOP, dest, ignore=shutil.ignore_patterns(".devbox", "__pycache__"))
        return cls(dest)

    def apply_change(self) -> None:
        for rel, anchor, replacement in EDITS:
            path = self.root / rel
            text = path.read_text()
            self.originals.setdefault(rel, text)
            if text.count(anchor) != 1:
                raise AssertionError(f"{rel}: the change's anchor {anchor.strip()!r} is not there once")
            path.write_text(text.replace(anchor, replacement))

    def revert(self) -> None:
        for rel, text in self.originals.items():
            (self.root / rel).write_text(text)
        self.originals.clear()

    def run(self, *, snapshot: str | None = None, baseline: str | None = None) -> subprocess.CompletedProcess[str]:
        """``devbox scenario run budget.scenario.yaml`` [--snapshot NAME] [--baseline NAME]."""
        args = ["scenario", "run", SCENARIO]
        if snapshot:
            args += ["--snapshot", snapshot]
        if baseline:
            args += ["--baseline", baseline]
        return devbox(*args, cwd=self.root)

    def diff(self, a: str, b: str) -> tuple[int, dict[str, Any]]:
        """``devbox diff A B --json``: its exit code and its answer."""
        done = devbox("diff", a, b, "--json", cwd=self.root, timeout=120)
        if done.returncode not in (0, 1):
            raise AssertionError(f"devbox diff {a} {b} exited {done.returncode}: {done.stderr[-2000:]}")
        return done.returncode, json.loads(done.stdout)


def found(answer: dict[str, Any]) -> set[tuple[str, str]]:
    return {(f["kind"], f["subject"]) for f in answer["findings"]}


def describe(answer: dict[str, Any]) -> str:
    """The findings, one line each (for assertion messages and the bench)."""
    return "\n".join(f"  {f['kind']}: {f['text']}" for f in answer["findings"]) or "  (no finding)"
