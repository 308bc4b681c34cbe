"""The typed seams between components: what one component needs of another, and nothing more.

A component that offers one of these registers an implementation with
:meth:`devbox.platform.component.PlatformContext.provide` when it is constructed; a component
that needs it asks :meth:`~devbox.platform.component.PlatformContext.lookup` (``None`` when no
hosted component offers it). No component imports another component's module or reads its
attributes: a rename inside a mock breaks its port's type check, not a neighbour at run time.

The shapes are deliberately small and plain (strings, numbers, mappings): a port is a contract
between packages that evolve separately.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

#: One PromQL series at one instant: its labels and value.
Sample = tuple[dict[str, str], float]
#: One PromQL series over a range: its labels and (timestamp, value) points.
RangeSeries = tuple[dict[str, str], list[tuple[float, float]]]


class PortError(Exception):
    """A port's request was refused; ``str()`` says why in the words of the component behind it."""


class UnknownInstance(PortError, KeyError):
    """The instance id names no registered instance."""


@runtime_checkable
class InstanceView(Protocol):
    """A registered instance as other components see it."""

    @property
    def id(self) -> str: ...
    @property
    def service(self) -> str: ...
    @property
    def namespace(self) -> str: ...
    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def healthy(self) -> bool: ...
    @property
    def weight(self) -> int: ...
    @property
    def metadata(self) -> Mapping[str, str]: ...
    @property
    def isolated(self) -> bool:
        """Taken out of rotation by an operator (Polaris ``isolate``), whatever its health."""
        ...


@dataclass(frozen=True)
class Registration:
    """What the deploy pipeline registers for an instance it started."""

    namespace: str
    service: str
    host: str
    port: int
    protocol: str = ""
    version: str = ""
    weight: int = 100
    metadata: Mapping[str, str] = field(default_factory=dict)
    ttl: float = 5.0
    health_check: bool = True
    #: Keep this id (the one the instance was told) instead of Polaris's address-derived one.
    id: str | None = None


@runtime_checkable
class NamingPort(Protocol):
    """Naming (北极星) for the other components: register, heartbeat, discover, and fault hooks."""

    @property
    def namespace(self) -> str:
        """The project's default namespace."""
        ...

    def register(self, registration: Registration) -> InstanceView: ...
    def deregister(self, instance_id: str) -> None: ...
    def heartbeat(self, instance_id: str) -> None:
        """Raises :class:`UnknownInstance` when the registry no longer knows the id."""
        ...

    def set_healthy(self, instance_id: str, healthy: bool) -> None: ...
    def set_isolated(self, instance_id: str, isolated: bool) -> None:
        """Take an instance out of rotation (or back in), as Polaris's console does."""
        ...

    def instances(self, namespace: str, service: str) -> Sequence[InstanceView]: ...
    def all_instances(self) -> Sequence[InstanceView]:
        """Every registered instance of every namespace and service."""
        ...

    def routing_rules(self, namespace: str, service: str) -> list[dict[str, Any]]:
        """The service's routing rules as Polaris JSON (what ``devbox.polaris.routing.parse_rules`` reads)."""
        ...

    def replace_routing_rules(self, namespace: str, service: str, rules: Sequence[Mapping[str, Any]]) -> None:
        """Replace every routing rule of the service (a scenario's ``routing_rule`` step)."""
        ...

    def drop_heartbeats(self, instance_id: str, drop: bool = True) -> None:
        """Fault hook: lose (or stop losing) every heartbeat of an instance, whoever sends it.

        The sender still sees success; naming sees nothing, so the instance goes unhealthy after
        its TTL as if the network dropped them. Raises :class:`UnknownInstance` for an unknown id.
        """
        ...


@runtime_checkable
class MetricsQueryPort(Protocol):
    """PromQL over the metrics store, for alerting, the dashboard, releases and scenarios.

    Both raise :class:`PortError` (its message is the reason) for an expression that does not parse
    or is over the query budget.
    """

    def query_instant(self, expr: str, at: float) -> list[Sample]: ...
    def query_range(self, expr: str, start: float, end: float, step: float) -> list[RangeSeries]: ...
    async def query_range_async(self, expr: str, start: float, end: float, step: float) -> list[RangeSeries]:
        """``query_range`` for a caller on the event loop: awaited, never evaluated on the loop."""
        ...


