"""What naming knows of the instances deploy runs: registration, heartbeats, health, deregistration.

``registration: auto`` instances are registered by devbox once ready (at the address of the fault
proxy in front of them, when faults put one there) and heartbeated while their probe passes;
``registration: self`` instances register through their own SDK and devbox only waits to see them.
Naming is reached through :class:`devbox.platform.ports.NamingPort` only; without it (naming not
hosted) every step here is a no-op.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, Protocol

from devbox.mocks.deploy.deployment import Deployment, Instance
from devbox.mocks.deploy.models import EventKind

from devbox.platform.ports import FaultFront, NamingPort, PortError, Registration, UnknownInstance

LOG = logging.getLogger(__name__)


class EventSink(Protocol):
    """The supervisor's event recorder, which the registrar reports through."""

    def __call__(self, dep: Deployment, kind: EventKind, message: str = "", *, instance: Instance | None = None,
                 **data: Any) -> None: ...


class Registrar:
    """Owns the naming side of every instance: its registration, heartbeats and health in naming."""

    def __init__(self, *, naming: NamingPort | None, front: FaultFront | None, ttl: float, event: EventSink) -> None:
        self.naming = naming
        #: The faults component's proxies: the address to register instead of the instance's own.
        self.front = front
        self.ttl = ttl
        self.event = event

    async def register(self, dep: Deployment, inst: Instance) -> None:
        """Register a ready instance and send its first heartbeat; a refusal is reported, not raised."""
        rec = inst.record
        host, port = rec.host, rec.port
        keep_id = None
        if self.front is not None:
            host, port = await self.front.front(dep.svc.name, rec.naming_id or rec.name, rec.host, rec.port)
            if (host, port) != (rec.host, rec.port) and rec.naming_id:
                keep_id = rec.naming_id  # keep the id the instance was told (DEVBOX_INSTANCE_ID)
        naming = self.naming
        if naming is None:
            return
        registration = self._registration(dep, inst, host, port, keep_id)
        try:
            registered = naming.register(registration)
        except PortError as exc:  # the registry's own validation: report, keep the instance
            LOG.warning("registering %s failed: %s", rec.name, exc)
            self.event(dep, EventKind.REGISTERED, f"registration failed: {exc}", instance=inst, ok=False)
            return
        rec.naming_id = registered.id
        rec.registered = True
        inst.registered_address = (host, port)
        # a heartbeat-checked instance is unhealthy until its first heartbeat: send it now, so
        # the instance is routable the moment it is registered (rolling replacement relies on it)
        with contextlib.suppress(PortError):
            naming.heartbeat(rec.naming_id)
        self.event(dep, EventKind.REGISTERED, f"{rec.host}:{rec.port} as {rec.naming_id}", instance=inst,
                   naming_id=rec.naming_id)

    def _registration(self, dep: Deployment, inst: Instance, host: str, port: int, keep_id: str | None) -> Registration:
        assert self.naming is not None
        tags = dep.tags
        return Registration(
            namespace=self.naming.namespace, service=dep.svc.name, host=host, port=port, protocol=dep.svc.protocol,
            version=tags.get("version", ""), weight=inst.weight,
            metadata={**tags, "devbox.instance": inst.record.name}, ttl=self.ttl, health_check=True, id=keep_id,
        )

    def set_weight(self, dep: Deployment, inst: Instance, weight: int) -> None:
        """Change the instance's weight in naming (a registration update: same id, same address)."""
        inst.weight = weight
        rec = inst.record
        if self.naming is None or not rec.registered or rec.naming_id is None or inst.registered_address is None:
            return
        host, port = inst.registered_address
        try:
            self.naming.register(self._registration(dep, inst, host, port, rec.naming_id))
        except PortError as exc:
            LOG.warning("setting the weight of %s failed: %s", rec.name, exc)

    async def heartbeat(self, dep: Deployment, inst: Instance) -> None:
        """Heartbeat on the instance's behalf; register it again when naming has forgotten it."""
        rec = inst.record
        if self.naming is None or not rec.registered or not rec.naming_id:
            return
        try:
            self.naming.heartbeat(rec.naming_id)
        except UnknownInstance as exc:  # e.g. the registry dropped it after a long freeze
            LOG.info("heartbeat of %s failed (%s); registering again", rec.name, exc)
            await self.register(dep, inst)
        except PortError as exc:
            LOG.warning("heartbeat of %s refused: %s", rec.name, exc)

    async def await_self_registration(self, dep: Deployment, inst: Instance) -> None:
        """For ``register: self``: wait until the instance's own SDK has registered it healthy.

        A rolling replacement must not stop the old instance before the new one is discoverable.
        """
        naming = self.naming
        if naming is None:
            return
        rec = inst.record
        timeout = min(dep.svc.readiness.timeout, 15.0)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                found = naming.instances(naming.namespace, dep.svc.name)
            except PortError:
                found = []
            mine = [i for i in found if i.port == rec.port and i.healthy]
            if mine:
                rec.naming_id = mine[0].id
                self.event(dep, EventKind.REGISTERED, f"registered itself as {rec.naming_id}", instance=inst,
                           naming_id=rec.naming_id, by="self")
                return
            await asyncio.sleep(0.1)
        self.event(dep, EventKind.REGISTERED, f"did not register itself within {timeout:g}s (register: self)",
                   instance=inst, ok=False, by="self")

    async def deregister(self, dep: Deployment, inst: Instance) -> None:
        rec = inst.record
        if self.naming is None or not rec.registered or rec.naming_id is None:
            return
        rec.registered = False
        try:
            self.naming.deregister(rec.naming_id)
        except PortError:
            LOG.exception("deregistering %s failed", rec.name)
            return
        self.event(dep, EventKind.DEREGISTERED, f"{rec.host}:{rec.port}", instance=inst, naming_id=rec.naming_id)

    def mark_unhealthy(self, inst: Instance) -> None:
        """Tell naming at once that the instance is down.

        Without it naming sees it anyway when heartbeats stop (after the TTL).
        """
        rec = inst.record
        if self.naming is None or not rec.registered or rec.naming_id is None:
            return
        with contextlib.suppress(PortError):
            self.naming.set_healthy(rec.naming_id, False)

    async def forget(self, inst: Instance) -> None:
        """The instance is gone for good (scaled down, replaced): close the proxy in front of it."""
        if self.front is not None:
            await self.front.release(inst.record.naming_id or inst.record.name)
