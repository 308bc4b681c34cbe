"""What a scenario run does with its evidence (kept apart so the runner imports nothing heavy)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class EvidenceOptions:
    """What ``devbox scenario run`` was asked to do with each run's evidence."""

    #: Compare with this snapshot (``--baseline``).
    baseline: Path | None = None
    #: Save the run's evidence here (``--snapshot``).
    save: Path | None = None

    def wanted(self, budgets: list[str]) -> bool:
        return bool(budgets or self.baseline or self.save)
