"""scenarios/shop as a project: its devbox.yaml validates, each service follows the 123 start.sh
convention and bootstraps the SDK, and the build steps generate the gRPC stubs (only when stale,
so a build never feeds the reload watcher)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from devbox.mocks.alerting.rules import compile_short

from devbox.config import load_config

SHOP = Path(__file__).resolve().parents[2] / "scenarios" / "shop"


def test_devbox_yaml_declares_the_five_services() -> None:
    config = load_config(SHOP / "devbox.yaml")
    services = {s.name: s for s in config.services}
    assert set(services) == {"gateway", "orders", "inventory", "payment", "users"}
    assert services["orders"].replicas == 2 and services["users"].replicas == 2
    assert services["inventory"].protocol == "grpc" and services["inventory"].readiness.grpc
    assert all(s.readiness.http == "/healthz" for n, s in services.items() if n != "inventory")
    assert all(s.tags == {"env": "base"} for s in services.values())


def test_indicators_and_alert_rules_compile() -> None:
    config = load_config(SHOP / "devbox.yaml")
    assert {"entry_success_rate", "entry_avg_latency_seconds", "success_rate"} <= set(config.metrics.indicators)
    healthz = 'method!~"GET /healthz|grpc.health.v1.Health/Check"'
    assert [compile_short(r) for r in config.alerting.rules] == [
        f"(avg by (callee) (success_rate) < 95.0) and on(callee)"
        f" (sum by (callee) (increase(rpc_server_requests_total{{{healthz}}}[60s])) >= 5)",
        "(avg by (method) (entry_success_rate) < 99.0) and on(method)"
        ' (sum by (method) (increase(rpc_server_requests_total{callee="gateway", method!="GET /healthz"}[30s])) >= 5)',
    ]
    assert [r.alert for g in config.alerting.groups for r in g.rules] == ["ShopCheckoutSlow"]


def test_each_service_has_an_executable_start_sh_and_bootstraps_the_sdk() -> None:
    for svc in load_config(SHOP / "devbox.yaml").services:
        folder = SHOP / svc.path
        start = folder / "start.sh"
        assert os.access(start, os.X_OK), start
        assert "exec " in start.read_text()
        assert "sdk.bootstrap(" in (folder / "app.py").read_text()


def test_build_steps_generate_stubs_once(tmp_path: Path) -> None:
    config = load_config(SHOP / "devbox.yaml")
    for name in ("inventory", "orders", "gateway"):
        shutil.copytree(SHOP / name, tmp_path / name, ignore=shutil.ignore_patterns("*_pb2*.py", "__pycache__"))
    for svc in (s for s in config.services if s.build):
        folder = tmp_path / svc.path
        subprocess.run(["sh", "-c", svc.build], cwd=folder, check=True, timeout=60)
        stub = folder / "inventory_pb2_grpc.py"
        assert stub.is_file() and (folder / "inventory_pb2.py").is_file()
        before = stub.stat().st_mtime_ns
        subprocess.run(["sh", "-c", svc.build], cwd=folder, check=True, timeout=60)
        assert stub.stat().st_mtime_ns == before, f"{svc.name}: an up-to-date build must not rewrite its stubs"
