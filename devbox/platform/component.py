"""What a platform component is: the one interface every mock implements to be hosted.

A component contributes HTTP routers and gRPC servicers to named listeners (the keys of
:class:`devbox.config.Ports`), and has a lifecycle (``start``/``stop``) tracked by the platform.
It gets its config section and the shared :class:`PlatformContext` through its constructor.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

if TYPE_CHECKING:
    import grpc.aio
    from fastapi import APIRouter

    from devbox.config import ProjectConfig
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


class ComponentState(enum.StrEnum):
    NEW = "new"
    STARTING = "starting"
    RUNNING = "running"
    ERROR = "error"
    STOPPED = "stopped"


@dataclass
class PlatformContext:
    """What every component shares: the config, the events, where state lives, and the addresses."""

    config: ProjectConfig
    events: Events
    #: listener name -> (host, port) actually bound; filled before components start.
    addresses: dict[str, tuple[str, int]] = field(default_factory=dict)
    _components: dict[str, Component] = field(default_factory=dict)
    _ports: dict[type[Any], Any] = field(default_factory=dict)

    @property
    def state_dir(self) -> Path:
        return self.config.state_path

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
        return self._ports.get(port)  # type: ignore[no-any-return]

    def component(self, name: str) -> Component:
        """TRANSITIONAL — being removed: components talk through :meth:`lookup` and ports."""
        return self._components[name]

    def has(self, name: str) -> bool:
        """Whether a component of that name is hosted (for information; use ports to talk to it)."""
        return name in self._components


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


class Component:
    """Base class of every platform component. Subclasses set ``name`` and override what they need."""

    name: ClassVar[str] = "component"
    #: Names of components that must start before this one.
    after: ClassVar[tuple[str, ...]] = ()
    #: Stopped before the listeners close: components whose processes still talk to the platform.
    stops_before_listeners: ClassVar[bool] = False
    #: The listeners this component owns (it may also add routes to another's, e.g. ``api``).
    listeners: ClassVar[tuple[Listener, ...]] = ()

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

    async def stop(self) -> None:
        """Stop background tasks and flush stores. Must not raise."""

    def info(self) -> dict[str, Any]:
        """What ``GET /api/platform`` shows about this component."""
        return {}
