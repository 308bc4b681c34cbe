"""Python code run in a fresh interpreter, for tests about what a process imports or finds at start
(``sys.modules`` and module-level state are the process's own: a test's cannot answer)."""

from __future__ import annotations

import subprocess
import sys


def python_c(code: str, *, timeout: float = 60) -> str:
    """Run ``python -c code``; its stdout, stripped. Fails the test with its stderr if it exits non-zero."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()
