"""JUnit XML from scenario results: one testsuite per file, failures vs errors, steps in system-out."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from devbox.scenario.junit import to_xml
from devbox.scenario.runner import Outcome, ScenarioResult, StepRecord


def test_suites_cases_failures_and_errors() -> None:
    results = [
        ScenarioResult("ok", "a.scenario.yaml:1", Outcome.PASSED, 1.5, 7,
                       steps=[StepRecord("a.scenario.yaml:4", "up", 1.0, Outcome.PASSED)], up_seconds=1.0),
        ScenarioResult("broken", "a.scenario.yaml:9", Outcome.FAILED, 2.0, 8,
                       "a.scenario.yaml:12: expect failover: expected <= 0 errors; observed 3/10 failed"),
        ScenarioResult("typo", "b.scenario.yaml", Outcome.ERROR, 0.0, 9, "b.scenario.yaml:3: unknown step kind"),
    ]
    root = ET.fromstring(ET.tostring(to_xml(results)))
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("3", "1", "1")
    suites = {s.get("name"): s for s in root.iter("testsuite")}
    assert set(suites) == {"a.scenario.yaml", "b.scenario.yaml"}
    assert suites["a.scenario.yaml"].get("tests") == "2"
    cases = {c.get("name"): c for c in root.iter("testcase")}
    failure = cases["broken"].find("failure")
    assert failure is not None and "observed 3/10 failed" in (failure.get("message") or "")
    assert cases["typo"].find("error") is not None and cases["typo"].find("failure") is None
    out = cases["ok"].findtext("system-out") or ""
    assert "seed: 7" in out and "up: 1.00s" in out and "[passed] a.scenario.yaml:4 up" in out
