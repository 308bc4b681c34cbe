"""Hot reload: a watchdog observer per service folder, debounced, calling back on the loop.

Editors save in bursts (write temp file, rename, touch); changes are collected until the folder
has been quiet for ``debounce`` seconds, then one reload runs. A change during a reload queues
exactly one more. Changes under the state dir, VCS folders, caches and logs are ignored.

LIMITATIONS: relies on inotify (or watchdog's polling fallback); a network filesystem may not
report changes at all.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import ObservedWatch

LOG = logging.getLogger(__name__)

IGNORED_PARTS = frozenset({".git", ".hg", "__pycache__", ".devbox", ".pytest_cache", ".mypy_cache", ".ruff_cache",
                           "node_modules", ".venv", "venv", ".idea", ".vscode"})
#: How long a folder must be quiet after a change before the reload runs. An editor's save is a burst
#: of events within a few ms (write, rename, chmod; a save-all a few more); watchfiles, behind
#: ``uvicorn --reload``, waits for 50 ms of quiet, as this does. The wait is most of a small service's
#: reload (bench/bench_release.py: file save -> new code answering at the entry, against the bare cold
#: start): 0.3 s gave 0.45 s against 0.10 s, 0.1 s gave 0.25 s. A save slower than this (rare) costs a
#: second reload, queued behind the first.
DEBOUNCE_S = 0.05

IGNORED_SUFFIXES = (".pyc", ".pyo", ".log", ".swp", ".swx", ".tmp", "~", ".db", ".db-wal", ".db-shm")


def is_relevant(path: str, *, root: Path, ignore_dirs: list[Path], patterns: list[str]) -> bool:
    """Whether a change at ``path`` (under the watched ``root``) should trigger a reload."""
    p = Path(path)
    if any(p == d or d in p.parents for d in ignore_dirs):
        return False
    try:
        rel = p.relative_to(root)
    except ValueError:
        return False
    if any(part in IGNORED_PARTS for part in rel.parts):
        return False
    if p.name.endswith(IGNORED_SUFFIXES) or p.name.startswith(".#"):
        return False
    return not any(fnmatch.fnmatch(str(rel), pat) for pat in patterns)


class _Handler(FileSystemEventHandler):
    def __init__(self, watch: ServiceWatch) -> None:
        self.watch = watch

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return
        if event.is_directory and event.event_type == "modified":
            return
        paths = [event.src_path, getattr(event, "dest_path", "") or ""]
        for path in paths:
            if path and self.watch.relevant(str(path)):
                self.watch.poke(str(path))
                return


class ServiceWatch:
    """Debounces one service folder's changes into calls of ``on_change(paths)`` on the loop."""

    #: Whether changes in sub-folders of ``root`` count.
    recursive = True

    def __init__(self, *, key: str, root: Path, loop: asyncio.AbstractEventLoop,
                 on_change: Callable[[list[str]], Awaitable[None]], ignore_dirs: list[Path],
                 patterns: list[str], debounce: float = DEBOUNCE_S, paused: Callable[[], bool] = lambda: False) -> None:
        self.key = key
        self.root = root
        self.loop = loop
        self.on_change = on_change
        self.ignore_dirs = ignore_dirs
        self.patterns = patterns
        self.debounce = debounce
        #: True while the service builds: its build's own outputs must not trigger another reload.
        self.paused = paused
        self._changed: list[str] = []
        self._timer: asyncio.TimerHandle | None = None
        self._running: asyncio.Task[None] | None = None
        self._again = False
        self.enabled = True

    def relevant(self, path: str) -> bool:
        return is_relevant(path, root=self.root, ignore_dirs=self.ignore_dirs, patterns=self.patterns)

    def poke(self, path: str) -> None:
        """Called from watchdog's thread."""
        self.loop.call_soon_threadsafe(self._on_loop, path)

    def _on_loop(self, path: str) -> None:
        if not self.enabled or self.paused():
            return
        self._changed.append(path)
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.loop.call_later(self.debounce, self._fire)

    def _fire(self) -> None:
        self._timer = None
        if self._running is not None and not self._running.done():
            self._again = True
            return
        changed, self._changed = self._changed, []
        self._running = self.loop.create_task(self._run(changed), name=f"reload:{self.key}")

    async def _run(self, changed: list[str]) -> None:
        try:
            await self.on_change(sorted(set(changed)))
        except Exception:
            LOG.exception("reload of %s failed", self.key)
        if self._again and self.enabled:
            self._again = False
            # after this task is done: called from here, _fire saw it still running and only queued again
            self.loop.call_soon(self._fire)

    async def close(self) -> None:
        self.enabled = False
        if self._timer is not None:
            self._timer.cancel()
        if self._running is not None and not self._running.done():
            self._running.cancel()
            try:
                await self._running
            except (asyncio.CancelledError, Exception):
                pass


class FileWatch(ServiceWatch):
    """Debounces the saves of one file (e.g. devbox.yaml) into calls of ``on_change([path])``.

    Its folder is watched, not the file: editors save by writing a temporary file and renaming
    it over the old one, which a watch on the file itself would lose after the first save.
    """

    recursive = False

    def __init__(self, *, key: str, file: Path, loop: asyncio.AbstractEventLoop,
                 on_change: Callable[[list[str]], Awaitable[None]], debounce: float = DEBOUNCE_S) -> None:
        self.file = file.resolve()
        super().__init__(key=key, root=self.file.parent, loop=loop, on_change=on_change, ignore_dirs=[],
                         patterns=[], debounce=debounce)

    def relevant(self, path: str) -> bool:
        return Path(path).resolve() == self.file


class Watcher:
    """One watchdog observer thread scheduling a watch per service folder (and file)."""

    def __init__(self) -> None:
        self.observer = Observer()
        self.watches: list[ServiceWatch] = []
        #: id(watch) -> its handler and observed folder (a folder two services share is one ObservedWatch)
        self._scheduled: dict[int, tuple[_Handler, ObservedWatch]] = {}
        self.started = False

    def add(self, watch: ServiceWatch) -> None:
        """Watch ``watch.root``; may be called after :meth:`start` (then call :meth:`start` again)."""
        handler = _Handler(watch)
        self._scheduled[id(watch)] = handler, self.observer.schedule(handler, str(watch.root),
                                                                     recursive=watch.recursive)
        self.watches.append(watch)

    async def remove(self, key: str) -> None:
        """Stop the watches added under ``key`` (a service that left devbox.yaml, or is watched anew)."""
        for watch in [w for w in self.watches if w.key == key]:
            self.watches.remove(watch)
            await watch.close()
            scheduled = self._scheduled.pop(id(watch), None)
            if scheduled is not None:
                self.observer.remove_handler_for_watch(*scheduled)

    def start(self) -> None:
        """Start the observer thread once there is something to watch (again: a no-op)."""
        if self.watches and not self.started:
            self.observer.daemon = True
            self.observer.start()
            self.started = True

    async def stop(self) -> None:
        for watch in self.watches:
            await watch.close()
        if self.started:
            self.observer.stop()
            await asyncio.to_thread(self.observer.join, 5)
            self.started = False
