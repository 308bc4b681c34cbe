"""DeployComponent: the 123-style deploy pipeline hosted by the platform.

On start it deploys every service of devbox.yaml in the background (the platform's listeners come
up meanwhile), then watches their folders for hot reload. Its HTTP API on the ``api`` listener:

- ``GET /api/deploy/services`` — every deployment with its instances (state, port, pid, restarts)
- ``GET /api/deploy/events?service=&instance=&kind=&since=&limit=`` — lifecycle events
- ``POST /api/deploy/services/{svc}/instances/{id}/kill|stop|start|signal`` — instance actions
  (``signal`` takes ``{"signal": "SIGSTOP"}``); ``id`` is the devbox name (orders-2) or naming id
- ``POST /api/deploy/services/{svc}/scale`` ``{"replicas": n}``; ``.../start`` with overrides
  ``{"replicas", "tags", "env", "group"}``; ``.../stop``; ``.../reload``

The same operations are public methods, for the scenario runner in the same process.

LIMITATIONS: local processes only (no images, no machines); a deploy is not persisted across
platform restarts (events are).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from devbox.mocks.deploy import core
from devbox.mocks.deploy.config import ServiceConfig
from devbox.mocks.deploy.docker import engine_problem, remove_leftover_containers
from devbox.mocks.deploy.models import DeployEvent, EventKind
from devbox.mocks.deploy.reload import ServiceWatch, Watcher
from devbox.mocks.deploy.runner import kill_leftovers
from devbox.mocks.deploy.store import EventStore
from devbox.mocks.deploy.supervisor import DeployError, Supervisor
from fastapi import APIRouter, Body, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from devbox.platform.component import Component, PlatformContext

LOG = logging.getLogger(__name__)


class StartRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    replicas: int | None = Field(None, ge=0, le=64)
    tags: dict[str, str] = Field(default_factory=dict)
    env: dict[str, str] = Field(default_factory=dict)
    group: str = Field("default", pattern=r"^[a-z0-9][a-z0-9.-]{0,62}$")


class ScaleRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    replicas: int = Field(ge=0, le=64)
    group: str = "default"


class GroupRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    group: str = "default"


class SignalRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    signal: str = Field(description="Signal name, e.g. SIGSTOP, SIGCONT, SIGTERM, SIGHUP.")


def _error(status: int, error: str, reason: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": error, "reason": reason, **extra}, status_code=status)


class DeployComponent(Component):
    """Builds, starts, supervises and hot-reloads the project's services."""

    name = "deploy"
    after = ("naming",)
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

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        config = self.ctx.config
        self.store = EventStore(self.ctx.state_dir / "deploy.db")
        self.supervisor = Supervisor(
            root=config.root,
            state_dir=self.ctx.state_dir,
            facts=self._facts,
            registry=self._registry,
            emit=self._emit,
            ttl=config.naming.heartbeat_ttl,
            project=config.project,
            front=self.ctx.component("faults").front if self.ctx.has("faults") else None,
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

    def info(self) -> dict[str, Any]:
        if self.supervisor is None:
            return {}
        instances = [i for d in self.supervisor.deployments.values() for i in d.instances.values()]
        return {
            "services": len(self.ctx.config.services),
            "instances": len(instances),
            "ready": sum(1 for i in instances if i.record.state.value == "ready"),
            "deploying": self.deployed is not None and not self.deployed.done(),
            "errors": self.errors,
        }

    # --- wiring ---------------------------------------------------------------------------

    def _facts(self) -> core.PlatformFacts:
        addresses = self.ctx.addresses
        return core.PlatformFacts(
            api_url=self.ctx.url("api"),
            namespace=self.ctx.config.naming.namespace,
            naming_http=self.ctx.url("polaris_http") if "polaris_http" in addresses else None,
            naming_grpc=self.ctx.target("polaris_grpc") if "polaris_grpc" in addresses else None,
            otlp_http=self.ctx.url("otlp_http") if "otlp_http" in addresses else None,
        )

    def _registry(self) -> Any | None:
        if not self.ctx.has("naming"):
            return None
        return getattr(self.ctx.component("naming"), "registry", None)

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
        await asyncio.gather(*(self._deploy_one(svc) for svc in config.services))
        self._start_watching()
        self._finish()

    def _finish(self) -> None:
        if self.deployed is not None and not self.deployed.done():
            self.deployed.set_result(list(self.errors))

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
        services = [s for s in self.ctx.config.services if s.reload]
        if not services:
            return
        loop = asyncio.get_running_loop()
        # the initial builds ran before the observer existed: none of their writes can reach it
        self.sup.building.clear()
        self.watcher = Watcher()
        # devbox.yaml may sit in a service's folder: editing it is not a code change (it is not re-read)
        ignored = [self.ctx.state_dir, *([self.ctx.config.source] if self.ctx.config.source else [])]
        for svc in services:
            path = self.sup.service_path(svc)

            async def changed(paths: list[str], name: str = svc.name) -> None:
                await self.reload(name, reason=f"{len(paths)} file(s) changed: {', '.join(paths[:3])}")

            self.watcher.add(ServiceWatch(
                key=svc.name, root=path, loop=loop, on_change=changed, ignore_dirs=ignored,
                patterns=list(svc.watch_ignore), paused=lambda name=svc.name: name in self.sup.building,
            ))
        self.watcher.start()

    async def wait_deployed(self, timeout: float | None = None) -> list[str]:
        """Wait for the initial deploy of every service; the errors (empty when all are ready)."""
        assert self.deployed is not None
        return await asyncio.wait_for(asyncio.shield(self.deployed), timeout)

    # --- public operations (API and scenario runner) -----------------------------------------

    def services(self) -> list[dict[str, Any]]:
        return [self.sup.describe(dep) for dep in self.sup.deployments.values()]

    def events(self, **filters: Any) -> list[DeployEvent]:
        assert self.store is not None
        return self.store.list(**filters)

    async def kill(self, service: str, instance: str) -> dict[str, Any]:
        return await self.sup.kill(service, instance)

    async def signal(self, service: str, instance: str, sig: str) -> dict[str, Any]:
        return await self.sup.send_signal(service, instance, sig)

    async def stop_instance(self, service: str, instance: str) -> dict[str, Any]:
        return await self.sup.stop(service, instance)

    async def start_instance(self, service: str, instance: str) -> dict[str, Any]:
        return await self.sup.start(service, instance)

    async def scale(self, service: str, replicas: int, *, group: str = "default") -> dict[str, Any]:
        return await self.sup.scale(service, replicas, group=group)

    async def reload(self, service: str, *, reason: str = "requested") -> list[dict[str, Any]]:
        """Rolling replacement of every running deployment of ``service`` (rebuilding first)."""
        out = []
        for dep in [d for d in self.sup.deployments.values() if d.svc.name == service]:
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
        tags: dict[str, str] | None = None,
        env: dict[str, str] | None = None,
        group: str = "default",
    ) -> dict[str, Any]:
        """Start a service of devbox.yaml with overrides; a running one is replaced instance by instance.

        ``group`` other than ``default`` runs a second set of instances beside the first (e.g. a
        feature environment with ``tags={"env": "feature-x"}``).
        """
        base = self.ctx.config.service(service)
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
        dep = self.sup.deployment(service, group)
        await self.sup.stop_deployment(dep)
        self.sup._event(dep, EventKind.STOPPED, "service stopped by request")
        return self.sup.describe(dep)

    # --- HTTP -----------------------------------------------------------------------------

    def http_routes(self) -> list[tuple[str, APIRouter]]:
        router = APIRouter(prefix="/api/deploy", tags=["deploy"])

        async def guarded(coro: Any) -> Any:
            try:
                return await coro
            except KeyError as exc:
                return _error(404, "not found", str(exc.args[0]) if exc.args else str(exc))
            except ValueError as exc:
                return _error(409, "not possible now", str(exc))
            except DeployError as exc:
                return _error(422, "deploy failed", str(exc), tail=exc.tail)

        @router.get("/services")
        async def list_services() -> dict[str, Any]:
            return {
                "services": self.services(),
                "phase": self.phase,
                "deploying": self.deployed is not None and not self.deployed.done(),
                "errors": self.errors,
            }

        @router.get("/services/{service}")
        async def show_service(service: str) -> Any:
            found = [d for d in self.services() if d["service"] == service]
            if not found:
                return _error(404, "not found", f"no deployment of service {service!r}")
            return {"service": service, "deployments": found}

        @router.get("/events")
        async def list_events(
            service: str | None = None,
            instance: str | None = None,
            kind: str | None = None,
            since: int = Query(0, ge=0, description="Only events with an id above this."),
            limit: int = Query(200, ge=1, le=5000),
        ) -> Any:
            if kind is not None and kind not in EventKind.__members__.values():
                allowed = ", ".join(k.value for k in EventKind)
                return _error(400, "invalid kind", f"kind {kind!r} is not one of: {allowed}")
            events = self.events(service=service, instance=instance, kind=kind, since_id=since, limit=limit)
            return {"events": [e.to_json() for e in events]}

        @router.post("/services/{service}/instances/{instance}/kill")
        async def kill(service: str, instance: str) -> Any:
            return await guarded(self.kill(service, instance))

        @router.post("/services/{service}/instances/{instance}/stop")
        async def stop_one(service: str, instance: str) -> Any:
            return await guarded(self.stop_instance(service, instance))

        @router.post("/services/{service}/instances/{instance}/start")
        async def start_one(service: str, instance: str) -> Any:
            return await guarded(self.start_instance(service, instance))

        @router.post("/services/{service}/instances/{instance}/signal")
        async def send_signal(service: str, instance: str, body: SignalRequest) -> Any:
            return await guarded(self.signal(service, instance, body.signal))

        @router.post("/services/{service}/scale")
        async def scale(service: str, body: ScaleRequest) -> Any:
            return await guarded(self.scale(service, body.replicas, group=body.group))

        @router.post("/services/{service}/start")
        async def start_service(service: str, body: StartRequest = Body(default_factory=StartRequest)) -> Any:
            return await guarded(self.start_service(
                service, replicas=body.replicas, tags=body.tags or None, env=body.env or None, group=body.group
            ))

        @router.post("/services/{service}/stop")
        async def stop_service(service: str, body: GroupRequest = Body(default_factory=GroupRequest)) -> Any:
            return await guarded(self.stop_service(service, group=body.group))

        @router.post("/services/{service}/reload")
        async def reload(service: str) -> Any:
            if not any(d.svc.name == service for d in self.sup.deployments.values()):
                return _error(404, "not found", f"no deployment of service {service!r}")
            return {"deployments": await self.reload(service)}

        return [("api", router)]
