"""httpcore loaded without trio and httpx without its command line (devbox.httpcore_loader): what a
service using the SDK and every CLI command no longer pays at start, and what must keep working — httpx
under trio, ``httpcore.TrioBackend``, an httpx a process imported before."""

from __future__ import annotations

import importlib.util

import pytest

from tests.pyrun import python_c

needs_trio = pytest.mark.skipif(importlib.util.find_spec("trio") is None, reason="trio is not installed")


@needs_trio
def test_the_sdk_and_the_cli_load_httpcore_without_trio() -> None:
    out = python_c("import sys, httpx\n"
               "import devbox.sdk.naming, devbox.cli.common\n"
               "httpx.AsyncClient(); httpx.Client()\n"
               "print('httpcore' in sys.modules, 'trio' in sys.modules)")
    assert out == "True False"


@needs_trio
def test_httpx_still_runs_under_trio_and_trio_backend_is_the_real_one() -> None:
    out = python_c(
        "import threading, http.server\n"
        "from devbox.httpcore_loader import load_httpcore\n"
        "load_httpcore()\n"
        "import httpx, httpcore, trio\n"
        "server = http.server.HTTPServer(('127.0.0.1', 0), http.server.BaseHTTPRequestHandler)\n"
        "threading.Thread(target=server.serve_forever, daemon=True).start()\n"
        "async def main():\n"
        "    async with httpx.AsyncClient() as client:\n"
        "        return (await client.get(f'http://127.0.0.1:{server.server_address[1]}/')).status_code\n"
        "print(trio.run(main), httpcore.TrioBackend.__module__)"
    )
    assert out == "501 httpcore._backends.trio"


def test_loading_twice_returns_the_same_module() -> None:
    out = python_c("from devbox.httpcore_loader import load_httpcore\n"
               "print(load_httpcore() is load_httpcore())")
    assert out == "True"


#: the SDK at import; the CLI as a command (not `up`) runs, before the command's modules import httpx
LOADERS = {
    "sdk": "import devbox.sdk.naming",
    "cli": "import contextlib, io, devbox.cli\n"
           "sys.argv = ['devbox', 'naming', 'ls', '-f', '/nonexistent/devbox.yaml']\n"
           "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()), "
           "contextlib.redirect_stderr(io.StringIO()):\n    devbox.cli.main()",
}


@pytest.mark.parametrize("loader", sorted(LOADERS))
def test_the_sdk_and_the_cli_import_httpx_without_its_command_line(loader: str) -> None:
    out = python_c(f"import sys\n{LOADERS[loader]}\nimport httpx\n"
               "print('httpx._main' in sys.modules, 'pygments' in sys.modules, callable(httpx.main),"
               " httpx.AsyncClient is not None)")
    assert out == "False False True True"


def test_devbox_up_does_not_load_httpx_before_it_needs_it() -> None:
    """`up` is the platform's process: httpx loads with its first probe, scrape or notification."""
    out = python_c("import sys\nimport devbox.cli.project\nprint('httpx' in sys.modules)")
    assert out == "False"


def test_an_httpx_imported_before_is_left_as_it_is() -> None:
    out = python_c("import sys, httpx\nfrom devbox.httpcore_loader import load_httpx\n"
               "print(load_httpx() is httpx, 'httpx._main' in sys.modules)")
    assert out == "True True"
