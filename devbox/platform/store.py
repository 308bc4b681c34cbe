"""Embedded state: one SQLite file per component under the project's state dir.

The schema is versioned with ``PRAGMA user_version``: a component passes its ordered list of
migrations and only the ones past the file's version run. WAL mode so readers never block the
writer; ``synchronous=NORMAL`` is durable across a process kill (what was committed survives
``kill -9``; only an OS crash could lose the last transactions).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

LOG = logging.getLogger(__name__)


class CorruptState(Exception):
    """A state file devbox cannot use as it is. ``str()`` names the file, says what is wrong and
    what to do; the platform refuses to start on it (it never silently starts empty)."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(
            f"{path}: {problem}. devbox will not start on it: move it aside to start fresh "
            f"(`mv {path} {path}.broken`; devbox then creates an empty one), or restore it from a copy"
        )


def open_db(path: Path, migrations: Sequence[str], *, page_size: int | None = None) -> sqlite3.Connection:
    """Open (creating) the SQLite file at ``path`` and bring its schema up to date; ``page_size``
    (bytes, a power of two) applies to a file created here (an existing file keeps its own).

    Raises :class:`CorruptState` for a file that exists but is not a usable SQLite database
    (garbage, truncated to zero bytes, a damaged schema)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.stat().st_size == 0:
        # devbox writes the header the moment it creates a file: an empty one lost its content
        # (a truncating copy, a full disk); starting on it would silently forget everything.
        raise CorruptState(path, "the file is empty (0 bytes), so what it held is gone")
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    try:
        if page_size is not None:  # before anything is written: the first write fixes it
            conn.execute(f"PRAGMA page_size={int(page_size)}")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=5000")
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # reads (and checks) the schema
        version = conn.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        conn.close()
        if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
            raise
        raise CorruptState(path, f"not a usable SQLite database ({exc})") from None
    if version > len(migrations):
        raise RuntimeError(
            f"{path} has schema version {version}, newer than this devbox knows ({len(migrations)}); "
            "upgrade devbox or remove the file"
        )
    for number, script in enumerate(migrations[version:], start=version + 1):
        LOG.info("migrating %s to schema version %d", path.name, number)
        conn.executescript(f"BEGIN;\n{script}\nPRAGMA user_version={number};\nCOMMIT;")
    return conn


class Database:
    """A component's SQLite file with a lock, so the loop and worker threads can share it."""

    def __init__(self, path: Path, migrations: Sequence[str], *, page_size: int | None = None) -> None:
        self.path = path
        self.conn = open_db(path, migrations, page_size=page_size)
        self.lock = threading.RLock()

    def close(self) -> None:
        with self.lock:
            self.conn.close()
