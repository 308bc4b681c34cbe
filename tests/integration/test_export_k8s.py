"""``devbox export k8s`` for the shop, validated against the official Kubernetes schemas (vendored in
tests/specs/k8s, strict: unknown fields fail), and its content checked: replicas, injected env,
probes from the readiness config, the alert rules ConfigMap (which promtool accepts)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from referencing import Registry, Resource

from devbox.config import load_config
from devbox.export.k8s import write_k8s

ROOT = Path(__file__).resolve().parents[2]
SPECS = ROOT / "tests" / "specs" / "k8s"
SHOP = ROOT / "scenarios" / "shop" / "devbox.yaml"
SCHEMAS = {("apps/v1", "Deployment"): "deployment-apps-v1.json", ("v1", "Service"): "service-v1.json",
           ("v1", "ConfigMap"): "configmap-v1.json"}


@pytest.fixture(scope="module")
def validators() -> dict[tuple[str, str], jsonschema.Draft202012Validator]:
    defs = json.loads((SPECS / "_definitions.json").read_text())
    registry = Registry().with_resource(defs["$id"], Resource.from_contents(defs))
    out = {}
    for key, name in SCHEMAS.items():
        schema = json.loads((SPECS / name).read_text())
        out[key] = jsonschema.Draft202012Validator(schema, registry=registry)
    return out


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    out = tmp_path_factory.mktemp("k8s")
    paths = write_k8s(load_config(SHOP), out)
    return {p.name: [d for d in yaml.safe_load_all(p.read_text()) if d] for p in paths}


def _errors(validators: dict[tuple[str, str], Any], obj: dict[str, Any]) -> list[str]:
    validator = validators[(obj["apiVersion"], obj["kind"])]
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj)]


def test_every_object_validates_against_the_kubernetes_schemas(validators: Any, exported: Any) -> None:
    objects = [obj for docs in exported.values() for obj in docs]
    kinds = {(o["apiVersion"], o["kind"]) for o in objects}
    assert kinds == set(SCHEMAS)
    problems = {f"{o['kind']}/{o['metadata']['name']}": _errors(validators, o) for o in objects}
    assert {k: v for k, v in problems.items() if v} == {}
    # the schemas are strict: a wrong field or type is caught, so the check above means something
    broken = json.loads(json.dumps(exported["orders.yaml"][0]))
    broken["spec"]["replicas"] = "two"
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGett"] = {}
    assert len(_errors(validators, broken)) == 2


def test_deployments_carry_replicas_env_and_probes(exported: Any) -> None:
    config = load_config(SHOP)
    for svc in config.services:
        deployment, service = exported[f"{svc.name}.yaml"]
        assert deployment["spec"]["replicas"] == svc.replicas
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        env = {e["name"]: e["value"] for e in container["env"]}
        assert env["OTEL_SERVICE_NAME"] == svc.name
        assert env["DEVBOX_NAMING_GRPC"] == "polaris:8091"
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4318"
        assert env["DEVBOX_TAGS"] == "env=base" and env["PORT"] == str(container["ports"][0]["containerPort"])
        assert "DEVBOX_INSTANCE_ID" not in env  # one per instance: not part of a Deployment
        for key, value in svc.env.items():
            assert env[key] == value
        probe = container["readinessProbe"]
        if svc.readiness.kind == "http":
            assert probe["httpGet"]["path"] == svc.readiness.http
        else:
            assert svc.readiness.kind == "grpc" and probe["grpc"]["port"] == container["ports"][0]["containerPort"]
        startup = container["startupProbe"]
        assert startup["periodSeconds"] * startup["failureThreshold"] >= svc.readiness.timeout
        assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
        assert service["spec"]["ports"][0]["targetPort"] == container["ports"][0]["containerPort"]


def test_alert_rules_config_map_is_a_prometheus_rule_file(exported: Any, tmp_path: Path) -> None:
    maps = {m["metadata"]["name"]: m["data"] for m in exported["config.yaml"]}
    rules_text = maps["shop-alert-rules"]["rules.yml"]
    alerts = [r["alert"] for g in yaml.safe_load(rules_text)["groups"] for r in g["rules"] if "alert" in r]
    assert sorted(alerts) == ["ShopCheckoutSlow", "ShopEntryFailing", "ShopSuccessRateLow"]
    # Prometheus mounts the ConfigMap the rule file lives in
    prom = exported["backend-prometheus.yaml"][0]["spec"]["template"]["spec"]
    assert any(v["configMap"]["name"] == "shop-alert-rules" for v in prom["volumes"])
    if shutil.which("promtool") is None:
        pytest.skip("promtool is not installed (make install installs prometheus)")
    (tmp_path / "rules.yml").write_text(rules_text)
    check = subprocess.run(["promtool", "check", "rules", str(tmp_path / "rules.yml")], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
