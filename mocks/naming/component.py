"""The naming component: hosts the registry, its store, and the Polaris and devbox APIs.

Other components use ``ctx.component("naming").registry`` (a :class:`mocks.naming.core.Registry`)
and listen to ``ctx.events.instance_changed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from devbox.platform.component import Component, PlatformContext
from mocks.naming.core import Registry

LOG = logging.getLogger(__name__)

#: Core change names that are about one instance (fired as ``instance_changed``).
_INSTANCE_CHANGES = {
    "registered": "registered",
    "deregistered": "deregistered",
    "expired": "deregistered",
    "healthy": "healthy",
    "unhealthy": "unhealthy",
    "isolated": "isolated",
    "updated": "updated",
}


class NamingComponent(Component):
    """Owns the naming :class:`Registry`, expires instances in the background, persists state."""

    name = "naming"

    def __init__(self, ctx: PlatformContext) -> None:
        super().__init__(ctx)
        self.config = ctx.config.naming
        self.registry = Registry(default_ttl=self.config.heartbeat_ttl, expire_after=self.config.expire_after)
        self.registry.add_listener(self._on_change)
        self._changed: dict[tuple[str, str], asyncio.Event] = {}
        self._sweeper: asyncio.Task[None] | None = None

    # --- change fan-out --------------------------------------------------------------------

    def _on_change(self, namespace: str, service: str, instance_id: str | None, change: str) -> None:
        event = self._changed.pop((namespace, service), None)
        if event is not None:
            event.set()
        if instance_id is not None and change in _INSTANCE_CHANGES:
            self.ctx.events.instance_changed.fire(
                service=service, namespace=namespace, instance_id=instance_id, change=_INSTANCE_CHANGES[change]
            )

    async def wait_changed(self, namespace: str, service: str, revision: str | None, timeout: float) -> None:
        """Return when the service's revision differs from ``revision``, or after ``timeout``."""
        if self.registry.revision(namespace, service) != revision:
            return
        event = self._changed.setdefault((namespace, service), asyncio.Event())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep_loop(), name="naming-sweeper")

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.sweep_interval)
            try:
                self.registry.sweep()
            except Exception:
                LOG.exception("naming sweep failed")

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None

    def info(self) -> dict[str, Any]:
        return {
            "services": len(self.registry.services()),
            "instances": len(self.registry.all_instances()),
        }
