"""The runner: loads scenario files, runs each scenario in its own fresh session, collects results.

A scenario that cannot be loaded or cannot start is reported (``error``) with why, and the suite
goes on with the next. A failed expectation (``failed``) carries the expectation and what was
observed, prefixed with the step's file:line. Random choices are seeded; the seed is printed and
recorded so a run can be repeated with ``--seed``.
"""

from __future__ import annotations

import enum
import logging
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from devbox.config import DEFAULT_FILE, ConfigError, ProjectConfig, load_config
from devbox.diff.options import EvidenceOptions
from devbox.scenario.loader import ScenarioError, discover, load_file
from devbox.scenario.model import Expectation, Scenario, Step
from devbox.scenario.session import AssertionFailed, Session, StepError

LOG = logging.getLogger(__name__)


class Outcome(enum.StrEnum):
    PASSED = "passed"
    FAILED = "failed"  # an expectation did not hold
    ERROR = "error"  # the scenario could not be loaded, could not start, or a step could not run


@dataclass
class StepRecord:
    where: str
    text: str
    seconds: float
    outcome: Outcome
    message: str = ""


@dataclass
class ScenarioResult:
    name: str
    source: str
    outcome: Outcome
    seconds: float
    seed: int | None = None
    message: str = ""
    steps: list[StepRecord] = field(default_factory=list)
    up_seconds: float | None = None

    @property
    def passed(self) -> bool:
        return self.outcome is Outcome.PASSED


class Reporter:
    """Progress callbacks; the CLI's rich view and the pytest items implement what they need."""

    def scenario_started(self, scenario: Scenario, seed: int) -> None: ...

    def step_started(self, scenario: Scenario, step: Step, index: int) -> None: ...

    def step_finished(self, scenario: Scenario, record: StepRecord) -> None: ...

    def log(self, text: str) -> None: ...

    def scenario_finished(self, result: ScenarioResult) -> None: ...


def load_scenarios(
    paths: Iterable[str | Path], project: ProjectConfig | None = None, *, keyword: str | None = None
) -> list[Scenario]:
    """Every scenario under ``paths``, filtered by ``-k``, each validated against its project's services.

    A scenario's project is ``project`` when given, else the nearest devbox.yaml at or above its
    file's folder. A file or project that cannot be used becomes a scenario with ``error`` set.
    """
    projects: dict[Path, ProjectConfig | str] = {}
    scenarios: list[Scenario] = []
    for path in discover(paths):
        mine: ProjectConfig | str = project if project is not None else _project_of(path, projects)
        if isinstance(mine, str):
            scenarios.append(Scenario(name=path.name, source=str(path), error=mine))
            continue
        try:
            found = load_file(path, services={s.name for s in mine.services})
        except ScenarioError as exc:
            found = [Scenario(name=path.name, source=str(path), error=str(exc))]
        for scenario in found:
            scenario.project = mine
        scenarios.extend(found)
    if keyword:
        scenarios = [s for s in scenarios if keyword.lower() in s.name.lower()]
    return scenarios


def _project_of(path: Path, cache: dict[Path, ProjectConfig | str]) -> ProjectConfig | str:
    """The project of a scenario file, or why there is none usable."""
    config_path = next(
        (folder / DEFAULT_FILE for folder in path.resolve().parents if (folder / DEFAULT_FILE).is_file()), None
    )
    if config_path is None:
        return f"{path}: no {DEFAULT_FILE} in its folder or above it (give one with -f)"
    if config_path not in cache:
        try:
            cache[config_path] = load_config(config_path)
        except ConfigError as exc:
            cache[config_path] = f"{path}: its project {config_path} is not valid: {exc}"
    return cache[config_path]


def run_step(session: Session, step: Step, *, deadline: float | None = None) -> str:
    """Carry out one step on a session; returns what it observed (assertions) or did.

    Assertions keep re-checking at most until ``deadline`` (the scenario's own timeout).
    """
    args = step.args
    if isinstance(args, Expectation):
        if deadline is not None and args.within > deadline - time.monotonic():
            args = args.model_copy(update={"within": max(deadline - time.monotonic(), 0.0)})
        return session.expect(args)
    method = getattr(session, step.kind)
    result = method(args)
    if step.kind == "traffic":
        return "running in the background" if result.step.background and not result.done else result.summary()
    return ""


