"""``devbox scenario run``: run scenario suites against a fresh platform each, for CI and humans.

Exit code 0 only when every scenario passed; 1 when one failed or could not start; 2 for usage
errors (no scenario found, bad config).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable

import typer
from rich.console import Console
from rich.markup import escape
from rich.status import Status

from devbox.cli.common import EXIT_FAILED, EXIT_USAGE, JsonOption, config_or_exit, console, err_console, fail
from devbox.config import ProjectConfig
from devbox.diff.options import EvidenceOptions
from devbox.scenario import junit
from devbox.scenario.loader import ScenarioError
from devbox.scenario.model import Scenario, Step
from devbox.scenario.runner import Outcome, Reporter, ScenarioResult, StepRecord, load_scenarios, run_all

app = typer.Typer(help="Scenario suites: routing, failover, tracing and alerting asserted end to end.")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="scenario")


class RichReporter(Reporter):
    """One spinner line for the running step; one line per finished step and scenario."""

    def __init__(self, out: Console, *, quiet: bool = False) -> None:
        self.out = out
        self.quiet = quiet
        self.status: Status | None = None
        self.total = 0
        self.index = 0

    def scenario_started(self, scenario: Scenario, seed: int) -> None:
        self.index += 1
        self.out.print(
            f"[bold]▶ \\[{self.index}/{self.total}] {escape(scenario.name)}[/]  "
            f"[dim]{escape(scenario.source)} · seed {seed}[/]",
            highlight=False,
        )

    def step_started(self, scenario: Scenario, step: Step, index: int) -> None:
        if self.quiet:
            return
        self.status = self.out.status(f"  {escape(step.describe())}  [dim]{escape(step.where)}[/]")
        self.status.start()

    def step_finished(self, scenario: Scenario, record: StepRecord) -> None:
        if self.status is not None:
            self.status.stop()
            self.status = None
        if self.quiet:
            return
        mark = {"passed": "[green]✓[/]", "failed": "[red]✗[/]", "error": "[red]![/]"}[record.outcome.value]
        passed = record.message and record.outcome is Outcome.PASSED
        detail = f" [dim]{escape(record.message[:200])}[/]" if passed else ""
        self.out.print(f"  {mark} {escape(record.text)} [dim]({record.seconds:.1f}s)[/]{detail}", highlight=False)

    def log(self, text: str) -> None:
        if not self.quiet:
            self.out.print(f"    [dim]{escape(text)}[/]", highlight=False)

    def scenario_finished(self, result: ScenarioResult) -> None:
        if result.passed:
            self.out.print(f"  [green]PASSED[/] {result.name} in {result.seconds:.1f}s", highlight=False)
        else:
            if result.outcome is Outcome.ERROR and not result.steps:
                self.index += 1
                self.out.print(f"[bold]▶ \\[{self.index}/{self.total}] {escape(result.name)}[/]", highlight=False)
            label = "FAILED" if result.outcome is Outcome.FAILED else "ERROR"
            self.out.print(f"  [red]{label}[/] {escape(result.name)}: {escape(result.message)}", highlight=False)


@app.command("run")
def run(
    paths: list[str] = typer.Argument(None, help="Scenario files or folders (default: ./scenarios)."),
    keyword: str | None = typer.Option(None, "-k", help="Only scenarios whose name contains this."),
    junit_file: str | None = typer.Option(None, "--junit", help="Write a JUnit XML report here."),
    seed: int | None = typer.Option(None, "--seed", help="Seed every scenario's random choices."),
    config_file: str | None = typer.Option(
        None, "--file", "-f", help="devbox.yaml to run against (default: the nearest one above each scenario file)."
    ),
    as_json: bool = JsonOption,
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log the platform's warnings."),
    baseline: str | None = typer.Option(
        None, "--baseline", help="Snapshot (name under .devbox/snapshots or a file) each run is compared with; "
        "regression budgets need it."),
    snapshot: str | None = typer.Option(
        None, "--snapshot", help="Save each run's evidence as this snapshot (NAME, or NAME-<scenario> when several)."),
) -> None:
    """Run scenario suites; exit 0 only when every scenario passes (and keeps its budgets)."""
    # the runner reports what went wrong itself; the platform's own logs only with -v
    level = logging.INFO if verbose else logging.CRITICAL
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    paths = paths or ["scenarios"]
    project = config_or_exit(config_file) if config_file else None
    try:
        scenarios = load_scenarios(paths, project, keyword=keyword)
    except ScenarioError as exc:
        fail(str(exc), EXIT_USAGE)
    if not scenarios:
        fail(f"no scenarios found in {', '.join(paths)}" + (f" matching -k {keyword!r}" if keyword else ""), EXIT_USAGE)
    out = err_console if as_json else console
    reporter = RichReporter(out, quiet=as_json)
    reporter.total = len(scenarios)
    results = run_all(scenarios, project, seed=seed, reporter=reporter,
                      evidence=_evidence_options(scenarios, project, baseline, snapshot))
    if junit_file:
        junit.write(results, junit_file)
    passed = sum(r.passed for r in results)
    if as_json:
        sys.stdout.write(json.dumps([_result_json(r) for r in results], indent=2) + "\n")
    else:
        colour = "green" if passed == len(results) else "red"
        total_s = sum(r.seconds for r in results)
        console.print(
            f"[bold {colour}]{passed}/{len(results)} scenarios passed[/] in {total_s:.1f}s"
            + (f" · JUnit: {junit_file}" if junit_file else ""),
            highlight=False,
        )
    if passed != len(results):
        raise typer.Exit(EXIT_FAILED)


def _evidence_options(scenarios: list[Scenario], project: ProjectConfig | None, baseline: str | None,
                      snapshot: str | None) -> Callable[[Scenario], EvidenceOptions]:
    """Per scenario: the baseline file and where its snapshot goes (its project's .devbox/snapshots)."""
    from pathlib import Path

    def folder(scenario: Scenario) -> Path:
        mine = project if project is not None else scenario.project
        return (mine.state_path if mine is not None else Path(".devbox")) / "snapshots"

    def options(scenario: Scenario) -> EvidenceOptions:
        base = None
        if baseline:
            base = Path(baseline) if Path(baseline).is_file() else folder(scenario) / f"{baseline}.db"
            if not base.is_file():
                fail(f"no baseline snapshot {baseline!r} (looked for {base})", EXIT_USAGE)
        save = None
        if snapshot:
            slug = "".join(c if c.isalnum() else "-" for c in scenario.name.lower()).strip("-")
            save = folder(scenario) / (f"{snapshot}.db" if len(scenarios) == 1 else f"{snapshot}-{slug}.db")
        return EvidenceOptions(baseline=base, save=save)

    return options


@app.command("schema")
def schema() -> None:
    """Print the JSON Schema of a scenario file, for editors."""
    from devbox.cli.common import print_json
    from devbox.scenario.model import json_schema

    print_json(json_schema())


def _result_json(r: ScenarioResult) -> dict[str, object]:
    return {
        "name": r.name,
        "source": r.source,
        "outcome": r.outcome.value,
        "seconds": round(r.seconds, 3),
        "seed": r.seed,
        "message": r.message,
        "up_seconds": r.up_seconds,
        "steps": [
            {"where": s.where, "step": s.text, "outcome": s.outcome.value, "seconds": round(s.seconds, 3),
             "message": s.message}
            for s in r.steps
        ],
    }
