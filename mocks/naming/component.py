"""The naming component: wires the :class:`~devbox.mocks.naming.service.NamingService` to the
platform — its listeners, its port, its events. No logic of its own.

Other components use :class:`devbox.platform.ports.NamingPort` (``ctx.lookup(NamingPort)``) and
listen to ``ctx.events.instance_changed``. Listeners: ``polaris_grpc`` (``v1.PolarisGRPC``),
``polaris_http`` (Polaris client + console HTTP APIs; refusals in Polaris's ``{code, info}`` by
:func:`devbox.mocks.naming.polaris_http.render_error`), ``api`` (``/api/naming/...``).

Layout: :mod:`.core` (the registry, pure) and :mod:`.models`; :mod:`.store` (SQLite);
:mod:`.service` (the service layer every adapter calls, and the port); adapters :mod:`.api`
(devbox JSON), :mod:`.polaris` (Polaris's protocol in its messages) with its transports
:mod:`.polaris_http` and :mod:`.grpc_api`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from devbox.mocks.naming import api, polaris_http
from devbox.mocks.naming.core import Registry
from devbox.mocks.naming.polaris import PolarisApi
from devbox.mocks.naming.service import NamingPortImpl, NamingService

from devbox.platform.component import Component, PlatformContext
from devbox.platform.ports import NamingPort

if TYPE_CHECKING:
    import grpc.aio
    from fastapi import APIRouter

LOG = logging.getLogger(__name__)


class NamingComponent(Component):
    """Hosts the naming service: its listeners, its :class:`NamingPort`, its ``instance_changed`` events."""

    name = "naming"

    def __init__(self, ctx: PlatformContext) -> None:
        super().__init__(ctx)
        self.config = ctx.config.naming
        self.service = NamingService(
            Registry(default_ttl=self.config.heartbeat_ttl, expire_after=self.config.expire_after),
            config=self.config,
            db_path=ctx.state_dir / "naming.db",
            on_instance=self._instance_changed,
        )
        #: TRANSITIONAL, for tests and components not yet on the port: the core registry.
        self.registry = self.service.registry
        self.polaris = PolarisApi(self.service, system_address=self._system_address)
        ctx.provide(NamingPort, NamingPortImpl(self.service, self.config.namespace))

    def _instance_changed(self, namespace: str, service: str, instance_id: str, change: str) -> None:
        self.ctx.events.instance_changed.fire(
            service=service, namespace=namespace, instance_id=instance_id, change=change
        )

    def _system_address(self) -> tuple[str, int] | None:
        """Where Polaris SDKs should find the system services: this devbox's gRPC listener."""
        if "polaris_grpc" not in self.ctx.addresses:
            return None
        host, port = self.ctx.target("polaris_grpc").rsplit(":", 1)
        return host.strip("[]"), int(port)

    def http_routes(self) -> list[tuple[str, APIRouter]]:
        return [
            ("api", api.router(self.service)),
            ("polaris_http", polaris_http.client_router(self.polaris)),
            ("polaris_http", polaris_http.console_router(self.polaris)),
            ("polaris_http", polaris_http.routing_router(self.polaris)),
        ]

    def grpc_services(self) -> list[tuple[str, Callable[[grpc.aio.Server], None]]]:
        def register(server: grpc.aio.Server) -> None:
            from devbox.mocks.naming import grpc_api  # grpc: loaded by the listener's first client

            grpc_api.registrar(self.polaris)(server)

        return [("polaris_grpc", register)]

    async def start(self) -> None:
        await self.service.start()

    async def before_listeners_close(self) -> None:
        self.service.release_waits()

    async def stop(self) -> None:
        await self.service.stop()

    def info(self) -> dict[str, Any]:
        return self.service.info()
