"""`devbox up` and `devbox status` with their plain flags run without typer (devbox.cli.PLAIN), and
`up`'s process — the platform's — without rich when its output is not a terminal: ~7 MB of every
idle platform (issue 15). Anything else still goes to typer, which explains it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from devbox.cli import fast_path
from tests.pyrun import python_c


@pytest.mark.parametrize("args", [
    ["up"], ["up", "-f", "x.yaml"], ["up", "--file=x.yaml", "--no-reload", "-v"],
    ["up", "--components", "naming,deploy"], ["up", "--components=naming"], ["status", "--json", "-f", "x.yaml"],
])
def test_plain_flags_take_the_fast_path(args: list[str]) -> None:
    assert fast_path(args) is not None


@pytest.mark.parametrize("args", [
    ["up", "-d"], ["up", "--detach"], ["up", "--help"], ["up", "-f"], ["up", "-f", "--no-reload"], ["up", "-f=x"],
    ["up", "--no-reload=1"], ["up", "--bogus"], ["status", "--no-reload"], ["down"], [],
])
def test_anything_else_goes_to_typer(args: list[str]) -> None:
    assert fast_path(args) is None


#: runs `devbox up -f CONFIG --no-reload --components naming` through devbox.cli.main, with the
#: platform's run replaced by one that reports what it was given and what the process has loaded
UP = """
import asyncio, sys
from devbox.cli import main, serve
async def fake_serve(config, lines, *, components=None):
    print(config.project, components, [s.reload for s in config.services], lines.console is None,
          'typer' in sys.modules, 'rich' in sys.modules)
    return 0
serve._serve = fake_serve
sys.argv = ['devbox', 'up', '-f', {config!r}, '--no-reload', '--components', 'naming']
main()
"""


def test_up_runs_the_platform_without_typer_or_rich(tmp_path: Path) -> None:
    config = tmp_path / "devbox.yaml"
    (tmp_path / "svc").mkdir()
    (tmp_path / "svc" / "start.sh").write_text("#!/bin/sh\nexec sleep 60\n")
    config.write_text("project: plain\nservices:\n  - name: svc\n    path: svc\n")
    out = python_c(UP.format(config=str(config)))
    assert out == "plain ['naming'] [False] True False False"


def test_ctrl_c_before_up_handles_it_exits_130_without_a_traceback() -> None:
    """A Ctrl-C while `up` still imports or reads its config (before its signal handlers): the exit
    a shell expects of an interrupted command, as typer gave, not a KeyboardInterrupt traceback."""
    code = ("import sys\nfrom devbox.cli import main, serve\n"
            "def interrupted(**kwargs):\n    raise KeyboardInterrupt\n"
            "serve.up = interrupted\nsys.argv = ['devbox', 'up']\nmain()\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr) == (130, "")
