"""The naming service layer: what every protocol adapter (devbox API, Polaris HTTP and gRPC) and the
:class:`~devbox.platform.ports.NamingPort` call.

:class:`NamingService` owns the :class:`~devbox.mocks.naming.core.Registry`, its SQLite store and
the background sweep (the heartbeat clock and batched writes), the long-poll waits of ``watch``,
the per-service token checks, and the answers several adapters share (instance lookup by id,
prefix or address; the watch snapshot; routing ``explain``). It knows no wire format: it takes
and returns the core's objects and raises the core's :class:`NamingError`.

Durability: every write an adapter acknowledges (register, deregister, rules, services, ...) is
committed to ``naming.db`` before its answer is sent (:meth:`NamingService.durable`, awaited by
the HTTP routes and the gRPC handlers); concurrent writers share one commit, so a burst of
registrations costs a few transactions, not one each. Changes nobody waits for (the heartbeat
clock's health flips) are written by the sweep every ``sweep_interval``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from devbox.mocks.naming.config import NamingConfig
from devbox.mocks.naming.core import Registry
from devbox.mocks.naming.models import Code, Instance, NamingError
from devbox.mocks.naming.store import NamingStore

from devbox.platform import ports
from devbox.platform.errors import Unavailable
from devbox.polaris import routing as routing_rules
from devbox.polaris.balancer import NoInstanceError, WeightedRandom

LOG = logging.getLogger(__name__)

#: Core change names that are about one instance, and the ``instance_changed`` change they are.
INSTANCE_CHANGES = {
    "registered": "registered",
    "deregistered": "deregistered",
    "expired": "deregistered",
    "healthy": "healthy",
    "unhealthy": "unhealthy",
    "isolated": "isolated",
    "updated": "updated",
}

#: ``on_instance(namespace, service, instance_id, change)`` with a change of :data:`INSTANCE_CHANGES`.
InstanceListener = Callable[[str, str, str, str], None]


def watch_instance(instance: Instance) -> dict[str, Any]:
    """An instance as the watch answer (and the SDK's cache) carries it."""
    return {
        "id": instance.id,
        "host": instance.host,
        "port": instance.port,
        "protocol": instance.protocol,
        "version": instance.version,
        "weight": instance.weight,
        "healthy": instance.healthy,
        "isolated": instance.isolated,
        "metadata": dict(instance.metadata),
        "location": dict(instance.location) if instance.location else None,
    }


class NamingService:
    """Owns the registry, its store and sweep, the watch waits and the token checks.

    ``config`` gives the sweep interval and the services and rules devbox.yaml declares;
    ``db_path`` (None: nothing persisted) is where :meth:`start` opens the store.
    """

    def __init__(
        self,
        registry: Registry,
        *,
        config: NamingConfig | None = None,
        db_path: Path | None = None,
        on_instance: InstanceListener | None = None,
    ) -> None:
        self.registry = registry
        self.config = config or NamingConfig()
        self.db_path = db_path
        self._on_instance = on_instance
        self._changed: dict[tuple[str, str], asyncio.Event] = {}
        #: Set once the listeners are about to close: every watch answers at once from then on.
        self._closing = False
        #: Watches waiting for a change right now.
        self.watching = 0
        self._sweeper: asyncio.Task[None] | None = None
        self._store: NamingStore | None = None
        #: One commit at a time; whoever holds it writes every change made so far (group commit).
        self._commit = asyncio.Lock()
        #: The store's own thread: a commit an acknowledgement waits for never queues behind
        #: other components' work in the loop's default pool (slow queries, span decoding).
        self._writer: concurrent.futures.ThreadPoolExecutor | None = None
        registry.add_listener(self._on_change)

    # --- change fan-out --------------------------------------------------------------------

    def _on_change(self, namespace: str, service: str, instance_id: str | None, change: str) -> None:
        event = self._changed.pop((namespace, service), None)
        if event is not None:
            event.set()
        if instance_id is not None and change in INSTANCE_CHANGES and self._on_instance is not None:
            self._on_instance(namespace, service, instance_id, INSTANCE_CHANGES[change])

    async def wait_changed(self, namespace: str, service: str, revision: str | None, timeout: float) -> None:
        """Return when the service's revision differs from ``revision``, or after ``timeout``."""
        if self._closing or (self.registry.revision(namespace, service) or "") != (revision or ""):
            return
        event = self._changed.setdefault((namespace, service), asyncio.Event())
        self.watching += 1
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            pass
        except asyncio.CancelledError:
            # Should the HTTP server still cancel a pending long poll (a stop that skipped
            # release_waits), answer it with the current state instead of an error the server
            # would log for every watching client. The handler then returns at once.
            task = asyncio.current_task()
            if task is None:
                raise
            task.uncancel()
        finally:
            self.watching -= 1

    def release_waits(self) -> None:
        """Answer every pending watch now with the current state, and every later one at once:
        the listeners are closing, and a watch that waits would hold its server open."""
        self._closing = True
        changed, self._changed = self._changed, {}
        for event in changed.values():
            event.set()

    # --- token-checked writes --------------------------------------------------------------

    def register(self, token: str | None, **args: Any) -> Instance:
        """:meth:`Registry.register` once the service's token checks out (NamingError otherwise)."""
        self.registry.check_token(args["namespace"], args["service"], token)
        return self.registry.register(**args)

    def owned(self, instance: Instance, token: str | None) -> Instance:
        """``instance``, once its service's token checks out: the caller may change it."""
        self.registry.check_token(instance.namespace, instance.service, token)
        return instance

    # --- queries ---------------------------------------------------------------------------

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

    def service_summaries(self, namespace: str | None) -> list[dict[str, Any]]:
        """Each service with its instance and routable (healthy, not isolated) counts."""
        out = []
        for svc in self.registry.services(namespace):
            instances = self.registry.instances(svc.namespace, svc.name)
            routable = sum(1 for i in instances if i.healthy and not i.isolated)
            out.append({**svc.to_json(), "instances": len(instances), "healthy": routable})
        return out

    def service_detail(self, namespace: str, service: str) -> dict[str, Any]:
        """A service with its token, instances, the rules that apply to it and its breaker settings."""
        svc = self.registry.require_service(namespace, service)
        return {
            **svc.to_json(with_token=True),
            "instances": [i.to_json() for i in self.registry.instances(namespace, service)],
            "routing": self.registry.rules(namespace, service),
            "circuit_breaker": svc.circuit_breaker,
        }

    def snapshot(self, namespace: str, service: str) -> dict[str, Any]:
        """The watch answer for a service (empty, revision '' when it does not exist)."""
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

    def info(self) -> dict[str, Any]:
        instances = self.registry.all_instances()
        return {
            "services": len(self.registry.services()),
            "instances": len(instances),
            "healthy": sum(1 for i in instances if i.healthy),
        }

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Restore the store, apply devbox.yaml's services and rules, start the heartbeat clock."""
        if self.db_path is not None:
            self._writer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="naming-store")
            self._store = NamingStore(self.db_path)
            namespaces, services, instances, rules = await asyncio.to_thread(self._store.load)
            self.registry.load(namespaces, services, instances, rules)
            if services or instances:
                LOG.info("naming: restored %d services, %d instances, %d rules",
                         len(services), len(instances), len(rules))
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
        """Write what changed since the last flush to naming.db (in the store's thread)."""
        if self._store is None:
            self.registry.drain_dirty()
            return
        store = self._store
        async with self._commit:
            dirty = self.registry.drain_dirty()
            if not dirty:
                return
            try:
                await asyncio.get_running_loop().run_in_executor(self._writer, store.write, dirty)
            except BaseException:
                self.registry.requeue(dirty)  # not written: the next commit tries again
                raise

    async def durable(self) -> None:
        """Return once every change made so far is committed to naming.db: what a write awaits
        before it is acknowledged. Raises :class:`Unavailable` when the file cannot be written
        (the client then retries; nothing was promised)."""
        try:
            await self.flush()
        except Exception as exc:
            LOG.exception("naming: commit to %s failed", self.db_path)
            raise Unavailable(f"naming could not write {self.db_path}: {exc}") from None

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        self.release_waits()
        if self._store is not None:
            try:
                await self.flush()
            except Exception:
                LOG.exception("naming: final flush failed")
            self._store.close()
            self._store = None
        if self._writer is not None:
            self._writer.shutdown(wait=True)
            self._writer = None


