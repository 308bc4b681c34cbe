"""devbox.yaml edited while ``up`` runs: what changed between two versions of the file.

The deploy component re-reads the file when it is saved (:class:`~devbox.mocks.deploy.reload.FileWatch`)
and applies what this module finds: services added are started, removed ones stopped, changed ones
replaced (rolling, as a hot reload) or scaled. Everything else — ``platform``, ``project``, other
components' sections, a service's entry ``port``/``protocol`` — is read once when the platform
starts: those are listed as :attr:`ConfigChange.restart_keys` for a "restart `devbox up`" message.

Two versions of the *file* are compared, not the file with what runs: what runs carries changes
made at run time (``up --no-reload``, ``devbox scale``), which :func:`carry_overrides` keeps on
every field the edit did not touch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from devbox.mocks.deploy.config import ServiceConfig

#: Keys of the project config that are not devbox.yaml keys.
NOT_IN_FILE = frozenset({"root", "source"})
#: A service's fields fixed for the whole ``up`` (its entry port is opened once).
RESTART_FIELDS = frozenset({"port", "protocol"})
#: Fields that only say how devbox watches the service's folder: no instance is replaced for them.
WATCH_FIELDS = frozenset({"reload", "watch_ignore"})
#: Fields whose change needs the service built again before its instances are replaced.
BUILD_FIELDS = frozenset({"build", "path", "image", "runtime"})


@dataclass
class ConfigChange:
    """What an edit of devbox.yaml changed."""

    added: list[ServiceConfig] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    #: (the service as the file now says, names of the fields that changed), restart-only fields left out
    changed: list[tuple[ServiceConfig, list[str]]] = field(default_factory=list)
    #: keys that only a restart applies, e.g. ``platform``, ``naming``, ``services.orders.port``
    restart_keys: list[str] = field(default_factory=list)

    @property
    def services(self) -> bool:
        return bool(self.added or self.removed or self.changed)


def _dump(value: Any) -> Any:
    return value.model_dump(mode="json") if hasattr(value, "model_dump") else value


def service_fields_changed(before: ServiceConfig, after: ServiceConfig) -> list[str]:
    old, new = before.model_dump(mode="json"), after.model_dump(mode="json")
    return [name for name in new if old.get(name) != new[name]]


def diff(before: Any, after: Any) -> ConfigChange:
    """What changed from one version of the file (a ``ProjectConfig``) to the next."""
    change = ConfigChange()
    for key in type(after).model_fields:
        if key in NOT_IN_FILE or key == "services":
            continue
        if _dump(getattr(before, key, None)) != _dump(getattr(after, key, None)):
            change.restart_keys.append(key)
    old = {svc.name: svc for svc in before.services}
    for svc in after.services:
        if svc.name not in old:
            change.added.append(svc)
            continue
        fields = service_fields_changed(old[svc.name], svc)
        change.restart_keys += [f"services.{svc.name}.{name}" for name in fields if name in RESTART_FIELDS]
        fields = [name for name in fields if name not in RESTART_FIELDS]
        if fields:
            change.changed.append((svc, fields))
    now = {svc.name for svc in after.services}
    change.removed = [name for name in old if name not in now]
    return change


def carry_overrides(running: ServiceConfig, before: ServiceConfig, after: ServiceConfig) -> ServiceConfig:
    """``after`` (the edited file's service), keeping what was changed at run time (where ``running``
    differs from the file's ``before``) on every field the edit did not touch. The entry port and
    protocol stay as they run: only a restart changes them."""
    edited = set(service_fields_changed(before, after))
    kept = {
        name: getattr(running, name)
        for name in type(after).model_fields
        if name in RESTART_FIELDS or (name not in edited and getattr(running, name) != getattr(before, name))
    }
    return after.model_copy(update=kept)
