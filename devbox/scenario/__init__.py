"""Scenario suites: steps against a fresh platform, assertions read from the platform's stores.

From YAML: ``devbox scenario run scenarios/shop`` (or ``pytest scenarios/shop``). From Python::

    from devbox.scenario import open_session

    with open_session("scenarios/shop/devbox.yaml", seed=7) as s:
        s.do("up", services=["gateway", "users"])
        s.do("traffic", name="t", service="gateway", path="/checkout/alice", count=20)
        s.expect_routing(traffic="t", service="users", selector={"env": "base"})
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from devbox.scenario.session import AssertionFailed, Session, StepError

__all__ = ["AssertionFailed", "Session", "StepError", "open_session"]


def open_session(config: str | os.PathLike[str] | None = None, **kwargs: Any) -> Session:
    """A :class:`Session` for the project's devbox.yaml (``config``, else ./devbox.yaml)."""
    from devbox.config import load_config

    return Session(load_config(Path(config) if config else None), **kwargs)
