"""What a scenario is: typed steps and assertions, validated with pydantic.

A scenario is a name, an optional seed and timeout, and a list of steps. Each step is a mapping
with exactly one key, the step's kind (``traffic:``, ``kill:``, ``expect:`` ...), whose value is
that kind's model below. ``expect:`` holds exactly one assertion kind. The YAML loader
(:mod:`devbox.scenario.loader`) and the Python API (:mod:`devbox.scenario.api`) both produce these
objects, so both have the same power.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

#: An instance of a service: its position (sorted by id), ``random`` (seeded), ``all``, the name an
#: earlier step gave it with ``as:``, or metadata it must have.
InstanceRef = int | str | dict[str, str]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- steps ----------------------------------------------------------------------------------


class ServiceOverride(_Model):
    replicas: int | None = Field(None, ge=0, le=64, description="Instances of this service.")
    tags: dict[str, str] | None = Field(None, description="Replace the service's tags (instance metadata).")
    version: str | None = Field(None, description="Sets the `version` tag of every instance.")
    env: dict[str, str] | None = Field(None, description="Extra environment for every instance.")


class ExtraGroup(_Model):
    """More instances of a declared service with other tags: a feature environment on top of base."""

    service: str = Field(description="A service declared in devbox.yaml.")
    replicas: int = Field(1, ge=1, le=16)
    tags: dict[str, str] = Field(default_factory=dict, description="e.g. {env: feature-x}.")
    version: str | None = None


class UpStep(_Model):
    """Bring the system (or a subset) up with overrides, and wait until every instance is healthy."""

    services: list[str] | None = Field(None, description="Only these services (default: all of devbox.yaml).")
    overrides: dict[str, ServiceOverride] = Field(default_factory=dict, description="Per-service overrides.")
    add: list[ExtraGroup] = Field(default_factory=list, description="Extra instance groups (feature envs).")
    settings: dict[str, Any] = Field(
        default_factory=dict,
        description="Merged into devbox.yaml's other sections for this scenario, e.g. "
        "{metrics: {indicators: {...}}, alerting: {interval: 0.5}}.",
    )
    faults: bool = Field(True, description="Put the fault proxy in front of every instance.")
    timeout: float = Field(60.0, gt=0, description="Seconds to wait for every instance to be healthy.")


class TrafficStep(_Model):
    """Calls into a service through naming: a count, or a rate for a duration, with concurrency."""

    name: str = Field("traffic", description="Assertions refer to the traffic by this name.")
    service: str = Field(description="Entry service, resolved through naming.")
    protocol: Literal["http", "grpc"] = "http"
    method: str = Field("GET", description="HTTP method, or the gRPC method `/pkg.Service/Method`.")
    path: str = Field("/", description="HTTP path.")
    body: Any = Field(None, description="JSON body (HTTP) or request message as JSON (gRPC).")
    headers: dict[str, str] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict, description="Routing labels, sent as W3C baggage.")
    count: int | None = Field(None, ge=1, le=100_000)
    rate: float | None = Field(None, gt=0, le=10_000, description="Calls per second (with duration).")
    duration: float | None = Field(None, gt=0, le=3600, description="Seconds (with rate).")
    concurrency: int = Field(4, ge=1, le=256)
    timeout: float = Field(5.0, gt=0, description="Per-call timeout in seconds.")
    background: bool = Field(False, description="Go on with the next step while the traffic runs.")
    ok_status: list[int] = Field(default_factory=lambda: list(range(200, 400)), description="Statuses that succeed.")

    @model_validator(mode="after")
    def _amount(self) -> TrafficStep:
        if (self.count is None) == (self.rate is None):
            raise ValueError("give either count, or rate with duration")
        if self.rate is not None and self.duration is None:
            raise ValueError("rate needs duration (seconds)")
        return self


class InstanceStep(_Model):
    """Acts on one instance (or all matching) of a service."""

    service: str
    instance: InstanceRef = Field(
        0, description="Index (sorted by id), `random` (seeded), `all`, a name given by `as:`, or metadata."
    )
    alias: str | None = Field(None, alias="as", description="Name the chosen instance for later assertions.")

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class SignalStep(InstanceStep):
    """A process fault: send a signal to the instance's process (SIGKILL dies, SIGSTOP hangs)."""

    signal: Literal["SIGKILL", "SIGSTOP", "SIGCONT", "SIGTERM"] = "SIGKILL"


