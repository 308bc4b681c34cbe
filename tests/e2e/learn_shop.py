"""A running copy of scenarios/shop (ephemeral ports) for the tour and explain tests: `devbox up
--detach` on a copy, waited until every instance is ready, `devbox down` afterwards."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

from devbox.testing import wait_for

SHOP = Path(__file__).resolve().parents[2] / "scenarios" / "shop"
PORTS = ("api", "otlp_http", "otlp_grpc", "zipkin", "polaris_grpc", "polaris_http", "prometheus", "alertmanager")
READY = {"gateway": 1, "orders": 2, "inventory": 1, "payment": 1, "users": 2}


def devbox(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "devbox", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


@contextmanager
def running_shop(tmp_path: Path, edit: Callable[[dict], None] | None = None,
                 *, timeout: float = 90) -> Iterator[tuple[Path, dict]]:
    """Yields the shop's folder (``tmp_path``/shop) and its `devbox status --json` once all of it is
    ready (within ``timeout`` s); ``edit`` may change the copy's devbox.yaml (as a dict) before it starts."""
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
        last: list[str] = []

        def all_ready() -> dict | None:
            status = devbox("status", "--json", cwd=shop)
            if status.returncode != 0:  # e.g. an instance in backoff after a slow first start: deploy retries it
                last[:] = [f"status exited {status.returncode}: {status.stdout[-1000:]} {status.stderr[-1000:]}"]
                return None
            state = json.loads(status.stdout)
            ready = {s["service"]: s["ready"] for s in state["services"]}
            last[:] = [f"ready {ready}, errors {state.get('errors')}"]
            return state if ready == READY else None

        try:  # each check is a `devbox status` process: polled at a CLI's pace
            state = wait_for(all_ready, timeout=timeout, what=f"every instance ready ({READY})", every=0.3)
        except AssertionError as exc:
            raise AssertionError(f"{exc} ({last[0] if last else 'no status'})") from None
        yield shop, state
    finally:
        devbox("down", cwd=shop)
