"""Turning component specs into component classes, and the names the assembled platform hosts.

The specs themselves are listed, in start order, in :mod:`devbox.assembly` (adding a mock is one
line there); this module only imports a spec's ``"module:Class"`` when the platform starts
(LocalStack's lazy service factories). ``COMPONENTS`` (name -> ``"module:Class"``) is read from
the assembly on first use; a benchmark or test may add its own entry to it.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from collections.abc import Iterable
from typing import Any

from devbox.platform.component import Component, ComponentSpec

LOG = logging.getLogger(__name__)


def load_factory(factory: str) -> type[Component]:
    """The class named by ``"module:Class"``; TypeError when it is not a Component."""
    module_name, _, attr = factory.partition(":")
    cls = getattr(importlib.import_module(module_name), attr)
    if not (isinstance(cls, type) and issubclass(cls, Component)):
        raise TypeError(f"{factory} is not a Component")
    return cls


def importable(factory: str) -> bool:
    """Whether the module of ``"module:Class"`` exists in this install (a component not built yet
    is simply absent)."""
    module_name = factory.partition(":")[0]
    try:
        return importlib.util.find_spec(module_name) is not None
    except ModuleNotFoundError:
        return False


def specs_by_name(specs: Iterable[ComponentSpec]) -> dict[str, ComponentSpec]:
    """The specs plus any entry added to ``COMPONENTS`` at run time (as a spec with no config)."""
    found = {spec.name: spec for spec in specs}
    for name, factory in _components().items():
        if name not in found or found[name].factory != factory:
            found[name] = ComponentSpec(name=name, factory=factory)
    return found


def load(name: str) -> type[Component]:
    return load_factory(_components()[name])


def available() -> list[str]:
    """Names of the assembled components whose module exists in this install, in start order."""
    return [name for name, factory in _components().items() if importable(factory)]


_COMPONENTS: dict[str, str] | None = None


def _components() -> dict[str, str]:
    global _COMPONENTS
    if _COMPONENTS is None:
        # Imported here, not at the top: the platform layer names no component; the assembly does.
        from devbox.assembly import SPECS

        _COMPONENTS = {spec.name: spec.factory for spec in SPECS}
    return _COMPONENTS


def __getattr__(name: str) -> Any:
    if name == "COMPONENTS":
        return _components()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
