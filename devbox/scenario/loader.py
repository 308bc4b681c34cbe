"""Scenario files: YAML documents turned into :class:`~devbox.scenario.model.Scenario` objects.

A file (``*.scenario.yaml``, or any ``*.yaml`` under a scenarios folder other than
``devbox.yaml``) holds one scenario per YAML document (``---`` separates them). Every problem is
reported as ``file:line: key: reason``, using the same line lookup as ``devbox.yaml``
(:mod:`devbox.config`). A document that does not validate becomes a scenario with ``error`` set,
so the runner reports it as failed and goes on with the next.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from devbox.scenario.model import STEP_KINDS, Expectation, Scenario, ScenarioHeader, Step
from devbox.yamlpos import YamlError, YamlMap, allowed_keys, describe_error, line_of, load_all, plain

LOG = logging.getLogger(__name__)

SUFFIXES = (".scenario.yaml", ".scenario.yml")


class ScenarioError(Exception):
    """A scenario file that cannot be used; ``problems`` are ``file:line: key: reason`` lines."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def discover(paths: Iterable[str | Path]) -> list[Path]:
    """Scenario files under ``paths`` (files are taken as given), sorted."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found.extend(p for p in sorted(path.rglob("*.y*ml")) if is_scenario_file(p))
        elif path.exists():
            found.append(path)
        else:
            raise ScenarioError([f"{path}: no such file or folder"])
    return found


def is_scenario_file(path: Path) -> bool:
    return path.name.endswith(SUFFIXES)


def load_file(path: Path, *, services: set[str] | None = None) -> list[Scenario]:
    """Every scenario of ``path``; a document with problems becomes a Scenario with ``error`` set."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError([f"{path}: cannot read: {exc.strerror}"]) from None
    return load_text(text, source=str(path), services=services)


def load_text(text: str, *, source: str = "<scenario>", services: set[str] | None = None) -> list[Scenario]:
    """Parse YAML text holding one or more scenario documents. See :func:`load_file`."""
    try:
        docs = [d for d in load_all(text) if d is not None]
    except YamlError as exc:
        raise ScenarioError([exc.where(source)]) from None
    if not docs:
        raise ScenarioError([f"{source}:1: no scenario in this file (expected name: and steps:)"])
    scenarios = []
    for index, tree in enumerate(docs):
        try:
            scenarios.append(_scenario(tree, source=source, services=services))
        except ScenarioError as exc:
            name = tree.get("name") if isinstance(tree, dict) and isinstance(tree.get("name"), str) else None
            scenarios.append(
                Scenario(name=name or f"{Path(source).name}#{index + 1}", source=source, error=str(exc))
            )
    return scenarios


def _scenario(tree: Any, *, source: str, services: set[str] | None) -> Scenario:
    if not isinstance(tree, YamlMap):
        raise ScenarioError([f"{source}:1: a scenario must be a mapping with name: and steps:"])
    start = tree.line
    where = f"{source}:{start}"
    try:
        header = ScenarioHeader.model_validate(plain(tree))
    except ValidationError as exc:
        raise ScenarioError(_problems(exc, tree, source, ScenarioHeader, ())) from None
    problems: list[str] = []
    steps: list[Step] = []
    for i, raw in enumerate(tree["steps"]):
        loc: tuple[int | str, ...] = ("steps", i)
        line, _ = line_of(tree, loc)
        at = f"{source}:{line}" if line else where
        try:
            steps.append(_step(raw, tree, loc, at, source))
        except ScenarioError as exc:
            problems.extend(exc.problems)
    if services is not None:
        problems.extend(_unknown_services(tree, steps, services, source))
    problems.extend(_bad_budgets(header.budgets, tree, source))
    if problems:
        raise ScenarioError(problems)
    return Scenario(
        name=header.name,
        description=header.description,
        seed=header.seed,
        timeout=header.timeout,
        steps=steps,
        source=where,
        budgets=header.budgets,
    )


def _bad_budgets(budgets: list[str], tree: Any, source: str) -> list[str]:
    from devbox.diff.budget import BudgetError, parse

    problems = []
    for i, text in enumerate(budgets):
        try:
            parse(text)
        except BudgetError as exc:
            line, _ = line_of(tree, ("budgets", i))
            problems.append(f"{source}:{line or tree.line}: budgets[{i}]: {exc}")
    return problems


def _step(raw: Any, tree: Any, loc: tuple[int | str, ...], at: str, source: str) -> Step:
    allowed = ", ".join(STEP_KINDS)
    if not isinstance(raw, dict) or len(raw) != 1:
        raise ScenarioError([f"{at}: steps[{loc[1]}]: a step is a mapping with exactly one kind ({allowed})"])
    kind, body = next(iter(raw.items()))
    if kind not in STEP_KINDS:
        raise ScenarioError([f"{at}: steps[{loc[1]}]: unknown step kind {kind!r} (allowed: {allowed})"])
    model = STEP_KINDS[kind]
    try:
        args = model.model_validate(plain(body) if body is not None else {})
    except ValidationError as exc:
        raise ScenarioError(_problems(exc, tree, source, model, (*loc, kind))) from None
    return Step(kind=kind, args=args, where=at)


def _problems(
    exc: ValidationError, tree: Any, source: str, model: type[BaseModel], prefix: tuple[int | str, ...]
) -> list[str]:
    problems = []
    for err in exc.errors():
        loc = (*prefix, *err["loc"])
        line, key = line_of(tree, loc)
        allowed = allowed_keys(model, tuple(err["loc"])) if err["type"] == "extra_forbidden" else ""
        if err["type"] == "extra_forbidden" and model is Expectation and len(err["loc"]) == 1:
            allowed = f" (assertion kinds: {', '.join(k for k in Expectation.model_fields if k != 'within')})"
        at = f"{source}:{line}" if line else source
        problems.append(f"{at}: {key}: {describe_error(err)}{allowed}")
    return problems


def _unknown_services(tree: Any, steps: list[Step], services: set[str], source: str) -> list[str]:
    """Every ``service:`` a step names must be declared in devbox.yaml."""
    problems = []
    known = ", ".join(sorted(services)) or "none"
    for i, step in enumerate(steps):
        for path, name in _service_names(step.args):
            if name not in services and name != "*":
                line, key = line_of(tree, ("steps", i, step.kind, *path))
                at = f"{source}:{line}" if line else source
                problems.append(f"{at}: {key}: unknown service {name!r} (services in devbox.yaml: {known})")
    return problems


def _service_names(obj: Any, path: tuple[int | str, ...] = ()) -> Iterable[tuple[tuple[int | str, ...], str]]:
    if isinstance(obj, Expectation):
        yield from _service_names(obj.body, (*path, obj.kind))
        return
    if not isinstance(obj, BaseModel):
        return
    for field in type(obj).model_fields:
        value = getattr(obj, field)
        if field in ("service", "caller") and isinstance(value, str):
            yield (*path, field), value
        elif field in ("services",) and isinstance(value, list):
            for j, name in enumerate(value):
                if isinstance(name, str):
                    yield (*path, field, j), name
        elif field == "overrides" and isinstance(value, dict):
            for name in value:
                yield (*path, field, name), name
        elif field == "edges" and isinstance(value, list):
            for j, edge in enumerate(value):
                for name in edge:
                    yield (*path, field, j), name
        elif isinstance(value, BaseModel):
            yield from _service_names(value, (*path, field))
        elif isinstance(value, list):
            for j, item in enumerate(value):
                yield from _service_names(item, (*path, field, j))
