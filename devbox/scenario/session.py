"""A scenario session: one fresh platform with the project's services, and every step as a method.

The YAML runner calls these methods; Python users call them too — ``session.do("traffic",
service="gateway", count=10)`` validates keyword arguments exactly like a YAML step, and
``session.expect_routing(...)`` and friends check assertions: the same power from code.

Each session starts a platform on ephemeral ports with its state in a new folder (clean platform
state), so scenarios never see each other's spans, metrics, alerts or instances. Assertions read
the platform's own data: naming's registry and its change events, the spans the collector
accepted (routing shares), the traces it stored and its analysis (root cause, critical path,
topology), the metrics query engine, alerting's history store, instance log files.

LIMITATIONS: runs the platform inside the calling process (not against a `devbox up` elsewhere).
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import httpx
from pydantic import ValidationError

from devbox.config import PlatformConfig, Ports, ProjectConfig
from devbox.scenario import checks
from devbox.scenario.model import (
    AlertExpect,
    ClearFaultsStep,
    Expectation,
    FailoverExpect,
    FaultStep,
    InstanceRef,
    InstanceStep,
    IsolateStep,
    LogExpect,
    MetricExpect,
    NamingFaultStep,
    RoutingExpect,
    RoutingRuleStep,
    SignalStep,
    SilenceStep,
    TopologyExpect,
    TraceExpect,
    TrafficStep,
    UpStep,
    WaitStep,
)
from devbox.scenario.traffic import Target, TrafficGenerator, TrafficRun
from devbox.testing import PlatformThread

LOG = logging.getLogger(__name__)
T = TypeVar("T")

#: Trace assertions read at most this many traces of a traffic from the collector.
MAX_TRACES = 50
#: Naming changes that take an instance out of rotation.
OUT_CHANGES = ("unhealthy", "deregistered", "isolated")


class StepError(Exception):
    """A step could not be carried out (not an assertion failure): why, in one line."""


class AssertionFailed(AssertionError):
    """An expectation did not hold; the message has the expectation and the observed values."""


class Session:
    """One platform for one scenario. Use as a context manager, or call :meth:`close`."""

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
        self.aliases: dict[str, dict[str, Any]] = {}
        self.spans: list[Any] = []
        self.naming_changes: list[tuple[float, str, str]] = []
        self.fault_ids: dict[str, str] = {}
        self.stopped: set[tuple[str, str]] = set()
        self.up_seconds: float | None = None
        self._lock = threading.Lock()

    # --- lifecycle ------------------------------------------------------------------------

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for run in self.traffic_runs.values():
            run.cancelled.set()
        for run in self.traffic_runs.values():
            run.wait(timeout=30)
        if self.platform is not None:
            for service, name in list(self.stopped):
                try:
                    self._deploy_call("send_signal", service, name, "SIGCONT")
                except Exception:
                    LOG.debug("SIGCONT %s failed", name, exc_info=True)
            # stop the services before the platform they report to
            supervisor = getattr(self.platform.component("deploy"), "supervisor", None) if self.has("deploy") else None
            if supervisor is not None:
                try:
                    self.call(supervisor.close(), timeout=30)
                except Exception:
                    LOG.warning("stopping the services failed", exc_info=True)
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

    def component(self, name: str) -> Any:
        platform = self._platform.platform
        assert platform is not None
        if name not in platform.components:
            raise StepError(f"this step needs the {name!r} component, which this devbox does not have")
        component = platform.component(name)
        if getattr(component, "error", None):
            raise StepError(f"component {name!r} failed to start: {component.error}")
        return component

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

    def do(self, kind: str, /, **kwargs: Any) -> Any:
        """Run one step by kind with keyword arguments, validated like YAML (``do("traffic", ...)``)."""
        from devbox.scenario.model import STEP_KINDS

        if kind not in STEP_KINDS:
            raise StepError(f"unknown step kind {kind!r} (allowed: {', '.join(STEP_KINDS)})")
        args = STEP_KINDS[kind].model_validate(kwargs)
        if isinstance(args, Expectation):
            return self.expect(args)
        return getattr(self, kind)(args)

    # --- clients of the platform's public APIs -------------------------------------------

    def naming_client(self) -> Any:
        from devbox.scenario.clients import NamingClient

        return NamingClient(self.url("api"), namespace=self.namespace)

    def traces_client(self) -> Any:
        from devbox.scenario.clients import TracesClient

        return TracesClient(self.url("zipkin"))

    def metrics_client(self) -> Any:
        from devbox.scenario.clients import MetricsClient

        return MetricsClient(self.url("prometheus"))

    def alerts_client(self) -> Any:
        from devbox.scenario.clients import AlertsClient

        return AlertsClient(self.url("alertmanager"))

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
        deploy = self.component("deploy")
        supervisor = getattr(deploy, "supervisor", None)
        if supervisor is None:
            raise StepError("the deploy component has no supervisor: cannot add instance groups")
        assert self.config is not None
        try:
            svc = self.config.service(service)
        except KeyError:
            svc = self.project.service(service)
        tags = {**svc.tags, **tags, **({"version": version} if version else {})}
        group = tags.get("env") or "-".join(f"{k}-{v}" for k, v in sorted(tags.items())) or "extra"
        svc = svc.model_copy(update={"replicas": replicas, "tags": tags, "reload": False})
        try:
            self.call(supervisor.deploy(svc, group=group, tags=tags), timeout=timeout)
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
        retried: dict[str, Any] = {}
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

    def _retry_failed_starts(self, retried: dict[str, Any]) -> list[str]:
        """An instance that died before its first readiness gets one more start (a flaky start on a
        loaded CI machine should not fail a scenario about something else); a second failure stands.
        Returns the instances given up on."""
        supervisor = getattr(self.component("deploy"), "supervisor", None) if self.has("deploy") else None
        if supervisor is None:
            return []
        gave_up = []
        for dep in list(supervisor.deployments.values()):
            for inst in list(dep.instances.values()):
                rec = inst.record
                if rec.state.value not in ("failed", "crashloop"):
                    continue
                if rec.name not in retried:
                    tail = " | ".join(_tail(inst.log_path))
                    self.log(f"{rec.name} failed to start ({rec.message}); starting it once more. log: {tail}")
                    retried[rec.name] = asyncio.run_coroutine_threadsafe(
                        _quietly(supervisor.start(dep.svc.name, rec.name)), self._platform.loop
                    )
                elif retried[rec.name].done():
                    gave_up.append(rec.name)
        return gave_up

    def _deploy_problems(self) -> str:
        """The latest deploy failures, to say why the system did not come up."""
        try:
            deploy = self.component("deploy")
            supervisor = deploy.supervisor
            lines = []
            for dep in supervisor.deployments.values():
                for inst in dep.instances.values():
                    rec = inst.record
                    if rec.state.value not in ("ready",):
                        tail = " | ".join(_tail(inst.log_path))
                        lines.append(f"{rec.name} {rec.state.value}: {rec.message} (log: {tail})")
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

    # --- naming helpers -------------------------------------------------------------------

    def instances(self, service: str) -> list[Any]:
        naming = self.component("naming")
        return self.on_loop(lambda: [*naming.registry.instances(self.namespace, service)])

    def _instances_text(self) -> str:
        if not self.has("naming"):
            return "no naming"
        naming = self.component("naming")
        counts = self.on_loop(
            lambda: {
                s.name: len(naming.registry.instances(self.namespace, s.name))
                for s in naming.registry.services(self.namespace)
            }
        )
        return ", ".join(f"{k} x{v}" for k, v in sorted(counts.items()))

    def pick_instances(self, service: str, ref: InstanceRef) -> list[Any]:
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

    def _remember(self, step: InstanceStep, chosen: list[Any], **extra: Any) -> None:
        if step.alias:
            inst = chosen[0]
            self.aliases[step.alias] = {"id": inst.id, "service": step.service, "at": time.time(),
                                        "metadata": dict(inst.metadata), "deploy_name": self._deploy_name(inst),
                                        **extra}

    def _deploy_name(self, instance: Any) -> str:
        """The deploy pipeline's name of an instance (orders-2), from its naming metadata or id."""
        return instance.metadata.get("devbox.instance") or instance.id

    def _deploy_call(self, method: str, *args: Any) -> Any:
        deploy = self.component("deploy")
        supervisor = getattr(deploy, "supervisor", None)
        if supervisor is None:
            raise StepError("the deploy component has no supervisor")
        try:
            return self.call(getattr(supervisor, method)(*args))
        except (KeyError, ValueError) as exc:
            raise StepError(f"deploy {method}: {exc}") from None

    # --- steps: instances and processes --------------------------------------------------

    def signal(self, step: SignalStep) -> None:
        chosen = self.pick_instances(step.service, step.instance)
        for inst in chosen:
            name = self._deploy_name(inst)
            if step.signal == "SIGKILL":
                self._deploy_call("kill", step.service, name)
            else:
                self._deploy_call("send_signal", step.service, name, step.signal)
            if step.signal == "SIGSTOP":
                self.stopped.add((step.service, name))
            elif step.signal == "SIGCONT":
                self.stopped.discard((step.service, name))
        self._remember(step, chosen, signal=step.signal)
        self.log(f"{step.signal} {step.service} " + ", ".join(f"{self._deploy_name(i)} ({i.id[:12]})" for i in chosen))

    def kill(self, step: InstanceStep) -> None:
        self.signal(SignalStep(**_instance_args(step), signal="SIGKILL"))

    def hang(self, step: InstanceStep) -> None:
        self.signal(SignalStep(**_instance_args(step), signal="SIGSTOP"))

    def stop(self, step: InstanceStep) -> None:
        chosen = self.pick_instances(step.service, step.instance)
        for inst in chosen:
            self._deploy_call("stop", step.service, self._deploy_name(inst))
        self._remember(step, chosen, action="stop")

    def start(self, step: InstanceStep) -> None:
        """Start a stopped instance again; ``instance`` must be an alias's id, a name or an index."""
        names: list[str]
        if isinstance(step.instance, str) and step.instance in self.aliases:
            names = [self.aliases[step.instance].get("deploy_name") or self.aliases[step.instance]["id"]]
        else:
            names = [self._deploy_name(i) for i in self.pick_instances(step.service, step.instance)]
        for name in names:
            self._deploy_call("start", step.service, name)

    def isolate(self, step: IsolateStep) -> None:
        naming = self.component("naming")
        chosen = self.pick_instances(step.service, step.instance)
        for inst in chosen:
            self.on_loop(naming.registry.isolate, inst.id, step.isolated)
        self._remember(step, chosen, action="isolate")

    # --- steps: faults --------------------------------------------------------------------

    def fault(self, step: FaultStep) -> str:
        faults = self.component("faults")
        body = step.model_dump(exclude={"alias"})
        body["seed"] = self.rng.randrange(2**31)
        rule = self.on_loop(faults.add_rule, body)
        fault_id = rule["id"]
        if step.alias:
            self.fault_ids[step.alias] = fault_id
        self.log(f"fault {fault_id} on {step.service}: {_fault_text(step)}")
        return fault_id

    def clear_faults(self, step: ClearFaultsStep | None = None) -> None:
        faults = self.component("faults")
        if step is not None and step.name:
            if step.name not in self.fault_ids:
                raise StepError(f"no fault named {step.name!r} (named: {', '.join(self.fault_ids) or 'none'})")
            self.on_loop(faults.remove_rule, self.fault_ids.pop(step.name))
        else:
            self.call(faults.reset())
            self.fault_ids.clear()

    def naming_fault(self, step: NamingFaultStep) -> None:
        faults = self.component("faults")
        chosen = self.pick_instances(step.service, step.instance)
        for inst in chosen:
            if step.drop_heartbeats:
                self.on_loop(faults.drop_heartbeats, inst.id, True)
            if step.circuit_open:
                try:
                    self.call(faults.open_circuit(inst.id, True))
                except KeyError as exc:
                    raise StepError(str(exc).strip("'\"")) from None
        self._remember(step, chosen, action="naming fault")

    def routing_rule(self, step: RoutingRuleStep) -> None:
        naming = self.component("naming")
        try:
            from devbox.polaris.routing import parse_rules

            rules = [
                r.model_dump(mode="json")
                for r in parse_rules([{**r, "service": step.service, "namespace": self.namespace} for r in step.rules])
            ]
        except Exception as exc:
            raise StepError(f"routing rules for {step.service} are not valid: {exc}") from None
        self.on_loop(naming.registry.replace_rules, self.namespace, step.service, rules)
        self.log(f"routing rules of {step.service}: {', '.join(r['name'] for r in rules) or 'none'}")

    def silence(self, step: SilenceStep) -> str:
        matchers = []
        for name, value in step.matchers.items():
            regex = value.startswith("~")
            matchers.append({"name": name, "value": value[1:] if regex else value, "isRegex": regex, "isEqual": True})
        now = time.time()
        body = {
            "matchers": matchers,
            "startsAt": _rfc3339(now - 1),
            "endsAt": _rfc3339(now + step.duration),
            "createdBy": "devbox scenario",
            "comment": step.comment,
        }
        response = httpx.post(self.url("alertmanager") + "/api/v2/silences", json=body, timeout=10)
        if response.status_code >= 400:
            raise StepError(f"adding the silence failed: {response.status_code} {response.text[:300]}")
        silence_id = response.json().get("silenceID", "")
        if step.alias:
            self.aliases[step.alias] = {"id": silence_id, "at": now}
        return str(silence_id)

    # --- steps: traffic and waiting -------------------------------------------------------

    def traffic(self, step: TrafficStep) -> TrafficRun:
        if step.name in self.traffic_runs and not self.traffic_runs[step.name].done:
            raise StepError(f"traffic {step.name!r} is still running")
        self.pick_instances(step.service, "all")  # the entry must exist in naming
        generator = TrafficGenerator(step, self._resolver(step.service))
        run = generator.start()
        self.traffic_runs[step.name] = run
        if not step.background:
            self._finish(run)
        return run

    def _finish(self, run: TrafficRun) -> None:
        step = run.step
        limit = step.count * step.timeout if step.count else (step.duration or 0) + step.timeout
        if not run.wait(timeout=limit + 30):
            raise StepError(f"traffic {step.name!r} did not finish in time")
        if run.error:
            raise StepError(f"traffic {step.name!r} failed: {run.error}")
        self.log(f"traffic {step.name}: {run.summary()}")

    def _resolver(self, service: str) -> Callable[[dict[str, str]], Target]:
        """Pick an entry instance through naming: its routing rules, health, then weighted random."""
        from devbox.polaris.routing import RouteRequest, evaluate, parse_rules

        naming = self.component("naming")
        rng = random.Random(self.rng.randrange(2**31))
        lock = threading.Lock()

        def snapshot() -> tuple[list[Any], list[Any]]:
            rules = parse_rules(naming.registry.rules(self.namespace, service))
            return list(naming.registry.instances(self.namespace, service)), rules

        def resolve(labels: dict[str, str]) -> Target:
            instances, rules = self._platform.call(_as_coro(snapshot), 10)
            with lock:
                result = evaluate(
                    namespace=self.namespace, service=service, instances=instances, rules=rules,
                    request=RouteRequest(labels=labels, caller_service="scenario"), rng=rng.random,
                )
                if not result.instances:
                    raise LookupError(f"naming has no instance of {service} to call: {result.reason}")
                weights = [max(i.weight, 0) for i in result.instances]
                chosen = rng.choices(result.instances, weights=weights if sum(weights) else None)[0]
            return Target(chosen.id, chosen.host, chosen.port, dict(chosen.metadata))

        return resolve

    def wait(self, step: WaitStep) -> None:
        if step.seconds is not None:
            time.sleep(step.seconds)
        elif step.traffic is not None:
            run = self._traffic(step.traffic)
            self._finish(run)
        elif step.until is not None:
            exp = step.until.model_copy(update={"within": step.timeout})
            try:
                self.expect(exp)
            except AssertionFailed as exc:
                raise AssertionFailed(f"timed out after {step.timeout:g}s waiting until: {exc}") from None

    def _traffic(self, name: str) -> TrafficRun:
        try:
            return self.traffic_runs[name]
        except KeyError:
            raise StepError(
                f"no traffic named {name!r} ran before this step (ran: {', '.join(self.traffic_runs) or 'none'})"
            ) from None

    # --- assertions -----------------------------------------------------------------------

    def expect(self, exp: Expectation) -> str:
        """Check ``exp`` until it holds or ``exp.within`` seconds pass; raise AssertionFailed."""
        check = getattr(self, f"_check_{exp.kind}")
        deadline = time.monotonic() + exp.within
        traffic = getattr(exp.body, "traffic", None)
        if exp.kind in ("routing", "trace") and traffic in self.traffic_runs:
            self._settle_spans(self.traffic_runs[traffic], deadline)
        while True:
            verdict = check(exp.body)
            if verdict.ok:
                return verdict.message
            if time.monotonic() >= deadline:
                raise AssertionFailed(verdict.message)
            time.sleep(min(0.5, max(0.05, exp.within / 20)))

    def expect_routing(self, within: float = 10.0, **kw: Any) -> str:
        return self.expect(Expectation(routing=RoutingExpect(**kw), within=within))

    def expect_failover(self, within: float = 10.0, **kw: Any) -> str:
        return self.expect(Expectation(failover=FailoverExpect(**kw), within=within))

    def expect_trace(self, within: float = 10.0, **kw: Any) -> str:
        return self.expect(Expectation(trace=TraceExpect(**kw), within=within))

    def expect_topology(self, within: float = 10.0, **kw: Any) -> str:
        return self.expect(Expectation(topology=TopologyExpect(**kw), within=within))

    def expect_metric(self, within: float = 10.0, **kw: Any) -> str:
        return self.expect(Expectation(metric=MetricExpect(**kw), within=within))

    def expect_alert(self, within: float = 10.0, **kw: Any) -> str:
        return self.expect(Expectation(alert=AlertExpect(**kw), within=within))

    def expect_log(self, within: float = 10.0, **kw: Any) -> str:
        return self.expect(Expectation(log=LogExpect(**kw), within=within))

    def _settle_spans(self, run: TrafficRun, deadline: float, quiet: float = 0.7) -> None:
        """Wait until the traffic's spans stop arriving (SDKs export in batches), or the deadline."""
        if not run.done:
            run.wait(max(deadline - time.monotonic(), 0))
        wanted = set(run.trace_ids)
        last, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            with self._lock:
                count = sum(1 for span in self.spans if span.trace_id in wanted)
            if count != last:
                last, since = count, time.monotonic()
            elif count and time.monotonic() - since >= quiet:
                return
            time.sleep(0.1)

    def _spans(self) -> list[Any]:
        with self._lock:
            return list(self.spans)

    def _instance_metadata(self) -> dict[str, dict[str, str]]:
        if not self.has("naming"):
            return {}
        naming = self.component("naming")
        return self.on_loop(lambda: {i.id: dict(i.metadata) for i in naming.registry.all_instances()})

    def _check_routing(self, exp: RoutingExpect) -> checks.Verdict:
        run = self._traffic(exp.traffic)
        meta = self._instance_metadata()
        if exp.instance is not None:
            if exp.instance not in self.aliases:
                raise StepError(f"no instance named {exp.instance!r} (name one with `as:` on an earlier step)")
            chosen = self.aliases[exp.instance]["id"]
            # the named instance is the selector: mark it, so the share is "calls it served"
            meta = {iid: {**m, "devbox.chosen": "yes" if iid == chosen else "no"} for iid, m in meta.items()}
            exp = exp.model_copy(update={"selector": {"devbox.chosen": "yes"}})
        return checks.check_routing(exp, run, self._spans(), meta)

    def _check_failover(self, exp: FailoverExpect) -> checks.Verdict:
        run = self._traffic(exp.traffic) if exp.traffic is not None else None
        if run is not None and not run.done:
            run.wait()
        victim = killed_at = out_at = None
        how = ""
        if exp.instance is not None:
            if exp.instance not in self.aliases:
                raise StepError(f"no instance named {exp.instance!r} (name one with `as:` on kill/hang/stop)")
            alias = self.aliases[exp.instance]
            victim, killed_at = alias["id"], alias["at"]
            with self._lock:
                changes = [(t, c) for t, i, c in self.naming_changes if i == victim and t >= killed_at - 0.01]
            out = [(t, c) for t, c in changes if c in OUT_CHANGES]
            if out:
                out_at, how = out[0][0], f"was {out[0][1]} in naming"
            else:
                naming = self.component("naming")
                now = self.on_loop(naming.registry.instance, victim)
                if now is None or not now.healthy or now.isolated:
                    # out of rotation already when the fault began (e.g. its heartbeats were dropped)
                    out_at, how = killed_at, "was already out of rotation in naming"
        return checks.check_failover(exp, run, victim=victim, killed_at=killed_at, out_at=out_at, out_how=how)

    def _check_trace(self, exp: TraceExpect) -> checks.Verdict:
        """Traces as the collector stored them; root cause and critical path from its own analysis."""
        run = self._traffic(exp.traffic)
        base = self.url("api") + "/api/traces/"
        traces: dict[str, list[Any]] = {}
        with httpx.Client(timeout=10) as http:
            for trace_id in run.trace_ids[:MAX_TRACES]:
                response = http.get(base + trace_id)
                if response.status_code == 404:
                    continue
                if response.status_code != 200:
                    raise StepError(f"GET /api/traces/{trace_id}: {response.status_code} {response.text[:200]}")
                traces[trace_id] = [_span(d) for d in response.json()["spans"]]

            def causes_of(trace_id: str, trace: Any) -> list[checks.Cause]:
                data = http.get(base + trace_id + "/why").json()
                return [checks.Cause(c["service"], c["name"], c.get("message", "")) for c in data.get("causes", [])]

            def shares_of(trace_id: str, trace: Any) -> dict[str, float]:
                data = http.get(base + trace_id + "/critical-path").json()
                return {row["service"]: row["share"] for row in data.get("services", [])}

            return checks.check_trace(exp, run, traces, causes_of=causes_of, shares_of=shares_of)

    def _check_topology(self, exp: TopologyExpect) -> checks.Verdict:
        now_ms = int(time.time() * 1000) + 1000
        response = httpx.get(
            self.url("zipkin") + "/api/v2/dependencies", params={"endTs": now_ms, "lookback": 3_600_000}, timeout=10
        )
        if response.status_code != 200:
            raise StepError(f"zipkin /dependencies answered {response.status_code}: {response.text[:200]}")
        edges = {(d["parent"], d["child"]): int(d.get("callCount", 0)) for d in response.json()}
        return checks.check_topology(exp, edges)

    def _check_metric(self, exp: MetricExpect) -> checks.Verdict:
        metrics = self.component("metrics")
        now = time.time()
        try:
            if exp.window > 0:
                series = self.call(_maybe_async(metrics.query_range, exp.query, now - exp.window, now, 1.0))
            else:
                instant = self.call(_maybe_async(metrics.query_instant, exp.query, now))
                series = [(labels, [(now, value)]) for labels, value in instant]
        except Exception as exc:
            raise StepError(f"metric query {exp.query!r} failed: {exc}") from None
        return checks.check_metric(exp, series)

    def _check_alert(self, exp: AlertExpect) -> checks.Verdict:
        """From alerting's own history store (``GET /api/alerts/history``)."""
        self.component("alerting")
        response = httpx.get(self.url("api") + "/api/alerts/history", params={"limit": 10000}, timeout=10)
        if response.status_code != 200:
            raise StepError(f"GET /api/alerts/history: {response.status_code} {response.text[:200]}")
        history = sorted(response.json().get("transitions", []), key=lambda t: t.get("at", 0))
        mine = [
            t for t in history
            if t.get("alertname") == exp.rule and all(t.get("labels", {}).get(k) == v for k, v in exp.labels.items())
        ]
        state = str(mine[-1]["to"]) if mine else None
        return checks.check_alert(exp, history, state)

    def _check_log(self, exp: LogExpect) -> checks.Verdict:
        assert self.config is not None
        folder = self.config.state_path / "logs" / exp.service
        lines: dict[str, list[str]] = {}
        for path in sorted(folder.glob("*.log")) if folder.is_dir() else []:
            try:
                lines[path.name] = path.read_text(encoding="utf-8", errors="replace").splitlines()
            except OSError:
                continue
        try:
            re.compile(exp.pattern)
        except re.error as exc:
            raise StepError(f"log pattern {exp.pattern!r} is not a valid regex: {exc}") from None
        return checks.check_log(exp, lines)


