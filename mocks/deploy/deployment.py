"""The supervisor's live state: a deployment (one service or one group of it) and its instances.

Shared by the supervisor (which changes it) and the registrar (which tells naming about it); the
JSON views the API and CLI show are here too, next to the fields they read.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devbox.mocks.deploy import core
from devbox.mocks.deploy.config import ServiceConfig
from devbox.mocks.deploy.models import InstanceState
from devbox.mocks.deploy.runner import RunningProcess


@dataclass
class Instance:
    """An instance's record plus the live things attached to it (process, tasks, backoff)."""

    record: core.InstanceRecord
    backoff: core.Backoff
    proc: RunningProcess | None = None
    log_path: Path | None = None
    config_path: Path | None = None
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    #: Set when devbox itself stops the process, so its exit is not a crash.
    stopping: bool = False
    probe_failures: int = 0
    keepalive: asyncio.Task[Any] | None = None
    #: Its weight in naming (a gray release shifts traffic by it); 100 is Polaris's default.
    weight: int = 100
    #: Where naming sends callers (the fault proxy in front of it, or its own port), once registered.
    registered_address: tuple[str, int] | None = None

    def describe(self) -> dict[str, Any]:
        rec = self.record
        return {
            "name": rec.name,
            "id": rec.naming_id,
            "group": rec.group,
            "host": rec.host,
            "port": rec.port,
            "pid": rec.pid if rec.alive else None,
            "state": rec.state.value,
            "healthy": rec.state is InstanceState.READY,
            "registered": rec.registered,
            "weight": self.weight,
            "restarts": rec.restarts,
            "started_at": rec.started_at,
            "ready_at": rec.ready_at,
            "exit_code": rec.exit_code,
            "message": rec.message,
            "log": str(self.log_path) if self.log_path else None,
            "config": str(self.config_path) if self.config_path else None,
        }


@dataclass
class Deployment:
    """One service (or one group of it, e.g. a feature environment) and its instances."""

    svc: ServiceConfig
    group: str = "default"
    extra_tags: dict[str, str] = field(default_factory=dict)
    extra_env: dict[str, str] = field(default_factory=dict)
    instances: dict[str, Instance] = field(default_factory=dict)
    built_at: float | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    reloads: int = 0
    last_reload: dict[str, Any] | None = None
    #: Weight in naming of the instances it starts (a release's new version starts at 0, out of rotation).
    initial_weight: int = 100

    @property
    def key(self) -> str:
        return self.svc.name if self.group == "default" else f"{self.svc.name}@{self.group}"

    @property
    def tags(self) -> dict[str, str]:
        return core.instance_tags(self.svc, self.extra_tags)

    def describe(self, path: Path) -> dict[str, Any]:
        """The deployment as the API shows it; ``path`` is the service's resolved folder."""
        instances = [i.describe() for i in self.instances.values()]
        ready = sum(1 for i in instances if i["healthy"])
        return {
            "service": self.svc.name,
            "group": self.group,
            "key": self.key,
            "replicas": self.svc.replicas,
            "ready": ready,
            "protocol": self.svc.protocol,
            "register": self.svc.registration,
            "tags": self.tags,
            "path": str(path),
            "reload": self.svc.reload,
            "reloads": self.reloads,
            "last_reload": self.last_reload,
            "restarts": sum(i["restarts"] for i in instances),
            "instances": instances,
        }
