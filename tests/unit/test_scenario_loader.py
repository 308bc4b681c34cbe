"""Scenario files: validation with file:line messages, several scenarios per file, the Python form."""

from __future__ import annotations

from pathlib import Path

import pytest

from devbox.scenario.loader import ScenarioError, discover, load_text
from devbox.scenario.model import Expectation, TrafficStep, UpStep

SERVICES = {"gateway", "orders", "payment"}


def _one(text: str):
    [scenario] = load_text(text, source="s.scenario.yaml", services=SERVICES)
    return scenario


def test_good_scenario_parses_into_typed_steps() -> None:
    scenario = _one(
        """
name: ok
seed: 4
steps:
  - up: {services: [gateway, orders], add: [{service: orders, tags: {env: feature-x}}]}
  - traffic: {service: gateway, rate: 5, duration: 2, labels: {env: feature-x}}
  - expect: {routing: {service: orders, selector: {env: feature-x}}, within: 3}
"""
    )
    assert scenario.error is None and scenario.seed == 4
    assert [s.kind for s in scenario.steps] == ["up", "traffic", "expect"]
    assert isinstance(scenario.steps[0].args, UpStep) and scenario.steps[0].args.add[0].tags == {"env": "feature-x"}
    assert isinstance(scenario.steps[1].args, TrafficStep) and scenario.steps[1].args.rate == 5
    assert isinstance(scenario.steps[2].args, Expectation) and scenario.steps[2].args.kind == "routing"
    assert scenario.steps[1].where == "s.scenario.yaml:6"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("  - trafic: {service: gateway}", "s.scenario.yaml:3: steps[0]: unknown step kind 'trafic' (allowed: up,"),
        ("  - traffic: {service: gateway, count: many}",
         "s.scenario.yaml:3: steps[0].traffic.count: expected a whole number, not 'many'"),
        ("  - traffic: {service: gateway}", "give either count, or rate with duration"),
        ("  - traffic: {service: shop, count: 1}", ":3: steps[0].traffic.service: unknown service 'shop'"),
        ("  - expect: {rooting: {service: orders}}", "steps[0].expect.rooting: unknown key (assertion kinds: routing,"),
        ("  - expect: {within: 3}", "expect needs exactly one of routing"),
        ("  - wait: {secs: 1}", "steps[0].wait.secs: unknown key (allowed: seconds, traffic, stop, until, timeout)"),
        ("  - wait: {seconds: 1, stop: true}", "stop ends a background traffic: give it with `traffic: NAME`"),
        ("  - kill: {service: orders, instance: [1, 2]}", "steps[0].kill.instance"),
        ("  - fault: {service: payment}", "a fault needs latency_ms, error_rate or abort_rate"),
        ("  - up: {overrides: {nope: {replicas: 2}}}", "unknown service 'nope'"),
        ("  - {traffic: {service: gateway, count: 1}, wait: {seconds: 1}}", "a mapping with exactly one kind"),
    ],
)
def test_bad_steps_are_reported_with_file_and_line(body: str, expected: str) -> None:
    scenario = _one(f"name: bad\nsteps:\n{body}\n")
    assert scenario.error is not None
    assert expected in scenario.error, scenario.error


def test_not_yaml_and_missing_keys() -> None:
    with pytest.raises(ScenarioError, match=r"s.scenario.yaml:3: not valid YAML"):
        load_text("name: x\nsteps: [\n", source="s.scenario.yaml")
    [missing] = load_text("name: x\n", source="s.scenario.yaml")
    assert "s.scenario.yaml: steps: Field required" in (missing.error or "")


def test_several_documents_one_bad_one_good() -> None:
    scenarios = load_text(
        "name: first\nsteps:\n  - wait: {seconds: nope}\n---\nname: second\nsteps:\n  - wait: {seconds: 0}\n",
        source="f.scenario.yaml",
    )
    assert [s.name for s in scenarios] == ["first", "second"]
    assert "f.scenario.yaml:3: steps[0].wait.seconds" in (scenarios[0].error or "")
    assert scenarios[1].error is None and scenarios[1].steps[0].where == "f.scenario.yaml:7"


def test_discover_finds_scenario_files_only(tmp_path: Path) -> None:
    (tmp_path / "devbox.yaml").write_text("project: x\n")
    (tmp_path / "a.scenario.yaml").write_text("name: a\nsteps: [{wait: {seconds: 0}}]\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.scenario.yml").write_text("name: b\nsteps: [{wait: {seconds: 0}}]\n")
    assert [p.name for p in discover([tmp_path])] == ["a.scenario.yaml", "b.scenario.yml"]
    with pytest.raises(ScenarioError, match="no such file"):
        discover([tmp_path / "missing"])


def test_json_schema_accepts_the_shop_suites_and_rejects_unknown_kinds() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    from devbox.scenario.model import json_schema
    from devbox.yamlpos import load_all

    schema = json_schema()
    files = sorted((Path(__file__).resolve().parents[2] / "scenarios" / "shop").glob("*.scenario.yaml"))
    assert len(files) >= 5
    for path in files:
        for doc in load_all(path.read_text()):
            jsonschema.validate(doc, schema)
            assert load_text(path.read_text(), source=str(path))[0].error is None
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"name": "x", "steps": [{"trafic": {}}]}, schema)