@runtime_checkable
class AlertsView(Protocol):
    """Alerting's state in Prometheus's shapes (``/api/v1/rules``, ``/api/v1/alerts``)."""

    def prometheus_rules(self) -> dict[str, Any]: ...
    def prometheus_alerts(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class RunningInstance:
    """A user-service instance the deploy pipeline runs, as other components see it."""

    service: str
    name: str
    host: str
    port: int
    pid: int | None
    state: str
    naming_id: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    #: Why it is in its state (e.g. the readiness failure), for messages.
    message: str = ""
    #: The instance's log file, for the last lines of a failed start.
    log_path: str | None = None


@runtime_checkable
class DeployView(Protocol):
    """What runs where: the deploy pipeline's instances, and the actions a scenario takes on them.

    ``instance`` is deploy's name (``orders-2``) or the naming id. The actions raise
    :class:`UnknownInstance` for an unknown service or instance and :class:`PortError` for an action
    that is not possible now; they return the instance (or deployment) as deploy describes it.
    """

    def running_instances(self) -> list[RunningInstance]:
        """Every instance the pipeline manages whatever its state (``failed``, ``crashloop`` and
        ``stopped`` too; ``pid`` only while alive), with ``message`` and ``log_path``: why a start failed."""
        ...

    async def kill_instance(self, service: str, instance: str) -> Mapping[str, Any]: ...
    async def signal_instance(self, service: str, instance: str, signal: str) -> Mapping[str, Any]:
        """Send a signal by name (``SIGSTOP`` hangs the instance, ``SIGCONT`` resumes it)."""
        ...

    async def stop_instance(self, service: str, instance: str) -> Mapping[str, Any]: ...
    async def start_instance(self, service: str, instance: str) -> Mapping[str, Any]: ...
    async def start_service(
        self,
        service: str,
        *,
        replicas: int | None = None,
        tags: Mapping[str, str] | None = None,
        env: Mapping[str, str] | None = None,
        group: str = "default",
    ) -> Mapping[str, Any]:
        """Start a service of devbox.yaml with overrides; ``group`` other than ``default`` runs a
        second set of instances beside the first (e.g. ``tags={"env": "feature-x"}``)."""
        ...


#: ``front(service, instance_id, host, port) -> (host, port)`` callers should use instead.
FrontFn = Callable[[str, str, str, int], Awaitable[tuple[str, int]]]


@runtime_checkable
class FaultFront(Protocol):
    """The fault-injection proxies that stand in front of instances (and the stable entry ports)."""

    async def front(self, service: str, instance_id: str, host: str, port: int) -> tuple[str, int]:
        """Put a proxy in front of ``host:port``; return the address to register instead."""
        ...

    async def entry(self, service: str, port: int | None = None, *, protocol: str = "http") -> tuple[str, int]:
        """The service's stable entry address (opened at ``port``, or a free port, on first call), which
        forwards to its current healthy instances by weight until the platform stops. Raises
        :class:`PortError` when ``port`` is taken."""
        ...

    async def release(self, instance_id: str) -> None:
        """The instance is gone: close its proxy."""
        ...

    def add_rule(self, spec: Mapping[str, Any]) -> Mapping[str, Any]:
        """Add a fault rule (the body of ``POST /api/faults``); the rule as JSON, with its ``id``.
        Raises :class:`PortError` for an invalid spec."""
        ...

    def remove_rule(self, rule_id: str) -> None:
        """Raises :class:`PortError` for an unknown rule id."""
        ...

    async def reset(self) -> None:
        """Remove every rule, let every heartbeat through and close every forced-open circuit."""
        ...

    def drop_heartbeats(self, instance_id: str, drop: bool = True) -> None:
        """Lose an instance's heartbeats (through :meth:`NamingPort.drop_heartbeats`) until :meth:`reset`."""
        ...

    async def open_circuit(self, instance_id: str, opened: bool = True) -> None:
        """Refuse connections to the instance's proxy, so callers' breakers open while naming lists it
        healthy. Raises :class:`PortError` when no proxy stands in front of the instance."""
        ...


@runtime_checkable
class TracesPort(Protocol):
    """The trace collector's stored spans, for assertions on traces (scenarios)."""

    async def traces(self, trace_ids: list[str]) -> list[list[Any]]:
        """The stored spans of each trace (``devbox.mocks.tracing.models.Span``), in the order
        asked, leaving out the ids with no stored span."""
        ...

    async def dependencies(self, end_us: int, lookback_us: int) -> list[dict[str, Any]]:
        """Zipkin's dependency links of the window: ``parent``, ``child``, ``callCount``, ``errorCount``."""
        ...

    def services_seen(self) -> set[str]:
        """Services seen sending spans of their own (not the spans devbox's proxies make for them).

        The first call starts the watch: services whose spans came only before it are not in the set.
        """
        ...


@runtime_checkable
class SuspectsPort(Protocol):
    """The likely causes of an alert or of a service's trouble (``devbox why``), for the alerts'
    notifications and the dashboard's alert detail."""

    async def suspects(self, target: str, at: float) -> list[Mapping[str, Any]]:
        """Best first, each ``{"subject", "score" (0-1), "reason" (one line with numbers), "signals"}``,
        for ``target`` (an alert rule's name or a service) at ``at`` (epoch s). Raises :class:`PortError`
        when the target is neither."""
        ...


__all__ = [
    "AlertsView",
    "DeployView",
    "FaultFront",
    "FrontFn",
    "InstanceView",
    "MetricsQueryPort",
    "NamingPort",
    "PortError",
    "RangeSeries",
    "Registration",
    "RunningInstance",
    "Sample",
    "SuspectsPort",
    "TracesPort",
    "UnknownInstance",
]
