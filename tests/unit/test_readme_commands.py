"""Every `devbox ...` command the README shows exists, with the flags it is shown with: each one's
`--help` is asked of the real CLI (in-process) and must list every `--flag` of the README's line.
(tests/e2e/test_load_cli.py runs the load section's commands for real; this catches the rest.)"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from devbox.cli import build_app

README = Path(__file__).resolve().parents[2] / "README.md"


def _commands() -> list[str]:
    found: list[str] = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), re.S):
        for line in block.splitlines():
            line = re.sub(r"\s#\s.*$", "", line).strip()  # a trailing comment
            for part in line.split(";"):
                part = part.strip()
                if part.startswith("devbox ") and "$(" not in part:
                    found.append(part)
    return found


def _path_and_flags(command: str) -> tuple[list[str], list[str]]:
    """The words naming the (sub)command, and the --flags given."""
    words = shlex.split(command)[1:]
    path: list[str] = []
    for word in words:
        if word.startswith("-") or not re.fullmatch(r"[a-z][a-z-]*", word):
            break
        path.append(word)
    return path, [w.split("=")[0] for w in words if w.startswith("--")]


COMMANDS = _commands()


def test_the_readme_shows_commands() -> None:
    assert len(COMMANDS) > 30
    assert any(c.startswith("devbox explain request") for c in COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_a_readme_command_exists_with_its_flags(command: str) -> None:
    path, flags = _path_and_flags(command)
    app = build_app()
    # the longest prefix of the words that is a command (the rest are arguments: `naming show users`)
    for n in range(len(path), 0, -1):
        result = CliRunner().invoke(app, [*path[:n], "--help"], env={"COLUMNS": "200"})
        if result.exit_code == 0 and "Usage:" in result.output:
            break
    else:
        pytest.fail(f"{command!r}: no such command")
    if n < len(path):  # words left over are arguments only when the command takes some (not a misspelt subcommand)
        assert "Arguments" in result.output, f"{command!r}: `devbox {' '.join(path[:n])}` has no {path[n]!r}"
    missing = [f for f in flags if f not in result.output]
    assert not missing, f"{command!r}: `devbox {' '.join(path[:n])}` has no {missing}"
