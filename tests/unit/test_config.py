from __future__ import annotations

from pathlib import Path

import pytest

from devbox.config import ConfigError, json_schema, load_config, parse_config

SRC = Path("devbox.yaml")


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, source=SRC)
    return info.value.problems


def test_minimal_config_has_defaults() -> None:
    config = parse_config("project: shop\n", source=SRC)
    assert config.platform.ports.api == 7070
    assert config.platform.ports.polaris_grpc == 8091
    assert config.services == []


def test_unknown_key_names_file_line_key_and_allowed() -> None:
    [msg] = problems("project: x\nservices:\n  - name: a\n    replica: 2\n")
    assert msg.startswith("devbox.yaml:4: services[a].replica: unknown key; did you mean replicas? (allowed: name,")


def test_wrong_type_names_line() -> None:
    [msg] = problems("services:\n  - name: a\n    replicas: many\n")
    assert msg == "devbox.yaml:3: services[a].replicas: expected a whole number, not 'many'"


def test_duplicate_service_names() -> None:
    [msg] = problems("services:\n  - name: a\n  - name: a\n")
    assert "declared twice" in msg


def test_port_out_of_range() -> None:
    [msg] = problems("platform:\n  ports:\n    api: 70000\n")
    assert msg.startswith("devbox.yaml:3: platform.ports.api:")


def test_bad_yaml_names_line() -> None:
    [msg] = problems("project: x\nservices: [\n")
    assert msg.startswith("devbox.yaml:")
    assert "not valid YAML" in msg


def test_non_loopback_needs_token() -> None:
    [msg] = problems("platform:\n  host: 0.0.0.0\n")
    assert "token" in msg


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "devbox.yaml")
    assert "devbox init" in str(info.value)


def test_schema_is_json_schema() -> None:
    schema = json_schema()
    assert schema["title"] == "devbox.yaml"
    assert "services" in schema["properties"]
    assert "root" not in schema["properties"]
