"""Worker processes of the trace collector, started as ``python -m devbox.mocks.tracing.indexer``.

Why not ``multiprocessing`` (spawn or forkserver): both re-run the embedding program's main module
in the child, so a user script that starts devbox's platform without an
``if __name__ == "__main__":`` guard would start a platform in every worker, recursively. A plain
subprocess of a module runs only that module; fork is not an option either (the platform has
threads and an event loop).

The two ends talk over the child's stdin/stdout with :mod:`multiprocessing.connection` framing
(length-prefixed pickles); the child points its fd 1 at stderr first, so a stray ``print`` in a
library cannot corrupt the stream. The child exits when its stdin closes — also when the platform
was killed, so an orphan never keeps working.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # multiprocessing loads with the first child, not with the platform
    from multiprocessing.connection import Connection

LOG = logging.getLogger(__name__)

MODULE = "devbox.mocks.tracing.indexer"


class Duplex:
    """One end of the pipe pair: ``send``, ``recv``, ``poll`` (as a ``multiprocessing`` Pipe end)."""

    def __init__(self, read_fd: int, write_fd: int) -> None:
        from multiprocessing.connection import Connection

        self._in = Connection(read_fd, writable=False)
        self._out = Connection(write_fd, readable=False)

    @property
    def reader(self) -> Connection:
        """The end this side reads (for :func:`multiprocessing.connection.wait`)."""
        return self._in

    def send(self, obj: Any) -> None:
        self._out.send(obj)

    def recv(self) -> Any:
        return self._in.recv()

    def send_bytes(self, data: bytes) -> None:
        """Raw bytes, not pickled (no copy of a big body; the write releases the GIL)."""
        self._out.send_bytes(data)

    def recv_bytes(self) -> bytes:
        return self._in.recv_bytes()

    def poll(self, timeout: float | None = 0.0) -> bool:
        return self._in.poll(timeout)

    def close_output(self) -> None:
        """Close the end this side writes: the other side reads EOF (a child exits on it). The end
        this side reads stays open for a thread that may be reading it; that thread closes it."""
        try:
            self._out.close()
        except OSError:
            pass

    def close(self) -> None:
        for conn in (self._out, self._in):
            try:
                conn.close()
            except OSError:
                pass


def start(mode: str, pass_fds: tuple[int, ...] = ()) -> tuple[subprocess.Popen[bytes], Duplex]:
    """Start ``python -m devbox.mocks.tracing.indexer <mode>`` (with ``pass_fds`` open in it, at the same
    numbers); returns it and the platform's end."""
    proc = subprocess.Popen([sys.executable, "-m", MODULE, mode], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            close_fds=True, pass_fds=pass_fds)
    assert proc.stdin is not None and proc.stdout is not None
    # the Connections own the fds from here on: detach them from the Popen file objects
    write_fd, read_fd = os.dup(proc.stdin.fileno()), os.dup(proc.stdout.fileno())
    proc.stdin.close()
    proc.stdout.close()
    proc.stdin = proc.stdout = None
    return proc, Duplex(read_fd, write_fd)


def child_end() -> Duplex:
    """In the child: the pipe to the platform (stdin/stdout), with fd 1 moved to stderr."""
    write_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return Duplex(os.dup(0), write_fd)
