"""JUnit XML for CI systems: one ``<testsuite>`` per scenario file, one ``<testcase>`` per scenario.

A failed expectation is a ``<failure>`` (message: expectation and observed values); a scenario
that could not load or start is an ``<error>``. Each case's ``<system-out>`` lists its steps and
the seed, so a run can be repeated with ``--seed``.
"""

from __future__ import annotations

import socket
import time
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

from devbox.scenario.runner import Outcome, ScenarioResult


def _file_of(source: str) -> str:
    head, sep, tail = source.rpartition(":")
    return head if sep and tail.isdigit() else source


def to_xml(results: list[ScenarioResult], *, name: str = "devbox scenarios") -> ET.Element:
    suites = ET.Element("testsuites", name=name)
    by_file: dict[str, list[ScenarioResult]] = defaultdict(list)
    for result in results:
        by_file[_file_of(result.source)].append(result)
    totals = {"tests": 0, "failures": 0, "errors": 0, "time": 0.0}
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    for source, items in by_file.items():
        failures = sum(r.outcome is Outcome.FAILED for r in items)
        errors = sum(r.outcome is Outcome.ERROR for r in items)
        seconds = sum(r.seconds for r in items)
        suite = ET.SubElement(
            suites, "testsuite", name=source, tests=str(len(items)), failures=str(failures),
            errors=str(errors), skipped="0", time=f"{seconds:.3f}", timestamp=stamp, hostname=socket.gethostname(),
        )
        for r in items:
            case = ET.SubElement(
                suite, "testcase", name=r.name, classname=Path(source).name.split(".")[0],
                file=source, time=f"{r.seconds:.3f}",
            )
            if r.outcome is Outcome.FAILED:
                ET.SubElement(case, "failure", message=r.message.splitlines()[0][:500] if r.message else "failed",
                              type="AssertionFailed").text = r.message
            elif r.outcome is Outcome.ERROR:
                ET.SubElement(case, "error", message=r.message.splitlines()[0][:500] if r.message else "error",
                              type="ScenarioError").text = r.message
            lines = [f"seed: {r.seed}"]
            if r.up_seconds is not None:
                lines.append(f"up: {r.up_seconds:.2f}s")
            lines += [f"[{s.outcome.value}] {s.where} {s.text} ({s.seconds:.2f}s) {s.message}" for s in r.steps]
            ET.SubElement(case, "system-out").text = "\n".join(lines)
        totals["tests"] += len(items)
        totals["failures"] += failures
        totals["errors"] += errors
        totals["time"] += seconds
    suites.set("tests", str(totals["tests"]))
    suites.set("failures", str(totals["failures"]))
    suites.set("errors", str(totals["errors"]))
    suites.set("time", f"{totals['time']:.3f}")
    return suites


def write(results: list[ScenarioResult], path: str | Path) -> None:
    tree = ET.ElementTree(to_xml(results))
    ET.indent(tree)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tree.write(path, encoding="utf-8", xml_declaration=True)
