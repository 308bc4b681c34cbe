"""The deploy mock: builds, runs, supervises and reloads the project's services."""

from __future__ import annotations

from typing import Annotated, Any

from devbox.mocks.deploy.config import ServiceConfig
from pydantic import BeforeValidator

from devbox.platform.component import ComponentSpec


def _unique_names(services: Any) -> Any:
    seen: set[Any] = set()
    for svc in services if isinstance(services, list) else []:
        name = svc.get("name") if isinstance(svc, dict) else getattr(svc, "name", None)
        if name in seen:
            raise ValueError(f"service name {name!r} is declared twice; names must be unique")
        seen.add(name)
    return services


#: The ``services:`` section: the project's own services, names unique.
Services = Annotated[list[ServiceConfig], BeforeValidator(_unique_names)]

SPEC = ComponentSpec(
    name="deploy",
    factory="devbox.mocks.deploy.component:DeployComponent",
    config_key="services",
    config_model=Services,
    after=("naming",),
)