class IsolateStep(InstanceStep):
    isolated: bool = True


class FaultStep(_Model):
    """Inject a fault into a service's inbound traffic at the platform boundary (the fault proxy)."""

    service: str = Field(description="Callee whose inbound traffic is affected.")
    caller: str | None = Field(None, description="Only calls from this service (caller→callee pair).")
    instance: InstanceRef | None = Field(
        None, description="Only calls to this instance of the service: index (sorted by id), `random` (seeded), a "
        "name given by `as:`, metadata, or its deploy name (users-2) or naming id; default (or `all`) every instance."
    )
    path: str | None = Field(None, description="Only HTTP paths starting with this (or the gRPC method).")
    method: str | None = Field(None, description="Only this HTTP method.")
    latency_ms: float = Field(0, ge=0, le=60_000, description="Added latency.")
    error_rate: float = Field(0, ge=0, le=1, description="Share of calls answered with `status`.")
    status: int = Field(503, ge=400, le=599)
    abort_rate: float = Field(0, ge=0, le=1, description="Share of connections reset.")
    alias: str | None = Field(None, alias="as", description="Name of the fault, to clear it later.")

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @model_validator(mode="after")
    def _something(self) -> FaultStep:
        if not (self.latency_ms or self.error_rate or self.abort_rate):
            raise ValueError("a fault needs latency_ms, error_rate or abort_rate")
        return self


class ClearFaultsStep(_Model):
    name: str | None = Field(None, description="Only this fault (its `as`); default all.")


class NamingFaultStep(InstanceStep):
    """Naming faults: drop an instance's heartbeats (it turns unhealthy) or force callers' breakers
    open for it (its proxy refuses connections while naming still lists it healthy)."""

    drop_heartbeats: bool = False
    circuit_open: bool = False

    @model_validator(mode="after")
    def _something(self) -> NamingFaultStep:
        if not (self.drop_heartbeats or self.circuit_open):
            raise ValueError("a naming fault needs drop_heartbeats or circuit_open")
        return self


class RoutingRuleStep(_Model):
    """Replace a service's routing rules (the naming routing-rule JSON model)."""

    service: str
    rules: list[dict[str, Any]] = Field(description="Routing rules; [] removes them.")


class SilenceStep(_Model):
    """Add an Alertmanager-style silence."""

    matchers: dict[str, str] = Field(description="label: value (value `~regex` for a regex match).")
    duration: float = Field(600, gt=0, description="Seconds.")
    comment: str = "devbox scenario"
    alias: str | None = Field(None, alias="as")

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ReleaseStep(_Model):
    """A gray release through deploy's API (``devbox release``); waits for its end unless ``background``."""

    service: str
    version: str = "v2"
    batches: list[int] = Field(default_factory=lambda: [10, 50, 100])
    pause: float = Field(5, ge=0, le=3600, description="Seconds each batch is watched by the gates.")
    gates: list[str] = Field(default_factory=list, description="Alert rule names, success_rate<X, p99>kx.")
    in_place: bool = False
    env: dict[str, str] = Field(default_factory=dict, description="Environment of the new version.")
    tags: dict[str, str] = Field(default_factory=dict)
    expect: str | None = Field(None, description="The state it must end in: succeeded or rolled_back.")
    background: bool = False


