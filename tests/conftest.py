"""Suite-wide set-up: the e2e mark for everything under tests/e2e, and the shop built once.

Every test under tests/e2e drives the real CLI as subprocesses, each of which imports the CLI:
they are marked ``e2e`` here (a new file cannot forget it), and ``make test-quick`` leaves them out.

Several modules deploy the shop from the repository's own scenarios/shop (test_shop,
test_load_shop, the shop scenario suite), and its build steps write generated gRPC code into that
tree. On a fresh clone two workers would run those builds at once, and one service could import a
file the other is still writing. The controller runs them once, before any worker starts; the
builds skip themselves when their output is newer than the .proto, so the workers' builds are then
no-ops.
"""

from __future__ import annotations

import logging
import signal
import subprocess
from pathlib import Path

import pytest
import yaml

LOG = logging.getLogger(__name__)

# A suite started as a background job of a shell without job control (`make test &`, some CI runners)
# inherits SIGINT ignored, and every CLI a test starts would too: the tests that press Ctrl-C on
# `devbox load`, `logs --follow` or `snapshot load` then wait forever. A handler here is reset to the
# default in the children at exec, as a terminal gives them.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

SHOP = Path(__file__).resolve().parents[1] / "scenarios" / "shop"


def _build_shop_once() -> None:
    services = yaml.safe_load((SHOP / "devbox.yaml").read_text()).get("services") or []
    for svc in services:
        if not svc.get("build"):
            continue
        done = subprocess.run(svc["build"], shell=True, cwd=SHOP / svc.get("path", svc["name"]),
                              capture_output=True, text=True, timeout=300)
        if done.returncode != 0:  # the tests that deploy the shop will report it with the build's log
            LOG.warning("building shop service %s failed: %s", svc["name"], done.stderr[-2000:])


E2E = Path(__file__).resolve().parent / "e2e"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(E2E):
            item.add_marker(pytest.mark.e2e)
    # Modules with slow or e2e tests first (order kept within a module), the longest of all (LONGEST,
    # measured) before them: xdist's loadscope hands out scopes (modules, classes) in this order, and a
    # minutes-long test started last is the whole run's tail.
    long_modules = {item.path for item in items if item.get_closest_marker("slow") or item.get_closest_marker("e2e")}
    items.sort(key=lambda item: (_longest_rank(item.nodeid), item.path not in long_modules))


#: The scopes that take longest (a minute or more on a busy 2-core runner), longest first.
LONGEST = (
    "tests/e2e/test_scenario_cli.py::TestShopSuiteFirstHalf",
    "tests/e2e/test_scenario_cli.py::TestShopSuiteSecondHalf",
    "tests/e2e/test_load_cli.py",
    "tests/integration/test_export_compose.py",
    "tests/integration/test_docker_shop.py",
    "tests/e2e/test_readme_as_written.py",
    "tests/e2e/test_budget_shop.py",
    "tests/e2e/test_tour.py",
)


def _longest_rank(nodeid: str) -> int:
    return next((rank for rank, scope in enumerate(LONGEST) if nodeid.startswith(scope + "::")), len(LONGEST))


def pytest_sessionstart(session: pytest.Session) -> None:
    if hasattr(session.config, "workerinput"):  # an xdist worker: the controller has built it
        return
    if (SHOP / "devbox.yaml").is_file():
        _build_shop_once()
