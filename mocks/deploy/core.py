"""The deploy pipeline's rules, with no processes or sockets: states, backoff, injected config.

Everything here is driven by explicit timestamps (``now``), so tests use a fake clock.

LIMITATIONS: imitates the 123 platform's flow (build → start.sh → port and config injection →
health → auto-register) for local processes only; no images, no machines, no batches.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from devbox.mocks.deploy.config import RestartPolicy, ServiceConfig
from devbox.mocks.deploy.docker import BASE_IMAGE
from devbox.mocks.deploy.models import InstanceState

from devbox import envvars

LOG = logging.getLogger(__name__)

S = InstanceState
#: Allowed state changes. Anything else is a bug in the supervisor, raised loudly.
TRANSITIONS: dict[InstanceState, frozenset[InstanceState]] = {
    S.PENDING: frozenset({S.STARTING, S.FAILED, S.STOPPED}),
    S.STARTING: frozenset({S.READY, S.FAILED, S.BACKOFF, S.CRASHLOOP, S.STOPPING, S.STOPPED}),
    S.READY: frozenset({S.UNHEALTHY, S.BACKOFF, S.CRASHLOOP, S.STOPPING, S.STOPPED}),
    S.UNHEALTHY: frozenset({S.READY, S.BACKOFF, S.CRASHLOOP, S.STOPPING, S.STOPPED}),
    S.BACKOFF: frozenset({S.STARTING, S.STOPPED, S.FAILED}),
    S.CRASHLOOP: frozenset({S.STARTING, S.STOPPED}),
    S.FAILED: frozenset({S.STARTING, S.STOPPED}),
    S.STOPPING: frozenset({S.STOPPED}),
    S.STOPPED: frozenset({S.STARTING}),
}
#: States in which the instance has a live process devbox is responsible for.
RUNNING_STATES = frozenset({S.STARTING, S.READY, S.UNHEALTHY, S.STOPPING})


class InvalidTransition(RuntimeError):
    pass


@dataclass
class RestartDecision:
    restart: bool
    delay: float
    crashes_in_window: int
    reason: str


class Backoff:
    """Exponential restart backoff with crash-loop detection, per instance.

    The n-th consecutive crash waits ``backoff * factor**(n-1)`` (capped); an instance that ran
    for ``healthy_after`` seconds starts over. ``crash_loop`` crashes within ``window`` seconds
    stop the retries.
    """

    def __init__(self, policy: RestartPolicy) -> None:
        self.policy = policy
        self.consecutive = 0
        self.crashes: deque[float] = deque()

    def on_crash(self, *, now: float, uptime: float) -> RestartDecision:
        p = self.policy
        if uptime >= p.healthy_after:
            self.consecutive = 0
        self.consecutive += 1
        self.crashes.append(now)
        while self.crashes and self.crashes[0] < now - p.window:
            self.crashes.popleft()
        count = len(self.crashes)
        if not p.enabled:
            return RestartDecision(False, 0.0, count, "restarts are disabled for this service")
        if count >= p.crash_loop:
            return RestartDecision(
                False, 0.0, count, f"crash loop: {count} crashes within {p.window:g}s; not restarting"
            )
        delay = min(p.backoff * p.factor ** (self.consecutive - 1), p.max_backoff)
        return RestartDecision(True, delay, count, f"restart #{self.consecutive} in {delay:.2f}s")

    def reset(self) -> None:
        self.consecutive = 0
        self.crashes.clear()


@dataclass
class InstanceRecord:
    """What the supervisor knows about one instance: identity, port, state and counters."""

    name: str  # devbox's readable name, e.g. orders-3: log file and CLI
    service: str
    group: str
    port: int
    host: str = "127.0.0.1"
    state: InstanceState = InstanceState.PENDING
    pid: int | None = None
    restarts: int = 0
    started_at: float | None = None
    ready_at: float | None = None
    exit_code: int | None = None
    message: str = ""
    naming_id: str | None = None
    registered: bool = False
    history: list[tuple[float, InstanceState]] = field(default_factory=list)

    def move(self, new: InstanceState, *, now: float, message: str | None = None) -> None:
        if new is self.state:
            return
        if new not in TRANSITIONS[self.state]:
            raise InvalidTransition(f"{self.name}: {self.state.value} -> {new.value} is not allowed")
        self.state = new
        self.history.append((now, new))
        if message is not None:
            self.message = message

    @property
    def alive(self) -> bool:
        return self.state in RUNNING_STATES


def instance_port_range(range_file: Path = Path("/proc/sys/net/ipv4/ip_local_port_range")) -> tuple[int, int]:
    """[low, high) of the ports devbox gives instances: just below the kernel's ephemeral range."""
    try:
        ephemeral_low = int(range_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 32768
    if ephemeral_low < 4096:  # an unusual kernel setting: stay above the well-known ports
        return 20000, 30000
    return max(1024, ephemeral_low // 2 + 8000), ephemeral_low


@dataclass
class PlatformFacts:
    """Addresses of the platform that services need, as seen by the pipeline."""

    api_url: str
    namespace: str = "default"
    naming_http: str | None = None
    naming_grpc: str | None = None
    otlp_http: str | None = None
    #: ``platform.token``: services need it to export spans, report metrics and use naming.
    token: str | None = None


def instance_tags(svc: ServiceConfig, tags: dict[str, str]) -> dict[str, str]:
    return {**svc.tags, **tags}


def instance_facts(
    svc: ServiceConfig,
    *,
    record: InstanceRecord,
    instance_id: str,
    tags: dict[str, str],
    platform: PlatformFacts,
    config_file: Path,
) -> dict[str, object]:
    """What one instance is told about itself and the platform: the per-instance config file's content."""
    return {
        "service": svc.name,
        "instance": {"id": instance_id, "name": record.name, "host": record.host, "port": record.port},
        "protocol": svc.protocol,
        "tags": dict(tags),
        "register": svc.registration,
        "sampling": svc.sampling,
        "platform": {
            "api": platform.api_url,
            "namespace": platform.namespace,
            "naming_http": platform.naming_http,
            "naming_grpc": platform.naming_grpc,
            "otlp_http": platform.otlp_http,
        },
        "config_file": str(config_file),
    }


def instance_env(
    svc: ServiceConfig,
    *,
    record: InstanceRecord,
    instance_id: str,
    tags: dict[str, str],
    platform: PlatformFacts,
    config_file: Path,
    extra_env: dict[str, str] | None = None,
) -> dict[str, str]:
    """The environment injected into one instance (on top of the caller's own environment)."""
    resource = [f"service.instance.id={instance_id}"] + [f"devbox.{k}={v}" for k, v in sorted(tags.items())]
    env = {
        envvars.PORT: str(record.port),
        envvars.DEVBOX_SERVICE: svc.name,
        envvars.DEVBOX_INSTANCE_ID: instance_id,
        envvars.DEVBOX_INSTANCE_CONFIG: str(config_file),
        envvars.DEVBOX_TAGS: ",".join(f"{k}={v}" for k, v in sorted(tags.items())),
        envvars.DEVBOX_API_URL: platform.api_url,
        envvars.DEVBOX_NAMESPACE: platform.namespace,
        envvars.DEVBOX_REGISTER: svc.registration,
        envvars.DEVBOX_HOST: record.host,
        envvars.DEVBOX_PROTOCOL: svc.protocol,
        envvars.DEVBOX_SAMPLING: f"{svc.sampling:g}",
        envvars.OTEL_SERVICE_NAME: svc.name,
        envvars.OTEL_RESOURCE_ATTRIBUTES: ",".join(resource),
        envvars.OTEL_TRACES_SAMPLER: "parentbased_traceidratio",
        envvars.OTEL_TRACES_SAMPLER_ARG: f"{svc.sampling:g}",
        envvars.OTEL_PROPAGATORS: "tracecontext,baggage,b3multi",
    }
    if platform.naming_http:
        env[envvars.DEVBOX_NAMING_HTTP] = platform.naming_http
    if platform.naming_grpc:
        env[envvars.DEVBOX_NAMING_GRPC] = platform.naming_grpc
    if platform.otlp_http:
        env[envvars.OTEL_EXPORTER_OTLP_ENDPOINT] = platform.otlp_http
        env[envvars.OTEL_EXPORTER_OTLP_PROTOCOL] = "http/protobuf"
    if platform.token:
        # The SDKs read DEVBOX_TOKEN; any OpenTelemetry exporter sends OTEL_EXPORTER_OTLP_HEADERS
        # (W3C-baggage-style, values percent-encoded) as HTTP headers or gRPC metadata.
        env[envvars.DEVBOX_TOKEN] = platform.token
        env[envvars.OTEL_EXPORTER_OTLP_HEADERS] = f"Authorization={quote('Bearer ' + platform.token)}"
    env.update(svc.env)
    env.update(extra_env or {})
    return env


def preflight(services: list[ServiceConfig], root: Path) -> list[str]:
    """Problems that stop ``up`` before anything starts: missing folders and start scripts."""
    problems = []
    for svc in services:
        path = (root / svc.path).resolve()
        if not path.is_dir():
            problems.append(f"service {svc.name}: path {svc.path!r} ({path}) is not a folder")
            continue
        if svc.runtime == "docker":
            # the 123 convention: no image and no Dockerfile runs the folder's start script on devbox's base image
            script = start_script(svc.start)
            if svc.image is None and not (path / "Dockerfile").is_file() and script and not (path / script).is_file():
                problems.append(
                    f"service {svc.name}: runtime docker needs a Dockerfile, `image:`, or a start script "
                    f"({script}) in {path} to run on devbox's base image {BASE_IMAGE}"
                )
            continue
        script = start_script(svc.start)
        if script is not None:
            target = (path / script).resolve()
            if not target.exists():
                problems.append(
                    f"service {svc.name}: start script {script} not found in {path} "
                    "(write a start.sh that starts one instance listening on $PORT, or set `start:`)"
                )
            elif not target.is_file():
                problems.append(f"service {svc.name}: start script {target} is not a file")
    return problems


def start_script(start: str) -> str | None:
    """The relative script a start command runs (``./start.sh``), or None for other commands."""
    first = start.strip().split()[0] if start.strip() else ""
    if first.startswith("./") or first.endswith(".sh"):
        return first
    return None


def tail_lines(path: Path, count: int = 20, *, max_bytes: int = 64 * 1024) -> list[str]:
    """The last ``count`` lines of a log file (reads at most ``max_bytes`` from its end)."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            data = fh.read()
    except OSError:
        return []
    lines = data.decode("utf-8", "replace").splitlines()
    return lines[-count:]
