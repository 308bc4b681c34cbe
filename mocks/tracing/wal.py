"""The span write-ahead log: raw export bodies appended in order, acknowledged once written.

An export is acknowledged after its body (decompressed, with the decoding inputs — format, arrival
time, the future-skew limit — and how many spans of it were accepted) is appended to the current
segment with one ``write`` and the write returned: from then on it is in the kernel's page cache
and survives ``kill -9`` of the platform. The indexer (:mod:`devbox.mocks.tracing.indexer`)
decodes and indexes records later and records, in the same SQLite transaction as the spans, the
position up to which it has indexed; segments wholly before that position are deleted.

Files: ``<dir>/<first record number, 16 hex>.wal``. A record is a header (:data:`HEADER`: body
length, CRC-32 of the body, format code, arrival µs, future-skew µs, accepted spans) and the body.
A torn record at the end (a crash mid-write, never acknowledged) is cut off when the log reopens.

Group fsync policy: a background thread fsyncs the segment written since the last fsync every
``fsync_interval_s`` (default 0.2 s), and a segment is fsynced before it is closed. An
acknowledged span therefore survives a process kill at once, and a power loss or kernel crash
once the next fsync ran (at most ``fsync_interval_s`` of acknowledged exports are at risk
there). ``fsync_interval_s = 0`` fsyncs before each acknowledgement (exports arriving together
share one fsync) for those who want power-loss durability at a throughput cost.

LIMITATIONS: one writer process (the platform); records larger than 2**32 - 1 bytes are refused.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

LOG = logging.getLogger(__name__)

#: body length, crc32(body), format code, arrival µs, future-skew µs, accepted spans
HEADER = struct.Struct("<IIBqqI")
SEGMENT_BYTES = 64 * 1024 * 1024

#: How the log's records are shared among the indexer's lanes (indexer.lane_of): 2, the lead's share
#: smaller; 1, even (before 2026-12-03). A store records the shares its lane positions were written
#: under (SpanStore.lane_shares).
LANE_SHARES = 2
SUFFIX = ".wal"

#: Format codes of a record's body.
OTLP_PROTOBUF, OTLP_JSON, ZIPKIN_JSON, ZIPKIN_PROTO = 1, 2, 3, 4
FORMATS = (OTLP_PROTOBUF, OTLP_JSON, ZIPKIN_JSON, ZIPKIN_PROTO)


@dataclass(frozen=True, order=True)
class Position:
    """A place in the log: a segment (named by its first byte's global offset) and an offset in it."""

    segment: int
    offset: int


@dataclass
class Record:
    fmt: int
    now_us: int
    max_future_us: int
    accepted: int
    body: bytes
    end: Position  # the position right after this record


def _segment_path(directory: Path, segment: int) -> Path:
    return directory / f"{segment:016x}{SUFFIX}"


def segments(directory: Path) -> list[int]:
    out = []
    for name in os.listdir(directory):  # not Path.glob: the indexer asks several times a second
        if name.endswith(SUFFIX):
            try:
                out.append(int(name[: -len(SUFFIX)], 16))
            except ValueError:
                continue
    return sorted(out)


def read_records(directory: Path, start: Position, *, max_bytes: int = 1 << 62) -> Iterator[Record]:
    """Whole, intact records from ``start`` on, across segments, stopping at the first torn or
    missing one (the end of what was written) or after about ``max_bytes`` of bodies."""
    seen = 0
    for seg in segments(directory):
        if seg < start.segment:
            continue
        offset = start.offset if seg == start.segment else 0
        try:
            f = open(_segment_path(directory, seg), "rb")
        except FileNotFoundError:
            continue
        with f:
            f.seek(offset)
            while True:
                head = f.read(HEADER.size)
                if len(head) < HEADER.size:
                    break
                length, crc, fmt, now_us, skew_us, accepted = HEADER.unpack(head)
                body = f.read(length)
                if len(body) < length or zlib.crc32(body) != crc or fmt not in FORMATS:
                    return  # torn tail (being written now, or cut by a crash)
                offset += HEADER.size + length
                yield Record(fmt, now_us, skew_us, accepted, body, Position(seg, offset))
                seen += length
                if seen >= max_bytes:
                    return
        # a segment is closed (a newer one exists) only after it was written whole; go on to the next


class WalWriter:
    """Appends records to the current segment; rotates at :data:`SEGMENT_BYTES`; fsyncs on a timer.

    ``append`` is called on the platform loop (one ``write`` of a body already in memory; a few
    tens of µs for a typical export) and returns the position after the record.
    """

    def __init__(self, directory: Path, *, fsync_interval_s: float = 0.2) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.fsync_interval_s = fsync_interval_s
        self._lock = threading.Lock()
        self._dirty = False
        self._closed = threading.Event()
        existing = segments(directory)
        if existing:
            seg = existing[-1]
            end = self._valid_end(seg)
            self._fd = os.open(_segment_path(directory, seg), os.O_WRONLY)
            os.ftruncate(self._fd, end)  # cut a torn tail: it was never acknowledged
        else:
            seg, end = 0, 0
            self._fd = os.open(_segment_path(directory, seg), os.O_WRONLY | os.O_CREAT, 0o644)
        os.lseek(self._fd, end, os.SEEK_SET)
        self._segment, self._offset = seg, end
        self._syncer: threading.Thread | None = None
        if fsync_interval_s > 0:
            self._syncer = threading.Thread(target=self._sync_loop, name="tracing-wal-fsync", daemon=True)
            self._syncer.start()

    def _valid_end(self, seg: int) -> int:
        end = 0
        for rec in read_records(self.directory, Position(seg, 0)):
            if rec.end.segment != seg:
                break
            end = rec.end.offset
        return end

    @property
    def position(self) -> Position:
        """The end of what was appended (and acknowledged)."""
        return Position(self._segment, self._offset)

    def rotates_at(self, size: int) -> bool:
        """Whether appending a ``size``-byte body closes the current segment first (with an fsync:
        the platform then appends on a thread rather than on its loop)."""
        return bool(self._offset) and self._offset + HEADER.size + size > SEGMENT_BYTES

    def append(self, fmt: int, body: bytes, *, now_us: int, max_future_us: int, accepted: int) -> Position:
        header = HEADER.pack(len(body), zlib.crc32(body), fmt, now_us, max_future_us, accepted)
        with self._lock:
            if self._offset and self._offset + len(header) + len(body) > SEGMENT_BYTES:
                self._rotate()
            data = header + body if len(body) < 65536 else None
            try:
                if data is not None:
                    written = os.write(self._fd, data)
                    if written != len(data):
                        self._write_rest(data, written)
                else:  # no copy of a big body: two writes, the record counts only once both are whole
                    self._write_rest(header, 0)
                    self._write_rest(body, 0)
            except OSError:
                # a write cut short (a full disk): the part written would hide every later record
                # from the reader (it stops at a torn one), so the segment is cut back to the last
                # whole record before the error goes up (the export is not acknowledged)
                os.ftruncate(self._fd, self._offset)
                os.lseek(self._fd, self._offset, os.SEEK_SET)
                raise
            self._offset += len(header) + len(body)
            self._dirty = True
            if self.fsync_interval_s <= 0:
                os.fsync(self._fd)
                self._dirty = False
            return Position(self._segment, self._offset)

    def _write_rest(self, data: bytes, done: int) -> None:
        view = memoryview(data)
        while done < len(data):
            done += os.write(self._fd, view[done:])

    def _rotate(self) -> None:
        os.fsync(self._fd)
        os.close(self._fd)
        self._segment += self._offset
        self._offset = 0
        self._fd = os.open(_segment_path(self.directory, self._segment), os.O_WRONLY | os.O_CREAT, 0o644)
        self._dirty = False
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def _sync_loop(self) -> None:
        while not self._closed.wait(self.fsync_interval_s):
            self.sync()

    def sync(self) -> None:
        with self._lock:
            if not self._dirty:
                return
            fd = os.dup(self._fd)
            self._dirty = False
        try:  # fsync outside the lock: appends go on meanwhile
            os.fsync(fd)
        finally:
            os.close(fd)

    def close(self) -> None:
        self._closed.set()
        if self._syncer is not None:
            self._syncer.join(timeout=5)
        with self._lock:
            os.fsync(self._fd)
            os.close(self._fd)


def delete_before(directory: Path, position: Position) -> int:
    """Delete the segments that end at or before ``position`` (wholly indexed); returns how many."""
    gone = 0
    for seg in segments(directory):
        if seg < position.segment:
            _segment_path(directory, seg).unlink(missing_ok=True)
            gone += 1
    return gone
