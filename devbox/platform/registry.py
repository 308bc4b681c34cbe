"""The one place where the platform's components are named, in start order.

Each entry is ``name -> "module:Class"``, imported only when the platform starts (LocalStack's
lazy service factories). Adding a mock is one line here.
"""

from __future__ import annotations

import importlib
import logging

from devbox.platform.component import Component

LOG = logging.getLogger(__name__)

COMPONENTS: dict[str, str] = {
    "naming": "devbox.mocks.naming.component:NamingComponent",
    "tracing": "devbox.mocks.tracing.component:TracingComponent",
    "metrics": "devbox.mocks.metrics.component:MetricsComponent",
    "alerting": "devbox.mocks.alerting.component:AlertingComponent",
    "deploy": "devbox.mocks.deploy.component:DeployComponent",
    "faults": "devbox.mocks.faults.component:FaultsComponent",
    "dashboard": "devbox.dashboard.component:DashboardComponent",
}


def load(name: str) -> type[Component]:
    module_name, _, attr = COMPONENTS[name].partition(":")
    cls = getattr(importlib.import_module(module_name), attr)
    if not (isinstance(cls, type) and issubclass(cls, Component)):
        raise TypeError(f"{COMPONENTS[name]} is not a Component")
    return cls


def available() -> list[str]:
    """Names whose module exists in this install (a component not built yet is simply absent)."""
    names = []
    for name, spec in COMPONENTS.items():
        module_name = spec.partition(":")[0]
        if importlib.util.find_spec(module_name.rsplit(".", 1)[0]) is None:
            continue
        try:
            if importlib.util.find_spec(module_name) is not None:
                names.append(name)
        except ModuleNotFoundError:
            continue
    return names
