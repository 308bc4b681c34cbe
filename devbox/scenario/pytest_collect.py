"""pytest side of scenarios: ``*.scenario.yaml`` files become test items; fixtures for Python scenarios.

``pytest scenarios/shop`` runs each scenario of each file as one test (a fresh platform each);
a failure shows the step's file:line, the expectation and what was observed. Fixtures:

- ``devbox_scenario(config=None, **kw)``: a factory of :class:`~devbox.scenario.session.Session`
  objects for a project (default: ``--devbox-config``, else ``devbox.yaml`` in the rootdir),
  closed when the test ends;
- ``devbox_system``: a session already ``up`` with the whole project;
- ``devbox_naming``, ``devbox_traces``, ``devbox_metrics``, ``devbox_alerts``: clients of that
  system's naming, trace, metrics and alert APIs.

Registered by :mod:`devbox.pytest_plugin`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

# The config, the runner and the session import every component: they are imported when a scenario
# file is collected or a devbox_* fixture is used, so that every other pytest run (this plugin is
# loaded by all of them) does not pay seconds for them before collecting anything.
if TYPE_CHECKING:
    from devbox.config import ProjectConfig
    from devbox.scenario.model import Scenario
    from devbox.scenario.session import Session


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("devbox")
    group.addoption("--devbox-seed", type=int, default=None, help="Seed of every scenario's random choices.")
    group.addoption("--devbox-config", default=None, help="devbox.yaml for the devbox_* fixtures.")


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    from devbox.scenario.loader import is_scenario_file

    if is_scenario_file(file_path):
        return ScenarioFile.from_parent(parent, path=file_path)
    return None


def project_for(path: Path) -> Path | None:
    """The nearest devbox.yaml at or above ``path``'s folder."""
    from devbox.config import DEFAULT_FILE

    for folder in [path.parent, *path.parent.parents]:
        if (folder / DEFAULT_FILE).is_file():
            return folder / DEFAULT_FILE
    return None


class ScenarioFailed(Exception):
    """A scenario item that did not pass; its message is the runner's."""


class ScenarioFile(pytest.File):
    def collect(self) -> Iterator[pytest.Item]:
        from devbox.config import ConfigError, load_config
        from devbox.scenario.loader import ScenarioError, load_file

        config_path = project_for(self.path)
        if config_path is None:
            raise self.CollectError(f"{self.path}: no devbox.yaml in this folder or above it")
        try:
            project = load_config(config_path)
        except ConfigError as exc:
            raise self.CollectError(str(exc)) from None
        try:
            scenarios = load_file(self.path, services={s.name for s in project.services})
        except ScenarioError as exc:
            raise self.CollectError(str(exc)) from None
        for scenario in scenarios:
            yield ScenarioItem.from_parent(self, name=scenario.name, scenario=scenario, project=project)


class ScenarioItem(pytest.Item):
    def __init__(self, *, scenario: Scenario, project: ProjectConfig, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.scenario = scenario
        self.project = project

    def runtest(self) -> None:
        from devbox.scenario.runner import Outcome, run_scenario

        seed = self.config.getoption("--devbox-seed", default=None)
        result = run_scenario(self.scenario, self.project, seed=seed)
        lines = [f"seed {result.seed}"] + [
            f"[{s.outcome.value}] {s.where} {s.text} ({s.seconds:.1f}s) {s.message}" for s in result.steps
        ]
        self.add_report_section("call", "scenario steps", "\n".join(lines))
        if result.outcome is not Outcome.PASSED:
            raise ScenarioFailed(f"{result.outcome.value} (seed {result.seed}): {result.message}")

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, ScenarioFailed):
            return str(excinfo.value)
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Path, int | None, str]:
        _, _, line = self.scenario.source.rpartition(":")
        return self.path, (int(line) - 1 if line.isdigit() else None), f"scenario: {self.name}"


def _project(request: pytest.FixtureRequest, config: str | Path | None) -> ProjectConfig:
    from devbox.config import DEFAULT_FILE, load_config

    chosen = config or request.config.getoption("--devbox-config", default=None)
    if chosen is None:
        chosen = Path(str(request.config.rootpath)) / DEFAULT_FILE
    return load_config(chosen)


@pytest.fixture
def devbox_scenario(request: pytest.FixtureRequest) -> Iterator[Callable[..., Session]]:
    """Factory: ``s = devbox_scenario("path/devbox.yaml", seed=1); s.do("up")``. Closed at test end."""
    with contextlib.ExitStack() as stack:

        def make(config: str | Path | None = None, **kwargs: Any) -> Session:
            from devbox.scenario.session import Session

            kwargs.setdefault("seed", request.config.getoption("--devbox-seed", default=None))
            return stack.enter_context(Session(_project(request, config), **kwargs))

        yield make


@pytest.fixture
def devbox_system(devbox_scenario: Callable[..., Session]) -> Session:
    """The whole project up on a fresh platform."""
    session = devbox_scenario()
    session.up()
    return session


@pytest.fixture
def devbox_naming(devbox_system: Session) -> Iterator[Any]:
    client = devbox_system.naming_client()
    yield client
    client.close()


@pytest.fixture
def devbox_traces(devbox_system: Session) -> Iterator[Any]:
    client = devbox_system.traces_client()
    yield client
    client.close()


@pytest.fixture
def devbox_metrics(devbox_system: Session) -> Iterator[Any]:
    client = devbox_system.metrics_client()
    yield client
    client.close()


@pytest.fixture
def devbox_alerts(devbox_system: Session) -> Iterator[Any]:
    client = devbox_system.alerts_client()
    yield client
    client.close()
