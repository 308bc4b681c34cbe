"""The one place that names devbox's components: their specs in start order, and what is built
from them — the project config model (devbox.yaml), the listening ports, the platform's list.

Adding a mock is one line in :data:`COMPONENT_PACKAGES`: its package's ``__init__`` declares a
``SPEC`` (:class:`~devbox.platform.component.ComponentSpec`: config section, listeners, factory),
and the config key, the port under ``platform.ports`` and the component follow from it. The
platform layer (:mod:`devbox.platform`) imports none of this; it receives the specs.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from devbox import envvars
from devbox.load.config import LoadConfig
from devbox.platform.component import API_LISTENER, ComponentSpec, Listener

#: Packages whose ``SPEC`` is a hosted component, in start order.
COMPONENT_PACKAGES: tuple[str, ...] = (
    "devbox.mocks.naming",
    "devbox.mocks.tracing",
    "devbox.mocks.metrics",
    "devbox.mocks.alerting",
    "devbox.mocks.deploy",
    "devbox.mocks.faults",
    "devbox.dashboard",
)


def _spec_of(package: str) -> ComponentSpec:
    spec = getattr(importlib.import_module(package), "SPEC", None)
    if not isinstance(spec, ComponentSpec):
        raise TypeError(f"{package}.SPEC is not a ComponentSpec")
    return spec


def _checked(specs: tuple[ComponentSpec, ...]) -> tuple[ComponentSpec, ...]:
    """The specs, refusing a duplicate name, key or listener and an ``after`` that starts later."""
    names: list[str] = []
    keys: set[str] = set()
    listeners: set[str] = {API_LISTENER.name}
    for spec in specs:
        if spec.name in names:
            raise ValueError(f"component {spec.name} is listed twice")
        late = [dep for dep in spec.after if dep not in names]
        if late:
            raise ValueError(f"component {spec.name} must start after {', '.join(late)}: list it after them")
        if spec.config_key is not None:
            if spec.config_key in keys:
                raise ValueError(f"config key {spec.config_key!r} of {spec.name} is taken")
            keys.add(spec.config_key)
        for listener in spec.listeners:
            if listener.name in listeners:
                raise ValueError(f"listener {listener.name!r} of {spec.name} is taken")
            listeners.add(listener.name)
        names.append(spec.name)
    return specs


# --- models built from the specs --------------------------------------------------------------


class PortsBase(BaseModel):
    """Listening ports, one per listener. 0 means an ephemeral port (tests)."""

    model_config = ConfigDict(extra="forbid")

    @classmethod
    def ephemeral(cls) -> Any:
        """Every port 0: each listener gets a free port when bound."""
        return cls(**dict.fromkeys(cls.model_fields, 0))


def _ports_fields(listeners: tuple[Listener, ...]) -> dict[str, Any]:
    return {
        listener.name: (int, Field(listener.default_port, ge=0, le=65535, description=listener.description))
        for listener in listeners
    }


def _section_default(model: Any) -> Any:
    """The default factory of a config section: the model itself, or ``list`` for a list section."""
    origin = get_origin(model)
    if origin is Annotated:
        return _section_default(get_args(model)[0])
    if origin is list:
        return list
    return model


#: Every component's spec, in start order.
SPECS: tuple[ComponentSpec, ...] = _checked(tuple(_spec_of(package) for package in COMPONENT_PACKAGES))
#: Every listener: the platform's ``api``, then each component's, in start order.
LISTENERS: tuple[Listener, ...] = (API_LISTENER, *(listener for spec in SPECS for listener in spec.listeners))
#: Where each listener listens by default: where its real clients look with zero configuration.
DEFAULT_PORTS: dict[str, int] = {listener.name: listener.default_port for listener in LISTENERS}

_PortFields: Any = create_model("Ports", __base__=PortsBase, **_ports_fields(LISTENERS))


class Ports(_PortFields, PortsBase):
    """Listening ports, one per listener (see :data:`LISTENERS`). 0 means an ephemeral port (tests)."""

    if TYPE_CHECKING:  # the fields come from the specs: a type checker sees each port as an int

        def __getattr__(self, name: str) -> int: ...


class PlatformConfig(BaseModel):
    """The ``platform:`` section: where devbox listens and keeps its state."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field("127.0.0.1", description="Address every listener binds to.")
    token: str | None = Field(None, description="Required when host is not loopback.")
    ports: Ports = Field(default_factory=Ports)
    state_dir: str = Field(".devbox", description="Where state lives, relative to devbox.yaml.")
    max_body_bytes: int = Field(16 * 1024 * 1024, gt=0, description="Larger request bodies get 413.")
    read_timeout: float = Field(
        30.0, gt=0, description="Seconds a request body may stall before the request gets 408 and is closed."
    )

    @model_validator(mode="after")
    def _token_off_loopback(self) -> PlatformConfig:
        if not _is_loopback(self.host) and not self.token:
            raise ValueError(
                f"binding to {self.host} exposes devbox beyond this machine: set platform.token "
                f"(or {envvars.DEVBOX_TOKEN}) or bind to 127.0.0.1"
            )
        return self


def _is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


class ProjectConfigBase(BaseModel):
    """The keys of devbox.yaml that belong to the project and the platform, not to a component."""

    model_config = ConfigDict(extra="forbid")

    project: str = Field("devbox", description="Project name, shown in the dashboard and reports.")
    platform: PlatformConfig = Field(default_factory=PlatformConfig)
    load: LoadConfig = Field(default_factory=LoadConfig, description="Defaults of `devbox load` (Locust).")

    #: Folder of devbox.yaml; relative paths resolve against it. Not part of the file.
    root: Path = Field(default_factory=Path.cwd, exclude=True)
    #: The file this config came from, if any. Not part of the file.
    source: Path | None = Field(None, exclude=True)

    @property
    def state_path(self) -> Path:
        return (self.root / self.platform.state_dir).resolve()


def _section_fields(specs: tuple[ComponentSpec, ...]) -> dict[str, Any]:
    taken = [spec.config_key for spec in specs if spec.config_key in ProjectConfigBase.model_fields]
    if taken:
        raise ValueError(f"config keys {', '.join(map(str, taken))} belong to the project, not a component")
    return {
        spec.config_key: (
            spec.config_model,
            Field(default_factory=_section_default(spec.config_model), description=spec.config_description or None),
        )
        for spec in specs
        if spec.config_key is not None
    }


_Sections: Any = create_model("ProjectConfig", __base__=ProjectConfigBase, **_section_fields(SPECS))


class ProjectConfig(_Sections, ProjectConfigBase):
    """The whole of devbox.yaml: the project's keys plus one section per component (its spec's
    ``config_key``, e.g. ``naming``, ``services``)."""

    if TYPE_CHECKING:  # the sections come from the specs; each component types its own section

        def __getattr__(self, name: str) -> Any: ...

    #: The specs this config was assembled from: what the platform hosts by default.
    component_specs: ClassVar[tuple[ComponentSpec, ...]] = SPECS

    def service(self, name: str) -> Any:
        """The ``services:`` entry called ``name``; KeyError when there is none."""
        for svc in self.services:
            if svc.name == name:
                return svc
        raise KeyError(name)

    @classmethod
    def for_tests(cls, root: Path, **overrides: Any) -> ProjectConfig:
        """A config with every port ephemeral and state under ``root``."""
        platform = PlatformConfig(ports=Ports.ephemeral(), **overrides.pop("platform", {}))
        return cls(root=root, platform=platform, **overrides)
