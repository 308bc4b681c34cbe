"""Process runner: starts one instance as a subprocess in its own process group.

Each instance runs ``/bin/sh -c <start>`` in a new session (so its process group is its own and
Ctrl-C in the terminal reaches only devbox, which then stops every group it started). stdout and
stderr go, interleaved, to the instance's log file. Stopping signals the whole group, so a
start.sh that forks its server leaves nothing behind.

LIMITATIONS: POSIX only; a process that leaves its group (setsid again) escapes the stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

LOG = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec function asking Linux to SIGKILL the child if devbox itself dies (even by SIGKILL).

    Only the direct child gets it, which is why start scripts should ``exec`` their server; the
    normal stop path signals the whole process group anyway. Used only where util-linux's
    ``setpriv`` is missing or fails (:func:`death_wrapper`): a preexec function makes Python fork() the
    whole multi-threaded platform and run Python code in the child before exec, with gRPC's fork
    handlers around it; a fork-unsafe moment there crashes the instance before it starts (seen
    once in CI: a shop instance exited with SIGSEGV, -11, before its first line).
    """
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)

    return preexec


@functools.cache
def death_wrapper() -> tuple[str, ...]:
    """``setpriv --pdeathsig KILL --``: the parent-death signal set by a program that execs the
    instance's shell, so Python spawns it without a preexec function (vfork and exec: no Python code
    and no fork handlers run in a copy of the platform). Tried once a process, by the first spawn
    (~3 ms; a util-linux older than 2.33 has setpriv without ``--pdeathsig``); empty off Linux,
    without setpriv, or where it failed, and then :func:`_die_with_parent` sets the signal instead."""
    setpriv = shutil.which("setpriv") if sys.platform.startswith("linux") else None
    if setpriv is None:
        return ()
    wrapper = (setpriv, "--pdeathsig", "KILL", "--")
    try:
        works = subprocess.run([*wrapper, "/bin/sh", "-c", "exit 0"], stdin=subprocess.DEVNULL,
                               capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        works = False
    if not works:
        LOG.info("%s does not run a command with --pdeathsig: instances get the signal from a preexec function",
                 setpriv)
        return ()
    return wrapper


#: A command with no shell syntax: words of paths, options and values (``./start.sh``, ``python3 app.py --port 80``).
_SIMPLE_COMMAND = re.compile(r"[\w./@%+=:,-]+(?:[ \t]+[\w./@%+=:,-]+)*")


#: Words a simple command may start with that only the shell runs (no program of that name for
#: ``exec``): ``exit 3`` exec'ed would fail with 127 instead of exiting 3.
SHELL_BUILTINS = frozenset({"exec", "exit", "cd", "export", "set", "unset", "ulimit", "umask", "trap", "wait",
                            "eval", ".", "source", "read", "shift", "return", "alias", "readonly", "times",
                            "break", "continue", ":"})


def shell_command(command: str) -> str:
    """What ``/bin/sh -c`` runs for ``command``: a simple command is exec'ed, so the instance is the
    shell's own process and keeps :func:`_die_with_parent`'s signal across the exec (dash forks the
    last command of ``-c``: ``./start.sh`` ran as a child of the shell and outlived a killed devbox);
    with ``exec`` in start.sh too (the convention), the server itself dies with devbox."""
    command = command.strip()
    simple = _SIMPLE_COMMAND.fullmatch(command) and command.split()[0] not in SHELL_BUILTINS
    return f"exec {command}" if simple else command


class RunningProcess:
    """One spawned instance: its pid (= process group id) and how to signal and stop it."""

    def __init__(self, proc: asyncio.subprocess.Process, log_path: Path) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.log_path = log_path
        self.started = time.monotonic()

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    async def wait(self) -> int:
        return await self.proc.wait()

    def signal(self, sig: int) -> bool:
        """Send ``sig`` to the whole process group; False when it is gone already."""
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:
            return False
        except PermissionError:
            return False
        return True

    async def stop(self, timeout: float) -> int:
        """SIGTERM the group, then SIGKILL it after ``timeout`` seconds; returns the exit code."""
        if self.proc.returncode is None:
            self.signal(signal.SIGCONT)  # a SIGSTOPped process cannot act on SIGTERM
            self.signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.shield(self.proc.wait()), timeout)
            except TimeoutError:
                LOG.warning("pid %d ignored SIGTERM for %.1fs; killing it", self.pid, timeout)
                self.signal(signal.SIGKILL)
                await self.proc.wait()
        # the leader is gone; children it left in the group get SIGKILL too
        self.signal(signal.SIGKILL)
        return self.proc.returncode  # type: ignore[return-value]

    def kill_now(self) -> None:
        """SIGKILL the group without waiting (last resort when stopping failed)."""
        if self.proc.returncode is not None:
            return  # reaped: its pid may belong to someone else by now
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGKILL)


