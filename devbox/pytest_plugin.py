"""pytest plugin: fixtures that give a test a running devbox platform.

``devbox_platform`` is a factory: ``p = devbox_platform()`` starts a platform on ephemeral ports
with state in a temporary folder (pass ``config=`` or overrides such as ``services=[...]``); every
platform it started is stopped when the test ends.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from devbox.testing import PlatformThread, running_platform

#: ``*.scenario.yaml`` files as test items, and the devbox_scenario/devbox_system/... fixtures.
pytest_plugins = ["devbox.scenario.pytest_collect"]


@pytest.fixture
def devbox_platform(tmp_path: Path) -> Iterator[Callable[..., PlatformThread]]:
    with contextlib.ExitStack() as stack:

        def start(**kwargs: Any) -> PlatformThread:
            if "config" not in kwargs:
                kwargs.setdefault("root", tmp_path)
            return stack.enter_context(running_platform(**kwargs))

        yield start
