"""Instance logs over HTTP: ``GET /api/deploy/logs`` reads ``<state>/logs/<service>/<instance>.log``.

The files are the ones ``devbox logs`` tails (each instance's stdout/stderr, written by the
runner); this is the same view for the dashboard and scripts:

- ``service``, ``instance`` — which files (no service: every service, for a trace id search);
  ``instance=build`` is the service's last build output;
- ``q`` (substring, case-insensitive), ``trace_id`` (16 or 32 hex digits) — which lines;
- ``since``/``until`` (epoch seconds) — lines stamped in that window (the SDK's request log starts
  each line with ``ts=...Z``; an unstamped line, e.g. a traceback, takes the stamp before it);
- ``limit`` — the newest ``limit`` matching lines (at most :data:`MAX_LIMIT`);
- follow: every answer carries a ``cursor`` (byte offsets per file); asking again with
  ``after=<cursor>`` returns only lines written since, and ``wait=<s>`` long-polls until there
  are some or the wait ends.

Files are read on a worker thread, never more than :data:`MAX_SCAN_BYTES` from the end of a file
(or :data:`MAX_FOLLOW_BYTES` past a cursor), and a line is cut at :data:`MAX_LINE_CHARS`; bad input
is a 400 saying which parameter and why.

LIMITATIONS: rotated files (``.log.1``) are not read; a search sees only the newest
:data:`MAX_SCAN_BYTES` of each file.
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Query

from devbox.platform.errors import BadRequest, NotFound

LOG = logging.getLogger(__name__)

MAX_LIMIT = 2000
MAX_SCAN_BYTES = 4 * 1024 * 1024
MAX_FOLLOW_BYTES = 1024 * 1024
MAX_LINE_CHARS = 8 * 1024
MAX_WAIT_S = 25.0
POLL_S = 0.25
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,99}$")
TRACE_ID = re.compile(r"^(?:[0-9a-f]{16}|[0-9a-f]{32})$")
#: ``ts=2026-05-01T10:00:00.123Z`` (the SDK's logfmt) or a leading ISO timestamp.
STAMP = re.compile(r"^(?:ts=)?(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:?\d\d)?")
LINE_TRACE = re.compile(r"trace_id=([0-9a-f]{16,32})")


def line_time(line: str) -> float | None:
    """Epoch seconds of a line's leading timestamp (UTC unless it names an offset), else None."""
    m = STAMP.match(line)
    if not m:
        return None
    try:
        base = calendar.timegm(time.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return None
    frac = float(m.group(2)) if m.group(2) else 0.0
    zone = m.group(3) or "Z"
    if zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        digits = zone[1:].replace(":", "")
        base -= sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60)
    return base + frac


@dataclass(frozen=True)
class LogQuery:
    """Which lines: every filter of the request, checked once."""

    q: str | None = None
    trace_id: str | None = None
    since: float | None = None
    until: float | None = None

    def matches(self, line: str, stamp: float | None) -> bool:
        if self.trace_id is not None and self.trace_id not in line.lower():
            return False
        if self.q is not None and self.q not in line.lower():
            return False
        if self.since is not None and (stamp is None or stamp < self.since):
            return False
        return not (self.until is not None and (stamp is None or stamp > self.until))


def _decode_lines(data: bytes, start: int) -> list[tuple[int, str]]:
    """(end offset, text) of each complete line in ``data`` read at byte ``start``."""
    out: list[tuple[int, str]] = []
    pos = 0
    while True:
        nl = data.find(b"\n", pos)
        if nl < 0:
            return out
        text = data[pos:nl].decode("utf-8", "replace").rstrip("\r")
        out.append((start + nl + 1, text[:MAX_LINE_CHARS]))
        pos = nl + 1


def _read(path: Path, start: int | None, max_bytes: int) -> tuple[list[tuple[int, str]], int, bool]:
    """Complete lines of ``path`` from byte ``start`` (None: the last ``max_bytes``), the offset to
    continue from (a trailing partial line is read again next time) and whether older bytes were skipped."""
    try:
        with path.open("rb") as fh:
            size = fh.seek(0, 2)
            if start is None:
                begin = max(0, size - max_bytes)
            else:
                begin = 0 if start > size else start  # smaller than the cursor: rotated, read it anew
            end = min(size, begin + max_bytes)
            fh.seek(begin)
            data = fh.read(end - begin)
    except OSError:
        return [], start or 0, False
    lines = _decode_lines(data, begin)
    cut = start is None and begin > 0
    if cut:
        lines = lines[1:]  # read from the middle of a file: the first line is the tail of one
    if lines:
        return lines, lines[-1][0], cut
    # no newline in max_bytes: skip that much rather than re-read the same giant line forever
    return lines, end if end - begin >= max_bytes else begin, cut


