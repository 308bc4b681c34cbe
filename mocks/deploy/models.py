"""Plain data of the deploy pipeline: instance states and lifecycle events."""

from __future__ import annotations

import enum
import time
from dataclasses import asdict, dataclass, field
from typing import Any


class InstanceState(enum.StrEnum):
    """Where one instance is in its life. See :data:`devbox.mocks.deploy.core.TRANSITIONS`."""

    PENDING = "pending"  # created, not spawned yet
    STARTING = "starting"  # process spawned, readiness not seen yet
    READY = "ready"  # readiness passed (and registered when registration is auto)
    UNHEALTHY = "unhealthy"  # running, but the periodic probe fails (e.g. SIGSTOP)
    BACKOFF = "backoff"  # exited on its own; waiting before a restart
    CRASHLOOP = "crashloop"  # exited too often; devbox stopped retrying
    FAILED = "failed"  # never became ready, or could not be spawned
    STOPPING = "stopping"  # SIGTERM sent by devbox
    STOPPED = "stopped"  # stopped by devbox (or by a SIGSTOP-free kill asked for by the user)


class EventKind(enum.StrEnum):
    BUILT = "built"
    BUILD_FAILED = "build_failed"
    STARTED = "started"
    READY = "ready"
    NOT_READY = "not_ready"
    REGISTERED = "registered"
    DEREGISTERED = "deregistered"
    UNHEALTHY = "unhealthy"
    HEALTHY = "healthy"
    CRASHED = "crashed"
    RESTARTED = "restarted"
    CRASH_LOOP = "crash_loop"
    STOPPED = "stopped"
    KILLED = "killed"
    SIGNALLED = "signalled"
    SCALED = "scaled"
    RELOAD = "reload"
    RELOADED = "reloaded"
    RELOAD_FAILED = "reload_failed"
    PORT_CHANGED = "port_changed"
    #: devbox.yaml edited while up runs (service ``devbox.yaml``): applied, or what needs a restart
    CONFIG_CHANGED = "config_changed"
    #: devbox.yaml edited into an error (file:line:key): nothing applied, the running services are kept
    CONFIG_ERROR = "config_error"
    #: gray release steps (:mod:`devbox.mocks.deploy.release`)
    RELEASE = "release"
    RELEASE_BATCH = "release_batch"
    RELEASE_GATE = "release_gate"
    RELEASE_PAUSED = "release_paused"
    RELEASE_RESUMED = "release_resumed"
    RELEASE_ROLLED_BACK = "release_rolled_back"
    RELEASE_DONE = "release_done"
    RELEASE_FAILED = "release_failed"


@dataclass
class DeployEvent:
    """One lifecycle event of a service or one of its instances, as stored and served."""

    service: str
    kind: EventKind
    message: str = ""
    instance: str | None = None
    ts: float = field(default_factory=time.time)
    data: dict[str, Any] = field(default_factory=dict)
    id: int | None = None

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["kind"] = self.kind.value
        return out
