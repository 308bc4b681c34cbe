"""uvicorn's modules without its package ``__init__`` (devbox.platform.edge.load_uvicorn): the
platform's server never loads uvicorn's command line, and code using uvicorn as usual in the same
process still finds everything the package offers."""

from __future__ import annotations

import importlib
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from devbox.platform.edge import defer_init
from tests.pyrun import python_c

LOADED = "print(sorted(m for m in ('uvicorn.main', 'click', 'watchfiles') if m in sys.modules))"


def test_the_server_and_its_config_load_without_the_command_line() -> None:
    out = python_c("import sys\n"
                   "from devbox.platform.edge import load_uvicorn\n"
                   "load_uvicorn()\n"
                   "from devbox.platform.http_server import server\n"
                   "from uvicorn import Config\n"
                   "from uvicorn.lifespan.off import LifespanOff\n"
                   "s = server(lambda scope, receive, send: None)\n"
                   "s.config.load()\n"
                   f"{LOADED}\n"
                   "print(Config is s.config.__class__, s.config.lifespan_class is LifespanOff)")
    assert out == "[]\nTrue True"


def test_the_rest_of_the_package_loads_on_first_access() -> None:
    out = python_c("import sys\n"
                   "from devbox.platform.edge import load_uvicorn\n"
                   "load_uvicorn()\n"
                   "import uvicorn\n"
                   "import uvicorn.server\n"
                   "print(uvicorn.Server is uvicorn.server.Server, callable(uvicorn.run), bool(uvicorn.__version__))\n"
                   f"{LOADED}\n"
                   "print(hasattr(uvicorn, 'no_such_name'))")
    assert out == "True True True\n['click', 'uvicorn.main', 'watchfiles']\nFalse"


def test_logging_config_runs_when_something_uses_it() -> None:
    """The platform's servers never load logging.config; code of the same process that configures
    logging with it (a test, a user's plugin) finds it as usual, in either import form."""
    out = python_c("import sys\n"
                   "from devbox.platform.edge import load_uvicorn\n"
                   "load_uvicorn()\n"
                   "from devbox.platform.http_server import server\n"
                   "server(lambda scope, receive, send: None).config.load()\n"
                   "print('dictConfig' in vars(sys.modules['logging.config']), 'logging.handlers' in sys.modules)\n"
                   "import logging, logging.config\n"
                   "logging.config.dictConfig({'version': 1, 'loggers': {'x': {'level': 'ERROR'}}})\n"
                   "from logging.config import fileConfig\n"
                   "print(logging.getLogger('x').level == logging.ERROR, callable(fileConfig))")
    assert out == "False False\nTrue True"


def test_an_imported_uvicorn_is_left_as_it_is() -> None:
    out = python_c("import sys, uvicorn\n"
                   "from devbox.platform.edge import load_uvicorn\n"
                   "load_uvicorn()\n"
                   "print(sys.modules['uvicorn'] is uvicorn, 'uvicorn.main' in sys.modules)")
    assert out == "True True"


# --- defer_init, the mechanism: a package of the test's own in tmp_path --------------------------------


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], Any]]:
    """Write a package (its ``__init__`` source) beside a ``gate`` module and register it deferred."""
    made: list[str] = []
    monkeypatch.syspath_prepend(str(tmp_path))

    def make(init: str) -> Any:
        name = f"deferred_{tmp_path.name}_{len(made)}"
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(textwrap.dedent(init))
        made.append(name)
        return defer_init(name)

    (tmp_path / f"gate_{tmp_path.name}.py").write_text(
        "import threading\nentered, release = threading.Event(), threading.Event()\nruns = []\n")
    made.append(f"gate_{tmp_path.name}")
    yield make
    for name in made:
        sys.modules.pop(name, None)


def _gate(tmp_path: Path) -> Any:
    return importlib.import_module(f"gate_{tmp_path.name}")


def _waiting_for_the_init(thread: threading.Thread) -> bool:
    """Whether ``thread`` is inside defer_init's lock (reading a name, or running the missing one)."""
    frame = sys._current_frames().get(thread.ident or -1)
    while frame is not None:
        if frame.f_code.co_name in ("complete", "__getattribute__") and frame.f_code.co_filename.endswith("edge.py"):
            return True
        frame = frame.f_back
    return False


