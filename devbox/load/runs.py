"""Every load run kept under ``.devbox/load/<run-id>/``.

A run folder holds Locust's own output (``locust_stats.csv``, ``locust_stats_history.csv``,
``locust_failures.csv``, ``report.html``, ``locust.json``, ``locust.log``; a ramp has one
``step-NN/`` folder per step) and ``run.json``: the parameters, the target, start and end times
(epoch seconds, so the traces and metrics of the run can be selected), per-entry figures, CPU
seconds per service and, for a ramp, every step. ``run.json`` is written last and atomically: a
folder without it is an unfinished run and is not listed.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from pathlib import Path
from typing import Any

RUN_FILE = "run.json"


class RunNotFound(LookupError):
    """No kept run matches; the message lists what there is."""


class RunStore:
    """The runs of one project (``<state dir>/load``)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def new_id(self, kind: str = "run") -> str:
        return time.strftime("%Y%m%d-%H%M%S") + f"-{kind}-{secrets.token_hex(2)}"

    def folder(self, run_id: str) -> Path:
        return self.root / run_id

    def create(self, kind: str = "run") -> tuple[str, Path]:
        run_id = self.new_id(kind)
        path = self.folder(run_id)
        path.mkdir(parents=True, exist_ok=False)
        return run_id, path

    def save(self, record: dict[str, Any]) -> Path:
        path = self.folder(record["id"]) / RUN_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=2, default=str))
        os.replace(tmp, path)
        return path

    def discard(self, run_id: str) -> None:
        """Remove a run folder that never got a result (nothing half-written stays)."""
        shutil.rmtree(self.folder(run_id), ignore_errors=True)

    def list(self) -> list[dict[str, Any]]:
        """Kept runs, newest first."""
        if not self.root.is_dir():
            return []
        out = []
        for child in self.root.iterdir():
            try:
                out.append(json.loads((child / RUN_FILE).read_text()))
            except (OSError, ValueError):
                continue
        out.sort(key=lambda r: r.get("started_at", 0), reverse=True)
        return out

    def load(self, ref: str | None = None, *, kind: str | None = None) -> dict[str, Any]:
        """A run by id (or unique id prefix); the newest (of ``kind``) when ``ref`` is None."""
        runs = [r for r in self.list() if kind is None or r.get("kind") == kind]
        if ref is None:
            if not runs:
                raise RunNotFound(f"no {kind or 'load'} run is kept under {self.root}; start one with `devbox load`")
            return runs[0]
        exact = [r for r in runs if r["id"] == ref]
        found = exact or [r for r in runs if r["id"].startswith(ref)]
        if len(found) == 1:
            return found[0]
        if not found:
            known = ", ".join(r["id"] for r in runs[:5]) or "(none)"
            raise RunNotFound(f"no run {ref!r} under {self.root}; newest: {known}")
        raise RunNotFound(f"{ref!r} matches {len(found)} runs: {', '.join(r['id'] for r in found[:5])}")
