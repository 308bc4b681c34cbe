"""What the process runner hands ``/bin/sh -c``: a simple command is exec'ed (the instance keeps the
die-with-devbox signal), anything with shell syntax or a shell builtin is left to the shell as
written; and what sets that signal (setpriv where it works, else a preexec function)."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from devbox.mocks.deploy import runner
from devbox.mocks.deploy.runner import shell_command


@pytest.mark.parametrize("command", ["./start.sh", " ./start.sh ", "python3 app.py --port 8080", "bin/run -v x=1"])
def test_a_simple_command_is_execed(command: str) -> None:
    assert shell_command(command) == f"exec {command.strip()}"


@pytest.mark.parametrize("command", ["cd api && ./start.sh", "./a; ./b", "./run | tee out", "FOO=$BAR ./run",
                                     "./run > log", "./run &", "exec ./start.sh", "exit 3", "cd api", ": nothing"])
def test_shell_syntax_is_left_as_written(command: str) -> None:
    assert shell_command(command) == command


def test_a_shell_builtin_runs_as_written() -> None:
    """``exit 3`` is the shell's: exec'ed, it would exit 127 ("exec: exit: not found")."""
    import subprocess

    assert subprocess.run(["/bin/sh", "-c", shell_command("exit 3")]).returncode == 3


@pytest.fixture
def fresh_probe() -> Iterator[None]:
    """death_wrapper tries setpriv once a process: again for this test, and again after it."""
    runner.death_wrapper.cache_clear()
    yield
    runner.death_wrapper.cache_clear()


@pytest.mark.usefixtures("fresh_probe")
def test_an_old_setpriv_without_pdeathsig_leaves_the_signal_to_the_preexec_function(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """util-linux before 2.33 has setpriv without --pdeathsig: instances still start (and still die
    with devbox, by the preexec function)."""
    fake = tmp_path / "setpriv"
    fake.write_text("#!/bin/sh\necho \"setpriv: unrecognized option '$1'\" >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")

    async def spawn() -> tuple[tuple[str, ...], int, str]:
        proc = await runner.ProcessRunner().spawn("echo started", cwd=tmp_path, env={}, log_path=tmp_path / "i.log")
        code = await proc.proc.wait()
        return runner.death_wrapper(), code, (tmp_path / "i.log").read_text()

    wrapper, code, log = asyncio.run(spawn())
    assert wrapper == () and code == 0 and log.endswith("started\n")


@pytest.mark.usefixtures("fresh_probe")
def test_setpriv_is_used_where_it_works() -> None:
    if shutil.which("setpriv") is None:
        pytest.skip("no setpriv on this machine (util-linux)")
    assert runner.death_wrapper()[1:] == ("--pdeathsig", "KILL", "--")
