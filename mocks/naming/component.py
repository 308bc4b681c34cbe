"""The naming component: hosts the registry, its store, and the Polaris and devbox APIs.

Other components use ``ctx.component("naming").registry`` (a :class:`devbox.mocks.naming.core.Registry`)
and listen to ``ctx.events.instance_changed``. Listeners: ``polaris_grpc`` (``v1.PolarisGRPC``),
``polaris_http`` (Polaris client + console HTTP APIs), ``api`` (``/api/naming/...``).

LIMITATIONS: state is written to ``naming.db`` in batches every ``sweep_interval``; a hard kill
loses at most that last batch (heartbeats included, which only delays health by one batch).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from devbox.mocks.naming.core import Registry
from devbox.mocks.naming.models import Code, Instance, NamingError

from devbox.platform.component import Component, PlatformContext
from devbox.polaris import routing as routing_rules
from devbox.polaris.balancer import NoInstanceError, WeightedRandom

if TYPE_CHECKING:
    import grpc.aio
    from devbox.mocks.naming.polaris import PolarisApi
    from devbox.mocks.naming.store import NamingStore
    from fastapi import APIRouter

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
        self._store: NamingStore | None = None
        self._polaris: PolarisApi | None = None

    @property
    def polaris(self) -> PolarisApi:
        if self._polaris is None:
            from devbox.mocks.naming.polaris import PolarisApi

            self._polaris = PolarisApi(self.registry, system_address=self._system_address)
        return self._polaris

    def _system_address(self) -> tuple[str, int] | None:
        """Where Polaris SDKs should find the system services: this devbox's gRPC listener."""
        if "polaris_grpc" not in self.ctx.addresses:
            return None
        host, port = self.ctx.target("polaris_grpc").rsplit(":", 1)
        return host.strip("[]"), int(port)

    # --- adapters --------------------------------------------------------------------------

    def http_routes(self) -> list[tuple[str, APIRouter]]:
        from devbox.mocks.naming import api, polaris_http

        return [
            ("api", api.router(self)),
            ("polaris_http", polaris_http.client_router(self.polaris)),
            ("polaris_http", polaris_http.console_router(self.polaris, self.registry)),
            ("polaris_http", polaris_http.routing_router(self.polaris, self.registry)),
        ]

    def grpc_services(self) -> list[tuple[str, Callable[[grpc.aio.Server], None]]]:
        from devbox.mocks.naming import grpc_api

        return [("polaris_grpc", grpc_api.registrar(self.polaris))]

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
        if (self.registry.revision(namespace, service) or "") != (revision or ""):
            return
        event = self._changed.setdefault((namespace, service), asyncio.Event())
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            pass
        except asyncio.CancelledError:
            # The HTTP server cancels pending long polls when it shuts down: answer them with the
            # current state instead of an error the server would log for every watching client.
            # The handler then returns at once, so the shutdown still completes.
            task = asyncio.current_task()
            if task is None:
                raise
            task.uncancel()

    # --- queries used by the APIs and the CLI ---------------------------------------------

    def resolve_instance(self, ref: str) -> Instance:
        """An instance by id, unique id prefix (6+ chars) or ``host:port``; NamingError otherwise."""
        found = self.registry.instance(ref)
        if found is not None:
            return found
        candidates: list[Instance] = []
        host, sep, port = ref.rpartition(":")
        if sep and port.isdigit():
            candidates = [i for i in self.registry.all_instances() if i.host == host and i.port == int(port)]
        elif len(ref) >= 6:
            candidates = [i for i in self.registry.all_instances() if i.id.startswith(ref)]
        if len(candidates) == 1:
            return candidates[0]
        if len(candidates) > 1:
            names = ", ".join(f"{i.id[:12]} ({i.service})" for i in candidates)
            raise NamingError(Code.InvalidInstanceID, f"{ref!r} matches several instances: {names}; use the id")
        raise NamingError(Code.NotFoundResource, f"no instance {ref!r} (give an id, an id prefix or host:port)")

    def snapshot(self, namespace: str, service: str) -> dict[str, Any]:
        """The watch answer for a service (empty, revision '' when it does not exist)."""
        from devbox.mocks.naming.api import watch_instance

        svc = self.registry.service(namespace, service)
        return {
            "namespace": namespace,
            "service": service,
            "revision": svc.revision if svc else "",
            "instances": [watch_instance(i) for i in self.registry.instances(namespace, service)],
            "routing": self.registry.rules(namespace, service),
            "circuit_breaker": svc.circuit_breaker if svc else None,
        }

    def explain(self, *, namespace: str, service: str, request: routing_rules.RouteRequest) -> dict[str, Any]:
        """Evaluate routing for a request as the SDK would (server view: no breaker state)."""
        instances = self.registry.instances(namespace, service)
        rules = routing_rules.parse_rules(self.registry.rules(namespace, service))
        result = routing_rules.evaluate(
            namespace=namespace, service=service, instances=instances, rules=rules, request=request
        )
        known = self.registry.service(namespace, service) is not None
        out: dict[str, Any] = {"namespace": namespace, "service": service, "known": known}
        out["request"] = {"labels": dict(request.labels), "caller_service": request.caller_service}
        out.update(result.to_dict())
        out["instances"] = [
            {
                "id": i.id,
                "address": f"{i.host}:{i.port}",
                "healthy": i.healthy,
                "isolated": i.isolated,
                "weight": i.weight,
                "metadata": dict(i.metadata),
            }
            for i in instances
        ]
        try:
            picked = WeightedRandom().choose(result.instances)
            out["pick"] = {"balancer": "weighted_random", "instance": f"{picked.host}:{picked.port}", "id": picked.id}
        except NoInstanceError:
            out["pick"] = None
        return out

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        from devbox.mocks.naming.store import NamingStore

        self._store = NamingStore(self.ctx.state_dir / "naming.db")
        namespaces, services, instances, rules = await asyncio.to_thread(self._store.load)
        self.registry.load(namespaces, services, instances, rules)
        if services or instances:
            LOG.info("naming: restored %d services, %d instances, %d rules", len(services), len(instances), len(rules))
        self._apply_config()
        self._sweeper = asyncio.create_task(self._sweep_loop(), name="naming-sweeper")

    def _apply_config(self) -> None:
        """Create the services and upsert the rules devbox.yaml declares (config wins over the store)."""
        for declared in self.config.services:
            self.registry.create_service(declared.namespace, declared.name, token=declared.token, exist_ok=True)
            self.registry.update_service(
                declared.namespace,
                declared.name,
                require_token=declared.require_token,
                token=declared.token,
                metadata=declared.metadata,
            )
        for rule in self.config.rules:
            self.registry.put_rule(rule.model_dump(mode="json"))

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.sweep_interval)
            try:
                self.registry.sweep()
                await self.flush()
            except Exception:
                LOG.exception("naming sweep failed")

    async def flush(self) -> None:
        """Write what changed since the last flush to naming.db (in a worker thread)."""
        dirty = self.registry.drain_dirty()
        if dirty and self._store is not None:
            await asyncio.to_thread(self._store.write, dirty)

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        for event in self._changed.values():
            event.set()
        if self._store is not None:
            try:
                await self.flush()
            except Exception:
                LOG.exception("naming: final flush failed")
            self._store.close()
            self._store = None

    def info(self) -> dict[str, Any]:
        instances = self.registry.all_instances()
        return {
            "services": len(self.registry.services()),
            "instances": len(instances),
            "healthy": sum(1 for i in instances if i.healthy),
        }
