"""Corrupted state files (issue 14, §3 item 8): ``devbox up`` names the file, says what is wrong
and what to do, and does not claim to be up; nothing silently starts empty."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

YAML = ("project: broken\nplatform:\n"
        "  ports: {api: 0, polaris_http: 0, polaris_grpc: 0, prometheus: 0, alertmanager: 0}\n")


def _up(root: Path, components: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "XDG_CACHE_HOME": str(root / "cache"), "COLUMNS": "1000"}  # no wrapped file names
    return subprocess.run(
        [sys.executable, "-m", "devbox", "up", "-f", str(root / "devbox.yaml"), "--components", components],
        cwd=root, env=env, capture_output=True, text=True, timeout=60,
    )


@pytest.mark.parametrize(("file", "content", "components", "problem"), [
    ("naming.db", b"this is not a database, just garbage " * 200, "naming", "not a usable SQLite database"),
    ("alerting.db", b"", "metrics,alerting", "empty (0 bytes)"),
])
def test_up_refuses_a_corrupt_state_file_and_says_what_to_do(
    tmp_path: Path, file: str, content: bytes, components: str, problem: str
) -> None:
    (tmp_path / "devbox.yaml").write_text(YAML)
    state = tmp_path / ".devbox"
    state.mkdir()
    (state / file).write_bytes(content)
    done = _up(tmp_path, components)
    assert done.returncode != 0
    assert "ready" not in done.stdout, done.stdout
    said = " ".join(done.stderr.split())
    assert file in said and problem in said and "move it aside" in said, said
    assert (state / file).read_bytes() == content  # left as it was, for the user to inspect
