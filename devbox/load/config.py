"""The ``load:`` section of devbox.yaml: what ``devbox load`` (and a scenario's ``load`` step) does
when no flag says otherwise.

It is a project-level section (registered in :mod:`devbox.assembly`), not a component's: load runs
outside the platform, as Locust subprocesses. A bad value is reported like every other key of
devbox.yaml, with file, line and key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from devbox.mocks.alerting.config import parse_duration


class LoadError(Exception):
    """A run cannot start or its output cannot be read; the message is for the user. Defined here,
    with the section it resolves, so reading devbox.yaml does not import the Locust glue."""


class LoadConfig(BaseModel):
    """Defaults of a load run: the locustfile, how much load, against which service, which tasks."""

    model_config = ConfigDict(extra="forbid")

    locustfile: str | None = Field(
        None, description="Locustfile, relative to devbox.yaml (default: loadtests/<project>.py nearby)."
    )
    # no default: a project's entry service is its own (the shop's is gateway, another's is not)
    target: str | None = Field(None, min_length=1, description="Service the load goes to (its entry port, "
                               "else an instance from naming); required unless --target gives it.")
    users: int = Field(10, ge=1, le=100_000, description="Concurrent users.")
    spawn_rate: float = Field(10.0, gt=0, le=10_000, description="Users started per second.")
    time: float = Field(30.0, gt=0, le=86_400, description="How long a run lasts: 30s, 2m, or seconds.")
    tags: list[str] = Field(default_factory=list, description="Only the locustfile's tasks with these tags.")
    exclude_tags: list[str] = Field(default_factory=list, description="Leave out tasks with these tags.")

    @field_validator("time", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float:
        return float(parse_duration(value))

    def locustfile_path(self, root: Path) -> Path | None:
        """The configured locustfile resolved against the project folder, if one is configured."""
        return (root / self.locustfile).resolve() if self.locustfile else None


def require_target(given: str | None, configured: LoadConfig | None) -> str:
    """The service a run loads: ``given`` (a flag, a scenario step), else ``load.target``; LoadError
    saying how to name one when neither does."""
    target = given or (configured.target if configured is not None else None)
    if not target:
        raise LoadError("no target service: pass --target SERVICE (a scenario step: service:) or set "
                        "load.target in devbox.yaml — the service whose entry the locustfile calls")
    return target


#: Where locustfiles live by convention, in the project folder or a folder above it.
LOADTESTS = "loadtests"


def find_locustfile(given: str | Path | None, root: Path, project: str, configured: LoadConfig | None = None) -> Path:
    """The locustfile of a run: ``given`` (a flag or a scenario step), else the ``load:`` section's,
    else ``loadtests/<project>.py`` (or the only ``loadtests/*.py``) in the project folder or up to
    three folders above it. LoadError when there is none."""
    if given:
        return Path(given).resolve()
    if configured is not None and configured.locustfile:
        path = configured.locustfile_path(root)
        assert path is not None
        if not path.is_file():
            raise LoadError(f"load.locustfile {configured.locustfile} of devbox.yaml: {path} does not exist")
        return path
    for folder in [root, *list(root.parents)[:3]]:
        tests = folder / LOADTESTS
        if (tests / f"{project}.py").is_file():
            return (tests / f"{project}.py").resolve()
        found = sorted(tests.glob("*.py")) if tests.is_dir() else []
        if len(found) == 1:
            return found[0].resolve()
    raise LoadError(f"no locustfile: pass --locustfile FILE, set load.locustfile in devbox.yaml or add "
                    f"{LOADTESTS}/{project or '<name>'}.py")
