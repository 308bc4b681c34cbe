"""DeployComponent: the 123-style deploy pipeline hosted by the platform.

On start it deploys every service of devbox.yaml in the background (the platform's listeners come
up meanwhile), then watches their folders for hot reload. Its HTTP API is in
:mod:`devbox.mocks.deploy.api`; the same operations are public methods here, for the scenario
runner in the same process.

Ports: it uses :class:`~devbox.platform.ports.NamingPort` (register and heartbeat instances) and
:class:`~devbox.platform.ports.FaultFront` (a fault proxy in front of each instance) when hosted,
and offers :class:`~devbox.platform.ports.DeployView` (what runs where).

LIMITATIONS: local processes only (no images, no machines); a deploy is not persisted across
platform restarts (events are).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Mapping
from typing import Any

from devbox.mocks.deploy import config_reload, core
from devbox.mocks.deploy.api import DeployApi
from devbox.mocks.deploy.config import ServiceConfig
from devbox.mocks.deploy.docker import engine_problem, remove_leftover_containers
from devbox.mocks.deploy.errors import DeployError, NotDeployed
from devbox.mocks.deploy.logs_api import LogsApi
from devbox.mocks.deploy.models import DeployEvent, EventKind
from devbox.mocks.deploy.release import GROUP as RELEASE_GROUP
from devbox.mocks.deploy.release import ReleaseApi, ReleaseManager
from devbox.mocks.deploy.reload import FileWatch, ServiceWatch, Watcher
from devbox.mocks.deploy.runner import kill_leftovers
from devbox.mocks.deploy.store import EventStore
from devbox.mocks.deploy.supervisor import Supervisor
from fastapi import APIRouter

from devbox.config import ConfigError, load_config
from devbox.platform.component import Component, PlatformContext
from devbox.platform.ports import (
    AlertsView,
    DeployView,
    FaultFront,
    MetricsQueryPort,
    NamingPort,
    PortError,
    RunningInstance,
)

LOG = logging.getLogger(__name__)


class DeployComponent(Component):
    """Builds, starts, supervises and hot-reloads the project's services."""

    name = "deploy"
    # instances flush their last spans and metrics, and self-registered ones deregister, on the way out
    stops_before_listeners = True

    def __init__(self, ctx: PlatformContext) -> None:
        super().__init__(ctx)
        self.store: EventStore | None = None
        self.supervisor: Supervisor | None = None
        self.watcher: Watcher | None = None
        self.errors: list[str] = []
        #: service name -> pending|building|starting|ready|failed|stopped, for progress displays.
        self.phase: dict[str, str] = {}
        self.deployed: asyncio.Future[list[str]] | None = None
        self._task: asyncio.Task[None] | None = None
        #: service -> (host, port) of its stable entry port (when faults is hosted); kept for the whole `up`.
        self.entries: dict[str, tuple[str, int]] = {}
        self.releases: ReleaseManager | None = None
        self.logs_api = LogsApi(ctx.state_dir / "logs")
        #: devbox.yaml as last read from the file (what runs may differ: `--no-reload`, `devbox scale`)
        self._file_config: Any = None
        ctx.provide(DeployView, self)

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        config = self.ctx.config
        self.store = EventStore(self.ctx.state_dir / "deploy.db")
        self.supervisor = Supervisor(
            root=config.root,
            state_dir=self.ctx.state_dir,
            facts=self._facts,
            naming=self.ctx.lookup(NamingPort),
            emit=self._emit,
            # naming's default TTL for the instances devbox registers (how often keepalive beats follows)
            ttl=config.naming.heartbeat_ttl,
            project=config.project,
            front=self.ctx.lookup(FaultFront),
        )
        self.releases = ReleaseManager(
            sup=self.supervisor, emit=self._emit, path=self.ctx.state_dir / "releases.json",
            metrics=lambda: self.ctx.lookup(MetricsQueryPort), alerts=lambda: self.ctx.lookup(AlertsView),
        )
        self.deployed = asyncio.get_running_loop().create_future()
        self.phase = {svc.name: "pending" for svc in config.services}
        self._task = asyncio.create_task(self._deploy_all(), name="deploy:all")

    async def stop(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self.watcher is not None:
            await self.watcher.stop()
        if self.releases is not None:
            await self.releases.close()
        if self.supervisor is not None:
            await self.supervisor.close()
            # a process that left its group (setsid, double fork) still carries the injected env
            leftovers = await asyncio.to_thread(kill_leftovers, self.ctx.state_dir)
            if self.supervisor.docker is not None:
                await asyncio.to_thread(remove_leftover_containers, self.ctx.state_dir)
            if leftovers:
                LOG.warning("killed %d instance process(es) that escaped their process group: %s",
                            len(leftovers), leftovers)
        for name, phase in self.phase.items():
            if phase != "failed":
                self.phase[name] = "stopped"
        if self.store is not None:
            self.store.close()

    async def before_listeners_close(self) -> None:
        self.logs_api.release_waits()

    def info(self) -> dict[str, Any]:
        if self.supervisor is None:
            return {}
        instances = [i for d in self.supervisor.deployments.values() for i in d.instances.values()]
        return {
            "services": len(self.ctx.config.services),
            "instances": len(instances),
            "ready": sum(1 for i in instances if i.record.state.value == "ready"),
            "deploying": self.deploying,
            "errors": self.errors,
        }

    @property
    def deploying(self) -> bool:
        """Whether the initial deploy of the project's services is still running."""
        return self.deployed is not None and not self.deployed.done()

    def running_instances(self) -> list[RunningInstance]:
        """:class:`DeployView`: every instance deploy knows, failed and stopped ones too."""
        return [] if self.supervisor is None else self.supervisor.running_instances()

    # --- wiring ---------------------------------------------------------------------------

    def _facts(self) -> core.PlatformFacts:
        addresses = self.ctx.addresses
        naming = self.ctx.lookup(NamingPort)
        return core.PlatformFacts(
            api_url=self.ctx.url("api"),
            # without naming hosted nothing is registered; instances still get a namespace to show
            namespace=naming.namespace if naming is not None else core.PlatformFacts.namespace,
            naming_http=self.ctx.url("polaris_http") if "polaris_http" in addresses else None,
            naming_grpc=self.ctx.target("polaris_grpc") if "polaris_grpc" in addresses else None,
            otlp_http=self.ctx.url("otlp_http") if "otlp_http" in addresses else None,
            token=self.ctx.config.platform.token,
        )

    def _emit(self, event: DeployEvent) -> None:
        if self.store is not None:
            try:
                self.store.add(event)
            except Exception:
                LOG.exception("storing deploy event failed")
        self.ctx.events.deploy_event.fire(event=event)

    @property
    def sup(self) -> Supervisor:
        if self.supervisor is None:
            raise RuntimeError("the deploy component is not started")
        return self.supervisor

    async def _deploy_all(self) -> None:
        """The initial deploy; whatever happens, ``deployed`` is resolved (``wait_deployed`` and
        `devbox up` wait on it): an unexpected error is one of its errors, naming what failed."""
        try:
            await self._deploy_services()
        except Exception as exc:
            LOG.exception("deploying the project's services failed")
            self.errors.append(f"deploying the services failed: {type(exc).__name__}: {exc}")
            for name, phase in self.phase.items():
                if phase != "ready":
                    self.phase[name] = "failed"
        finally:
            if self.deployed is not None and not self.deployed.done():
                if not self.errors:  # cancelled by stop midway: nobody may wait for a deploy that no longer runs
                    self.errors.append("devbox stopped before every service was deployed")
                self._finish()

    async def _deploy_services(self) -> None:
        config = self.ctx.config
        problems = core.preflight(config.services, config.root)
        if any(s.runtime == "docker" for s in config.services):
            engine = await asyncio.to_thread(engine_problem)
            if engine:
                problems.append(f"services with runtime docker cannot start: {engine}")
        if problems:
            self.errors = problems
            for svc in config.services:
                self.phase[svc.name] = "failed"
            self._finish()
            return
        # Builds start now, while the platform is still starting (they need nothing from it); the
        # instances get the platform's addresses: they start once those serve for real (until then
        # the listeners answer 503 "starting", see devbox.platform.platform) and the entry ports are open.
        serving = asyncio.create_task(self._when_serving(config.services), name="deploy:serving")
        try:
            await asyncio.gather(*(self._deploy_one(svc, before_start=functools.partial(self._start_gate, svc, serving))
                                   for svc in config.services))
            await serving
        finally:
            serving.cancel()
        if config.source is not None:
            try:
                self._file_config = await asyncio.to_thread(load_config, config.source)
            except ConfigError:
                self._file_config = config  # edited into an error meanwhile: what runs is the reference
        self._start_watching()
        self._finish()

    def _finish(self) -> None:
        if self.deployed is not None and not self.deployed.done():
            self.deployed.set_result(list(self.errors))

    async def _when_serving(self, services: list[ServiceConfig]) -> None:
        await self.ctx.serving.wait()
        await self._open_entries(services)

    async def _start_gate(self, svc: ServiceConfig, serving: asyncio.Task[None]) -> None:
        """Between ``svc``'s build and its first instance: the platform serves, the entry ports are open."""
        await asyncio.shield(serving)
        self.phase[svc.name] = "starting"

    async def _open_entries(self, services: list[ServiceConfig]) -> None:
        """Open each service's stable entry port before its first instance starts (see FaultFront.entry)."""
        front = self.ctx.lookup(FaultFront)
        if front is None:
            return
        for svc in services:
            if svc.name in self.entries:
                continue
            try:
                self.entries[svc.name] = await front.entry(svc.name, svc.port, protocol=svc.protocol)
            except PortError as exc:
                self.errors.append(str(exc))

    async def _deploy_one(self, svc: ServiceConfig, **overrides: Any) -> None:
        self.phase[svc.name] = "building" if svc.build else "starting"
        try:
            dep = self.sup.deployments.get(svc.name)
            if dep is None:
                await self.sup.deploy(svc, **overrides)
        except DeployError as exc:
            self.phase[svc.name] = "failed"
            self.errors.append(str(exc))
            return
        self.phase[svc.name] = "ready"

    def _start_watching(self) -> None:
        """Hot reload of each service's folder, and devbox.yaml itself (see :meth:`_config_changed`)."""
        # the initial builds ran before the observer existed: none of their writes can reach it
        self.sup.building.clear()
        self.watcher = Watcher()
        for svc in self.ctx.config.services:
            self._watch_service(svc)
        if self._file_config is not None and self.ctx.config.source is not None:
            self.watcher.add(FileWatch(key="devbox.yaml", file=self.ctx.config.source,
                                       loop=asyncio.get_running_loop(), on_change=self._config_changed))
        self.watcher.start()

    def _watch_service(self, svc: ServiceConfig) -> None:
        if not svc.reload or self.watcher is None:
            return
        # devbox.yaml may sit in a service's folder: editing it is no code change (_config_changed has it)
        ignored = [self.ctx.state_dir, *([self.ctx.config.source] if self.ctx.config.source else [])]

        async def changed(paths: list[str], name: str = svc.name) -> None:
            await self.reload(name, reason=f"{len(paths)} file(s) changed: {', '.join(paths[:3])}")

        self.watcher.add(ServiceWatch(
            key=svc.name, root=self.sup.service_path(svc), loop=asyncio.get_running_loop(), on_change=changed,
            ignore_dirs=ignored, patterns=list(svc.watch_ignore),
            paused=lambda name=svc.name: name in self.sup.building,
        ))
        self.watcher.start()

    # --- devbox.yaml edited while up runs ---------------------------------------------------

    def _config_event(self, kind: EventKind, message: str, **data: Any) -> None:
        (LOG.error if kind is EventKind.CONFIG_ERROR else LOG.warning)("%s", message)
        self._emit(DeployEvent(service="devbox.yaml", kind=kind, message=message, data=data))

    async def _config_changed(self, paths: list[str]) -> None:
        """Apply a saved devbox.yaml: services added are started, removed ones stopped, changed
        ones replaced (rolling) or scaled; what only a restart applies is said. A file that does
        not validate (or names a missing folder or script) changes nothing."""
        config = self.ctx.config
        try:
            new = await asyncio.to_thread(load_config, config.source)
        except ConfigError as exc:
            self._config_event(EventKind.CONFIG_ERROR, "devbox.yaml not applied, the running services are kept "
                               "as they are: " + "; ".join(exc.problems), problems=exc.problems)
            return
        change = config_reload.diff(self._file_config, new)
        problems = core.preflight([*change.added, *(svc for svc, _ in change.changed)], config.root)
        if problems:
            self._config_event(EventKind.CONFIG_ERROR, "devbox.yaml not applied, the running services are kept "
                               "as they are: " + "; ".join(problems), problems=problems)
            return
        before, self._file_config = self._file_config, new
        if change.restart_keys:
            keys = ", ".join(change.restart_keys)
            self._config_event(EventKind.CONFIG_CHANGED, f"devbox.yaml changed {keys}: restart `devbox up` to apply",
                               restart=change.restart_keys)
        if not change.services:
            return
        running = {svc.name: svc for svc in config.services}
        old = {svc.name: svc for svc in before.services}
        wanted = {svc.name: running.get(svc.name, svc) for svc in new.services}
        for svc, _ in change.changed:
            wanted[svc.name] = config_reload.carry_overrides(running[svc.name], old[svc.name], svc)
        config.services = list(wanted.values())
        parts = [f"added {', '.join(s.name for s in change.added)}" if change.added else "",
                 f"removed {', '.join(change.removed)}" if change.removed else "",
                 "changed " + ", ".join(f"{svc.name} ({', '.join(fields)})" for svc, fields in change.changed)
                 if change.changed else ""]
        summary = "; ".join(part for part in parts if part)
        self._config_event(EventKind.CONFIG_CHANGED, f"devbox.yaml changed services: {summary}; applying",
                           added=[s.name for s in change.added], removed=change.removed,
                           changed={svc.name: fields for svc, fields in change.changed})
        await asyncio.gather(
            *(self._remove_service(name) for name in change.removed),
            *(self._add_service(svc) for svc in change.added),
            *(self._change_service(wanted[svc.name], fields) for svc, fields in change.changed),
        )

    async def _add_service(self, svc: ServiceConfig) -> None:
        self.phase[svc.name] = "pending"
        await self._open_entries([svc])
        await self._deploy_one(svc)
        self._watch_service(svc)

    async def _remove_service(self, name: str) -> None:
        if self.watcher is not None:
            await self.watcher.remove(name)
        await self.sup.remove_service(name, reason="removed from devbox.yaml")
        self.phase.pop(name, None)

    async def _change_service(self, svc: ServiceConfig, fields: list[str]) -> None:
        if set(fields) & {"path", *config_reload.WATCH_FIELDS} and self.watcher is not None:
            await self.watcher.remove(svc.name)
            self._watch_service(svc)
        dep = self.sup.deployments.get(svc.name)
        if dep is None:  # its first deploy never got as far as a deployment
            await self._deploy_one(svc)
            return
        replace = [f for f in fields if f not in config_reload.WATCH_FIELDS]
        # stopped by request: it stays stopped, and starts as it now reads
        if not replace or not any(i.record.state.value != "stopped" for i in dep.instances.values()):
            dep.svc = svc
            return
        with contextlib.suppress(DeployError):  # reported as a reload_failed event
            if replace == ["replicas"]:
                await self.sup.scale(svc.name, svc.replicas)
            else:
                dep.svc = svc
                rebuild = bool(set(replace) & config_reload.BUILD_FIELDS)
                await self.sup.replace_all(dep, reason=f"devbox.yaml changed {', '.join(replace)}", rebuild=rebuild)

    async def wait_deployed(self, timeout: float | None = None) -> list[str]:
        """Wait for the initial deploy of every service; the errors (empty when all are ready)."""
        assert self.deployed is not None
        return await asyncio.wait_for(asyncio.shield(self.deployed), timeout)

    # --- DeployView --------------------------------------------------------------------------

    # --- public operations (API and scenario runner) -----------------------------------------

    def services(self) -> list[dict[str, Any]]:
        out = []
        for dep in self.sup.deployments.values():
            described = self.sup.describe(dep)
            entry = self.entries.get(dep.svc.name)
            described["front_port"] = entry[1] if entry else None
            described["url"] = f"http://{entry[0]}:{entry[1]}" if entry and dep.svc.protocol == "http" else (
                f"{entry[0]}:{entry[1]}" if entry else None)
            out.append(described)
        return out

    def events(self, **filters: Any) -> list[DeployEvent]:
        assert self.store is not None
        return self.store.list(**filters)

    async def kill_instance(self, service: str, instance: str) -> dict[str, Any]:
        return await self.sup.kill(service, instance)

    async def signal_instance(self, service: str, instance: str, signal: str) -> dict[str, Any]:
        return await self.sup.send_signal(service, instance, signal)

    async def stop_instance(self, service: str, instance: str) -> dict[str, Any]:
        return await self.sup.stop(service, instance)

    async def start_instance(self, service: str, instance: str) -> dict[str, Any]:
        return await self.sup.start(service, instance)

    async def scale(self, service: str, replicas: int, *, group: str = "default") -> dict[str, Any]:
        return await self.sup.scale(service, replicas, group=group)

    async def reload(self, service: str, *, reason: str = "requested") -> list[dict[str, Any]]:
        """Rolling replacement of every running deployment of ``service`` (rebuilding first)."""
        out = []
        # a release's new version is the release's to replace or retire, not a code change's
        for dep in [d for d in self.sup.deployments.values() if d.svc.name == service and d.group != RELEASE_GROUP]:
            # a crash-looping or failed instance is replaced too: saving the fix is how users heal it
            if not any(i.record.state.value != "stopped" for i in dep.instances.values()):
                continue
            with contextlib.suppress(DeployError):  # reported as a reload_failed event
                out.append(await self.sup.replace_all(dep, reason=reason))
        return out

    async def start_service(
        self,
        service: str,
        *,
        replicas: int | None = None,
        tags: Mapping[str, str] | None = None,
        env: Mapping[str, str] | None = None,
        group: str = "default",
    ) -> dict[str, Any]:
        """Start a service of devbox.yaml with overrides; a running one is replaced instance by instance.

        ``group`` other than ``default`` runs a second set of instances beside the first (e.g. a
        feature environment with ``tags={"env": "feature-x"}``).
        """
        try:
            base = self.ctx.config.service(service)
        except KeyError:
            raise NotDeployed(f"no service {service!r} in devbox.yaml") from None
        key = service if group == "default" else f"{service}@{group}"
        dep = self.sup.deployments.get(key)
        update: dict[str, Any] = {}
        if replicas is not None:
            update["replicas"] = replicas
        if dep is not None and any(i.record.alive for i in dep.instances.values()):
            dep.svc = dep.svc.model_copy(update=update)
            if tags is not None:
                dep.extra_tags = dict(tags)
            if env is not None:
                dep.extra_env = dict(env)
            return await self.sup.replace_all(dep, reason="started with overrides", rebuild=False)
        if dep is not None:
            del self.sup.deployments[key]
        svc = (dep.svc if dep is not None else base).model_copy(update=update)
        problems = core.preflight([svc], self.ctx.config.root)
        if problems:
            raise DeployError(service, "; ".join(problems))
        try:
            new = await self.sup.deploy(svc, group=group, tags=tags, env=env)
        except DeployError:
            await self.sup.stop_deployment(self.sup.deployments[key])
            raise
        return self.sup.describe(new)

    async def stop_service(self, service: str, *, group: str = "default") -> dict[str, Any]:
        return await self.sup.stop_service(service, group=group)

    # --- HTTP -----------------------------------------------------------------------------

    def http_routes(self) -> list[tuple[str, APIRouter]]:
        return [("api", DeployApi(self).router()), ("api", ReleaseApi(self._release_manager).router()),
                ("api", self.logs_api.router())]

    def _release_manager(self) -> ReleaseManager:
        if self.releases is None:
            raise RuntimeError("the deploy component is not started")
        return self.releases
