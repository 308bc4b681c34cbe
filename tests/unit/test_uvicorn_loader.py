"""uvicorn's modules without its package ``__init__`` (devbox.platform.edge.load_uvicorn): the
platform's server never loads uvicorn's command line, and code using uvicorn as usual in the same
process still finds everything the package offers."""

from __future__ import annotations

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


def test_an_imported_uvicorn_is_left_as_it_is() -> None:
    out = python_c("import sys, uvicorn\n"
                   "from devbox.platform.edge import load_uvicorn\n"
                   "load_uvicorn()\n"
                   "print(sys.modules['uvicorn'] is uvicorn, 'uvicorn.main' in sys.modules)")
    assert out == "True True"