class LoadStep(_Model):
    """Locust against a service for a bounded time, as ``devbox load`` (a subprocess, never in this
    process); the run is kept and ``expect: {load: ...}`` checks its figures. Unset keys come from
    devbox.yaml's ``load:`` section."""

    name: str = Field("load", description="Assertions refer to the run by this name.")
    service: str | None = Field(None, description="Target service, resolved through naming (default: load.target).")
    users: int | None = Field(None, ge=1, le=1000, description="Concurrent users (default: load.users).")
    spawn_rate: float | None = Field(None, gt=0, le=1000, description="Users started per second.")
    seconds: float = Field(10, ge=1, le=300, description="How long the load runs (bounded: CI holds a line).")
    locustfile: str | None = Field(None, description="Relative to devbox.yaml (default: load.locustfile).")
    tags: list[str] | None = Field(None, description="Only the locustfile's tasks with these tags.")
    exclude_tags: list[str] | None = None
    env: str | None = Field(None, description="Feature environment: every request carries baggage env=NAME.")


class WaitStep(_Model):
    """Wait for a duration, for background traffic to end, or until an assertion holds."""

    seconds: float | None = Field(None, ge=0, le=3600)
    traffic: str | None = Field(None, description="Name of background traffic to wait for.")
    stop: bool = Field(False, description="With traffic: end it now (no new calls; those in flight finish), "
                                          "e.g. once a release it ran under is over.")
    until: Expectation | None = Field(None, description="An assertion that must become true.")
    timeout: float = Field(30.0, gt=0)

    @model_validator(mode="after")
    def _one(self) -> WaitStep:
        given = [k for k in ("seconds", "traffic", "until") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("wait needs exactly one of seconds, traffic, until")
        if self.stop and self.traffic is None:
            raise ValueError("stop ends a background traffic: give it with `traffic: NAME`")
        return self


# --- assertions -----------------------------------------------------------------------------


class RoutingExpect(_Model):
    """Share of a traffic's calls to ``service`` served by instances matching ``selector``."""

    traffic: str = "traffic"
    service: str
    selector: dict[str, str | None] = Field(
        default_factory=dict, description="Metadata; null means the key is absent (base)."
    )
    instance: str | None = Field(None, description="Instead of a selector: the instance named `as:` earlier.")
    min_share: float = Field(0.99, ge=0, le=1)
    max_share: float = Field(1.0, ge=0, le=1)
    min_calls: int = Field(1, ge=0, description="Fewer observed calls than this fails.")

    @model_validator(mode="after")
    def _what(self) -> RoutingExpect:
        if bool(self.selector) == (self.instance is not None):
            raise ValueError("routing needs either selector or instance")
        return self


class FailoverExpect(_Model):
    """Errors seen by a traffic while an instance died, and how fast naming noticed."""

    traffic: str | None = Field("traffic", description="Traffic whose errors are bounded (null: none).")
    max_error_rate: float | None = Field(None, ge=0, le=1)
    max_errors: int | None = Field(None, ge=0)
    instance: str | None = Field(None, description="Alias (`as`) of the killed instance.")
    unhealthy_within: float | None = Field(None, gt=0, description="Seconds from the kill.")


class TraceExpect(_Model):
    """Traces of a traffic: services/operations in order, no error, or a root cause."""

    traffic: str = "traffic"
    services: list[str] = Field(default_factory=list, description="Services in order of first appearance.")
    operations: list[str] = Field(default_factory=list, description="Span names, in order (a subsequence).")
    no_error: bool = False
    root_cause: str | None = Field(None, description="Service where the error originated.")
    critical_path: CriticalPathExpect | None = None
    which: Literal["all", "any"] = Field("any", description="Must every trace match, or at least one.")


class CriticalPathExpect(_Model):
    service: str
    min_share: float = Field(0.5, ge=0, le=1, description="Share of the trace's duration on this service.")


class TopologyExpect(_Model):
    edges: list[tuple[str, str]] = Field(description="[caller, callee] pairs that must be in the topology.")
    absent: list[tuple[str, str]] = Field(default_factory=list, description="Pairs that must not be.")


class MetricExpect(_Model):
    """A PromQL query (or a composite indicator) compared with a threshold."""

    query: str = Field(description="PromQL; every series of the answer is compared.")
    op: Literal[">", ">=", "<", "<=", "==", "!="] = ">"
    threshold: float
    window: float = Field(0, ge=0, description="Seconds; >0 means it must hold at every step of the window.")
    allow_empty: bool = False


class AlertExpect(_Model):
    """An alert rule's state, notifications and history."""

    rule: str = Field(description="Alert name.")
    state: Literal["firing", "resolved", "inactive", "pending"] = "firing"
    notified: bool | None = Field(None, description="A notification was sent (false: suppressed).")
    silenced: bool | None = Field(None, description="The firing is silenced.")
    history: list[str] = Field(default_factory=list, description="States the history must show, in order.")
    labels: dict[str, str] = Field(default_factory=dict, description="Only alerts with these labels.")


class LogExpect(_Model):
    service: str
    pattern: str = Field(description="Regular expression searched in the service's instance logs.")
    absent: bool = False
    min_count: int = Field(1, ge=1, description="At least this many matching lines (over all instances).")


_BOUND = re.compile(r"\s*(<=|>=|==|<|>)?\s*(\d+(?:\.\d+)?)\s*(ms|%)?\s*")


def parse_bound(value: float | str, default_op: str) -> tuple[str, float]:
    """``"<= 800"``, ``"<800ms"``, ``"<= 1%"`` (a share) or a bare number (compared with
    ``default_op``) as (operator, number)."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a bound; write e.g. 800 or '<= 800'")
    if isinstance(value, int | float):
        return default_op, float(value)
    match = _BOUND.fullmatch(value)
    if not match:
        raise ValueError(f"{value!r} is not a bound; write e.g. 800 or '<= 800'")
    number = float(match.group(2)) / (100 if match.group(3) == "%" else 1)
    return match.group(1) or default_op, number


class LoadExpect(_Model):
    """Figures of a ``load`` step's run, for one entry (Locust's request name) or all together.

    A bare number is an upper bound for latency, failures and errors and a lower bound for rps
    and requests; a string gives the operator: ``p99_ms: "<= 800"``, ``rps: ">= 20"``."""

    run: str = Field("load", description="Name of the load step.")
    entry: str | None = Field(None, description="e.g. `GET /checkout/{user}` (default: every entry together).")
    p50_ms: float | str | None = None
    p95_ms: float | str | None = None
    p99_ms: float | str | None = None
    failures: float | str | None = Field(None, description="Failed requests.")
    errors: float | str | None = Field(None, description="Failed share of requests: 0.01 or '<= 1%'.")
    rps: float | str | None = Field(None, description="Requests per second.")
    requests: float | str | None = Field(None, description="Requests sent.")

    @field_validator("p50_ms", "p95_ms", "p99_ms", "failures", "errors", "rps", "requests")
    @classmethod
    def _bound(cls, value: float | str | None) -> float | str | None:
        if value is not None:
            parse_bound(value, "<=")
        return value

    @model_validator(mode="after")
    def _something(self) -> LoadExpect:
        if not self.bounds():
            raise ValueError(f"expect load needs at least one of {', '.join(LOAD_FIGURES)}")
        return self

    def bounds(self) -> dict[str, tuple[str, float]]:
        """Figure -> (operator, number) for every figure given."""
        return {
            key: parse_bound(value, ">=" if key in ("rps", "requests") else "<=")
            for key in LOAD_FIGURES
            if (value := getattr(self, key)) is not None
        }


LOAD_FIGURES = ("p50_ms", "p95_ms", "p99_ms", "failures", "errors", "rps", "requests")


class Expectation(_Model):
    """Exactly one assertion kind, checked until it holds or ``within`` seconds have passed."""

    routing: RoutingExpect | None = None
    failover: FailoverExpect | None = None
    trace: TraceExpect | None = None
    topology: TopologyExpect | None = None
    metric: MetricExpect | None = None
    alert: AlertExpect | None = None
    log: LogExpect | None = None
    load: LoadExpect | None = None
    within: float = Field(10.0, ge=0, le=600, description="Seconds to keep re-checking before failing.")

    @model_validator(mode="after")
    def _one(self) -> Expectation:
        given = self.kinds()
        if len(given) != 1:
            raise ValueError(f"expect needs exactly one of {', '.join(EXPECT_KINDS)} (got {len(given)})")
        return self

    def kinds(self) -> list[str]:
        return [k for k in EXPECT_KINDS if getattr(self, k) is not None]

    @property
    def kind(self) -> str:
        return self.kinds()[0]

    @property
    def body(self) -> BaseModel:
        return getattr(self, self.kind)


EXPECT_KINDS = ("routing", "failover", "trace", "topology", "metric", "alert", "log", "load")

#: Step kind -> its model. ``kill`` is SIGKILL; ``hang`` is SIGSTOP.
STEP_KINDS: dict[str, type[BaseModel]] = {
    "up": UpStep,
    "traffic": TrafficStep,
    "kill": InstanceStep,
    "hang": InstanceStep,
    "signal": SignalStep,
    "stop": InstanceStep,
    "start": InstanceStep,
    "isolate": IsolateStep,
    "fault": FaultStep,
    "clear_faults": ClearFaultsStep,
    "naming_fault": NamingFaultStep,
    "routing_rule": RoutingRuleStep,
    "silence": SilenceStep,
    "release": ReleaseStep,
    "load": LoadStep,
    "wait": WaitStep,
    "expect": Expectation,
}


class Step(BaseModel):
    """One step: its kind, its validated arguments, and where it was written (file:line)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    kind: str
    args: Any
    where: str = "<python>"

    def describe(self) -> str:
        if isinstance(self.args, Expectation):
            return f"expect {self.args.kind}"
        name = getattr(self.args, "name", None) or getattr(self.args, "service", None)
        return f"{self.kind} {name}" if isinstance(name, str) else self.kind


