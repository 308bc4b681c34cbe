"""The span WAL: records read back in order, a torn tail cut on reopen, a failed write cut back."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from devbox.mocks.tracing import wal
from devbox.mocks.tracing.wal import Position, WalWriter, read_records


def _append(writer: WalWriter, body: bytes, accepted: int = 1) -> Position:
    return writer.append(wal.OTLP_PROTOBUF, body, now_us=1, max_future_us=2, accepted=accepted)


def test_records_read_back_in_order_from_any_position(tmp_path: Path) -> None:
    writer = WalWriter(tmp_path, fsync_interval_s=0)
    ends = [_append(writer, f"body {i}".encode(), i) for i in range(5)]
    writer.close()
    assert [(r.body, r.accepted, r.end) for r in read_records(tmp_path, Position(0, 0))] == [
        (f"body {i}".encode(), i, ends[i]) for i in range(5)]
    assert [r.body for r in read_records(tmp_path, ends[2])] == [b"body 3", b"body 4"]


def test_a_torn_tail_is_cut_when_the_log_reopens(tmp_path: Path) -> None:
    writer = WalWriter(tmp_path, fsync_interval_s=0)
    end = _append(writer, b"whole")
    writer.close()
    path = tmp_path / f"{0:016x}{wal.SUFFIX}"
    with path.open("ab") as f:
        f.write(wal.HEADER.pack(100, 0, wal.OTLP_PROTOBUF, 1, 2, 1) + b"half")  # a crash mid-write
    writer = WalWriter(tmp_path, fsync_interval_s=0)
    assert writer.position == end
    _append(writer, b"after")
    writer.close()
    assert [r.body for r in read_records(tmp_path, Position(0, 0))] == [b"whole", b"after"]


def test_a_write_cut_short_by_a_full_disk_leaves_no_torn_record_before_later_ones(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    writer = WalWriter(tmp_path, fsync_interval_s=0)
    _append(writer, b"first")
    real_write = os.write
    calls = 0

    def full_disk(fd: int, data: bytes | memoryview) -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            return real_write(fd, bytes(data)[:10])  # part of the record fits
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(wal.os, "write", full_disk)
    with pytest.raises(OSError):
        _append(writer, b"refused")
    monkeypatch.setattr(wal.os, "write", real_write)
    end = _append(writer, b"later")  # space freed: the log goes on right after the last whole record
    writer.close()
    assert [r.body for r in read_records(tmp_path, Position(0, 0))] == [b"first", b"later"]
    assert [r.end for r in read_records(tmp_path, Position(0, 0))][-1] == end
