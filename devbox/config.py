"""devbox.yaml: the project's config, read once into typed objects.

The model itself is assembled from the components' specs in :mod:`devbox.assembly` (each
component declares its own section); this module reads and validates the file. Each component
receives its own section through its constructor. A wrong config fails before anything starts,
with the file, line and key in the message and what is allowed there. This is the only module
that reads the environment for the platform.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from devbox import envvars
from devbox.assembly import DEFAULT_PORTS, PlatformConfig, Ports, ProjectConfig
from devbox.projectfile import DEFAULT_FILE, find_config
from devbox.yamlpos import YamlError, YamlMap, allowed_keys, describe_error, line_of, load, plain

__all__ = [
    "DEFAULT_FILE",
    "DEFAULT_PORTS",
    "ConfigError",
    "PlatformConfig",
    "Ports",
    "ProjectConfig",
    "find_config",
    "json_schema",
    "load_config",
    "parse_config",
]


class ConfigError(Exception):
    """A config that cannot be used. ``str()`` names the file, line and key and what is allowed."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def parse_config(
    text: str, *, source: Path | None = None, root: Path | None = None, token: str | None = None
) -> ProjectConfig:
    """Validate YAML text as a devbox.yaml; raise :class:`ConfigError` naming file, line and key."""
    where = str(source) if source else "<config>"
    try:
        tree = load(text)
    except YamlError as exc:
        raise ConfigError([exc.where(where)]) from None
    if tree is None:
        tree = YamlMap(1)
    if not isinstance(tree, dict):
        raise ConfigError([f"{where}:1: the top level must be a mapping of keys (project, services, ...)"])
    base = root or (source.parent if source else Path.cwd())
    data = plain(tree)
    if token and isinstance(data.get("platform", {}), dict) and not data.get("platform", {}).get("token"):
        data["platform"] = {**data.get("platform", {}), "token": token}
    try:
        return ProjectConfig.model_validate({**data, "root": base.resolve(), "source": source})
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            line, key = line_of(tree, err["loc"])
            allowed = allowed_keys(ProjectConfig, err["loc"]) if err["type"] == "extra_forbidden" else ""
            at = f"{where}:{line}" if line else where
            problems.append(f"{at}: {key}: {describe_error(err)}{allowed}")
        raise ConfigError(problems) from None


def load_config(path: str | os.PathLike[str] | None = None) -> ProjectConfig:
    """Read and validate the project's devbox.yaml (see :func:`find_config`)."""
    source = find_config(path)
    if not source.exists():
        raise ConfigError(
            [f"{source.absolute()}: no such file; run `devbox init` to write a starter config, or pass -f PATH"]
        )
    return parse_config(
        source.read_text(encoding="utf-8"), source=source.resolve(), token=os.environ.get(envvars.DEVBOX_TOKEN)
    )


def json_schema() -> dict[str, Any]:
    """JSON Schema of devbox.yaml, for editors."""
    schema: dict[str, Any] = ProjectConfig.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "devbox.yaml"
    for hidden in ("root", "source"):
        schema.get("properties", {}).pop(hidden, None)
    return schema
