"""compose/: the real backends' stack. No container engine here, so: it parses, it mounts files that
exist, it publishes the ports devbox imitates, and the Prometheus/Alertmanager files pass the real
tools' own checks (promtool, amtool)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

COMPOSE = Path(__file__).resolve().parents[2] / "compose"


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def test_compose_has_the_real_backends_on_devbox_ports() -> None:
    services = load(COMPOSE / "docker-compose.yaml")["services"]
    assert {"polaris", "otel-collector", "jaeger", "prometheus", "alertmanager"} <= set(services)
    published = {
        int(str(port).split(":")[0]) for svc in services.values() for port in svc.get("ports", [])
    }
    # the protocols devbox speaks, at the same ports, so a service moves over with no config change
    assert {8090, 8091, 4317, 4318, 9411, 9090, 9093} <= published
    for name, svc in services.items():
        assert svc["image"].count(":") == 1, f"{name}: pin the image version"
        for dep in svc.get("depends_on", []):
            assert dep in services, f"{name} depends on unknown {dep}"


def test_every_mounted_file_exists_and_parses() -> None:
    services = load(COMPOSE / "docker-compose.yaml")["services"]
    mounts = [v.split(":")[0] for svc in services.values() for v in svc.get("volumes", [])]
    assert len(mounts) >= 4
    for mount in mounts:
        path = (COMPOSE / mount).resolve()
        assert path.is_file(), mount
        assert isinstance(load(path), dict), mount


def test_collector_pipelines_reference_declared_parts() -> None:
    config = load(COMPOSE / "otel-collector" / "config.yaml")
    declared = set(config["receivers"]) | set(config["exporters"]) | set(config.get("connectors", {}))
    declared |= set(config.get("processors", {}))
    for name, pipeline in config["service"]["pipelines"].items():
        for part in pipeline["receivers"] + pipeline["exporters"] + pipeline.get("processors", []):
            assert part in declared, f"pipeline {name}: {part} is not declared"


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_prometheus_config_and_rules_pass_promtool() -> None:
    rules = subprocess.run(
        ["promtool", "check", "rules", str(COMPOSE / "prometheus" / "shop-rules.yml")],
        capture_output=True, text=True, timeout=30,
    )
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert "4 rules found" in rules.stdout
    config = subprocess.run(
        ["promtool", "check", "config", "--syntax-only", str(COMPOSE / "prometheus" / "prometheus.yml")],
        capture_output=True, text=True, timeout=30,
    )
    assert config.returncode == 0, config.stdout + config.stderr


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("amtool") is None, reason="amtool not installed")
def test_alertmanager_config_passes_amtool() -> None:
    checked = subprocess.run(
        ["amtool", "check-config", str(COMPOSE / "alertmanager" / "alertmanager.yml")],
        capture_output=True, text=True, timeout=30,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
