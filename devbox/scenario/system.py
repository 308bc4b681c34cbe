"""The system under a scenario: one fresh platform with the project's services, set up and torn down.

:class:`System` owns the platform thread, the scenario's own state (seeded randomness, names
given with ``as:``, traffic runs, what the platform reported through its events) and how the
session reaches the components: only through the typed ports of :mod:`devbox.platform.ports`
(:meth:`System.port`), never through a component's attributes. The actions
(:mod:`devbox.scenario.actions`) and the assertions (:mod:`devbox.scenario.assertions`) build on it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import random
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError

from devbox.config import PlatformConfig, Ports, ProjectConfig
from devbox.platform.component import Component
from devbox.platform.ports import DeployView, InstanceView, NamingPort, PortError
from devbox.scenario import checks
from devbox.scenario.model import InstanceRef, InstanceStep, UpStep
from devbox.scenario.traffic import TrafficRun
from devbox.testing import PlatformThread

LOG = logging.getLogger(__name__)
T = TypeVar("T")
P = TypeVar("P")


class StepError(Exception):
    """A step could not be carried out (not an assertion failure): why, in one line."""


class AssertionFailed(AssertionError):
    """An expectation did not hold; the message has the expectation and the observed values."""


class System:
    """One platform for one scenario, and the scenario's memory of what it did to it."""

    def __init__(
        self,
        project: ProjectConfig,
        *,
        seed: int | None = None,
        state_dir: Path | None = None,
        log: Callable[[str], None] | None = None,
        components: list[str] | None = None,
    ) -> None:
        self.project = project
        #: Platform components to host (default: every available one).
        self.components = components
        self.seed = seed if seed is not None else random.SystemRandom().randrange(1, 2**31)
        self.rng = random.Random(self.seed)
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if state_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="devbox-scenario-")
            state_dir = Path(self._tmp.name)
        self.state_dir = state_dir
        self.log = log or (lambda text: LOG.info("%s", text))
        self.platform: PlatformThread | None = None
        self.config: ProjectConfig | None = None
        self.traffic_runs: dict[str, TrafficRun] = {}
        #: Kept records of ``load`` steps (devbox.load), by step name.
        self.load_runs: dict[str, dict[str, Any]] = {}
        self.aliases: dict[str, dict[str, Any]] = {}
        self.spans: list[Any] = []
        self.naming_changes: list[tuple[float, str, str]] = []
        self.fault_ids: dict[str, str] = {}
        #: (service, deploy name) of instances a SIGSTOP hung, resumed before the platform stops.
        self.stopped: set[tuple[str, str]] = set()
        self.up_seconds: float | None = None
        self._lock = threading.Lock()

    # --- lifecycle ------------------------------------------------------------------------

    def __enter__(self) -> System:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the traffic, resume hung instances, stop the platform (which stops the services
        first) and remove the state folder."""
        for run in self.traffic_runs.values():
            run.cancelled.set()
        for run in self.traffic_runs.values():
            run.wait(timeout=30)
        if self.platform is not None:
            for service, name in list(self.stopped):
                try:
                    self._deploy("SIGCONT", self.deploy().signal_instance(service, name, "SIGCONT"))
                except Exception:
                    LOG.debug("SIGCONT %s failed", name, exc_info=True)
            # naming's watch long-polls are cancelled at shutdown and uvicorn logs each as an
            # "Exception in ASGI application"; that is noise at the end of a scenario
            quiet = logging.getLogger("uvicorn.error")
            was = quiet.disabled
            quiet.disabled = True
            try:
                self.platform.stop()
            finally:
                quiet.disabled = was
            self.platform = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        """Run a coroutine on the platform loop."""
        return self._platform.call(coro, timeout)

    def on_loop(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a plain function on the platform loop (component cores are not thread-safe)."""

        async def run() -> T:
            return fn(*args, **kwargs)

        return self.call(run())

    @property
    def _platform(self) -> PlatformThread:
        if self.platform is None:
            raise StepError("the platform is not up: start the scenario with an `up` step")
        return self.platform

    def component(self, name: str) -> Component:
        """A hosted component, for tests that look inside one; the session itself uses :meth:`port`."""
        platform = self._platform.platform
        assert platform is not None
        if name not in platform.components:
            raise StepError(f"this step needs the {name!r} component, which this devbox does not have")
        component = platform.component(name)
        if component.error:
            raise StepError(f"component {name!r} failed to start: {component.error}")
        return component

    def port(self, port: type[P], component: str) -> P:
        """The hosted implementation of ``port`` (offered by ``component``), or StepError saying why none."""
        self.component(component)  # hosted and started
        platform = self._platform.platform
        assert platform is not None
        found = platform.ctx.lookup(port)
        if found is None:
            raise StepError(f"the {component!r} component does not offer {port.__name__}")
        return found

    def has(self, name: str) -> bool:
        platform = self.platform.platform if self.platform is not None else None
        return platform is not None and name in platform.components

    def url(self, listener: str) -> str:
        try:
            return self._platform.url(listener)
        except KeyError:
            raise StepError(f"the platform has no {listener!r} listener (its component is missing)") from None

    @property
    def namespace(self) -> str:
        return self.project.naming.namespace

    # --- up -------------------------------------------------------------------------------

    def up(self, step: UpStep | None = None) -> None:
        """Start a fresh platform with the (overridden) services and wait until all are healthy."""
        step = step or UpStep()
        if self.platform is not None:
            raise StepError("the system is up already (one `up` per scenario)")
        t0 = time.monotonic()
        services = self._services(step)
        data = self.project.model_dump(exclude={"root", "source", "services", "platform"}, by_alias=True)
        for section in ("services", "platform", "project"):
            if section in step.settings:
                raise StepError(f"up.settings cannot change {section!r} (use services/overrides/add)")
        data = _merge(data, step.settings)
        platform = PlatformConfig(
            host="127.0.0.1", ports=Ports.ephemeral(), state_dir=str(self.state_dir / "state")
        )
        try:
            self.config = ProjectConfig.model_validate(
                {**data, "services": [], "root": self.project.root, "platform": platform}
            )
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise StepError(f"up.settings do not make a valid devbox.yaml: {problems}") from None
        self.config.services = services
        self.config.faults.enabled = step.faults
        thread = PlatformThread(self.config, components=self.components)
        try:
            thread.start(timeout=step.timeout)
        except Exception as exc:
            thread.stop()
            raise StepError(f"the platform did not start: {type(exc).__name__}: {exc}") from None
        self.platform = thread
        p = thread.platform
        assert p is not None
        p.events.spans_ingested.add_listener(self._on_spans)
        p.events.instance_changed.add_listener(self._on_instance)
        for group in step.add:
            self._deploy_group(group.service, group.tags, group.replicas, group.version, step.timeout)
        self._wait_healthy(step, services, deadline=t0 + step.timeout)
        self.up_seconds = time.monotonic() - t0
        self.log(f"up in {self.up_seconds:.1f}s: {self._instances_text()}")

    def _services(self, step: UpStep) -> list[Any]:
        declared = {s.name: s for s in self.project.services}
        names = step.services if step.services is not None else list(declared)
        for name in [*names, *step.overrides]:
            if name not in declared:
                raise StepError(f"unknown service {name!r} (services in devbox.yaml: {', '.join(declared)})")
        out = []
        for name in names:
            svc = declared[name]
            over = step.overrides.get(name)
            update: dict[str, Any] = {}
            if over is not None:
                if over.replicas is not None:
                    update["replicas"] = over.replicas
                tags = dict(over.tags if over.tags is not None else svc.tags)
                if over.version is not None:
                    tags["version"] = over.version
                update["tags"] = tags
                if over.env is not None:
                    update["env"] = {**svc.env, **over.env}
            # a scenario must not replace instances because a file changed under it
            update["reload"] = False
            out.append(svc.model_copy(update=update))
        return out

    def _deploy_group(self, service: str, tags: dict[str, str], replicas: int, version: str | None,
                      timeout: float) -> None:
        deploy = self.deploy()
        assert self.config is not None
        try:
            svc = self.config.service(service)
        except KeyError:
            svc = self.project.service(service)
        tags = {**svc.tags, **tags, **({"version": version} if version else {})}
        group = tags.get("env") or "-".join(f"{k}-{v}" for k, v in sorted(tags.items())) or "extra"
        try:
            self.call(deploy.start_service(service, replicas=replicas, tags=tags, group=group), timeout=timeout)
        except Exception as exc:
            raise StepError(f"adding {replicas} {service} instance(s) with {tags}: {exc}") from None

    def _wait_healthy(self, step: UpStep, services: list[Any], *, deadline: float) -> None:
        if not self.has("naming"):
            return
        if services and not self.has("deploy"):
            raise StepError("this devbox has no deploy component: nothing can start the services")
        # self-registering services count too: they are up when they are in naming
        want: dict[str, int] = {s.name: s.replicas for s in services if s.replicas > 0}
        for group in step.add:
            if group.service in want:
                want[group.service] += group.replicas
        retried: dict[str, concurrent.futures.Future[None]] = {}
        while True:
            have = {name: sum(1 for i in self.instances(name) if i.healthy) for name in want}
            if all(have[n] >= want[n] for n in want):
                return
            gave_up = self._retry_failed_starts(retried)
            if gave_up or time.monotonic() > deadline:
                short = ", ".join(f"{n} {have[n]}/{want[n]}" for n in want if have[n] < want[n])
                when = f"(gave up on {', '.join(gave_up)})" if gave_up else f"within {step.timeout:g}s"
                raise StepError(f"not every instance became healthy {when}: {short}{self._deploy_problems()}")
            time.sleep(0.2)

    def _retry_failed_starts(self, retried: dict[str, concurrent.futures.Future[None]]) -> list[str]:
        """An instance that died before its first readiness gets one more start (a flaky start on a
        loaded CI machine should not fail a scenario about something else); a second failure stands.
        Returns the instances given up on."""
        if not self.has("deploy"):
            return []
        deploy = self.deploy()
        gave_up = []
        for inst in self.on_loop(deploy.running_instances):
            if inst.state not in ("failed", "crashloop"):
                continue
            if inst.name not in retried:
                tail = " | ".join(_tail(inst.log_path))
                self.log(f"{inst.name} failed to start ({inst.message}); starting it once more. log: {tail}")
                retried[inst.name] = asyncio.run_coroutine_threadsafe(
                    _quietly(deploy.start_instance(inst.service, inst.name)), self._platform.loop
                )
            elif retried[inst.name].done():
                gave_up.append(inst.name)
        return gave_up

    def _deploy_problems(self) -> str:
        """The latest deploy failures, to say why the system did not come up."""
        try:
            deploy = self.deploy()
            lines = [
                f"{inst.name} {inst.state}: {inst.message} (log: {' | '.join(_tail(inst.log_path))})"
                for inst in self.on_loop(deploy.running_instances)
                if inst.state != "ready"
            ]
            return "; deploy says: " + "; ".join(lines[:5]) if lines else ""
        except Exception:
            return ""

    # --- observation hooks (called on the platform loop) ---------------------------------

    def _on_spans(self, spans: list[Any]) -> None:
        with self._lock:
            self.spans.extend(spans)

    def _on_instance(self, service: str, namespace: str, instance_id: str, change: str) -> None:
        with self._lock:
            self.naming_changes.append((time.time(), instance_id, change))

    # --- naming ---------------------------------------------------------------------------

    def instances(self, service: str) -> list[InstanceView]:
        naming = self.port(NamingPort, "naming")
        return self.on_loop(lambda: [*naming.instances(self.namespace, service)])

    def all_instances(self) -> list[InstanceView]:
        """Every instance naming knows, of every namespace (empty without naming)."""
        if not self.has("naming"):
            return []
        naming = self.port(NamingPort, "naming")
        return self.on_loop(lambda: [*naming.all_instances()])

    def instance(self, instance_id: str) -> InstanceView | None:
        """The instance naming knows by this id, or None."""
        naming = self.port(NamingPort, "naming")
        return self.on_loop(lambda: next((i for i in naming.all_instances() if i.id == instance_id), None))

    def _instances_text(self) -> str:
        if not self.has("naming"):
            return "no naming"
        counts = Counter(i.service for i in self.all_instances() if i.namespace == self.namespace)
        return ", ".join(f"{k} x{v}" for k, v in sorted(counts.items()))

    def pick_instances(self, service: str, ref: InstanceRef) -> list[InstanceView]:
        found = sorted(self.instances(service), key=lambda i: i.id)
        if not found:
            raise StepError(f"service {service!r} has no instances in naming")
        if ref == "all":
            return found
        if ref == "random":
            return [self.rng.choice(found)]
        if isinstance(ref, str):
            alias = self.aliases.get(ref)
            if alias is None:
                raise StepError(
                    f"instance {ref!r}: not `random`, `all`, nor a name given by `as:` "
                    f"(named so far: {', '.join(self.aliases) or 'none'})"
                )
            named = [i for i in found if i.id == alias["id"]]
            if not named:
                raise StepError(f"instance {ref!r} ({alias['id'][:12]}) is no longer registered in naming")
            return named
        if isinstance(ref, int):
            if not 0 <= ref < len(found):
                raise StepError(f"{service} has {len(found)} instance(s); index {ref} is out of range")
            return [found[ref]]
        matching = [i for i in found if checks.selector_matches(ref, i.metadata)]
        if not matching:
            listing = "; ".join(f"{i.id[:12]} {i.metadata}" for i in found)
            raise StepError(f"no {service} instance has metadata {ref} (instances: {listing})")
        return [matching[0]]

    def _remember(self, step: InstanceStep, chosen: list[InstanceView], **extra: Any) -> None:
        if step.alias:
            inst = chosen[0]
            self.aliases[step.alias] = {"id": inst.id, "service": step.service, "at": time.time(),
                                        "metadata": dict(inst.metadata), "deploy_name": deploy_name(inst),
                                        **extra}

    # --- deploy and traffic runs ----------------------------------------------------------

    def deploy(self) -> DeployView:
        """The deploy pipeline, through its port."""
        return self.port(DeployView, "deploy")

    def _deploy(self, what: str, action: Coroutine[Any, Any, T]) -> T:
        """Run one deploy action on the platform loop; its refusal is a StepError saying ``what``."""
        try:
            return self.call(action)
        except (PortError, KeyError, ValueError) as exc:
            raise StepError(f"deploy {what}: {exc}") from None

    def _finish(self, run: TrafficRun) -> None:
        step = run.step
        limit = step.count * step.timeout if step.count else (step.duration or 0) + step.timeout
        if not run.wait(timeout=limit + 30):
            raise StepError(f"traffic {step.name!r} did not finish in time")
        if run.error:
            raise StepError(f"traffic {step.name!r} failed: {run.error}")
        self.log(f"traffic {step.name}: {run.summary()}")

    def _traffic(self, name: str) -> TrafficRun:
        try:
            return self.traffic_runs[name]
        except KeyError:
            raise StepError(
                f"no traffic named {name!r} ran before this step (ran: {', '.join(self.traffic_runs) or 'none'})"
            ) from None


def deploy_name(instance: InstanceView) -> str:
    """The deploy pipeline's name of an instance (orders-2), from its naming metadata or id."""
    return instance.metadata.get("devbox.instance") or instance.id


def _tail(path: str | Path | None, count: int = 4) -> list[str]:
    from devbox.mocks.deploy.core import tail_lines

    return [line.strip()[:160] for line in tail_lines(Path(path), count)] if path else []


async def _quietly(coro: Awaitable[Any]) -> None:
    try:
        await coro
    except Exception as exc:
        LOG.warning("retrying a start failed: %s", exc)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` merged into ``base``: mappings recursively, anything else replaced."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out