class NamingPortImpl:
    """naming's :class:`~devbox.platform.ports.NamingPort`: what other components may ask of it.

    A refusal is a :class:`~devbox.platform.ports.PortError` with naming's reason;
    an id the registry does not know is :class:`~devbox.platform.ports.UnknownInstance`.
    """

    def __init__(self, service: NamingService, namespace: str) -> None:
        self._service = service
        self._namespace = namespace

    @property
    def namespace(self) -> str:
        return self._namespace

    def register(self, registration: ports.Registration) -> Instance:
        r = registration
        with _port_errors():
            return self._service.registry.register(
                namespace=r.namespace, service=r.service, host=r.host, port=r.port, protocol=r.protocol,
                version=r.version, weight=r.weight, metadata=dict(r.metadata), ttl=r.ttl,
                health_check=r.health_check, id=r.id,
            )

    def deregister(self, instance_id: str) -> None:
        with _port_errors():
            self._service.registry.deregister(instance_id)

    def heartbeat(self, instance_id: str) -> None:
        with _port_errors():
            self._service.registry.heartbeat(instance_id)

    def set_healthy(self, instance_id: str, healthy: bool) -> None:
        with _port_errors():
            self._service.registry.set_healthy(instance_id, healthy)

    def set_isolated(self, instance_id: str, isolated: bool) -> None:
        with _port_errors():
            self._service.registry.isolate(instance_id, isolated)

    def instances(self, namespace: str, service: str) -> Sequence[Instance]:
        return self._service.registry.instances(namespace, service)

    def all_instances(self) -> Sequence[Instance]:
        return self._service.registry.all_instances()

    def routing_rules(self, namespace: str, service: str) -> list[dict[str, Any]]:
        return self._service.registry.rules(namespace, service)

    def replace_routing_rules(self, namespace: str, service: str, rules: Sequence[Mapping[str, Any]]) -> None:
        with _port_errors():
            self._service.registry.replace_rules(namespace, service, [dict(r) for r in rules])

    def drop_heartbeats(self, instance_id: str, drop: bool = True) -> None:
        with _port_errors():
            self._service.registry.drop_heartbeats(instance_id, drop)


#: The registry's codes for an id it does not know.
_UNKNOWN = frozenset({Code.NotFoundResource, Code.NotFoundInstance})


@contextlib.contextmanager
def _port_errors() -> Iterator[None]:
    """The registry's NamingError as the port's exceptions (the one place they are translated)."""
    try:
        yield
    except NamingError as exc:
        if exc.code in _UNKNOWN:
            raise ports.UnknownInstance(exc.reason) from None
        raise ports.PortError(exc.reason) from None