def run_scenario(
    scenario: Scenario,
    project: ProjectConfig | None = None,
    *,
    seed: int | None = None,
    reporter: Reporter | None = None,
    evidence: EvidenceOptions | None = None,
) -> ScenarioResult:
    reporter = reporter or Reporter()
    chosen = seed if seed is not None else scenario.seed
    if chosen is None:
        chosen = random.SystemRandom().randrange(1, 2**31)
    t0 = time.monotonic()
    if scenario.error:
        result = ScenarioResult(scenario.name, scenario.source, Outcome.ERROR, 0.0, chosen, scenario.error)
        reporter.scenario_finished(result)
        return result
    project = project if project is not None else scenario.project
    if project is None:
        result = ScenarioResult(scenario.name, scenario.source, Outcome.ERROR, 0.0, chosen,
                                f"{scenario.source}: no project (devbox.yaml) to run against")
        reporter.scenario_finished(result)
        return result
    reporter.scenario_started(scenario, chosen)
    records: list[StepRecord] = []
    outcome, message = Outcome.PASSED, ""
    session = Session(project, seed=chosen, log=reporter.log)
    deadline = t0 + scenario.timeout
    try:
        steps = list(scenario.steps)
        if not any(s.kind == "up" for s in steps):
            # every scenario runs against a system: the whole of devbox.yaml unless it says otherwise
            from devbox.scenario.model import UpStep

            steps.insert(0, Step(kind="up", args=UpStep(), where=scenario.source))
        for index, step in enumerate(steps):
            if time.monotonic() > deadline:
                outcome = Outcome.ERROR
                message = f"{step.where}: scenario timeout of {scenario.timeout:g}s reached before {step.describe()}"
                break
            reporter.step_started(scenario, step, index)
            s0 = time.monotonic()
            try:
                text = run_step(session, step, deadline=deadline)
            except AssertionFailed as exc:
                record = StepRecord(step.where, step.describe(), time.monotonic() - s0, Outcome.FAILED, str(exc))
                outcome, message = Outcome.FAILED, f"{step.where}: {step.describe()}: {exc}"
            except StepError as exc:
                record = StepRecord(step.where, step.describe(), time.monotonic() - s0, Outcome.ERROR, str(exc))
                why = "cannot start" if step.kind == "up" else "step failed"
                outcome, message = Outcome.ERROR, f"{step.where}: {step.describe()}: {why}: {exc}"
            except Exception as exc:
                LOG.exception("step %s failed", step.describe())
                record = StepRecord(step.where, step.describe(), time.monotonic() - s0, Outcome.ERROR, repr(exc))
                outcome, message = Outcome.ERROR, f"{step.where}: {step.describe()}: {type(exc).__name__}: {exc}"
            else:
                record = StepRecord(step.where, step.describe(), time.monotonic() - s0, Outcome.PASSED, text)
            records.append(record)
            reporter.step_finished(scenario, record)
            if outcome is not Outcome.PASSED:
                break
        evidence = evidence or EvidenceOptions()
        if outcome is Outcome.PASSED and evidence.wanted(scenario.budgets):
            record = _evidence_step(session, scenario, evidence, reporter)
            records.append(record)
            reporter.step_finished(scenario, record)
            if record.outcome is not Outcome.PASSED:
                outcome, message = record.outcome, f"{scenario.source}: budgets: {record.message}"
    finally:
        up = session.up_seconds
        try:
            session.close()
        except Exception:
            LOG.exception("closing the session of %s failed", scenario.name)
    result = ScenarioResult(
        scenario.name, scenario.source, outcome, time.monotonic() - t0, chosen, message, records, up
    )
    reporter.scenario_finished(result)
    return result


def _evidence_step(session: Session, scenario: Scenario, options: EvidenceOptions, reporter: Reporter) -> StepRecord:
    """Budgets, baseline and snapshot (devbox.diff.run) on the run's evidence, as one more step."""
    from devbox.diff.run import check_run

    t0 = time.monotonic()
    try:
        checked = check_run(session.url("api"), scenario.name, scenario.budgets, options)
    except Exception as exc:  # the evidence could not be read or compared: say so, as a step error
        LOG.exception("evidence of %s", scenario.name)
        why = f"{type(exc).__name__}: {exc}"
        return StepRecord(scenario.source, "budgets", time.monotonic() - t0, Outcome.ERROR, why)
    for line in checked.lines:
        reporter.log(line)
    outcome = Outcome.PASSED if checked.ok else Outcome.FAILED
    return StepRecord(scenario.source, "budgets", time.monotonic() - t0, outcome, checked.text)


def run_all(
    scenarios: list[Scenario],
    project: ProjectConfig | None = None,
    *,
    seed: int | None = None,
    reporter: Reporter | None = None,
    on_result: Callable[[ScenarioResult], None] | None = None,
    evidence: Callable[[Scenario], EvidenceOptions] | None = None,
) -> list[ScenarioResult]:
    """Run each scenario; ``evidence`` says per scenario what to do with its run's evidence."""
    results = []
    for scenario in scenarios:
        options = evidence(scenario) if evidence else None
        result = run_scenario(scenario, project, seed=seed, reporter=reporter, evidence=options)
        results.append(result)
        if on_result:
            on_result(result)
    return results
