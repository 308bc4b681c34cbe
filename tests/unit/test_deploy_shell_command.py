"""What the process runner hands ``/bin/sh -c``: a simple command is exec'ed (the instance keeps the
die-with-devbox signal), anything with shell syntax is left to the shell as written."""

from __future__ import annotations

import pytest
from devbox.mocks.deploy.runner import shell_command


@pytest.mark.parametrize("command", ["./start.sh", " ./start.sh ", "python3 app.py --port 8080", "bin/run -v x=1"])
def test_a_simple_command_is_execed(command: str) -> None:
    assert shell_command(command) == f"exec {command.strip()}"


@pytest.mark.parametrize("command", ["cd api && ./start.sh", "./a; ./b", "./run | tee out", "FOO=$BAR ./run",
                                     "./run > log", "./run &", "exec ./start.sh"])
def test_shell_syntax_is_left_as_written(command: str) -> None:
    assert shell_command(command) == command
