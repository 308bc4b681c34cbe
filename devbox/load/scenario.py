"""A scenario's ``load`` step and ``expect: {load: ...}``: bounded Locust runs whose figures CI holds
to a line (a p99 under N users, no failures).

The step runs exactly what ``devbox load`` runs — :class:`~devbox.load.ramp.Session` over the
platform's HTTP APIs, Locust as a subprocess — so the run is kept under the scenario's state like
any other. The check is pure: it reads the kept record.
"""

from __future__ import annotations

import operator
from pathlib import Path
from typing import Any

from devbox.load.config import LoadError, find_locustfile, require_target
from devbox.load.platform import PlatformClient
from devbox.load.ramp import LoadSpec, Session
from devbox.load.runs import RunStore
from devbox.scenario.checks import Verdict
from devbox.scenario.model import LoadExpect, LoadStep
from devbox.scenario.system import StepError

OPS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le, "==": operator.eq}
#: Expectation figure -> key of a Locust entry row in the kept record.
ROW_KEYS = {"p50_ms": "p50", "p95_ms": "p95", "p99_ms": "p99", "failures": "failures", "errors": "errors",
            "rps": "rps", "requests": "requests"}


def spec_of(step: LoadStep, project: Any) -> LoadSpec:
    """The run a step asks for: its keys, else the project's ``load:`` section."""
    conf = project.load
    given = (project.root / step.locustfile) if step.locustfile else None
    try:
        locustfile = find_locustfile(given, project.root, project.project, conf)
        target = require_target(step.service, conf)
    except LoadError as exc:
        raise StepError(str(exc)) from None
    users = step.users or conf.users
    return LoadSpec(locustfile=locustfile, target=target, users=users,
                    spawn_rate=step.spawn_rate or max(conf.spawn_rate, float(users)), seconds=step.seconds,
                    tags=list(step.tags if step.tags is not None else conf.tags),
                    exclude_tags=list(step.exclude_tags if step.exclude_tags is not None else conf.exclude_tags),
                    feature_env=step.env)


def run_load(step: LoadStep, project: Any, api_url: str, runs_dir: Path) -> dict[str, Any]:
    """Run the step's load against the platform at ``api_url``; the kept record (StepError when it
    cannot start: Locust missing, a locustfile that does not import, an unknown service)."""
    spec = spec_of(step, project)
    client = PlatformClient(api_url)
    try:
        return Session(client, RunStore(runs_dir)).run(spec)
    except LoadError as exc:
        raise StepError(str(exc)) from None
    finally:
        client.close()


def summary(record: dict[str, Any]) -> str:
    total, params = record["total"], record["params"]
    env = f" (env {params['env']})" if params.get("env") else ""
    return (f"{params['users']} users for {record['seconds']:.0f}s on {params['target']}{env}: {total['requests']} "
            f"requests, {total['rps']:.1f}/s, {total['failures']} failed, p99 {_num(total['p99'])} ms")


def check_load(exp: LoadExpect, record: dict[str, Any]) -> Verdict:
    """Every bound of ``exp`` against the run's figures for its entry (or all entries together)."""
    if exp.entry is None:
        row, what = record["total"], "all entries"
    else:
        rows = {str(e["name"]).lower(): e for e in record["entries"]}
        row = rows.get(exp.entry.lower())
        what = exp.entry
        if row is None:
            known = ", ".join(str(e["name"]) for e in record["entries"]) or "none"
            return Verdict(False, f"the load run {exp.run!r} has no entry {exp.entry!r} (it has {known})")
    if not row["requests"]:
        return Verdict(False, f"{what}: no request was measured in the load run {exp.run!r}")
    held: list[str] = []
    broken: list[str] = []
    for key, (op, bound) in exp.bounds().items():
        value = row.get(ROW_KEYS[key])
        text = f"{key} {_num(value)} {op} {_num(bound)}"
        (held if value is not None and OPS[op](float(value), bound) else broken).append(text)
    observed = (f"{what}: {row['requests']} requests, {row['rps']:.1f}/s, {row['failures']} failed, "
                f"p50/p95/p99 {_num(row['p50'])}/{_num(row['p95'])}/{_num(row['p99'])} ms")
    if broken:
        return Verdict(False, f"{observed}; does not hold: {', '.join(broken)}")
    return Verdict(True, f"{observed}; holds: {', '.join(held)}")


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:g}" if float(value) != int(value) else f"{int(value)}"
