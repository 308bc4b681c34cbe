"""The naming registry: namespaces, services, instances, TTL health and revisions. No sockets.

Everything here is synchronous and runs on the platform loop. Adapters (gRPC, HTTP) translate
their wire shapes into these calls; the store persists what :meth:`Registry.drain_dirty` hands it.

Rules kept from the real Polaris server:

- an instance id is the sha1 hex of ``namespace##service##host##port`` unless the caller names one;
  registering the same host:port again updates that instance (idempotent);
- registering into an unknown service creates it (and an unknown namespace too);
- a heartbeat-checked instance is unhealthy until its first heartbeat, and again after
  ``TTL x 3`` without one; after ``expire_after`` seconds without one it is removed;
- a service's revision changes whenever its instance list, an instance's health / isolation /
  weight / metadata, or its rules change; a plain heartbeat does not change it.

LIMITATIONS: one process, no clustering; heartbeat is the only health check; tokens are plain
strings compared per service (no users, groups or strategies of Polaris's auth plugin).
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from devbox.mocks.naming.models import (
    DEFAULT_NAMESPACE,
    DEFAULT_TTL,
    DEFAULT_WEIGHT,
    MAX_TTL,
    MAX_WEIGHT,
    UNHEALTHY_AFTER_TTLS,
    Code,
    Instance,
    Namespace,
    NamingError,
    Service,
)

from devbox.polaris.ids import instance_id

LOG = logging.getLogger(__name__)

_NAME = re.compile(r"^[0-9A-Za-z\-./:_]{1,128}$")
MAX_METADATA = 64

#: ``listener(namespace, service, instance_id | None, change)``; change is one of the
#: ``instance_changed`` values plus ``service`` (service metadata) and ``rules``.
ChangeListener = Callable[[str, str, "str | None", str], None]


def new_revision() -> str:
    return uuid.uuid4().hex


@dataclass
class Dirty:
    """What changed since the last :meth:`Registry.drain_dirty`: copies, safe to hand to a thread."""

    namespaces: list[Namespace] = field(default_factory=list)
    services: list[Service] = field(default_factory=list)
    deleted_services: list[tuple[str, str]] = field(default_factory=list)
    instances: list[Instance] = field(default_factory=list)
    deleted_instances: list[str] = field(default_factory=list)
    rules: list[dict[str, Any]] = field(default_factory=list)
    deleted_rules: list[tuple[str, str, str]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(
            self.namespaces
            or self.services
            or self.deleted_services
            or self.instances
            or self.deleted_instances
            or self.rules
            or self.deleted_rules
        )


def _check_name(value: str | None, what: str, code: Code) -> str:
    if not value:
        raise NamingError(code, f"{what} is required")
    if not _NAME.match(value):
        raise NamingError(code, f"{what} {value!r} is invalid: use 1-128 of letters, digits and -._:/")
    return value


#: Longest instance id a client may choose (Polaris's own ids are 40 hex characters; its store
#: column is 128): an id is echoed in every discover answer, so an unbounded one is a cheap amplifier.
MAX_ID = 128


def _check_metadata(metadata: dict[str, str] | None, code: Code = Code.InvalidMetadata) -> dict[str, str]:
    metadata = dict(metadata or {})
    if len(metadata) > MAX_METADATA:
        raise NamingError(code, f"metadata has {len(metadata)} entries; at most {MAX_METADATA} are allowed")
    for key, value in metadata.items():
        if not isinstance(key, str) or not key or len(key) > 128:
            raise NamingError(code, f"metadata key {key!r} must be a 1-128 character string")
        if not isinstance(value, str) or len(value) > 4096:
            raise NamingError(code, f"metadata value of {key!r} must be a string of at most 4096 characters")
    return metadata


def check_weight(weight: int) -> int:
    if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= MAX_WEIGHT:
        raise NamingError(Code.InvalidParameter, f"weight {weight!r} must be an integer in [0, {MAX_WEIGHT}]")
    return weight


def check_ttl(ttl: float) -> float:
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl <= MAX_TTL:
        raise NamingError(Code.InvalidParameter, f"ttl {ttl!r} must be in (0, {MAX_TTL:g}] seconds")
    return float(ttl)


class Registry:
    """All namespaces, services and instances of one devbox, with their revisions."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        default_ttl: float = DEFAULT_TTL,
        expire_after: float = 60.0,
    ) -> None:
        self.clock = clock
        self.default_ttl = default_ttl
        self.expire_after = expire_after
        self._namespaces: dict[str, Namespace] = {}
        self._services: dict[tuple[str, str], Service] = {}
        #: (namespace, service) -> {instance id -> Instance}
        self._instances: dict[tuple[str, str], dict[str, Instance]] = {}
        self._by_id: dict[str, Instance] = {}
        self._by_address: dict[tuple[str, str, str, int], str] = {}
        #: (namespace, service or "*", rule name) -> rule JSON
        self._rules: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._listeners: list[ChangeListener] = []
        self._dirty_ns: set[str] = set()
        self._dirty_svc: set[tuple[str, str]] = set()
        self._deleted_svc: set[tuple[str, str]] = set()
        self._dirty_ins: set[str] = set()
        self._deleted_ins: set[str] = set()
        self._dirty_rules: set[tuple[str, str, str]] = set()
        self._deleted_rules: set[tuple[str, str, str]] = set()
        self._restored_at = float("-inf")
        #: Instance ids whose heartbeats are lost on the way (a fault: see :meth:`drop_heartbeats`).
        self._dropped: set[str] = set()
        self.ensure_namespace(DEFAULT_NAMESPACE)

    # --- listeners -------------------------------------------------------------------------

    def add_listener(self, listener: ChangeListener) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: ChangeListener) -> None:
        self._listeners.remove(listener)

    def _changed(self, svc: Service, instance: str | None, change: str) -> None:
        svc.revision = new_revision()
        svc.updated = self.clock()
        self._dirty_svc.add(svc.key)
        for listener in list(self._listeners):
            try:
                listener(svc.namespace, svc.name, instance, change)
            except Exception:
                LOG.exception("naming change listener %r failed", listener)

    # --- namespaces ------------------------------------------------------------------------

    def ensure_namespace(self, name: str, *, comment: str = "", owners: str = "devbox") -> Namespace:
        _check_name(name, "namespace", Code.InvalidNamespaceName)
        found = self._namespaces.get(name)
        if found is None:
            found = Namespace(name=name, comment=comment, owners=owners, created=self.clock())
            self._namespaces[name] = found
            self._dirty_ns.add(name)
        return found

    def create_namespace(self, name: str, *, comment: str = "", owners: str = "devbox") -> Namespace:
        if name in self._namespaces:
            raise NamingError(Code.ExistedResource, f"namespace {name!r} exists already")
        return self.ensure_namespace(name, comment=comment, owners=owners)

    def namespaces(self) -> list[Namespace]:
        return sorted(self._namespaces.values(), key=lambda n: n.name)

    # --- services --------------------------------------------------------------------------

    def service(self, namespace: str, name: str) -> Service | None:
        return self._services.get((namespace, name))

    def require_service(self, namespace: str, name: str) -> Service:
        found = self._services.get((namespace, name))
        if found is None:
            raise NamingError(Code.NotFoundService, f"service {namespace}/{name} does not exist")
        return found

    def services(self, namespace: str | None = None) -> list[Service]:
        found = [s for s in self._services.values() if namespace is None or s.namespace == namespace]
        return sorted(found, key=lambda s: (s.namespace, s.name))

    def create_service(
        self,
        namespace: str,
        name: str,
        *,
        token: str | None = None,
        require_token: bool = False,
        owners: str = "devbox",
        comment: str = "",
        business: str = "",
        department: str = "",
        metadata: dict[str, str] | None = None,
        exist_ok: bool = False,
    ) -> Service:
        """Create a service (and its namespace). ExistedResource unless ``exist_ok``."""
        _check_name(namespace, "namespace", Code.InvalidNamespaceName)
        _check_name(name, "service", Code.InvalidServiceName)
        existing = self._services.get((namespace, name))
        if existing is not None:
            if exist_ok:
                return existing
            raise NamingError(Code.ExistedResource, f"service {namespace}/{name} exists already")
        self.ensure_namespace(namespace)
        now = self.clock()
        svc = Service(
            namespace=namespace,
            name=name,
            token=token or uuid.uuid4().hex,
            require_token=require_token,
            owners=owners,
            comment=comment,
            business=business,
            department=department,
            metadata=_check_metadata(metadata, Code.InvalidServiceMetadata),
            revision=new_revision(),
            created=now,
            updated=now,
        )
        self._services[svc.key] = svc
        self._instances.setdefault(svc.key, {})
        self._dirty_svc.add(svc.key)
        self._changed(svc, None, "service")
        return svc

    def update_service(
        self,
        namespace: str,
        name: str,
        *,
        require_token: bool | None = None,
        token: str | None = None,
        owners: str | None = None,
        comment: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> Service:
        """Change what is given; a new revision only when something actually changed."""
        svc = self.require_service(namespace, name)
        before = (svc.require_token, svc.token, svc.owners, svc.comment, dict(svc.metadata))
        if require_token is not None:
            svc.require_token = require_token
        if token is not None:
            svc.token = token
        if owners is not None:
            svc.owners = owners
        if comment is not None:
            svc.comment = comment
        if metadata is not None:
            svc.metadata = _check_metadata(metadata, Code.InvalidServiceMetadata)
        if before != (svc.require_token, svc.token, svc.owners, svc.comment, svc.metadata):
            self._changed(svc, None, "service")
        return svc

    def delete_service(self, namespace: str, name: str) -> None:
        svc = self.require_service(namespace, name)
        if self._instances.get(svc.key):
            raise NamingError(
                Code.ServiceExistedInstances, f"service {namespace}/{name} still has instances; deregister them first"
            )
        del self._services[svc.key]
        self._instances.pop(svc.key, None)
        self._dirty_svc.discard(svc.key)
        self._deleted_svc.add(svc.key)
        for listener in list(self._listeners):
            try:
                listener(namespace, name, None, "service")
            except Exception:
                LOG.exception("naming change listener %r failed", listener)

    def check_token(self, namespace: str, service: str, token: str | None) -> None:
        """Polaris token check: refuse with Unauthorized when the service requires its token."""
        svc = self._services.get((namespace, service))
        if svc is None or not svc.require_token:
            return
        if not token:
            raise NamingError(Code.Unauthorized, f"service {namespace}/{service} requires its token (X-Polaris-Token)")
        if token != svc.token:
            raise NamingError(Code.Unauthorized, f"wrong token for service {namespace}/{service}")

    def revision(self, namespace: str, service: str) -> str | None:
        svc = self._services.get((namespace, service))
        return svc.revision if svc else None

    # --- routing rules ---------------------------------------------------------------------

    def rules(self, namespace: str | None = None, service: str | None = None) -> list[dict[str, Any]]:
        """Rule JSON objects; with ``service``, those that apply to it (its own and ``"*"`` ones)."""
        found = [
            rule
            for (ns, svc, _), rule in self._rules.items()
            if (namespace is None or ns == namespace) and (service is None or svc in (service, "*"))
        ]
        return sorted(found, key=lambda r: (r.get("priority", 0), r["name"], r["service"]))

    def rule(self, namespace: str, service: str, name: str) -> dict[str, Any] | None:
        return self._rules.get((namespace, service, name))

    def put_rule(self, rule: dict[str, Any]) -> dict[str, Any]:
        """Create or replace one rule (a validated JSON object with namespace, service, name)."""
        key = (rule["namespace"], rule["service"], rule["name"])
        _check_name(key[0], "namespace", Code.InvalidNamespaceName)
        if key[1] != "*":
            _check_name(key[1], "service", Code.InvalidServiceName)
        self.ensure_namespace(key[0])
        if key[1] != "*":
            self.create_service(key[0], key[1], exist_ok=True)
        if self._rules.get(key) == rule:
            return self._rules[key]  # unchanged: no new revision for every watcher
        self._rules[key] = dict(rule)
        self._dirty_rules.add(key)
        self._deleted_rules.discard(key)
        self._rules_changed(key[0], key[1])
        return self._rules[key]

    def delete_rule(self, namespace: str, service: str, name: str) -> None:
        key = (namespace, service, name)
        if key not in self._rules:
            raise NamingError(Code.NotFoundRouting, f"routing rule {name!r} of {namespace}/{service} does not exist")
        del self._rules[key]
        self._dirty_rules.discard(key)
        self._deleted_rules.add(key)
        self._rules_changed(namespace, service)

    def replace_rules(self, namespace: str, service: str, rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Make ``rules`` the whole rule set of ``namespace/service`` (``"*"``: namespace-wide ones)."""
        _check_name(namespace, "namespace", Code.InvalidNamespaceName)
        if service != "*":
            _check_name(service, "service", Code.InvalidServiceName)
        self.ensure_namespace(namespace)
        for key in [k for k in self._rules if k[0] == namespace and k[1] == service]:
            del self._rules[key]
            self._dirty_rules.discard(key)
            self._deleted_rules.add(key)
        for rule in rules:
            key = (namespace, service, rule["name"])
            self._rules[key] = {**rule, "namespace": namespace, "service": service}
            self._dirty_rules.add(key)
            self._deleted_rules.discard(key)
        if service != "*":
            self.create_service(namespace, service, exist_ok=True)
        self._rules_changed(namespace, service)
        return self.rules(namespace, service)

    def _rules_changed(self, namespace: str, service: str) -> None:
        """A rule of ``service`` (or every service of the namespace, for ``"*"``) changed."""
        for svc in list(self._services.values()):
            if svc.namespace == namespace and service in ("*", svc.name):
                self._changed(svc, None, "rules")

    def set_circuit_breaker(self, namespace: str, service: str, config: dict[str, Any] | None) -> Service:
        svc = self.create_service(namespace, service, exist_ok=True)
        svc.circuit_breaker = dict(config) if config is not None else None
        self._changed(svc, None, "rules")
        return svc

    # --- instances -------------------------------------------------------------------------

    def register(
        self,
        *,
        namespace: str,
        service: str,
        host: str,
        port: int,
        protocol: str = "http",
        version: str = "",
        weight: int = DEFAULT_WEIGHT,
        metadata: dict[str, str] | None = None,
        ttl: float | None = None,
        health_check: bool = True,
        location: dict[str, str] | None = None,
        isolated: bool = False,
        healthy: bool | None = None,
        priority: int = 0,
        id: str | None = None,
    ) -> Instance:
        """Register (or update, same host:port) an instance; returns it. Raises NamingError."""
        namespace = namespace or DEFAULT_NAMESPACE
        _check_name(namespace, "namespace", Code.InvalidNamespaceName)
        _check_name(service, "service", Code.InvalidServiceName)
        if not host or len(host) > 128 or any(c.isspace() for c in host):
            raise NamingError(Code.InvalidInstanceHost, f"host {host!r} must be a 1-128 character address")
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise NamingError(Code.InvalidInstancePort, f"port {port!r} must be in [1, 65535]")
        if len(protocol) > 128:
            raise NamingError(Code.InvalidInstanceProtocol, "protocol is longer than 128 characters")
        if len(version) > 128:
            raise NamingError(Code.InvalidInstanceVersion, "version is longer than 128 characters")
        if id is not None and (len(id) > MAX_ID or not id.isprintable() or any(c.isspace() for c in id)):
            raise NamingError(
                Code.InvalidInstanceID,
                f"instance id must be 1-{MAX_ID} printable characters without spaces (got {len(id)} characters)",
            )
        check_weight(weight)
        ttl = check_ttl(self.default_ttl if ttl is None else ttl)
        metadata = _check_metadata(metadata)
        if location is not None:
            location = {k: str(v) for k, v in location.items() if k in ("region", "zone", "campus") and v}
        svc = self.create_service(namespace, service, exist_ok=True)
        address = (namespace, service, host, port)
        iid = id or self._by_address.get(address) or instance_id(namespace, service, host, port)
        now = self.clock()
        existing = self._by_id.get(iid)
        if existing is not None and (existing.namespace, existing.service) != (namespace, service):
            raise NamingError(
                Code.ExistedResource, f"instance id {iid} belongs to {existing.namespace}/{existing.service}"
            )
        if existing is not None:
            old_address = (existing.namespace, existing.service, existing.host, existing.port)
            before = replace(existing)
            existing.host, existing.port = host, port
            existing.protocol, existing.version, existing.weight = protocol, version, weight
            existing.metadata, existing.ttl, existing.health_check = metadata, ttl, health_check
            existing.location, existing.isolated, existing.priority = location, isolated, priority
            if healthy is not None and not health_check:
                existing.healthy = healthy
            elif not health_check:
                existing.healthy = True
            self._by_address.pop(old_address, None)
            self._by_address[address] = iid
            if _visible(before) != _visible(existing):
                existing.updated = now
                existing.revision = new_revision()
                self._dirty_ins.add(iid)
                self._changed(svc, iid, "updated")
            return existing
        if health_check:
            # Polaris: a heartbeat-checked instance is unhealthy until its first heartbeat.
            is_healthy = False if healthy is None else healthy
        else:
            is_healthy = True if healthy is None else healthy
        instance = Instance(
            id=iid,
            namespace=namespace,
            service=service,
            host=host,
            port=port,
            protocol=protocol,
            version=version,
            weight=weight,
            healthy=is_healthy,
            isolated=isolated,
            metadata=metadata,
            ttl=ttl,
            health_check=health_check,
            location=location or None,
            priority=priority,
            last_heartbeat=now if (health_check and is_healthy) else None,
            created=now,
            updated=now,
            revision=new_revision(),
        )
        self._instances.setdefault(svc.key, {})[iid] = instance
        self._by_id[iid] = instance
        self._by_address[address] = iid
        self._deleted_ins.discard(iid)
        self._dirty_ins.add(iid)
        self._changed(svc, iid, "registered")
        return instance

    def instance(self, instance_id: str) -> Instance | None:
        return self._by_id.get(instance_id)

    def require_instance(self, instance_id: str) -> Instance:
        found = self._by_id.get(instance_id)
        if found is None:
            raise NamingError(Code.NotFoundResource, f"instance {instance_id!r} is not registered")
        return found

    def find(self, namespace: str, service: str, host: str, port: int) -> Instance | None:
        """The instance registered at host:port of a service, if any."""
        iid = self._by_address.get((namespace, service, host, port))
        return self._by_id.get(iid) if iid else None

    def instances(self, namespace: str, service: str) -> list[Instance]:
        """Every instance of the service (healthy or not), ordered by address."""
        found = self._instances.get((namespace, service), {})
        return sorted(found.values(), key=lambda i: (i.host, i.port))

    def all_instances(self) -> list[Instance]:
        return list(self._by_id.values())

    def deregister(self, instance_id: str) -> None:
        """Remove an instance; NotFoundResource when it is not registered."""
        instance = self.require_instance(instance_id)
        self._remove(instance, "deregistered")

    def _remove(self, instance: Instance, change: str) -> None:
        key = (instance.namespace, instance.service)
        self._instances.get(key, {}).pop(instance.id, None)
        self._by_id.pop(instance.id, None)
        self._by_address.pop((instance.namespace, instance.service, instance.host, instance.port), None)
        self._dirty_ins.discard(instance.id)
        self._deleted_ins.add(instance.id)
        svc = self._services.get(key)
        if svc is not None:
            self._changed(svc, instance.id, change)

    def heartbeat(self, instance_id: str) -> None:
        """Record a heartbeat; an unhealthy instance turns healthy (a revision change).

        A dropped heartbeat (:meth:`drop_heartbeats`) returns as if it counted and changes nothing.
        """
        if instance_id in self._dropped:
            return
        instance = self.require_instance(instance_id)
        if not instance.health_check:
            raise NamingError(
                # Polaris: a heartbeat on an instance without health check is HeartbeatOnDisabledIns
                Code.HeartbeatOnDisabledIns,
                f"instance {instance_id} was registered without heartbeat health check",
            )
        instance.last_heartbeat = self.clock()
        self._dirty_ins.add(instance.id)
        if not instance.healthy:
            instance.healthy = True
            self._touch(instance, "healthy")

    def drop_heartbeats(self, instance_id: str, drop: bool = True) -> None:
        """Lose (or stop losing) every heartbeat of an instance, whoever sends it and over any API.

        The fault the network causes: the sender sees success, the registry sees nothing, so the
        instance turns unhealthy after its TTL. Dropping needs a registered id (NotFoundResource
        otherwise); the drop outlives a re-registration under the same id until it is lifted.
        """
        if drop:
            self.require_instance(instance_id)
            self._dropped.add(instance_id)
        else:
            self._dropped.discard(instance_id)

    def dropped_heartbeats(self) -> list[str]:
        """Ids whose heartbeats are dropped, sorted."""
        return sorted(self._dropped)

    def _touch(self, instance: Instance, change: str) -> None:
        instance.updated = self.clock()
        instance.revision = new_revision()
        self._dirty_ins.add(instance.id)
        svc = self._services.get((instance.namespace, instance.service))
        if svc is not None:
            self._changed(svc, instance.id, change)

    def isolate(self, instance_id: str, isolated: bool) -> Instance:
        instance = self.require_instance(instance_id)
        if instance.isolated != isolated:
            instance.isolated = isolated
            self._touch(instance, "isolated")
        return instance

    def set_weight(self, instance_id: str, weight: int) -> Instance:
        instance = self.require_instance(instance_id)
        check_weight(weight)
        if instance.weight != weight:
            instance.weight = weight
            self._touch(instance, "updated")
        return instance

    def set_metadata(self, instance_id: str, metadata: dict[str, str]) -> Instance:
        instance = self.require_instance(instance_id)
        metadata = _check_metadata(metadata)
        if instance.metadata != metadata:
            instance.metadata = metadata
            self._touch(instance, "updated")
        return instance

    def set_healthy(self, instance_id: str, healthy: bool) -> Instance:
        """Set health by hand (instances without heartbeat check; the console's switch)."""
        instance = self.require_instance(instance_id)
        if instance.healthy != healthy:
            instance.healthy = healthy
            if healthy and instance.health_check:
                instance.last_heartbeat = self.clock()
            self._touch(instance, "healthy" if healthy else "unhealthy")
        return instance

    # --- time ------------------------------------------------------------------------------

    def sweep(self, now: float | None = None) -> list[tuple[str, str]]:
        """Apply the heartbeat clock: mark overdue instances unhealthy, remove expired ones.

        Returns ``(instance_id, change)`` for what changed. Called about twice a second.
        """
        now = self.clock() if now is None else now
        changes: list[tuple[str, str]] = []
        for instance in list(self._by_id.values()):
            if not instance.health_check:
                continue
            since = instance.last_heartbeat if instance.last_heartbeat is not None else instance.created
            silent = now - since
            # Removal counts from the restore at the earliest: clients of a devbox that was down
            # longer than expire_after get that long to heartbeat again before losing their entry.
            if now - max(since, self._restored_at) > max(self.expire_after, instance.ttl * UNHEALTHY_AFTER_TTLS):
                self._remove(instance, "expired")
                changes.append((instance.id, "expired"))
            elif instance.healthy and silent > instance.ttl * UNHEALTHY_AFTER_TTLS:
                instance.healthy = False
                self._touch(instance, "unhealthy")
                changes.append((instance.id, "unhealthy"))
        return changes

    # --- persistence -----------------------------------------------------------------------

    def drain_dirty(self) -> Dirty:
        """Copies of everything changed since the last call, for the store to write."""
        dirty = Dirty(
            namespaces=[replace(self._namespaces[n]) for n in self._dirty_ns if n in self._namespaces],
            services=[_copy_service(self._services[k]) for k in self._dirty_svc if k in self._services],
            deleted_services=list(self._deleted_svc),
            instances=[_copy_instance(self._by_id[i]) for i in self._dirty_ins if i in self._by_id],
            deleted_instances=list(self._deleted_ins),
            rules=[dict(self._rules[k]) for k in self._dirty_rules if k in self._rules],
            deleted_rules=list(self._deleted_rules),
        )
        self._dirty_rules.clear()
        self._deleted_rules.clear()
        self._dirty_ns.clear()
        self._dirty_svc.clear()
        self._deleted_svc.clear()
        self._dirty_ins.clear()
        self._deleted_ins.clear()
        return dirty

    def requeue(self, dirty: Dirty) -> None:
        """Mark what ``dirty`` carried as changed again (its write failed), unless changed since."""
        self._dirty_ns.update(n.name for n in dirty.namespaces)
        self._dirty_svc.update(svc.key for svc in dirty.services)
        self._deleted_svc.update(key for key in dirty.deleted_services if key not in self._services)
        self._dirty_ins.update(i.id for i in dirty.instances)
        self._deleted_ins.update(i for i in dirty.deleted_instances if i not in self._by_id)
        self._dirty_rules.update((r["namespace"], r["service"], r["name"]) for r in dirty.rules)
        self._deleted_rules.update(key for key in dirty.deleted_rules if key not in self._rules)

    def load(
        self,
        namespaces: Iterable[Namespace],
        services: Iterable[Service],
        instances: Iterable[Instance],
        rules: Iterable[dict[str, Any]] = (),
    ) -> None:
        """Restore state read from the store (no listeners fire, nothing is marked dirty)."""
        self._restored_at = self.clock()
        for rule in rules:
            self._rules[(rule["namespace"], rule["service"], rule["name"])] = rule
        for ns in namespaces:
            self._namespaces[ns.name] = ns
        for svc in services:
            self._services[svc.key] = svc
            self._instances.setdefault(svc.key, {})
        for instance in instances:
            key = (instance.namespace, instance.service)
            if key not in self._services:
                continue
            self._instances[key][instance.id] = instance
            self._by_id[instance.id] = instance
            self._by_address[(instance.namespace, instance.service, instance.host, instance.port)] = instance.id
        self._dirty_ns.clear()
        self._dirty_svc.clear()
        self._dirty_ins.clear()


def _visible(instance: Instance) -> tuple[Any, ...]:
    """What discovery clients see of an instance (a change here is a new revision)."""
    return (
        instance.host,
        instance.port,
        instance.protocol,
        instance.version,
        instance.weight,
        instance.healthy,
        instance.isolated,
        tuple(sorted(instance.metadata.items())),
        tuple(sorted((instance.location or {}).items())),
        instance.priority,
        instance.ttl,
        instance.health_check,
    )


def _copy_instance(instance: Instance) -> Instance:
    return replace(instance, metadata=dict(instance.metadata), location=dict(instance.location or {}) or None)


def _copy_service(svc: Service) -> Service:
    return replace(
        svc,
        metadata=dict(svc.metadata),
        circuit_breaker=dict(svc.circuit_breaker) if svc.circuit_breaker is not None else None,
    )
