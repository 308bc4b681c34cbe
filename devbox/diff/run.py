"""A scenario run's evidence step: after the steps pass, read the run's evidence from its platform,
save it as a snapshot when asked, check the scenario's budgets (against a baseline snapshot for
regressions), and say what changed from the baseline.

The scenario runner calls :func:`check_run` with the session's API address; it returns whether the
run kept its budgets and one text for the report.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from devbox.diff.budget import check_all
from devbox.diff.core import diff
from devbox.diff.options import EvidenceOptions
from devbox.diff.profile import profile
from devbox.snapshot.collect import Platform, collect
from devbox.snapshot.format import read, write

LOG = logging.getLogger(__name__)


@dataclass
class RunCheck:
    ok: bool
    text: str
    lines: list[str]


def check_run(api: str, name: str, budgets: list[str], options: EvidenceOptions) -> RunCheck:
    """Read the run's evidence (since its platform came up), save/compare/check it."""
    ev = collect(Platform(api), name=name, with_metrics=options.save is not None, settle=True)
    lines: list[str] = []
    if options.save is not None:
        write(options.save, ev)
        lines.append(f"evidence saved to {options.save}")
    run = profile(ev)
    base = profile(read(options.baseline)) if options.baseline is not None else None
    results = check_all(budgets, run, base)
    broken = [r for r in results if not r.ok]
    for r in results:
        lines.append(f"{'ok' if r.ok else 'BROKEN'}: {r.budget.text}: {r.reason}")
    if base is not None:
        found = diff(base, run)
        lines.append(f"{len(found.findings)} difference(s) from baseline {options.baseline}"
                     + (":" if found.findings else ""))
        lines.extend(f"  {f.text}" for f in found.findings)
    if broken:
        text = "; ".join(f"{r.budget.text}: {r.reason}" for r in broken)
        return RunCheck(False, f"budget broken: {text}", lines)
    summary = f"{len(results)} budget(s) kept" if results else "evidence read"
    return RunCheck(True, summary, lines)