class LogsApi:
    """The ``/api/deploy/logs`` route over one project's log folder (``<state dir>/logs``)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        #: Set when the listeners are closing: a follow that waits answers with what it has.
        self._closing = asyncio.Event()
        #: Follows waiting for new lines right now.
        self.following = 0

    def release_waits(self) -> None:
        """Answer every waiting follow now, and every later one without waiting."""
        self._closing.set()

    def router(self) -> APIRouter:
        router = APIRouter(tags=["deploy"])
        router.add_api_route("/api/deploy/logs", self.logs, methods=["GET"])
        return router

    def files(self, service: str | None, instance: str | None) -> list[tuple[str, str, Path]]:
        """(service, instance, path) of the chosen files; NotFound naming what exists."""
        if service is None:
            folders = sorted(p for p in self.root.glob("*") if p.is_dir()) if self.root.is_dir() else []
        else:
            folder = self.root / service
            if not folder.is_dir():
                known = sorted(p.name for p in self.root.glob("*") if p.is_dir()) if self.root.is_dir() else []
                raise NotFound(f"no logs for service {service!r}; services with logs: {', '.join(known) or '(none)'}",
                               code="no logs")
            folders = [folder]
        out = []
        for folder in folders:
            for path in sorted(folder.glob("*.log")):
                name = path.stem
                if (instance is None and name != "build") or name == instance:
                    out.append((folder.name, name, path))
        if instance is not None and not out:
            known = sorted(p.stem for p in folders[0].glob("*.log"))
            raise NotFound(f"no log of instance {instance!r} of {service}; instances: {', '.join(known)}",
                           code="no logs")
        return out

    async def logs(
        self,
        service: str | None = Query(None, max_length=100, description="Service name (default: every service)."),
        instance: str | None = Query(None, max_length=100, description="Instance, e.g. orders-2; 'build'."),
        q: str | None = Query(None, max_length=200, description="Substring to look for (case-insensitive)."),
        trace_id: str | None = Query(None, max_length=64, description="Only lines of this trace (hex id)."),
        since: float | None = Query(None, description="Lines stamped at or after (epoch seconds)."),
        until: float | None = Query(None, description="Lines stamped at or before (epoch seconds)."),
        limit: int = Query(200, ge=1, le=MAX_LIMIT, description="At most this many lines (the newest)."),
        after: str | None = Query(None, max_length=8192, description="A cursor from a previous answer: follow."),
        wait: float = Query(0.0, ge=0.0, le=MAX_WAIT_S, description="With after: wait this long for new lines."),
    ) -> dict[str, Any]:
        """Lines of instance logs, newest last, with a ``cursor`` to follow them."""
        for name, value in (("service", service), ("instance", instance)):
            if value is not None and not NAME.match(value):
                raise BadRequest(f"{name} {value!r} is not a service or instance name", code="bad name")
        if instance is not None and service is None:
            raise BadRequest("instance needs service (instance names are per service)", code="instance without service")
        if trace_id is not None:
            trace_id = trace_id.strip().lower()
            if not TRACE_ID.match(trace_id):
                raise BadRequest("trace_id must be 16 or 32 hex digits", code="bad trace id")
        if since is not None and until is not None and since > until:
            raise BadRequest(f"since ({since}) is after until ({until})", code="bad window")
        if q is not None and not q.strip():
            q = None
        query = LogQuery(q=q.lower() if q else None, trace_id=trace_id, since=since, until=until)
        cursor = parse_cursor(after) if after is not None else None
        if wait and cursor is None:
            raise BadRequest("wait needs after (a cursor from a previous answer)", code="wait without cursor")
        files = self.files(service, instance)
        deadline = time.monotonic() + wait
        while True:
            answer = await asyncio.to_thread(self._collect, files, query, limit, cursor)
            if answer["lines"] or time.monotonic() >= deadline or self._closing.is_set():
                return answer
            cursor = parse_cursor(answer["cursor"])
            self.following += 1
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), POLL_S)
            finally:
                self.following -= 1
            files = self.files(service, instance)  # an instance may have started meanwhile

    def _collect(self, files: list[tuple[str, str, Path]], query: LogQuery, limit: int,
                 cursor: dict[str, int] | None) -> dict[str, Any]:
        found: list[tuple[float, int, dict[str, Any]]] = []
        offsets: dict[str, int] = {}
        skipped = False
        for order, (service, instance, path) in enumerate(files):
            key = f"{service}/{instance}"
            start = None if cursor is None else cursor.get(key, 0)
            lines, offsets[key], cut = _read(path, start, MAX_SCAN_BYTES if start is None else MAX_FOLLOW_BYTES)
            skipped = skipped or cut
            stamp: float | None = None
            for end, text in lines:
                stamp = line_time(text) or stamp
                if query.matches(text, stamp):
                    m = LINE_TRACE.search(text)
                    found.append((stamp or 0.0, order, {
                        "service": service, "instance": instance, "ts": stamp, "offset": end, "line": text,
                        "trace_id": m.group(1) if m else None}))
        found.sort(key=lambda f: (f[0], f[1]))  # stable: a file's own order within one stamp
        truncated = len(found) > limit
        return {"lines": [f[2] for f in found[-limit:]], "cursor": format_cursor(offsets),
                "truncated": truncated, "scan_cut": skipped, "files": sorted(offsets)}


def format_cursor(offsets: dict[str, int]) -> str:
    return ",".join(f"{key}:{offset}" for key, offset in sorted(offsets.items()))


def parse_cursor(raw: str) -> dict[str, int]:
    """``service/instance:offset,...`` -> offsets; 400 on anything else."""
    out: dict[str, int] = {}
    for part in filter(None, raw.split(",")):
        key, sep, offset = part.rpartition(":")
        service, slash, instance = key.partition("/")
        if not (sep and slash and NAME.match(service) and NAME.match(instance) and offset.isdigit()):
            raise BadRequest(f"after: {part!r} is not service/instance:offset (pass back the cursor you got)",
                             code="bad cursor")
        out[key] = int(offset)
    return out