def _tail(path: Path | None, count: int = 4) -> list[str]:
    from devbox.mocks.deploy.core import tail_lines

    return [line.strip()[:160] for line in tail_lines(path, count)] if path else []


async def _quietly(coro: Coroutine[Any, Any, Any]) -> None:
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


def _span(data: dict[str, Any]) -> Any:
    from devbox.mocks.tracing.models import Span

    fields = Span.__dataclass_fields__
    span = Span(**{k: v for k, v in data.items() if k in fields})
    span.start_us, span.duration_us = int(span.start_us), int(span.duration_us)
    return span


def _instance_args(step: InstanceStep) -> dict[str, Any]:
    return {"service": step.service, "instance": step.instance, "as": step.alias}


def _fault_text(step: FaultStep) -> str:
    parts = []
    if step.latency_ms:
        parts.append(f"+{step.latency_ms:g}ms")
    if step.error_rate:
        parts.append(f"{step.error_rate:.0%} → {step.status}")
    if step.abort_rate:
        parts.append(f"{step.abort_rate:.0%} aborted")
    scope = []
    if step.caller:
        scope.append(f"from {step.caller}")
    if step.method:
        scope.append(step.method)
    if step.path:
        scope.append(step.path)
    return ", ".join(parts) + (f" ({' '.join(scope)})" if scope else "")


def _rfc3339(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"


async def _as_coro(fn: Callable[[], T]) -> T:
    return fn()


async def _maybe_async(fn: Callable[..., Any], *args: Any) -> Any:
    result = fn(*args)
    if asyncio.iscoroutine(result):
        result = await result
    return result
