"""What a platform component is: the one interface every mock implements to be hosted.

A component contributes HTTP routers and gRPC servicers to named listeners, and has a lifecycle
(``start``/``stop``) tracked by the platform. It gets its config section and the shared
:class:`PlatformContext` through its constructor.

What the platform knows *about* a component before importing it is its :class:`ComponentSpec`:
its config section, the listeners it owns and where its class lives. Each mock package declares
its spec in its ``__init__``; :mod:`devbox.assembly` lists the specs and builds the project config,
the ports and the platform from them — this layer names no mock.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, TypeVar

if TYPE_CHECKING:
    import grpc.aio
    from fastapi import APIRouter

    from devbox.platform.events import Events

P = TypeVar("P")


@dataclass(frozen=True)
class Listener:
    """A port a component owns: its name (the key under ``platform.ports``), default port, protocol.

    ``errors`` names (``"module:function"``, imported when the listener is served) the function
    ``(ApiError) -> starlette Response`` that renders a refused request in the protocol's own
    error shape (Prometheus's envelope, Polaris's ``{code, info}``, ...); ``None`` means devbox's
    JSON ``{"error": code, "reason": reason}``. gRPC listeners map ``ApiError.grpc_status``.
    """

    name: str
    default_port: int
    protocol: Literal["http", "grpc"] = "http"
    description: str = ""
    errors: str | None = None


#: The platform's own listener: the devbox API and the dashboard (components add routes to it).
API_LISTENER = Listener("api", 7070, description="devbox API and dashboard.")


@dataclass(frozen=True)
class ComponentSpec:
    """What the assembly needs to know about a component without importing its implementation.

    ``factory`` is ``"module:Class"`` (imported only when the platform starts, so ``devbox
    schema`` never loads a server). ``config_key``/``config_model`` declare the component's section
    of devbox.yaml (``config_model`` may be a model class or e.g. ``list[ServiceConfig]``);
    ``listeners`` the ports it owns; ``after`` the components that must start before it.
    """

    name: str
    factory: str
    config_key: str | None = None
    config_model: Any = None
    config_description: str = ""
    listeners: tuple[Listener, ...] = ()
    after: tuple[str, ...] = ()


class PlatformSettings(Protocol):
    """The ``platform:`` section as the platform layer reads it (built by :mod:`devbox.assembly`)."""

    @property
    def host(self) -> str: ...

    @property
    def token(self) -> str | None: ...

    @property
    def ports(self) -> Any: ...

    @property
    def max_body_bytes(self) -> int: ...

    @property
    def read_timeout(self) -> float: ...


class ProjectSettings(Protocol):
    """What the platform layer reads of the project config (the assembled ``ProjectConfig``).

    Components read their own sections through ``ctx.config`` (typed ``Any`` here: the sections
    are declared by the components, not by this layer).
    """

    @property
    def project(self) -> str: ...

    @property
    def root(self) -> Path: ...

    @property
    def platform(self) -> PlatformSettings: ...

    @property
    def state_path(self) -> Path: ...


class ComponentState(enum.StrEnum):
    NEW = "new"
    STARTING = "starting"
    RUNNING = "running"
    ERROR = "error"
    STOPPED = "stopped"


@dataclass
class PlatformContext:
    """What every component shares: the config, the events, where state lives, and the addresses."""

    #: The assembled ``ProjectConfig`` (:mod:`devbox.assembly`); each component reads its section.
    config: Any
    events: Events
    #: listener name -> (host, port) actually bound; filled before components start.
    addresses: dict[str, tuple[str, int]] = field(default_factory=dict)
    #: Set once every listener serves its real app. Until then they answer 503 "starting" (the
    #: platform binds first): a component that hands the listeners' addresses to processes it
    #: starts (deploy) waits for it, so those never see "starting".
    serving: asyncio.Event = field(default_factory=asyncio.Event)
    _components: dict[str, Component] = field(default_factory=dict)
    _ports: dict[type[Any], Any] = field(default_factory=dict)

    @property
    def state_dir(self) -> Path:
        path: Path = self.config.state_path
        return path

    def url(self, listener: str) -> str:
        """Base URL of an HTTP listener, e.g. ``http://127.0.0.1:7070``."""
        host, port = self.addresses[listener]
        return f"http://{_url_host(host)}:{port}"

    def target(self, listener: str) -> str:
        """``host:port`` of a listener, for gRPC clients."""
        host, port = self.addresses[listener]
        return f"{_url_host(host)}:{port}"

    def provide(self, port: type[P], implementation: P) -> None:
        """Offer ``implementation`` as the hosted ``port`` (a Protocol of :mod:`devbox.platform.ports`)."""
        if port in self._ports:
            raise ValueError(f"{port.__name__} is provided twice")
        self._ports[port] = implementation

    def lookup(self, port: type[P]) -> P | None:
        """The hosted implementation of ``port``, or ``None`` when no hosted component offers it."""
        return self._ports.get(port)

    def has(self, name: str) -> bool:
        """Whether a component of that name is hosted (for information; use ports to talk to it)."""
        return name in self._components

    def states(self) -> dict[str, str]:
        """name -> lifecycle state of every hosted component, read-only (for health figures like /metrics)."""
        return {name: component.state.value for name, component in self._components.items()}


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


class Component:
    """Base class of every platform component. Subclasses set ``name`` and override what they need."""

    name: ClassVar[str] = "component"
    #: Stopped before the listeners close: components whose processes still talk to the platform.
    stops_before_listeners: ClassVar[bool] = False

    def __init__(self, ctx: PlatformContext) -> None:
        self.ctx = ctx
        self.state = ComponentState.NEW
        self.error: str | None = None

    def http_routes(self) -> list[tuple[str, APIRouter]]:
        """(listener, router) pairs. Routers on ``api`` are the devbox API; others are protocol ports."""
        return []

    def grpc_services(self) -> list[tuple[str, Callable[[grpc.aio.Server], None]]]:
        """(listener, registrar) pairs; the registrar adds servicers to that listener's server."""
        return []

    async def start(self) -> None:
        """Open stores and start background tasks. Listeners are bound already."""

    async def before_listeners_close(self) -> None:
        """Answer every request that is waiting by design (long-polls) now, and any that arrives
        from here on at once: called by ``Platform.stop`` just before the listeners are told to
        exit, so they close without waiting out their graceful-shutdown timeout. Must not raise."""

    async def stop(self) -> None:
        """Stop background tasks and flush stores. Must not raise."""

    def info(self) -> dict[str, Any]:
        """What ``GET /api/platform`` shows about this component."""
        return {}
