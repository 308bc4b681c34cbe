"""Where rules come from: devbox.yaml's inline rules and the rule files, re-read on change.

:class:`RuleSources` reads every source and combines them into one rule set, keeping the last
good rules of a file that stopped loading (its errors are still reported); :class:`RuleWatcher`
watches the folders with watchdog and asks for one reload shortly after the last change.
Rules created through the API are not here: the service owns them (they live in alerting.db).
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import glob
import logging
import os
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from devbox.mocks.alerting.config import AlertingConfig
from devbox.mocks.alerting.models import Rule
from devbox.mocks.alerting.rules import LoadResult, load_config_file, load_file, load_tree

LOG = logging.getLogger(__name__)

#: Editors write a file more than once per save: reload once, this long after the last change.
RELOAD_DEBOUNCE = 0.2


class RuleSources:
    """The file-backed rule sources of one project and the last rules each loaded cleanly."""

    def __init__(self, config: AlertingConfig, *, root: Path, source: Path | None) -> None:
        self.config = config
        self.root = root
        #: The project's devbox.yaml, when it was read from a file.
        self.source = source
        #: Last rules that loaded cleanly, per source file (kept when the file breaks).
        self._good: dict[str, list[Rule]] = {}

    def rule_file_paths(self) -> list[Path]:
        out: list[Path] = []
        for pattern in self.config.rule_files:
            full = pattern if Path(pattern).is_absolute() else str(self.root / pattern)
            matches = sorted(glob.glob(full))
            if not matches and not glob.has_magic(pattern):
                out.append(Path(full))  # reported as unreadable: the user named a file that is not there
            out.extend(Path(m) for m in matches)
        return out

    def load(self) -> list[tuple[str, LoadResult]]:
        """Read every source (blocking file I/O: call it in a thread)."""
        results: list[tuple[str, LoadResult]] = []
        if self.source is not None and self.source.exists():
            results.append((str(self.source), load_config_file(self.source, self.source.name)))
        else:
            tree = {
                "groups": [g.model_dump(by_alias=True) for g in self.config.groups],
                "rules": [r.model_dump() for r in self.config.rules],
            }
            results.append(("<config>", load_tree(tree, "devbox.yaml")))
        for path in self.rule_file_paths():
            try:
                display = str(path.relative_to(self.root))
            except ValueError:
                display = str(path)
            results.append((str(path), load_file(path, display)))
        return results

    def combine(self, results: list[tuple[str, LoadResult]]) -> tuple[dict[str, Rule], list[str], list[str]]:
        """The rules by id, the errors and the warnings of one load; a broken file keeps its old rules."""
        errors: list[str] = []
        warnings: list[str] = []
        combined: dict[str, Rule] = {}
        live_keys = set()
        for key, result in results:
            live_keys.add(key)
            warnings.extend(result.warnings)
            if result.errors:
                errors.extend(result.errors)
                kept = self._good.get(key, [])
                if kept:
                    warnings.append(f"{key}: keeping its {len(kept)} previously loaded rules until it loads again")
            else:
                self._good[key] = result.rules
            for rule in self._good.get(key, []):
                if rule.id in combined:
                    errors.append(f"{rule.source}: rule {rule.id} is already defined at {combined[rule.id].source}")
                    continue
                combined[rule.id] = rule
        for key in list(self._good):
            if key not in live_keys:
                del self._good[key]
        return combined, errors, warnings

    def watched_dirs(self) -> tuple[set[Path], set[Path]]:
        """The folders to watch, and which of them recursively (a ``**`` pattern)."""
        dirs = set()
        if self.source is not None:
            dirs.add(self.source.parent)
        for pattern in self.config.rule_files:
            full = Path(pattern) if Path(pattern).is_absolute() else self.root / pattern
            parent = full.parent
            while glob.has_magic(str(parent)):
                parent = parent.parent
            dirs.add(parent)
        dirs = {d for d in dirs if d.is_dir()}
        recursive = {d for d in dirs if any("**" in p for p in self.config.rule_files)}
        return dirs, recursive

    def is_rule_source(self, path: str) -> bool:
        """Whether a changed file is devbox.yaml or matches a rule_files pattern (other files in the
        same folders, such as logs, must not trigger reloads)."""
        changed = str(Path(path).resolve())
        if self.source is not None and changed == str(self.source.resolve()):
            return True
        root = self.root.resolve()
        for pattern in self.config.rule_files:
            full = Path(pattern) if Path(pattern).is_absolute() else root / pattern
            if fnmatch.fnmatch(changed, str(full)):
                return True
        return False


class RuleWatcher:
    """Calls ``reload`` on the loop once after a burst of changes to any rule source."""

    def __init__(self, sources: RuleSources, reload: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        self.sources = sources
        self._reload = reload
        self._observer: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[Any] | None = None

    def start(self) -> None:
        dirs, recursive = self.sources.watched_dirs()
        if not dirs:
            return
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        self._loop = asyncio.get_running_loop()
        watcher = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: Any) -> None:
                if event.is_directory or event.event_type in ("opened", "closed_no_write"):
                    return
                paths = [event.src_path, getattr(event, "dest_path", "")]
                if any(p and watcher.sources.is_rule_source(os.fsdecode(p)) for p in paths):
                    watcher.changed()

        observer = Observer()
        for d in dirs:
            observer.schedule(Handler(), str(d), recursive=d in recursive)
        observer.daemon = True
        observer.start()
        self._observer = observer

    async def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._observer is not None:
            with contextlib.suppress(Exception):
                self._observer.stop()
                await asyncio.to_thread(self._observer.join, 2)

    def changed(self) -> None:
        """From the watchdog thread: (re)arm the debounce timer on the loop."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return

        def arm() -> None:
            if self._handle is not None:
                self._handle.cancel()
            self._handle = loop.call_later(RELOAD_DEBOUNCE, start)

        def start() -> None:
            self._task = loop.create_task(self._reload_logged(), name="alerting:reload")

        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(arm)

    async def _reload_logged(self) -> None:
        try:
            await self._reload()
        except Exception:
            LOG.exception("reloading alert rules failed")
