"""devbox.yaml: the project's config, read once into typed objects.

Each component receives its own section through its constructor. A wrong config fails before
anything starts, with the file, line and key in the message and what is allowed there. This is
the only module that reads the environment for the platform.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.error import MarkedYAMLError

from devbox import envvars
from devbox.mocks.alerting.config import AlertingConfig
from devbox.mocks.deploy.config import ServiceConfig
from devbox.mocks.faults.config import FaultsConfig
from devbox.mocks.metrics.config import MetricsConfig
from devbox.mocks.naming.config import NamingConfig
from devbox.mocks.tracing.config import TracingConfig
from devbox.yamlpos import allowed_keys, describe_error, line_of, plain

DEFAULT_FILE = "devbox.yaml"

#: Where each protocol listens by default: where its real clients look with zero configuration.
DEFAULT_PORTS: dict[str, int] = {
    "api": 7070,
    "otlp_http": 4318,
    "otlp_grpc": 4317,
    "zipkin": 9411,
    "polaris_grpc": 8091,
    "polaris_http": 8090,
    "prometheus": 9090,
    "alertmanager": 9093,
}


class Ports(BaseModel):
    """Listening ports, one per protocol. 0 means an ephemeral port (tests)."""

    model_config = ConfigDict(extra="forbid")

    api: int = Field(DEFAULT_PORTS["api"], ge=0, le=65535, description="devbox API and dashboard.")
    otlp_http: int = Field(DEFAULT_PORTS["otlp_http"], ge=0, le=65535, description="OTLP/HTTP ingest.")
    otlp_grpc: int = Field(DEFAULT_PORTS["otlp_grpc"], ge=0, le=65535, description="OTLP/gRPC ingest.")
    zipkin: int = Field(DEFAULT_PORTS["zipkin"], ge=0, le=65535, description="Zipkin v2 API.")
    polaris_grpc: int = Field(DEFAULT_PORTS["polaris_grpc"], ge=0, le=65535, description="Polaris gRPC API.")
    polaris_http: int = Field(DEFAULT_PORTS["polaris_http"], ge=0, le=65535, description="Polaris HTTP API.")
    prometheus: int = Field(DEFAULT_PORTS["prometheus"], ge=0, le=65535, description="Prometheus query API.")
    alertmanager: int = Field(
        DEFAULT_PORTS["alertmanager"], ge=0, le=65535, description="Alertmanager API v2."
    )

    @classmethod
    def ephemeral(cls) -> Ports:
        return cls(**dict.fromkeys(DEFAULT_PORTS, 0))


class PlatformConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = Field("127.0.0.1", description="Address every listener binds to.")
    token: str | None = Field(None, description="Required when host is not loopback.")
    ports: Ports = Field(default_factory=Ports)
    state_dir: str = Field(".devbox", description="Where state lives, relative to devbox.yaml.")
    max_body_bytes: int = Field(16 * 1024 * 1024, gt=0, description="Larger request bodies get 413.")

    @model_validator(mode="after")
    def _token_off_loopback(self) -> PlatformConfig:
        if not _is_loopback(self.host) and not self.token:
            raise ValueError(
                f"binding to {self.host} exposes devbox beyond this machine: set platform.token "
                f"(or {envvars.DEVBOX_TOKEN}) or bind to 127.0.0.1"
            )
        return self


class ProjectConfig(BaseModel):
    """The whole of devbox.yaml."""

    model_config = ConfigDict(extra="forbid")

    project: str = Field("devbox", description="Project name, shown in the dashboard and reports.")
    platform: PlatformConfig = Field(default_factory=PlatformConfig)
    services: list[ServiceConfig] = Field(default_factory=list)
    naming: NamingConfig = Field(default_factory=NamingConfig)
    tracing: TracingConfig = Field(default_factory=TracingConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    alerting: AlertingConfig = Field(default_factory=AlertingConfig)
    faults: FaultsConfig = Field(default_factory=FaultsConfig)

    #: Folder of devbox.yaml; relative paths resolve against it. Not part of the file.
    root: Path = Field(default_factory=Path.cwd, exclude=True)
    #: The file this config came from, if any. Not part of the file.
    source: Path | None = Field(None, exclude=True)

    @field_validator("services", mode="before")
    @classmethod
    def _unique_names(cls, services: Any) -> Any:
        seen: set[str] = set()
        for svc in services if isinstance(services, list) else []:
            name = svc.get("name") if isinstance(svc, dict) else getattr(svc, "name", None)
            if name in seen:
                raise ValueError(f"service name {name!r} is declared twice; names must be unique")
            seen.add(name)
        return services

    @property
    def state_path(self) -> Path:
        return (self.root / self.platform.state_dir).resolve()

    def service(self, name: str) -> ServiceConfig:
        for svc in self.services:
            if svc.name == name:
                return svc
        raise KeyError(name)

    @classmethod
    def for_tests(cls, root: Path, **overrides: Any) -> ProjectConfig:
        """A config with every port ephemeral and state under ``root``."""
        platform = PlatformConfig(ports=Ports.ephemeral(), **overrides.pop("platform", {}))
        return cls(root=root, platform=platform, **overrides)


class ConfigError(Exception):
    """A config that cannot be used. ``str()`` names the file, line and key and what is allowed."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def _is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


def parse_config(
    text: str, *, source: Path | None = None, root: Path | None = None, token: str | None = None
) -> ProjectConfig:
    """Validate YAML text as a devbox.yaml; raise :class:`ConfigError` naming file, line and key."""
    where = str(source) if source else "<config>"
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    try:
        tree = yaml.load(text) or CommentedMap()
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark else ""
        raise ConfigError([f"{where}{line}: not valid YAML: {exc.problem or exc.context}"]) from None
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


def find_config(path: str | os.PathLike[str] | None = None) -> Path:
    """The config file to use: ``path``, else $DEVBOX_CONFIG, else ./devbox.yaml."""
    chosen = Path(path or os.environ.get(envvars.DEVBOX_CONFIG) or DEFAULT_FILE)
    if chosen.is_dir():
        chosen = chosen / DEFAULT_FILE
    return chosen


def load_config(path: str | os.PathLike[str] | None = None) -> ProjectConfig:
    """Read and validate the project's devbox.yaml (see :func:`find_config`)."""
    source = find_config(path)
    if not source.exists():
        raise ConfigError(
            [f"{source}: no such file; run `devbox init` to write a starter config, or pass -f PATH"]
        )
    return parse_config(
        source.read_text(encoding="utf-8"), source=source.resolve(), token=os.environ.get(envvars.DEVBOX_TOKEN)
    )


def json_schema() -> dict[str, Any]:
    """JSON Schema of devbox.yaml, for editors."""
    schema = ProjectConfig.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "devbox.yaml"
    for hidden in ("root", "source"):
        schema.get("properties", {}).pop(hidden, None)
    return schema
