"""What a scenario does to the running system: signals, stops, isolation, faults, routing rules,
silences and traffic.

Every action goes through a port (deploy's :class:`~devbox.platform.ports.DeployView`, naming's
:class:`~devbox.platform.ports.NamingPort`, the faults' :class:`~devbox.platform.ports.FaultFront`)
or a public API (Alertmanager's silences), exactly what a user could do.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx

from devbox.platform.ports import FaultFront, InstanceView, NamingPort, PortError
from devbox.scenario.model import (
    ClearFaultsStep,
    FaultStep,
    InstanceStep,
    IsolateStep,
    LoadStep,
    NamingFaultStep,
    ReleaseStep,
    RoutingRuleStep,
    SignalStep,
    SilenceStep,
    TrafficStep,
)
from devbox.scenario.system import StepError, System, deploy_name
from devbox.scenario.traffic import Target, TrafficGenerator, TrafficRun
from devbox.tls import tls_for


class Actions(System):
    """The steps that change the system (each one a method named as its YAML step kind)."""

    # --- instances and processes ----------------------------------------------------------

    def signal(self, step: SignalStep) -> None:
        chosen = self.pick_instances(step.service, step.instance)
        for inst in chosen:
            name = deploy_name(inst)
            if step.signal == "SIGKILL":
                self._deploy("kill", self.deploy().kill_instance(step.service, name))
            else:
                self._deploy("signal", self.deploy().signal_instance(step.service, name, step.signal))
            if step.signal == "SIGSTOP":
                self.stopped.add((step.service, name))
            elif step.signal == "SIGCONT":
                self.stopped.discard((step.service, name))
        self._remember(step, chosen, signal=step.signal)
        self.log(f"{step.signal} {step.service} " + ", ".join(f"{deploy_name(i)} ({i.id[:12]})" for i in chosen))

    def kill(self, step: InstanceStep) -> None:
        self.signal(SignalStep(**_instance_args(step), signal="SIGKILL"))

    def hang(self, step: InstanceStep) -> None:
        self.signal(SignalStep(**_instance_args(step), signal="SIGSTOP"))

    def stop(self, step: InstanceStep) -> None:
        chosen = self.pick_instances(step.service, step.instance)
        for inst in chosen:
            self._deploy("stop", self.deploy().stop_instance(step.service, deploy_name(inst)))
        self._remember(step, chosen, action="stop")

    def start(self, step: InstanceStep) -> None:
        """Start a stopped instance again; ``instance`` must be an alias's id, a name or an index."""
        names: list[str]
        if isinstance(step.instance, str) and step.instance in self.aliases:
            names = [self.aliases[step.instance].get("deploy_name") or self.aliases[step.instance]["id"]]
        else:
            names = [deploy_name(i) for i in self.pick_instances(step.service, step.instance)]
        for name in names:
            self._deploy("start", self.deploy().start_instance(step.service, name))

    def isolate(self, step: IsolateStep) -> None:
        naming = self.port(NamingPort, "naming")
        chosen = self.pick_instances(step.service, step.instance)
        for inst in chosen:
            self.on_loop(naming.set_isolated, inst.id, step.isolated)
        self._remember(step, chosen, action="isolate")

    # --- faults ---------------------------------------------------------------------------

    def fault(self, step: FaultStep) -> str:
        faults = self.port(FaultFront, "faults")
        body = step.model_dump(exclude={"alias", "instance"})
        target = self._fault_instance(step)
        if target is not None:
            body["instance"] = target
        body["seed"] = self.rng.randrange(2**31)
        rule = self.on_loop(faults.add_rule, body)
        fault_id = str(rule["id"])
        if step.alias:
            self.fault_ids[step.alias] = fault_id
        self.log(f"fault {fault_id} on {step.service}" + (f" instance {target}" if target else "")
                 + f": {_fault_text(step)}")
        return fault_id

    def _fault_instance(self, step: FaultStep) -> str | None:
        """The one instance a fault step targets, as the faults component takes it (naming id or
        deploy name); None for every instance. A string that is no scenario reference (`random`, a
        name given by `as:`) is passed as a deploy name or id: the faults component refuses an unknown
        one, naming the known ones."""
        ref = step.instance
        if ref is None or ref == "all":
            return None
        if isinstance(ref, str) and ref != "random" and ref not in self.aliases:
            return ref
        return self.pick_instances(step.service, ref)[0].id

    def clear_faults(self, step: ClearFaultsStep | None = None) -> None:
        faults = self.port(FaultFront, "faults")
        if step is not None and step.name:
            if step.name not in self.fault_ids:
                raise StepError(f"no fault named {step.name!r} (named: {', '.join(self.fault_ids) or 'none'})")
            self.on_loop(faults.remove_rule, self.fault_ids.pop(step.name))
        else:
            self.call(faults.reset())
            self.fault_ids.clear()

    def naming_fault(self, step: NamingFaultStep) -> None:
        faults = self.port(FaultFront, "faults")
        chosen = self.pick_instances(step.service, step.instance)
        for inst in chosen:
            if step.drop_heartbeats:
                self.on_loop(faults.drop_heartbeats, inst.id, True)
            if step.circuit_open:
                try:
                    self.call(faults.open_circuit(inst.id, True))
                except (PortError, KeyError) as exc:
                    raise StepError(str(exc).strip("'\"")) from None
        self._remember(step, chosen, action="naming fault")

    def routing_rule(self, step: RoutingRuleStep) -> None:
        from devbox.polaris.routing import parse_rules

        naming = self.port(NamingPort, "naming")
        try:
            rules = [
                r.model_dump(mode="json")
                for r in parse_rules([{**r, "service": step.service, "namespace": self.namespace} for r in step.rules])
            ]
        except Exception as exc:
            raise StepError(f"routing rules for {step.service} are not valid: {exc}") from None
        self.on_loop(naming.replace_routing_rules, self.namespace, step.service, rules)
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
        response = httpx.post(self.url("alertmanager") + "/api/v2/silences", json=body, timeout=10,
                              verify=tls_for(self.url("alertmanager")))
        if response.status_code >= 400:
            raise StepError(f"adding the silence failed: {response.status_code} {response.text[:300]}")
        silence_id = response.json().get("silenceID", "")
        if step.alias:
            self.aliases[step.alias] = {"id": silence_id, "at": now}
        return str(silence_id)

    def release(self, step: ReleaseStep) -> dict[str, Any]:
        """Start a gray release (deploy's public API, as `devbox release`) and wait for its end."""
        body = step.model_dump(exclude={"expect", "background"})
        api = self.url("api") + "/api/deploy/releases"
        response = httpx.post(api, json=body, timeout=30, verify=tls_for(api))
        if response.status_code >= 400:
            raise StepError(f"release refused: {response.status_code} {response.json().get('reason', response.text)}")
        rel: dict[str, Any] = response.json()
        # "paused" ends the wait too: nobody resumes a release in a scenario, and a release holds itself
        # there when a gate saw too few calls to judge by the end of a pause (it waited forever before)
        while not step.background and rel["state"] not in ("succeeded", "rolled_back", "failed", "interrupted",
                                                           "paused"):
            time.sleep(0.5)
            rel = httpx.get(api + "/current", timeout=10, verify=tls_for(api)).json()
        self.log(f"release of {step.service} {step.version}: {rel['state']} — {rel['reason'] or rel['explain']}")
        if rel["state"] == "paused" and not step.background:
            held = "; ".join(g.get("message", "") for g in rel.get("last_gate") or [] if g.get("inconclusive"))
            raise StepError(f"release of {step.service} {step.version} held at {rel.get('percent')} %"
                            + (f": {held} — the scenario's traffic must give the gates calls to judge" if held else ""))
        if step.expect and not step.background and rel["state"] != step.expect:
            raise StepError(f"release of {step.service} {step.version} ended {rel['state']}, not {step.expect}: "
                            f"{rel['reason']}")
        return rel

    def load(self, step: LoadStep) -> dict[str, Any]:
        """Locust for a bounded time, as `devbox load` (a subprocess); kept for `expect: {load: ...}`."""
        from devbox.load.scenario import run_load, summary  # Locust glue only for scenarios that load

        record = run_load(step, self.project, self.url("api"), self.state_dir / "load")
        self.load_runs[step.name] = record
        self.log(f"load {step.name}: {summary(record)}")
        return record

    # --- traffic --------------------------------------------------------------------------

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

    def _resolver(self, service: str) -> Callable[[dict[str, str]], Target]:
        """Pick an entry instance through naming: its routing rules, health, then weighted random."""
        from devbox.polaris.routing import RouteRequest, evaluate, parse_rules

        naming = self.port(NamingPort, "naming")
        rng = random.Random(self.rng.randrange(2**31))
        lock = threading.Lock()

        def snapshot() -> tuple[list[InstanceView], list[Any]]:
            rules = parse_rules(naming.routing_rules(self.namespace, service))
            return list(naming.instances(self.namespace, service)), rules

        def resolve(labels: dict[str, str]) -> Target:
            instances, rules = self.on_loop(snapshot)
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
