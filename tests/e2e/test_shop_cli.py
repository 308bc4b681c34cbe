"""The README's command on the bundled example, through the real CLI: `devbox up -f .../devbox.yaml`
on a copy of scenarios/shop (ports made ephemeral), the example answers by name, `devbox down`
leaves nothing."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from devbox.testing import wait_for
from tests import httpc

SHOP = Path(__file__).resolve().parents[2] / "scenarios" / "shop"

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


def devbox(*args: str, cwd: Path, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "devbox", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def processes_under(folder: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter():
        try:
            if Path(proc.cwd()).is_relative_to(folder):
                found.append(proc)
        except (psutil.Error, OSError):
            continue
    return found


def test_devbox_up_runs_the_shop_and_down_stops_it(tmp_path: Path) -> None:
    shop = tmp_path / "shop"
    shutil.copytree(SHOP, shop, ignore=shutil.ignore_patterns("*_pb2*.py", "__pycache__", ".devbox", "*.scenario.yaml"))
    config = yaml.safe_load((shop / "devbox.yaml").read_text())
    config["platform"] = {"ports": dict.fromkeys(
        ("api", "otlp_http", "otlp_grpc", "zipkin", "polaris_grpc", "polaris_http", "prometheus", "alertmanager"), 0
    )}
    with (shop / "devbox.yaml").open("w") as out:
        yaml.safe_dump(config, out, sort_keys=False)

    config_file = str(shop / "devbox.yaml")  # the README's form: -f from elsewhere (here: the parent)
    up = devbox("up", "-f", config_file, "--detach", "--no-reload", cwd=tmp_path)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        def all_ready() -> dict[str, Any] | None:
            status = devbox("status", "-f", config_file, "--json", cwd=tmp_path)
            assert status.returncode == 0, status.stdout + status.stderr
            state: dict[str, Any] = json.loads(status.stdout)
            ready = {s["service"]: s["ready"] for s in state["services"]}
            return state if ready == {"gateway": 1, "orders": 2, "inventory": 1, "payment": 1, "users": 2} else None

        state = wait_for(all_ready, timeout=120, every=0.5, what="every shop instance ready in `devbox status`")
        [gateway] = next(s for s in state["services"] if s["service"] == "gateway")["instances"]
        answer = httpc.get(f"http://127.0.0.1:{gateway['port']}/checkout/alice", timeout=15)
        assert answer.status_code == 200, answer.text
        assert answer.json()["quote"]["approved"] is True
        assert (shop / "inventory" / "inventory_pb2_grpc.py").is_file()  # the build step ran
    finally:
        down = devbox("down", "-f", config_file, cwd=tmp_path)
    assert down.returncode == 0, down.stdout + down.stderr
    wait_for(lambda: processes_under(shop) == [], timeout=30, every=0.2, what="no process left under the shop")
    assert processes_under(shop) == []