@pytest.mark.parametrize("name", ["VALUE", "EARLY"])
def test_a_second_thread_waits_for_the_init_another_runs(package: Callable[[str], Any], tmp_path: Path,
                                                         name: str) -> None:
    """The second thread reads a name the __init__ has not made yet (VALUE), or one it has already
    made (EARLY): either way it waits until the __init__ is done."""
    gate = _gate(tmp_path)
    pkg = package(f"""
        from gate_{tmp_path.name} import entered, release
        EARLY = 42
        entered.set()
        release.wait(60)
        VALUE = 42
    """)
    got: dict[str, object] = {}

    def read(who: str) -> None:
        try:
            got[who] = getattr(pkg, name)
        except Exception as exc:
            got[who] = exc

    first = threading.Thread(target=read, args=("first",))
    first.start()
    assert gate.entered.wait(60)
    second = threading.Thread(target=read, args=("second",))
    second.start()
    deadline = time.monotonic() + 60  # until the second is waiting in the lock, or has answered
    while second.is_alive() and not _waiting_for_the_init(second) and time.monotonic() < deadline:
        time.sleep(0.001)
    answered_early = "second" in got
    gate.release.set()
    first.join(60)
    second.join(60)
    assert got == {"first": 42, "second": 42} and not answered_early


def test_the_init_sees_its_package_partly_made(package: Callable[[str], Any]) -> None:
    pkg = package("""
        import sys
        try:
            sys.modules[__name__].LATER
        except AttributeError as exc:
            EARLY = str(exc)
        LATER = 1
    """)
    assert pkg.LATER == 1
    assert "partially initialized" in pkg.EARLY


def test_an_init_that_raises_runs_again_with_the_next_access(package: Callable[[str], Any], tmp_path: Path) -> None:
    pkg = package(f"""
        from gate_{tmp_path.name} import runs
        runs.append(1)
        if len(runs) == 1:
            raise RuntimeError("the first run fails")
        VALUE = len(runs)
    """)
    with pytest.raises(RuntimeError, match="first run"):
        _ = pkg.VALUE
    assert pkg.VALUE == 2
    assert pkg.VALUE == 2 and _gate(tmp_path).runs == [1, 1]


def test_a_package_with_its_own_getattr_answers_with_it(package: Callable[[str], Any]) -> None:
    pkg = package("""
        def __getattr__(name):
            return name.upper()
    """)
    assert pkg.anything == "ANYTHING"
    assert pkg.more == "MORE"


# --- load_fastapi: the document models' rebuilds skipped, only for that module ---------------------------


def test_a_rebuild_elsewhere_meanwhile_resolves_its_own_names() -> None:
    """While the skip is in place (fastapi.openapi.models importing, on the platform's loading thread),
    any other model_rebuild() goes through and finds the forward references of its own caller."""
    from pydantic import BaseModel

    from devbox.platform.edge import _rebuilds_skipped

    with _rebuilds_skipped(BaseModel, "fastapi.openapi.models"):
        class Outer(BaseModel):
            inner: Inner | None = None  # defined below: the rebuild resolves it from this frame

        class Inner(BaseModel):
            x: int

        Outer.model_rebuild()
    assert Outer(inner={"x": 1}).inner == Inner(x=1)
    assert BaseModel.model_rebuild.__func__.__name__ == "model_rebuild"


def test_two_platforms_loading_fastapi_at_once_leave_pydantic_as_it_was() -> None:
    out = python_c("import threading\n"
                   "from pydantic import BaseModel\n"
                   "from devbox.platform.edge import load_fastapi\n"
                   "start = threading.Barrier(2)\n"
                   "def load():\n    start.wait()\n    load_fastapi()\n"
                   "threads = [threading.Thread(target=load) for _ in range(2)]\n"
                   "[t.start() for t in threads]; [t.join() for t in threads]\n"
                   "print(BaseModel.model_rebuild.__func__.__name__, BaseModel.model_config.get('defer_build'))")
    assert out == "model_rebuild None"
