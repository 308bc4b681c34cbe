"""The scenario's ``load`` step and ``expect: {load: ...}``: validation of the YAML, the run a step
asks for (its keys, else devbox.yaml's ``load:`` section), and the pure check on a kept record."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from devbox.config import parse_config
from devbox.load.scenario import check_load, spec_of
from devbox.scenario.model import STEP_KINDS, Expectation, LoadExpect, LoadStep, json_schema

RECORD = {
    "total": {"name": "Aggregated", "requests": 300, "rps": 20.0, "failures": 3, "errors": 0.01,
              "p50": 40.0, "p95": 180.0, "p99": 420.0},
    "entries": [
        {"name": "GET /checkout/{user}", "requests": 200, "rps": 13.3, "failures": 0, "errors": 0.0,
         "p50": 50.0, "p95": 200.0, "p99": 450.0},
        {"name": "POST /orders", "requests": 100, "rps": 6.7, "failures": 3, "errors": 0.03,
         "p50": 30.0, "p95": 150.0, "p99": 300.0},
    ],
}


def test_step_and_expectation_validate() -> None:
    assert STEP_KINDS["load"] is LoadStep and "load_step" in json_schema()["$defs"]
    exp = Expectation.model_validate({"load": {"entry": "GET /checkout/{user}", "p99_ms": "<= 800", "failures": 0}})
    assert exp.kind == "load"
    assert exp.load is not None and exp.load.bounds() == {"p99_ms": ("<=", 800.0), "failures": ("<=", 0.0)}
    assert LoadExpect(rps=10, errors="< 1%").bounds() == {"errors": ("<", 0.01), "rps": (">=", 10.0)}
    with pytest.raises(ValidationError, match="is not a bound"):
        LoadExpect(p99_ms="fast")
    with pytest.raises(ValidationError, match="at least one of"):
        LoadExpect(entry="GET /products")
    with pytest.raises(ValidationError):
        LoadStep(seconds=3600)  # bounded: a scenario step never runs an open-ended load


def test_check_passes_and_fails_with_the_figures() -> None:
    ok = check_load(LoadExpect(entry="get /checkout/{user}", p99_ms="<= 800", failures=0), RECORD)
    assert ok.ok and "200 requests" in ok.message and "p99_ms 450 <= 800" in ok.message
    bad = check_load(LoadExpect(entry="POST /orders", failures=0, p99_ms=250), RECORD)
    assert not bad.ok and "failures 3 <= 0" in bad.message and "p99_ms 300 <= 250" in bad.message
    total = check_load(LoadExpect(rps=">= 25"), RECORD)
    assert not total.ok and "all entries" in total.message and "rps 20 >= 25" in total.message
    missing = check_load(LoadExpect(entry="GET /nope", failures=0), RECORD)
    assert not missing.ok and "no entry 'GET /nope'" in missing.message and "POST /orders" in missing.message
    empty = {"total": {**RECORD["total"], "requests": 0}, "entries": []}
    assert not check_load(LoadExpect(failures=0), empty).ok  # nothing measured never passes


def test_step_takes_the_project_section_for_what_it_leaves_out(tmp_path: Path) -> None:
    (tmp_path / "loadtests").mkdir()
    (tmp_path / "loadtests" / "app.py").write_text("# the project's locustfile\n")
    (tmp_path / "other.py").write_text("# another\n")
    project = parse_config("project: app\nload:\n  users: 7\n  target: orders\n  tags: [checkout]\n", root=tmp_path)
    spec = spec_of(LoadStep(seconds=5), project)
    assert (spec.locustfile, spec.users, spec.target, spec.tags, spec.seconds, spec.feature_env) == (
        (tmp_path / "loadtests" / "app.py").resolve(), 7, "orders", ["checkout"], 5.0, None)
    spec = spec_of(LoadStep(users=2, service="gateway", locustfile="other.py", tags=[], env="feature-x"), project)
    assert (spec.locustfile, spec.users, spec.target, spec.tags) == ((tmp_path / "other.py").resolve(), 2,
                                                                     "gateway", [])
    assert spec.env()["DEVBOX_LOAD_ENV"] == "feature-x"
