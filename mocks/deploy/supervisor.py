"""The supervisor: runs the pipeline for each service and keeps its instances alive.

build → free port → injected env + per-instance config file → spawn (runner) → readiness →
register in naming (``registration: auto``) and heartbeat while the probe passes → on exit,
restart with backoff or report a crash loop. Rolling replacement (hot reload, overrides) starts
each new instance and registers it before the old one is deregistered, drained and stopped.

Decisions (states, backoff, what to inject) are in :mod:`devbox.mocks.deploy.core`; this module only
sequences them with processes, sockets and timers. What naming hears (register, heartbeat,
deregister) is :mod:`devbox.mocks.deploy.registration`'s; the live state it keeps is in
:mod:`devbox.mocks.deploy.deployment`.

LIMITATIONS: instances run on this machine only. A restart reuses the instance's port unless
another program took it meanwhile (then it gets a new one: a ``port_changed`` event).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from devbox.mocks.deploy import core
from devbox.mocks.deploy.config import ServiceConfig
from devbox.mocks.deploy.deployment import Deployment, Instance
from devbox.mocks.deploy.docker import (
    BuildFailed,
    DockerRunner,
    DockerUnavailable,
    container_name,
    container_start,
    image_tag,
    needs_build,
)
from devbox.mocks.deploy.errors import DeployError, NotDeployed, NotPossibleNow
from devbox.mocks.deploy.models import DeployEvent, EventKind, InstanceState
from devbox.mocks.deploy.readiness import listening, probe
from devbox.mocks.deploy.registration import Registrar
from devbox.mocks.deploy.runner import ProcessRunner, run_build

from devbox.platform.ports import FaultFront, NamingPort, RunningInstance
from devbox.polaris.ids import instance_id
from devbox.yamlpos import dump

LOG = logging.getLogger(__name__)
S = InstanceState

#: How many log lines an error message quotes.
TAIL = 15


class Supervisor:
    """Owns every deployment and instance of one platform. All methods run on the platform loop."""

    def __init__(
        self,
        *,
        root: Path,
        state_dir: Path,
        facts: Callable[[], core.PlatformFacts],
        naming: NamingPort | None,
        emit: Callable[[DeployEvent], None],
        ttl: float = 5.0,
        runner: ProcessRunner | None = None,
        clock: Callable[[], float] = time.time,
        project: str = "devbox",
        front: FaultFront | None = None,
    ) -> None:
        self.root = root
        self.project = project
        self.docker: DockerRunner | None = None
        self.state_dir = state_dir
        self.facts = facts
        self.emit = emit
        #: Everything naming hears about the instances goes through it.
        self.naming = Registrar(naming=naming, front=front, ttl=ttl, event=self._event)
        self.ttl = ttl
        self.runner = runner or ProcessRunner()
        self.clock = clock
        self.deployments: dict[str, Deployment] = {}
        self._seq: dict[str, int] = {}
        self._ports_in_use: set[int] = set()
        self._random = random.Random()
        self._closing = False
        #: Keys of deployments whose build is running (hot reload ignores their folder meanwhile).
        self.building: set[str] = set()

    # --- events ---------------------------------------------------------------------------

    def _event(self, dep: Deployment | str, kind: EventKind, message: str = "", *,
               instance: Instance | None = None, **data: Any) -> None:
        service = dep if isinstance(dep, str) else dep.svc.name
        if not isinstance(dep, str) and dep.group != "default":
            data.setdefault("group", dep.group)
        event = DeployEvent(service=service, kind=kind, message=message,
                            instance=instance.record.name if instance else None, ts=self.clock(), data=data)
        # INFO even for crashes: events reach users through the event API and the CLI, not the log
        LOG.info("%s %s%s: %s", service, kind.value, f" {event.instance}" if event.instance else "", message)
        self.emit(event)

    def _move(self, inst: Instance, state: InstanceState, message: str | None = None) -> None:
        inst.record.move(state, now=self.clock(), message=message)

    async def _probe(self, dep: Deployment, inst: Instance, timeout: float) -> tuple[bool, str]:
        return await probe(dep.svc.readiness, inst.record.host, inst.record.port, timeout=timeout)

    # --- paths ----------------------------------------------------------------------------

    def service_path(self, svc: ServiceConfig) -> Path:
        return (self.root / svc.path).resolve()

    def log_dir(self, service: str) -> Path:
        return self.state_dir / "logs" / service

    # --- deploy ---------------------------------------------------------------------------

    def deployment(self, service: str, group: str = "default") -> Deployment:
        key = service if group == "default" else f"{service}@{group}"
        try:
            return self.deployments[key]
        except KeyError:
            raise NotDeployed(f"no deployment of service {service!r}" +
                           ("" if group == "default" else f" in group {group!r}")) from None

    async def deploy(self, svc: ServiceConfig, *, group: str = "default", tags: Mapping[str, str] | None = None,
                     env: Mapping[str, str] | None = None, weight: int = 100,
                     before_start: Callable[[], Awaitable[None]] | None = None) -> Deployment:
        """Build and start every replica of ``svc``; raises DeployError when any cannot become ready.
        ``before_start`` is awaited between the build and the first instance (a build needs nothing
        from the platform; an instance needs it serving)."""
        dep = Deployment(svc=svc, group=group, extra_tags=dict(tags or {}), extra_env=dict(env or {}),
                         initial_weight=weight)
        if dep.key in self.deployments:
            raise NotPossibleNow(f"{dep.key} is deployed already")
        self.deployments[dep.key] = dep
        async with dep.lock:
            await self.build(dep)
            if before_start is not None:
                await before_start()
            results = await asyncio.gather(
                *(self.start_instance(dep) for _ in range(svc.replicas)), return_exceptions=True
            )
        errors = [r for r in results if isinstance(r, BaseException)]
        for err in errors:
            if not isinstance(err, DeployError):
                raise err
        if errors:
            raise errors[0]
        return dep

    async def build(self, dep: Deployment) -> None:
        svc = dep.svc
        if svc.build:
            await self._build_step(dep, svc.build)
        if svc.runtime == "docker" and needs_build(svc, self.service_path(svc)):
            self.docker = self.docker or DockerRunner()
            tag = image_tag(self.project, svc.name)
            await self._build_step(dep, f"docker build -t {tag}", run=lambda log: self._build_image(svc, tag, log))

    async def _build_image(self, svc: ServiceConfig, tag: str, log_path: Path) -> int:
        """The docker runner's build as a build step: 0, or 1 with the reason at the end of the build log."""
        assert self.docker is not None
        try:
            await self.docker.build(svc, path=self.service_path(svc), tag=tag, work_dir=self.state_dir / "docker",
                                    log_path=log_path)
        except (BuildFailed, DockerUnavailable) as exc:
            with log_path.open("a", encoding="utf-8") as log:
                log.write(f"--- devbox: {exc}\n")
            return 1
        return 0

    async def _build_step(self, dep: Deployment, command: str,
                          run: Callable[[Path], Awaitable[int]] | None = None) -> None:
        svc = dep.svc
        log_path = self.log_dir(svc.name) / "build.log"
        started = time.monotonic()
        self.building.add(dep.key)
        try:
            code = await (run(log_path) if run else run_build(command, cwd=self.service_path(svc), env=dict(svc.env),
                                                              log_path=log_path, timeout=svc.build_timeout))
        finally:
            # watchdog reports the build's writes a little late: keep ignoring them for a moment
            asyncio.get_running_loop().call_later(0.5, self.building.discard, dep.key)
        took = time.monotonic() - started
        if code != 0:
            tail = core.tail_lines(log_path, TAIL)
            self._event(dep, EventKind.BUILD_FAILED, f"`{command}` exited with {code}", exit_code=code, tail=tail)
            raise DeployError(svc.name, f"build `{command}` failed with exit code {code} (log: {log_path})", tail)
        dep.built_at = self.clock()
        self._event(dep, EventKind.BUILT, f"`{command}` took {took:.2f}s", seconds=round(took, 3))

    def _free_port(self, host: str) -> int:
        """A port no one listens on, for a new instance (see :func:`devbox.mocks.deploy.core.instance_port_range`).

        Between this check and the instance's own bind the port is unprotected; taking it from
        below the kernel's ephemeral range means the constant stream of outgoing connections on
        a busy machine (which take ephemeral ports) cannot grab it meanwhile.
        """
        low, high = core.instance_port_range()
        for _ in range(200):
            port = self._random.randrange(low, high)
            if port in self._ports_in_use:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                try:
                    sock.bind((host, port))
                except OSError:
                    continue
            self._ports_in_use.add(port)
            return port
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:  # crowded: any free port
            sock.bind((host, 0))
            port = sock.getsockname()[1]
        self._ports_in_use.add(port)
        return port

    def _new_instance(self, dep: Deployment) -> Instance:
        n = self._seq.get(dep.svc.name, 0) + 1
        self._seq[dep.svc.name] = n
        record = core.InstanceRecord(name=f"{dep.svc.name}-{n}", service=dep.svc.name, group=dep.group,
                                     port=self._free_port("127.0.0.1"))
        inst = Instance(record=record, backoff=core.Backoff(dep.svc.restart), weight=dep.initial_weight)
        dep.instances[record.name] = inst
        return inst

    async def start_instance(self, dep: Deployment) -> Instance:
        """A new instance of ``dep``: spawned, ready, registered. Raises DeployError (and cleans up)."""
        inst = self._new_instance(dep)
        try:
            await self._spawn(dep, inst)
            await self._await_ready(dep, inst)
        except DeployError:
            if inst.proc is not None and inst.proc.returncode is None:
                inst.stopping = True
                await inst.proc.stop(dep.svc.stop_timeout)
            if inst.record.state is not S.FAILED:
                with contextlib.suppress(core.InvalidTransition):
                    self._move(inst, S.FAILED)
            raise
        await self._on_ready(dep, inst)
        return inst

    async def _spawn(self, dep: Deployment, inst: Instance) -> None:
        svc, rec = dep.svc, inst.record
        if rec.started_at is not None and not _port_free(rec.host, rec.port):
            await self._move_port(dep, inst)
        facts = self.facts()
        naming_id = instance_id(facts.namespace, svc.name, rec.host, rec.port)
        rec.naming_id = naming_id
        run_dir = self.state_dir / "run" / svc.name
        run_dir.mkdir(parents=True, exist_ok=True)
        inst.config_path = run_dir / f"{rec.name}.yaml"
        inst.log_path = self.log_dir(svc.name) / f"{rec.name}.log"
        tags = dep.tags
        kwargs = dict(record=rec, instance_id=naming_id, tags=tags, platform=facts, config_file=inst.config_path)
        with inst.config_path.open("w", encoding="utf-8") as fh:
            fh.write("# Generated by devbox for this instance (the 123 convention); rewritten on every start.\n")
            fh.write(dump(core.instance_facts(svc, **kwargs)))  # type: ignore[arg-type]
        env = core.instance_env(svc, extra_env=dep.extra_env, **kwargs)  # type: ignore[arg-type]
        self._move(inst, S.STARTING, "starting")
        inst.stopping = False
        inst.probe_failures = 0
        try:
            if svc.runtime == "docker":
                self.docker = self.docker or DockerRunner()
                image, working_dir, argv = container_start(svc, self.service_path(svc), self.project)
                inst.proc = await self.docker.spawn(
                    argv, image=image, name=container_name(self.state_dir, rec.name), env=env,
                    log_path=inst.log_path, state_dir=self.state_dir, mounts=[run_dir], working_dir=working_dir,
                )
            else:
                inst.proc = await self.runner.spawn(svc.start, cwd=self.service_path(svc), env=env,
                                                    log_path=inst.log_path)
        except OSError as exc:
            self._move(inst, S.FAILED, f"cannot start: {exc}")
            raise DeployError(svc.name, f"cannot start `{svc.start}` in {self.service_path(svc)}: {exc}") from None
        rec.pid = inst.proc.pid
        rec.started_at = self.clock()
        rec.exit_code = None
        self._event(dep, EventKind.STARTED, f"pid {rec.pid} on port {rec.port}", instance=inst,
                    pid=rec.pid, port=rec.port)

    async def _move_port(self, dep: Deployment, inst: Instance) -> None:
        """Another program took the instance's port while it was down: give it a new one.

        Restarting on the taken port would only fail readiness again and again (a crash loop);
        callers do not notice the move: naming gets the new address, and the entry port forwards there.
        """
        rec = inst.record
        old = rec.port
        await self.naming.deregister(dep, inst)
        await self.naming.forget(inst)  # the fault proxy in front of the old port
        self._ports_in_use.discard(old)
        rec.port = self._free_port(rec.host)
        self._event(dep, EventKind.PORT_CHANGED, f"port {old} was taken while {rec.name} was down; now {rec.port}",
                    instance=inst, old_port=old, port=rec.port)

    async def _await_ready(self, dep: Deployment, inst: Instance) -> None:
        """Poll readiness until it passes; DeployError on timeout or when the process exits first."""
        check, rec = dep.svc.readiness, inst.record
        assert inst.proc is not None and inst.log_path is not None
        deadline = time.monotonic() + check.timeout
        # looks every 10 ms at first, then every 50 ms: a small service is up in ~0.1 s, and each look
        # (a refused loopback connect until the port is bound) costs microseconds
        delay, seen = 0.01, "no answer yet"
        while True:
            if inst.stopping:
                raise DeployError(dep.svc.name, f"instance {rec.name} was stopped while starting")
            if inst.proc.returncode is not None:
                await asyncio.sleep(0.05)  # let the log file get its last lines
                tail = core.tail_lines(inst.log_path, TAIL)
                msg = f"exited with code {inst.proc.returncode} before becoming ready"
                rec.exit_code = inst.proc.returncode
                self._move(inst, S.FAILED, msg)
                self._event(dep, EventKind.NOT_READY, msg, instance=inst, exit_code=rec.exit_code, tail=tail)
                raise DeployError(dep.svc.name, f"instance {rec.name} {msg} (log: {inst.log_path})", tail)
            timeout = min(1.0, check.timeout)
            # the real probe once the port is bound: until then a TCP connect says "not yet" for less
            ok, seen = await listening(rec.host, rec.port, timeout=timeout)
            if ok and not check.tcp:
                ok, seen = await self._probe(dep, inst, timeout=timeout)
            if ok:
                return
            if time.monotonic() >= deadline:
                tail = core.tail_lines(inst.log_path, TAIL)
                msg = f"not ready after {check.timeout:g}s ({check.kind} check on port {rec.port}: {seen})"
                self._move(inst, S.FAILED, msg)
                self._event(dep, EventKind.NOT_READY, msg, instance=inst, tail=tail)
                raise DeployError(dep.svc.name, f"instance {rec.name} {msg} (log: {inst.log_path})", tail)
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 0.05)

    async def _on_ready(self, dep: Deployment, inst: Instance) -> None:
        rec = inst.record
        rec.ready_at = self.clock()
        self._move(inst, S.READY, "ready")
        took = rec.ready_at - (rec.started_at or rec.ready_at)
        self._event(dep, EventKind.READY, f"ready in {took:.2f}s on port {rec.port}", instance=inst,
                    port=rec.port, seconds=round(took, 3))
        if dep.svc.registration == "auto":
            await self.naming.register(dep, inst)
        else:
            await self.naming.await_self_registration(dep, inst)
        self._spawn_task(inst, self._watch_exit(dep, inst), "exit")
        self._start_keepalive(dep, inst)

    def _spawn_task(self, inst: Instance, coro: Any, what: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=f"deploy:{inst.record.name}:{what}")
        inst.tasks.add(task)
        task.add_done_callback(inst.tasks.discard)
        return task

    def _start_keepalive(self, dep: Deployment, inst: Instance) -> None:
        if inst.keepalive is not None:
            inst.keepalive.cancel()
        inst.keepalive = self._spawn_task(inst, self._keepalive(dep, inst), "keepalive")

    # --- while running ----------------------------------------------------------------------

    async def _keepalive(self, dep: Deployment, inst: Instance) -> None:
        """Probe the instance every period; heartbeat on its behalf while the probe passes.

        A frozen (SIGSTOP) or wedged instance stops being heartbeated, so naming marks it
        unhealthy after its TTL, as a real one that stopped answering would be.
        """
        period = max(0.3, min(self.ttl / 3, 2.0))
        rec = inst.record
        while rec.state in (S.READY, S.UNHEALTHY) and not inst.stopping:
            ok, seen = await self._probe(dep, inst, timeout=min(1.0, period))
            if inst.stopping or rec.state not in (S.READY, S.UNHEALTHY):
                return
            if ok:
                inst.probe_failures = 0
                await self.naming.heartbeat(dep, inst)
                if rec.state is S.UNHEALTHY:
                    self._move(inst, S.READY, "ready")
                    self._event(dep, EventKind.HEALTHY, seen, instance=inst)
            else:
                inst.probe_failures += 1
                if inst.probe_failures == 2 and rec.state is S.READY:
                    self._move(inst, S.UNHEALTHY, seen)
                    self._event(dep, EventKind.UNHEALTHY, seen, instance=inst)
                    self.naming.mark_unhealthy(inst)
            await asyncio.sleep(period)

    async def _watch_exit(self, dep: Deployment, inst: Instance) -> None:
        """Wait for the process to exit; if devbox did not stop it, it crashed: restart or give up."""
        while True:
            proc = inst.proc
            assert proc is not None
            code = await proc.wait()
            if inst.stopping or self._closing:
                return
            rec = inst.record
            rec.exit_code = code
            proc.signal(signal.SIGKILL)  # what the crashed leader left in its group would hold the port
            if inst.keepalive is not None:
                inst.keepalive.cancel()
            uptime = self.clock() - (rec.started_at or self.clock())
            await asyncio.sleep(0.05)
            tail = core.tail_lines(inst.log_path, TAIL) if inst.log_path else []
            self.naming.mark_unhealthy(inst)
            decision = inst.backoff.on_crash(now=self.clock(), uptime=uptime)
            how = f"signal {_signal_name(-code)}" if code < 0 else f"code {code}"
            self._event(dep, EventKind.CRASHED, f"exited with {how} after {uptime:.1f}s; {decision.reason}",
                        instance=inst, exit_code=code, uptime=round(uptime, 3), tail=tail)
            if not decision.restart:
                self._move(inst, S.CRASHLOOP, decision.reason)
                if decision.crashes_in_window >= dep.svc.restart.crash_loop:
                    self._event(dep, EventKind.CRASH_LOOP, decision.reason, instance=inst,
                                crashes=decision.crashes_in_window, tail=tail)
                await self.naming.deregister(dep, inst)
                return
            self._move(inst, S.BACKOFF, decision.reason)
            await asyncio.sleep(decision.delay)
            if inst.stopping or self._closing or rec.state is not S.BACKOFF:
                return
            rec.restarts += 1
            try:
                await self._spawn(dep, inst)
                await self._await_ready(dep, inst)
            except DeployError as exc:
                # not ready after a restart counts as another crash; the loop above decides again
                LOG.warning("restart of %s failed: %s", rec.name, exc)
                if inst.stopping or self._closing:
                    return
                if inst.proc is not None and inst.proc.returncode is None:
                    inst.stopping = True
                    await inst.proc.stop(dep.svc.stop_timeout)
                    inst.stopping = False
                if rec.state is S.FAILED:
                    rec.state = S.STARTING  # re-enter the crash path for the backoff decision
                continue
            rec.ready_at = self.clock()
            self._move(inst, S.READY, "ready")
            self._event(dep, EventKind.RESTARTED, f"restart #{rec.restarts}: ready on port {rec.port}",
                        instance=inst, restarts=rec.restarts)
            if dep.svc.registration == "auto":
                await self.naming.register(dep, inst)
            self._start_keepalive(dep, inst)

    # --- actions ----------------------------------------------------------------------------

    def find_instance(self, service: str, instance: str) -> tuple[Deployment, Instance]:
        """An instance by devbox name (orders-2), naming id, or a unique prefix of either."""
        candidates = []
        for dep in self.deployments.values():
            if dep.svc.name != service:
                continue
            for inst in dep.instances.values():
                rec = inst.record
                if instance in (rec.name, rec.naming_id):
                    return dep, inst
                if rec.name.startswith(instance) or (rec.naming_id or "").startswith(instance):
                    candidates.append((dep, inst))
        if len(candidates) == 1:
            return candidates[0]
        if candidates:
            raise NotDeployed(f"instance {instance!r} of {service} is ambiguous")
        raise NotDeployed(f"service {service!r} has no instance {instance!r}")

    async def stop_instance(self, dep: Deployment, inst: Instance, *, drain: float = 0.0,
                            forget: bool = False) -> None:
        """Deregister, wait ``drain`` seconds so clients drop it, SIGTERM (then SIGKILL) its group."""
        rec = inst.record
        inst.stopping = True
        await self.naming.deregister(dep, inst)
        if drain and rec.state in (S.READY, S.UNHEALTHY):
            await asyncio.sleep(drain)
        code = None
        if inst.proc is not None and inst.proc.returncode is None:
            if rec.state in (S.STARTING, S.READY, S.UNHEALTHY):
                self._move(inst, S.STOPPING, "stopping")
            code = await inst.proc.stop(dep.svc.stop_timeout)
        for task in list(inst.tasks):
            if task is not asyncio.current_task():
                task.cancel()
        if rec.state is not S.STOPPED:
            self._move(inst, S.STOPPED, "stopped")
            self._event(dep, EventKind.STOPPED, f"exit code {code}" if code is not None else "was not running",
                        instance=inst, exit_code=code)
        rec.exit_code = code
        if forget:
            await self._forget(dep, inst)

    async def _forget(self, dep: Deployment, inst: Instance) -> None:
        """Drop a stopped or failed instance: its name, its port and the proxy in front of it."""
        dep.instances.pop(inst.record.name, None)
        self._ports_in_use.discard(inst.record.port)
        await self.naming.forget(inst)

    async def kill(self, service: str, instance: str) -> dict[str, Any]:
        """SIGKILL an instance's process group, as a crash would: the restart policy then applies."""
        dep, inst = self.find_instance(service, instance)
        if inst.proc is None or inst.proc.returncode is not None:
            raise NotPossibleNow(f"{inst.record.name} is not running ({inst.record.state.value})")
        inst.proc.signal(signal.SIGKILL)
        self._event(dep, EventKind.KILLED, "SIGKILL sent by request", instance=inst)
        return inst.describe()

    async def send_signal(self, service: str, instance: str, sig: str) -> dict[str, Any]:
        """Send a signal by name (SIGSTOP, SIGCONT, SIGTERM, SIGHUP, ...) to an instance's group."""
        try:
            signum = signal.Signals[sig.upper() if sig.upper().startswith("SIG") else f"SIG{sig.upper()}"]
        except KeyError:
            raise NotPossibleNow(f"unknown signal {sig!r}; use a name such as SIGSTOP, SIGCONT, SIGTERM") from None
        dep, inst = self.find_instance(service, instance)
        if inst.proc is None or inst.proc.returncode is not None:
            raise NotPossibleNow(f"{inst.record.name} is not running ({inst.record.state.value})")
        inst.proc.signal(signum)
        self._event(dep, EventKind.SIGNALLED, f"{signum.name} sent by request", instance=inst, signal=signum.name)
        return inst.describe()

    async def stop(self, service: str, instance: str) -> dict[str, Any]:
        dep, inst = self.find_instance(service, instance)
        async with dep.lock:
            await self.stop_instance(dep, inst)
        return inst.describe()

    async def start(self, service: str, instance: str) -> dict[str, Any]:
        """Start a stopped, failed or crash-looped instance again (its backoff starts over)."""
        dep, inst = self.find_instance(service, instance)
        rec = inst.record
        if rec.alive or rec.state is S.BACKOFF:
            raise NotPossibleNow(f"{rec.name} is {rec.state.value}; stop it first")
        async with dep.lock:
            inst.backoff.reset()
            await self._spawn(dep, inst)
            await self._await_ready(dep, inst)
            await self._on_ready(dep, inst)
        return inst.describe()

    async def scale(self, service: str, replicas: int, *, group: str = "default") -> dict[str, Any]:
        """Start or stop instances until ``replicas`` are wanted (newest stop first)."""
        dep = self.deployment(service, group)
        async with dep.lock:
            live = [i for i in dep.instances.values() if i.record.state is not S.STOPPED]
            before = len(live)
            if replicas > len(live):
                await asyncio.gather(*(self.start_instance(dep) for _ in range(replicas - len(live))))
            for inst in reversed(live[replicas:]):
                await self.stop_instance(dep, inst, drain=dep.svc.drain, forget=True)
            dep.svc = dep.svc.model_copy(update={"replicas": replicas})
        self._event(dep, EventKind.SCALED, f"{before} -> {replicas} instances", replicas=replicas)
        return self.describe(dep)

    async def replace_all(self, dep: Deployment, *, reason: str, rebuild: bool = True) -> dict[str, Any]:
        """Rolling replacement: per old instance, start a new one, let it be ready and registered,
        then deregister the old one, drain it and stop it. A failure keeps the old ones serving."""
        async with dep.lock:
            started = time.monotonic()
            dep.reloads += 1
            self._event(dep, EventKind.RELOAD, reason)
            old = [i for i in dep.instances.values() if i.record.state is not S.STOPPED]
            want = dep.svc.replicas
            try:
                if rebuild:
                    await self.build(dep)
                for n in range(max(want, len(old))):
                    if n < want:
                        await self.start_instance(dep)
                        if n == 0:  # the new code serves from here (the old instance drains next)
                            dep.last_reload = {"first_ready_s": round(time.monotonic() - started, 3)}
                    if n < len(old):
                        await self.stop_instance(dep, old[n], drain=dep.svc.drain, forget=True)
            except DeployError as exc:
                self._event(dep, EventKind.RELOAD_FAILED, str(exc), tail=exc.tail)
                for inst in [i for i in dep.instances.values() if i.record.state is S.FAILED]:
                    await self._forget(dep, inst)
                raise
            took = time.monotonic() - started
            dep.last_reload = {**(dep.last_reload or {}), "seconds": round(took, 3), "reason": reason}
            self._event(dep, EventKind.RELOADED, f"{want} instance(s) replaced in {took:.2f}s",
                        seconds=round(took, 3))
            return self.describe(dep)

    async def stop_deployment(self, dep: Deployment) -> None:
        async with dep.lock:
            await asyncio.gather(*(self.stop_instance(dep, i) for i in dep.instances.values()
                                   if i.record.state is not S.STOPPED), return_exceptions=True)

    async def stop_service(self, service: str, *, group: str = "default") -> dict[str, Any]:
        """Stop every instance of one deployment (it stays listed, stopped)."""
        dep = self.deployment(service, group)
        await self.stop_deployment(dep)
        self._event(dep, EventKind.STOPPED, "service stopped by request")
        return self.describe(dep)

    async def remove_service(self, service: str, *, reason: str) -> None:
        """Stop every deployment of ``service`` (each instance deregistered, drained, stopped) and
        forget them: the service is no longer part of the project."""
        for dep in [d for d in self.deployments.values() if d.svc.name == service]:
            async with dep.lock:
                await asyncio.gather(*(self.stop_instance(dep, inst, drain=dep.svc.drain, forget=True)
                                       for inst in list(dep.instances.values())), return_exceptions=True)
            self.deployments.pop(dep.key, None)
            self._event(dep, EventKind.STOPPED, reason)

    async def close(self) -> None:
        """Stop every instance of every deployment (in parallel) and forget them."""
        self._closing = True
        results = await asyncio.gather(
            *(self.stop_instance(dep, inst)
              for dep in self.deployments.values() for inst in dep.instances.values()
              if inst.record.state is not S.STOPPED),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException):
                LOG.error("stopping an instance failed: %r", result)
        for dep in self.deployments.values():
            for inst in dep.instances.values():
                for task in list(inst.tasks):
                    task.cancel()
                if inst.proc is not None:
                    inst.proc.kill_now()


    # --- views ------------------------------------------------------------------------------

    def describe(self, dep: Deployment) -> dict[str, Any]:
        return dep.describe(self.service_path(dep.svc))

    def running_instances(self) -> list[RunningInstance]:
        """Every instance, as other components see it (see :class:`DeployView`); ``pid`` only while alive."""
        return [
            RunningInstance(service=dep.svc.name, name=rec.name, host=rec.host, port=rec.port,
                            pid=rec.pid if rec.alive else None, state=rec.state.value, naming_id=rec.naming_id,
                            tags=dep.tags, message=rec.message,
                            log_path=str(inst.log_path) if inst.log_path else None)
            for dep in self.deployments.values() for inst in dep.instances.values()
            for rec in [inst.record]
        ]


def _port_free(host: str, port: int) -> bool:
    """Whether a server could listen on ``port`` now (SO_REUSEADDR, as servers set: TIME_WAIT does not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)