class Scenario(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    name: str
    description: str = ""
    seed: int | None = None
    timeout: float = 120.0
    steps: list[Step] = Field(default_factory=list)
    source: str = "<python>"
    #: Set when the scenario could not be loaded: why it cannot start.
    error: str | None = None
    #: The project (a ProjectConfig) it runs against: the nearest devbox.yaml above its file.
    project: Any = Field(None, exclude=True)
    #: Budgets checked on the run's evidence after the steps (devbox.diff.budget), e.g.
    #: ``fanout(gateway:GET /checkout/{user}, users) <= 2``.
    budgets: list[str] = Field(default_factory=list)


class ScenarioHeader(_Model):
    """The top-level keys of a scenario document (steps are validated one by one)."""

    name: str = Field(min_length=1)
    description: str = ""
    seed: int | None = Field(None, ge=0, description="Random seed; default: a fresh one, printed.")
    timeout: float = Field(120.0, gt=0, le=3600, description="Seconds the whole scenario may take.")
    steps: list[Any] = Field(min_length=1)
    budgets: list[str] = Field(default_factory=list, description=(
        "Checked after the steps on the run's traces (against `--baseline SNAPSHOT` for regressions): "
        "'fanout(gateway:GET /checkout/{user}, users) <= 2', 'p99_regression(gateway:GET /checkout/{user}) <= 20%', "
        "'p50_regression(OP) <= X%', 'error_rate(OP) <= X%'."))


WaitStep.model_rebuild()
TraceExpect.model_rebuild()


def json_schema() -> dict[str, Any]:
    """JSON Schema of a scenario file (one document), for editors."""
    defs: dict[str, Any] = {}
    variants = []
    for kind, model in STEP_KINDS.items():
        schema = model.model_json_schema(ref_template="#/$defs/{model}")
        defs.update(schema.pop("$defs", {}))
        defs[f"{kind}_step"] = schema
        variants.append({
            "type": "object",
            "properties": {kind: {"$ref": f"#/$defs/{kind}_step"}},
            "required": [kind],
            "additionalProperties": False,
        })
    header = ScenarioHeader.model_json_schema()
    header["properties"]["steps"] = {"type": "array", "minItems": 1, "items": {"oneOf": variants}}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "devbox scenario",
        **header,
        "$defs": defs,
    }