#: An instance log larger than this is moved aside (``.log.1``) when the instance (re)starts.
MAX_LOG_BYTES = 16 * 1024 * 1024


def rotate(log_path: Path, max_bytes: int = MAX_LOG_BYTES) -> None:
    """Keep one previous generation of a big log, so a chatty instance cannot fill the disk."""
    try:
        if log_path.stat().st_size > max_bytes:
            log_path.replace(log_path.with_name(log_path.name + ".1"))
    except FileNotFoundError:
        pass


class ProcessRunner:
    """Spawns instances as local processes."""

    kind = "process"

    async def spawn(self, command: str, *, cwd: Path, env: dict[str, str], log_path: Path) -> RunningProcess:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        rotate(log_path)
        wrapper = death_wrapper()
        with log_path.open("ab") as log:
            log.write(f"--- devbox: starting {command!r} at {time.strftime('%H:%M:%S')}\n".encode())
            log.flush()
            proc = await asyncio.create_subprocess_exec(
                *wrapper,
                "/bin/sh",
                "-c",
                shell_command(command),
                cwd=str(cwd),
                env={**os.environ, **env},
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=None if wrapper else _die_with_parent(),
                # preexec_fn forces fork(); gRPC's fork handlers then restart its epoll thread in
                # the child, and closing fds before exec made ~2% of children abort (SIGABRT,
                # "epoll_wait error: Bad file descriptor"). Our fds are non-inheritable (PEP 446)
                # and gRPC's are CLOEXEC, so exec closes them anyway.
                close_fds=False,
            )
        return RunningProcess(proc, log_path)


async def run_build(command: str, *, cwd: Path, env: dict[str, str], log_path: Path, timeout: float) -> int:
    """Run a build command to completion (own process group, output to ``log_path``); its exit code.

    A build that outlives ``timeout`` is killed and reported as exit code -9.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            "/bin/sh", "-c", command, cwd=str(cwd), env={**os.environ, **env},
            stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        return await asyncio.wait_for(proc.wait(), timeout)
    except (TimeoutError, asyncio.CancelledError):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        with log_path.open("ab") as log:
            log.write(f"--- devbox: build stopped after {timeout:g}s\n".encode())
        if asyncio.current_task() and asyncio.current_task().cancelling():  # type: ignore[union-attr]
            raise
        return -9


def instance_processes(state_dir: Path, *, exclude: set[int] | None = None) -> list[int]:
    """Pids of processes started for this project's instances (found by their injected environment).

    Every instance process and its descendants inherit ``DEVBOX_INSTANCE_CONFIG`` pointing into
    ``<state_dir>/run/``; that finds even processes that left their process group, or that
    outlived a devbox killed with SIGKILL.
    """
    marker = f"DEVBOX_INSTANCE_CONFIG={state_dir.resolve() / 'run'}/".encode()
    found = []
    proc = Path("/proc")
    if not proc.is_dir():
        return []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        if pid == os.getpid() or (exclude and pid in exclude):
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if any(item.startswith(marker) for item in environ.split(b"\0")):
            found.append(pid)
    return found


def kill_leftovers(state_dir: Path) -> list[int]:
    """SIGKILL every process :func:`instance_processes` finds; the pids it signalled."""
    killed = []
    for pid in instance_processes(state_dir):
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            continue
        killed.append(pid)
    return killed
