"""A running copy of scenarios/shop (ephemeral ports) for the tour and explain tests: `devbox up
--detach` on a copy, waited until every instance is ready, `devbox down` afterwards."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

SHOP = Path(__file__).resolve().parents[2] / "scenarios" / "shop"
PORTS = ("api", "otlp_http", "otlp_grpc", "zipkin", "polaris_grpc", "polaris_http", "prometheus", "alertmanager")
READY = {"gateway": 1, "orders": 2, "inventory": 1, "payment": 1, "users": 2}


def devbox(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "devbox", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


@contextmanager
def running_shop(tmp_path: Path, edit: Callable[[dict], None] | None = None) -> Iterator[tuple[Path, dict]]:
    """Yields the shop's folder and its `devbox status --json` once all of it is ready; ``edit`` may
    change the copy's devbox.yaml (as a dict) before it starts."""
    shop = tmp_path / "shop"
    shutil.copytree(SHOP, shop, ignore=shutil.ignore_patterns("*_pb2*.py", "__pycache__", ".devbox", "*.scenario.yaml"))
    config = yaml.safe_load((shop / "devbox.yaml").read_text())
    config["platform"] = {"ports": dict.fromkeys(PORTS, 0)}
    if edit is not None:
        edit(config)
    with (shop / "devbox.yaml").open("w") as out:
        yaml.safe_dump(config, out, sort_keys=False)
    up = devbox("up", "--detach", "--no-reload", cwd=shop)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        deadline = time.monotonic() + 90
        while True:
            status = devbox("status", "--json", cwd=shop)
            assert status.returncode == 0, status.stdout + status.stderr
            state = json.loads(status.stdout)
            ready = {s["service"]: s["ready"] for s in state["services"]}
            if ready == READY:
                break
            assert time.monotonic() < deadline, f"not all ready: {ready} {state.get('errors')}"
            time.sleep(0.5)
        yield shop, state
    finally:
        devbox("down", cwd=shop)
