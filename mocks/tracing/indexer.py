"""Checking exports on the request path, and indexing them from the WAL in a worker process.

Two halves:

- :func:`check` runs for each export before it is acknowledged: it undoes ``Content-Encoding``,
  reads the body and says how many spans it accepts and why it rejects the others (the answer's
  ``partial_success`` / Zipkin's 400). For OTLP protobuf — the hot path — that is a protobuf
  parse and a check of each span's ids and times, without building span objects; only a batch
  with a bad span goes through the full decoder, for the exact reasons. The full decode of the
  other formats is what the check does; the component runs big bodies in a decode process.
- :func:`run` is the indexer process (``python -m``, see :mod:`~devbox.mocks.tracing.child`): it
  follows the WAL from the position its SQLite file says it indexed up to, decodes records with
  the same time and skew as the check did (so it keeps exactly the spans that were acknowledged),
  writes them in big transactions together with the new position, deletes wholly indexed WAL
  segments, runs retention, and reports each commit to the platform over a pipe (a :class:`Report`):
  the position indexed, the span count, the services that sent spans of their own, the RPC
  counter increments of the batch (:mod:`~devbox.mocks.tracing.rpcstats`, while something listens
  to ``rpc_aggregates``) and — only while something listens to ``spans_ingested`` — the spans
  themselves (which takes OTLP protobuf off its fast path: one Span per span, pickled). With
  several lanes (``tracing.index_lanes``) it forks the others, which decode and write their share
  of the records and report to it; it reports the least position of all lanes (see :func:`run`).

:class:`IndexerProcess` is the platform's handle on that process.

LIMITATIONS: the indexer re-decodes what the check parsed (twice the protobuf parse, 1 µs a span);
lanes write one at a time (SQLite has one writer): a lane works out everything it can of its write
before it takes the lock (:meth:`SpanStore.prepare`: the rows bound, names, counts, dependency
links), so what takes turns is SQLite's insert and commit (~14 us a span of the ~35 a lane spends);
a record that cannot be decoded any more (a devbox upgrade that tightened a rule) is logged and
skipped rather than blocking the log.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import fcntl
import gc
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devbox.mocks.tracing import child, convert, rpcstats, wal
from devbox.mocks.tracing.convert import SOURCE_KEY, BadPayload, Decoded
from devbox.mocks.tracing.wal import Position

if TYPE_CHECKING:  # multiprocessing loads when the indexer first waits or forks a lane, not with the platform
    from multiprocessing.connection import Connection

LOG = logging.getLogger(__name__)

DECODERS: dict[int, Callable[..., Decoded]] = {
    wal.OTLP_PROTOBUF: convert.from_otlp_protobuf,
    wal.OTLP_JSON: convert.from_otlp_json,
    wal.ZIPKIN_JSON: convert.from_zipkin_json,
    wal.ZIPKIN_PROTO: convert.from_zipkin_proto,
}

_Z16, _Z8 = bytes(16), bytes(8)


@dataclass
class Verdict:
    """What the check made of one export: the spans it accepts and one reason per rejected span;
    ``body`` is the decompressed body when the check decompressed it (else None: the one sent)."""

    accepted: int
    rejected: list[str] = field(default_factory=list)
    body: bytes | None = None
    #: services with accepted spans of their own in it (not made by devbox's proxies): known at the
    #: acknowledgement, not once indexed (``trace: auto`` decides on it, and the index may lag by minutes)
    own: set[str] = field(default_factory=set)

    def error_message(self, limit: int = 5) -> str:
        return Decoded(rejected=self.rejected).error_message(limit)


def _otlp_protobuf(body: bytes, now_us: int, max_future_us: int) -> Verdict:
    from google.protobuf.message import DecodeError
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    try:
        req = ExportTraceServiceRequest.FromString(body)
    except DecodeError as exc:
        raise BadPayload(f"body is not an OTLP ExportTraceServiceRequest protobuf: {exc}") from None
    # The rules of convert._otlp_span on raw fields (ns times), so a good batch costs no objects.
    low = convert.MIN_START_US * 1000
    high = (now_us + max_future_us + 1) * 1000
    longest = convert.MAX_DURATION_US
    n = 0
    own: set[str] = set()
    for rs in req.resource_spans:
        service = None
        for ss in rs.scope_spans:
            spans = ss.spans
            for sp in spans:
                t, s, p = sp.trace_id, sp.span_id, sp.parent_span_id
                start, end = sp.start_time_unix_nano, sp.end_time_unix_nano
                if (len(t) == 16 and t != _Z16 and len(s) == 8 and s != _Z8 and (not p or (len(p) == 8 and p != _Z8))
                        and end and low <= start < high and 0 <= end // 1000 - start // 1000 <= longest
                        and not sp.links):
                    n += 1
                    continue
                decoded = convert.from_otlp_request(req, now_us=now_us, max_future_us=max_future_us)
                return _verdict(decoded)
            # whose spans these are, once a scope (not a span): the resource's service, if one of them is
            # its own (the first, but for devbox's proxy spans)
            if spans and service not in own:
                service = service or convert.service_of_keyvalues(rs.resource.attributes)
                if any(not any(a.key == SOURCE_KEY for a in sp.attributes) for sp in spans):
                    own.add(service)
    return Verdict(n, own=own)


def _verdict(decoded: Decoded) -> Verdict:
    return Verdict(len(decoded.spans), decoded.rejected,
                   own={s.service for s in decoded.spans if SOURCE_KEY not in s.attributes})


def check(fmt: int, body: bytes, encoding: str, limit: int, now_us: int, max_future_us: int) -> Verdict:
    """Decompress and read one export; raises :class:`BadPayload` (400) or ``TooLarge`` (413).
    Module-level and picklable: the component runs it inline or in its decode process."""
    from devbox.platform.encoding import inflate

    try:
        raw = inflate(body, encoding, limit)
    except ValueError as exc:
        raise BadPayload(str(exc)) from None
    if fmt == wal.OTLP_PROTOBUF:
        verdict = _otlp_protobuf(raw, now_us, max_future_us)
    else:
        verdict = _verdict(DECODERS[fmt](raw, now_us=now_us, max_future_us=max_future_us))
    if raw is not body:
        verdict.body = raw
    return verdict


# --- the indexer process --------------------------------------------------------------------


@dataclass
class Report:
    """What one indexer report carries besides the position and the count of spans stored (None when
    empty)."""

    spans: list[Any] | None = None
    aggregates: rpcstats.Aggregates | None = None
    own_services: set[str] | None = None
    #: spans acknowledged by the records past the position that a lane indexed already: the platform
    #: counts every record past the position as waiting in the WAL, and these as stored
    indexed_ahead: int = 0


#: The indexer's niceness (see main): below the platform and the check process when the CPU is short.
INDEXER_NICE = 5

#: How often calls waiting for their peer are re-examined while the WAL is idle.
SETTLE_EVERY_S = 0.25

#: How long the indexer waits before it looks at the WAL again when it found nothing new: doubling
#: from the minimum to the maximum while the WAL stays idle, back to the minimum when a record came.
#: The platform nudges every lane after each append (:class:`Nudge`), which ends the wait at once, so
#: the wait only bounds a nudge lost. Polling at 20 ms throughout cost an idle platform ~3 % of a core,
#: and at 0.1 s (before the nudge) still 0.45 % a lane, nearly all of it the wake-ups' own cost.
IDLE_WAIT_MIN_S, IDLE_WAIT_MAX_S = 0.02, 1.0

#: A lane nudged less than this after its last batch waits out the rest before it reads: under a
#: steady trickle of small exports (a shop under load: tens of appends a second) it then writes
#: what came meanwhile in one transaction and one report, where reading at each nudge took 1.4-2x
#: the CPU (a one-record commit and report each). After a pause a nudge is read at once.
GATHER_S = 0.05

#: The idle wait's cap where the platform cannot nudge (no eventfd: not Linux).
POLL_WITHOUT_NUDGE_S = 0.1

#: Reports a lane may hold for the lead (see :class:`_Outbox`).
LANE_OUTBOX = 8


@dataclass
class Options:
    indexed_keys: list[str]
    batch_spans: int
    retention_interval_s: float
    max_age_us: int
    max_spans: int
    #: How many processes index the WAL (see :func:`run`).
    lanes: int = 1
    #: Each lane's :class:`Nudge` (an eventfd the platform passed to the process), lane 0 first.
    nudges: list[int] = field(default_factory=list)
    #: The idle wait's bounds (see :data:`IDLE_WAIT_MIN_S`).
    idle_wait_min_s: float = IDLE_WAIT_MIN_S
    idle_wait_max_s: float = IDLE_WAIT_MAX_S


def lane_of(rec: wal.Record, lanes: int, shares: int = wal.LANE_SHARES) -> int:
    """Which lane indexes a record: a hash of its place in the log, the same in every lane. The lead
    (lane 0) gets two shares and every other lane three: besides its own records the lead reads the
    other lanes' reports and counts every lane's RPC calls (~30 % more work a span at 50k spans/s).
    With even shares (``shares=1``, before 2026-12-03) the other lanes caught up and idled while the
    lead — whose position is the least, the one the platform reports — fell behind."""
    place = hash((rec.end.segment, rec.end.offset))
    if shares == 1:
        return place % lanes
    share = place % (3 * lanes - 1)
    return 0 if share < 2 else 1 + (share - 2) // 3


def lane_indexed(rec: wal.Record, positions: Sequence[Position], shares: int = wal.LANE_SHARES) -> bool:
    """Whether the lane of a record past the least of ``positions`` (each lane's committed position,
    written under ``shares``: SpanStore.lane_shares) already indexed it: lanes run unevenly, and a crash
    leaves one ahead of another."""
    return len(positions) > 1 and rec.end <= positions[lane_of(rec, len(positions), shares)]


class WriteLock:
    """Serializes the lanes' SQLite transactions: an exclusive ``flock`` on a file beside the
    database, so a lane waiting to write wakes the moment the other commits (SQLite's own busy
    handler would sleep up to 100 ms between tries). A no-op with one lane."""

    def __init__(self, path: Path | None) -> None:
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600) if path is not None else None

    def __enter__(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class Wants:
    """What the platform's listeners want of each commit besides the rows — the spans as objects,
    the RPC calls — as two bytes in a file beside the database. The platform writes it before it
    appends the export that a new listener should see, and every lane reads it before each batch,
    so no lane reads that export without knowing. (The lead also gets the RPC histogram bounds over
    its pipe: it alone counts the calls.)"""

    def __init__(self, db_path: Path) -> None:
        self._fd = os.open(f"{db_path}.wants", os.O_RDWR | os.O_CREAT, 0o600)

    def write(self, *, spans: bool, calls: bool) -> None:
        os.pwrite(self._fd, bytes((spans, calls)), 0)

    def read(self) -> tuple[bool, bool]:
        got = os.pread(self._fd, 2, 0)
        return (len(got) == 2 and got[0] == 1), (len(got) == 2 and got[1] == 1)

    def close(self) -> None:
        os.close(self._fd)


class Nudge:
    """A new WAL record, told without a message: one Linux eventfd per lane, written by the platform
    after each append and waited on by the lane beside its pipe. Its counter adds up the writes, so
    a busy lane that never waits has nothing queued, and one read wakes it from any number of them."""

    def __init__(self, fd: int | None = None) -> None:
        self.fd = fd if fd is not None else os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)

    def __call__(self) -> None:
        with contextlib.suppress(OSError):  # the counter full (2^64 - 2 nudges unread): it wakes anyway
            os.eventfd_write(self.fd, 1)

    def clear(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(self.fd)

    def close(self) -> None:
        os.close(self.fd)


class _Idler:
    """How a lane waits when the WAL had nothing new: until a pipe has a message or the platform
    appended (its :class:`Nudge`), at most the idle wait, which doubles while nothing comes and is
    back to its minimum when something did; a nudge within :data:`GATHER_S` of the last batch is
    held until then, unless a pipe speaks meanwhile."""

    def __init__(self, options: Options, lane: int) -> None:
        self.nudge = Nudge(options.nudges[lane]) if len(options.nudges) > lane else None
        self.shortest = options.idle_wait_min_s
        self.longest = options.idle_wait_max_s if self.nudge is not None else min(options.idle_wait_max_s,
                                                                                   POLL_WITHOUT_NUDGE_S)
        self.wait_s = self.shortest
        self.last_batch = 0.0

    def worked(self) -> None:
        """A batch was read: the next idle wait starts short, and nudges are gathered for a while."""
        self.wait_s = self.shortest
        self.last_batch = time.monotonic()

    def wait(self, waitables: list[Any], at_most: float | None = None) -> None:
        import multiprocessing.connection

        timeout = self.wait_s if at_most is None else min(self.wait_s, at_most)
        nudge = self.nudge
        ready = multiprocessing.connection.wait([*waitables, nudge.fd] if nudge is not None else waitables, timeout)
        if nudge is not None and nudge.fd in ready:
            nudge.clear()
            rest = self.last_batch + GATHER_S - time.monotonic()
            if rest > 0 and len(ready) == 1:
                multiprocessing.connection.wait(waitables, rest)
        self.wait_s = min(self.wait_s * 2, self.longest) if not ready else self.shortest


@dataclass
class _Peer:
    """The lead's handle on another lane: its pid, its end of their pipe, how far it indexed."""

    pid: int
    conn: Connection
    position: Position


def run(wal_dir: str, db_path: str, options: Options, conn: Any) -> None:
    """The indexer process's main loop (see the module docstring). Exits when the platform closes
    the pipe — also when the platform was killed, so an orphan never keeps writing.

    With ``options.lanes`` > 1 this process (the lead, lane 0) forks the other lanes first: each lane
    decodes the records :func:`lane_of` gives it and writes them (the decoding, most of the work,
    runs on every core; the writes take turns through :class:`WriteLock`) and reports each commit
    to the lead, which alone talks to the platform (reporting the least position of all lanes),
    counts RPC calls, deletes indexed WAL segments and runs retention."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s indexer %(levelname)s %(message)s")
    from devbox.mocks.tracing.store import SpanStore

    _fence(db_path)
    lanes = max(1, options.lanes)
    directory = Path(wal_dir)
    store = SpanStore(Path(db_path), indexed_keys=options.indexed_keys)
    #: (end, spans acknowledged) of the records some lane indexed past the least position: the
    #: platform counts them as waiting in the WAL until `done` passes, less their sum (Report.indexed_ahead)
    before, shares = store.lane_positions(), store.lane_shares()
    ahead: dict[Position, int] = {}
    if len(set(before)) > 1:  # a crash left the lanes uneven (the platform counts the same, core.start)
        ahead = {rec.end: rec.accepted for rec in wal.read_records(directory, min(before))
                 if lane_indexed(rec, before, shares)}
    positions = store.reset_lanes(lanes)
    # the total as no lane has run yet: what a lane stores from its fork on comes in its reports (one
    # that commits before the store is opened again below would otherwise be counted twice)
    counted = store.count
    store.close()  # no SQLite connection may cross a fork
    lock_path = Path(db_path + ".index-lock") if lanes > 1 else None
    peers = [_fork_lane(wal_dir, db_path, options, lane, lanes, positions[lane], lock_path, conn)
             for lane in range(1, lanes)]
    lock = WriteLock(lock_path)
    store = SpanStore(Path(db_path), indexed_keys=options.indexed_keys)
    store.add_count(counted - store.count)
    position = positions[0]
    done = min(positions)
    wants = Wants(Path(db_path))
    deriver: rpcstats.RpcDeriver | None = None
    next_retention = time.monotonic() + options.retention_interval_s
    next_settle = 0.0
    idler = _Idler(options, 0)
    reported = done
    gc.freeze()  # what start-up made lives as long as the process: out of the collector's passes
    conn.send(("ready", done.segment, done.offset, store.count, Report(indexed_ahead=sum(ahead.values()))))
    try:
        while True:
            while conn.poll(0):
                msg = conn.recv()
                if msg[0] == "stop":
                    return
                if msg[0] == "want_rpc":  # the histogram bounds, or None: nobody counts calls
                    if msg[1] is None:
                        deriver = None
                    elif deriver is None or deriver.buckets != list(msg[1]):
                        deriver = rpcstats.RpcDeriver(msg[1])
            want_spans = wants.read()[0]
            calls: list[rpcstats.Call] | None = [] if deriver is not None else None
            own: set[str] = set()
            spans: list[Any] = []
            progressed = False
            for peer in peers:  # what the other lanes committed
                while peer.conn.poll(0):
                    progressed = True
                    _, segment, offset, added, lane_spans, lane_calls, lane_own, lane_taken = peer.conn.recv()
                    peer.position = Position(segment, offset)
                    ahead.update(lane_taken)
                    store.add_count(added)
                    spans.extend(lane_spans or ())
                    if calls is not None:
                        calls.extend(lane_calls or ())
                    own.update(lane_own or ())
            taken: list[tuple[Position, int]] = []
            mine, end = index_batch(store, directory, position, options.batch_spans, want_spans, calls, own,
                                    lane=(0, lanes), lock=lock, taken=taken)
            ahead.update(taken)
            spans.extend(mine)
            progressed = progressed or end != position
            position = end
            done = min([position, *(peer.position for peer in peers)])
            if ahead:
                ahead = {at: n for at, n in ahead.items() if at > done}
            indexed_ahead = sum(ahead.values())
            if not progressed:
                report = None
                if deriver is not None and deriver.pending and time.monotonic() >= next_settle:
                    next_settle = time.monotonic() + SETTLE_EVERY_S
                    aggregates = deriver.settle(time.time())
                    if aggregates:
                        report = Report(aggregates=aggregates)
                if time.monotonic() >= next_retention:
                    next_retention = time.monotonic() + options.retention_interval_s
                    with lock:
                        _retention(store, options)
                    report = report or Report()
                if report is not None:
                    report.indexed_ahead = indexed_ahead
                    conn.send(("indexed", done.segment, done.offset, store.count, report))
                # a message from the platform or a lane, or an append, ends the wait early; calls waiting
                # for their peer are settled on time
                settling = deriver is not None and deriver.pending
                settle_in = max(next_settle - time.monotonic(), 0.0) if settling else None
                idler.wait([conn.reader, *(peer.conn for peer in peers)], settle_in)
                continue
            idler.worked()
            report = Report(spans=spans if want_spans and spans else None, own_services=own or None,
                            indexed_ahead=indexed_ahead)
            if deriver is not None and calls is not None:
                now = time.time()
                deriver.observe(calls, now)
                report.aggregates = deriver.settle(now) or None
                next_settle = time.monotonic() + SETTLE_EVERY_S
            conn.send(("indexed", done.segment, done.offset, store.count, report))
            if done != reported:
                wal.delete_before(directory, done)
                reported = done
    except (EOFError, BrokenPipeError, ConnectionResetError):
        return
    finally:
        store.close()
        lock.close()
        wants.close()
        _stop_lanes(peers)


def _fence(db_path: str) -> None:
    """Wait until no indexer of an earlier platform can write, then keep the next one waiting for this
    one: an exclusive ``flock`` on a file beside the database, held (and shared with the forked lanes)
    until every process of this indexer has exited. After a ``kill -9`` of the platform its indexer
    lanes finish the batch in hand before they notice; a lane committing it after the new indexer read
    the lanes' positions had its spans counted nowhere (the new lanes found them stored: 0 added)."""
    fd = os.open(db_path + ".indexer-lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)  # never closed: released when this process and its lanes are gone


def _fork_lane(wal_dir: str, db_path: str, options: Options, lane: int, lanes: int, position: Position,
               lock_path: Path | None, platform: Any) -> _Peer:
    """Fork lane ``lane`` (this process has no thread and no SQLite connection open: safe to fork)."""
    import multiprocessing

    ours, theirs = multiprocessing.Pipe()
    pid = os.fork()
    if pid == 0:  # the lane
        code = 0
        try:
            ours.close()
            platform.close()  # the platform's pipe is the lead's alone
            _lane(wal_dir, db_path, options, lane, lanes, position, WriteLock(lock_path), theirs)
        except BaseException:
            LOG.exception("tracing indexer lane %d failed", lane)
            code = 1
        finally:
            os._exit(code)
    theirs.close()
    return _Peer(pid, ours, position)


def _lane(wal_dir: str, db_path: str, options: Options, lane: int, lanes: int, position: Position,
          lock: WriteLock, conn: Connection) -> None:
    """Another lane's loop: index its records, tell the lead after each commit (also a commit
    that only moved past the records of other lanes); exits when the lead closes the pipe."""
    from devbox.mocks.tracing.store import SpanStore

    store = SpanStore(Path(db_path), indexed_keys=options.indexed_keys)
    directory = Path(wal_dir)
    wants = Wants(Path(db_path))
    idler = _Idler(options, lane)
    outbox = _Outbox(conn)
    gc.freeze()
    try:
        while True:
            if conn.poll(0):
                conn.recv()  # "stop": the only message a lane gets
                return
            if outbox.closed:
                return  # the lead is gone
            want_spans, want_calls = wants.read()
            calls: list[rpcstats.Call] | None = [] if want_calls else None
            own: set[str] = set()
            count = store.count
            taken: list[tuple[Position, int]] = []
            spans, end = index_batch(store, directory, position, options.batch_spans, want_spans, calls, own,
                                     lane=(lane, lanes), lock=lock, taken=taken)
            if end == position:
                idler.wait([conn])
                continue
            idler.worked()
            position = end
            outbox.put(("indexed", end.segment, end.offset, store.count - count, spans or None, calls or None,
                        own or None, taken))
    except (EOFError, BrokenPipeError, ConnectionResetError):
        return
    finally:
        outbox.close()
        store.close()
        lock.close()
        wants.close()


class _Outbox:
    """A lane's reports to the lead, sent by a thread of the lane's own. The lead reads them between
    its own batches (~0.5 s of work at full speed): a lane that sent a batch's report (its RPC calls:
    megabytes, past the pipe's 64 KiB) itself waited in the send until then — a quarter of its time
    at 50k spans/s, the two lanes taking turns instead of working side by side. Up to
    :data:`LANE_OUTBOX` reports wait here; past that the lane waits, as the lead is behind."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._queue: queue.Queue[tuple[Any, ...] | None] = queue.Queue(maxsize=LANE_OUTBOX)
        self.closed = False
        self._thread = threading.Thread(target=self._send_all, name="lane-outbox", daemon=True)
        self._thread.start()

    def put(self, message: tuple[Any, ...]) -> None:
        while not self.closed:
            try:
                self._queue.put(message, timeout=0.5)
                return
            except queue.Full:
                continue
        raise BrokenPipeError("the lead closed the pipe")

    def close(self) -> None:
        """Stop the thread (reports not sent yet are dropped: the lead is stopping or gone)."""
        self.closed = True
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)

    def _send_all(self) -> None:
        while True:
            message = self._queue.get()
            if message is None or self.closed:
                return
            try:
                self._conn.send(message)
            except (OSError, ValueError):  # the lead closed the pipe
                self.closed = True
                return


def _stop_lanes(peers: list[_Peer], timeout: float = 10.0) -> None:
    """Close each lane's pipe (it exits after the batch in hand) and reap it; kill one that hangs."""
    for peer in peers:
        with contextlib.suppress(OSError):
            peer.conn.close()
    deadline = time.monotonic() + timeout
    for peer in peers:
        while True:
            try:
                pid, _ = os.waitpid(peer.pid, os.WNOHANG)
            except ChildProcessError:
                break
            if pid:
                break
            if time.monotonic() >= deadline:
                os.kill(peer.pid, signal.SIGKILL)
                os.waitpid(peer.pid, 0)
                break
            time.sleep(0.02)


def index_batch(store: Any, directory: Path, position: Position, batch_spans: int, want_spans: bool,
                calls: list[rpcstats.Call] | None, own: set[str], *, lane: tuple[int, int] = (0, 1),
                lock: WriteLock | None = None,
                taken: list[tuple[Position, int]] | None = None) -> tuple[list[Any], Position]:
    """Decode the WAL records from ``position`` (:func:`_read_batch`; with ``lane`` = (n, lanes), only
    lane n's) and write them with the new position in one transaction (under ``lock``); returns the
    spans (when wanted) and the end (``position``: nothing new).

    A batch allocates ~10 container objects a span, none in a cycle (refcounting frees them): with
    the cyclic collector on, its passes walked the growing batch again and again (~9 % of the
    indexer's CPU). It is held off for the batch and runs between batches, where little is alive."""
    gc.disable()
    try:
        batch, spans, end = _read_batch(directory, position, batch_spans, store.indexed_keys, want_spans, calls, own,
                                        lane=lane, taken=taken)
        if end != position:
            prepared = store.prepare(batch)  # the Python half of the write, before the lock
            with lock if lock is not None else contextlib.nullcontext():
                started = time.perf_counter()
                added = store.insert_rows(prepared, wal_position=end, lane=lane[0])
            LOG.debug("lane %d indexed %d spans (%d new) in %.0f ms under the lock", lane[0], len(batch.rows), added,
                      (time.perf_counter() - started) * 1e3)
    finally:
        gc.enable()
    return spans, end


def _read_batch(directory: Path, position: Position, batch_spans: int, indexed_keys: frozenset[str],
                want_spans: bool, calls: list[rpcstats.Call] | None = None,
                own: set[str] | None = None, *, lane: tuple[int, int] = (0, 1),
                taken: list[tuple[Position, int]] | None = None) -> tuple[Any, list[Any], Position]:
    """Decode WAL records from ``position`` into store rows (OTLP protobuf straight into rows unless
    the spans are wanted as objects); returns the rows, the spans (when wanted) and the end. The
    RPC calls of the spans are appended to ``calls`` and the services that sent spans of their own
    (not devbox's) added to ``own``, when given. With ``lane`` = (n, lanes) the records of other
    lanes are passed over; ``taken`` gets the (end, spans acknowledged) of each record read."""
    from devbox.mocks.tracing import fastpath
    from devbox.mocks.tracing.store import Rows, row_of

    batch = Rows()
    spans: list[Any] = []
    end = position
    mine, lanes = lane
    for rec in wal.read_records(directory, position, max_bytes=32 * 1024 * 1024):
        end = rec.end
        if lanes > 1 and lane_of(rec, lanes) != mine:
            continue
        if taken is not None:
            taken.append((rec.end, rec.accepted))
        try:
            rows = None
            if rec.fmt == wal.OTLP_PROTOBUF and not want_spans:
                rows = fastpath.otlp_rows(rec.body, now_us=rec.now_us, max_future_us=rec.max_future_us,
                                          indexed_keys=indexed_keys, calls=calls, own=own)
            if rows is not None:
                batch.extend(rows)
            else:
                decoded = DECODERS[rec.fmt](rec.body, now_us=rec.now_us, max_future_us=rec.max_future_us)
                texts: dict[int, str] = {}
                for sp in decoded.spans:
                    text = texts.get(id(sp.resource))
                    if text is None:
                        text = texts[id(sp.resource)] = batch.resource(sp.resource)
                    batch.rows.append(row_of(sp, text, indexed_keys))
                if want_spans:
                    spans.extend(decoded.spans)
                if calls is not None:
                    calls.extend(rpcstats.calls_of_spans(decoded.spans))
                if own is not None:
                    own.update(s.service for s in decoded.spans if SOURCE_KEY not in s.attributes)
        except Exception:  # not readable any more: skip it rather than block the log behind it
            LOG.exception("a WAL record (format %d, %d bytes) could not be decoded; skipped", rec.fmt, len(rec.body))
        if len(batch.rows) >= batch_spans:
            break
    return batch, spans, end


def _retention(store: Any, options: Options) -> None:
    try:
        store.enforce_retention(now_us=time.time_ns() // 1000, max_age_us=options.max_age_us,
                                max_spans=options.max_spans)
    except Exception:
        LOG.exception("tracing retention failed")


class IndexerProcess:
    """The platform's handle on the indexer process (``python -m devbox.mocks.tracing.indexer index``,
    see :mod:`~devbox.mocks.tracing.child`): starts it, reads its reports on a thread and hands each
    to ``on_report(kind, position, count, report)`` (``count``: the spans stored); restarts it if it dies."""

    def __init__(self, wal_dir: Path, db_path: Path, options: Options,
                 on_report: Callable[[str, Position, int, Report], None]) -> None:
        self.wal_dir = wal_dir
        self.db_path = db_path
        self.options = options
        self.on_report = on_report
        self._proc: subprocess.Popen[bytes] | None = None
        self._conn: child.Duplex | None = None
        self._stopping = False
        self._want_spans = False
        self._rpc_buckets: list[float] | None = None
        self._reader: threading.Thread | None = None
        self._send_lock = threading.Lock()
        self._wants = Wants(db_path)
        self._wants.write(spans=False, calls=False)
        #: one per lane, kept across restarts of the process; the lock keeps a nudge on the loop from
        #: writing to a number stop() closed (and something else may have opened since). Without
        #: eventfd (not Linux) none: the lanes look every POLL_WITHOUT_NUDGE_S
        lanes = max(1, options.lanes) if hasattr(os, "eventfd") else 0
        self._nudges = [Nudge() for _ in range(lanes)]
        self._nudges_lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def started(self) -> bool:
        """Whether :meth:`start` was called (it stays true across its restarts and after ``stop``)."""
        return self._proc is not None

    def start(self) -> None:
        fds = tuple(nudge.fd for nudge in self._nudges)
        proc, conn = child.start("index", pass_fds=fds)
        options = dataclasses.replace(self.options, nudges=list(fds))
        conn.send(("start", str(self.wal_dir), str(self.db_path), dataclasses.asdict(options)))
        self._proc, self._conn = proc, conn
        if self._rpc_buckets is not None:
            self.want_rpc(self._rpc_buckets)
        self._reader = threading.Thread(target=self._read, args=(conn, proc), name="tracing-indexer-reports",
                                        daemon=True)
        self._reader.start()

    def nudge(self) -> None:
        """Tell every lane a record was appended to the WAL (it stops waiting and reads it)."""
        with self._nudges_lock:
            for nudge in self._nudges:
                nudge()

    def want_spans(self, flag: bool) -> None:
        """Ask for (or stop) the spans of each commit, for the ``spans_ingested`` listeners."""
        self._want_spans = flag
        self._wants.write(spans=flag, calls=self._rpc_buckets is not None)

    def want_rpc(self, buckets: list[float] | None) -> None:
        """Ask for the RPC counter increments of each commit, with these latency bounds (seconds),
        for the ``rpc_aggregates`` listeners; None stops them."""
        self._rpc_buckets = buckets
        self._wants.write(spans=self._want_spans, calls=buckets is not None)
        self._send(("want_rpc", buckets))

    def _send(self, msg: tuple[Any, ...]) -> None:
        with self._send_lock:
            try:
                if self._conn is not None:
                    self._conn.send(msg)
            except OSError:
                pass

    def _read(self, conn: child.Duplex, proc: subprocess.Popen[bytes]) -> None:
        while True:
            try:
                msg = conn.recv()
            except (EOFError, OSError, TypeError):  # TypeError: closed by stop() after its wait for this thread
                break
            try:
                kind, segment, offset, count, report = msg  # "ready" once, then "indexed"
                self.on_report(kind, Position(segment, offset), count, report)
            except Exception:
                LOG.exception("handling an indexer report failed")
        if self._stopping:
            return
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
        LOG.error("the tracing indexer process exited (code %s); restarting it", proc.returncode)
        conn.close()
        time.sleep(1.0)
        if not self._stopping:
            self.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping = True
        if self._conn is not None:
            with self._send_lock:
                try:
                    self._conn.send(("stop",))
                except OSError:
                    pass
        if self._proc is not None:
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.terminate()
                try:
                    self._proc.wait(5)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
        if self._reader is not None:
            self._reader.join(timeout=5)
        if self._conn is not None:
            self._conn.close()
        self._wants.close()
        with self._nudges_lock:
            for nudge in self._nudges:
                nudge.close()
            self._nudges = []


class CheckProcess:
    """Checks exports (:func:`check`) in ``python -m devbox.mocks.tracing.indexer check``, off
    the platform's GIL. ``submit`` is thread-safe, does not block (a sender thread writes the
    request down the pipe) and returns a future; one request at a time is worked on, in order. A
    dead process fails its pending futures and is restarted on next use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._conn: child.Duplex | None = None
        self._pending: dict[int, concurrent.futures.Future[Any]] = {}
        self._next = 0
        self._outbox: queue.SimpleQueue[int | None] = queue.SimpleQueue()
        self._requests: dict[int, tuple[Any, ...]] = {}
        self._sender: threading.Thread | None = None

    def _ensure(self) -> child.Duplex:
        if self._conn is None:
            self._proc, self._conn = child.start("check")
            threading.Thread(target=self._read, args=(self._conn,), name="tracing-check-replies", daemon=True).start()
        if self._sender is None:
            self._sender = threading.Thread(target=self._send, name="tracing-check-send", daemon=True)
            self._sender.start()
        return self._conn

    def start(self) -> None:
        with self._lock:
            self._ensure()

    @property
    def in_flight(self) -> int:
        """Checks submitted and not yet answered."""
        return len(self._pending)

    def submit(self, *args: Any) -> concurrent.futures.Future[Any]:
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        with self._lock:
            self._ensure()
            self._next += 1
            self._pending[self._next] = fut
            self._requests[self._next] = args
            self._outbox.put(self._next)
        return fut

    def _send(self) -> None:
        # the one writer of the pipe; a big body takes a while to go down it, other submits queue meanwhile
        while (ident := self._outbox.get()) is not None:
            with self._lock:
                args = self._requests.pop(ident, None)
                if args is None or ident not in self._pending:  # failed meanwhile (the process died)
                    continue
                conn = self._ensure()
            fmt, body, *rest = args
            try:
                # the body goes as raw bytes: pickling it would copy 52 MiB holding the GIL (the loop waits)
                conn.send((ident, fmt, rest))
                conn.send_bytes(body)
            except (OSError, ValueError, TypeError) as exc:  # TypeError: closed by stop() mid-write
                with self._lock:
                    fut = self._pending.pop(ident, None)
                if fut is not None:
                    _settle(fut, exc, False)

    def _read(self, conn: child.Duplex) -> None:
        while True:
            try:
                ident, ok, value = conn.recv()
            except (EOFError, OSError):
                break
            with self._lock:
                fut = self._pending.pop(ident, None)
            if fut is not None:
                _settle(fut, value, ok)
        with self._lock:
            if self._conn is conn:
                self._conn = None
            pending, self._pending = self._pending, {}
        conn.close()
        for fut in pending.values():
            _settle(fut, RuntimeError("the tracing check process exited"), False)

    def stop(self) -> None:
        with self._lock:
            conn, proc, self._conn = self._conn, self._proc, None
            if self._sender is not None:
                self._outbox.put(None)
                self._sender = None
        if conn is not None:
            # EOF on its stdin: the child exits, and the reply thread, reading EOF in turn, closes the rest.
            # Closing the end it reads under it raised in that thread (a read of a handle gone None),
            # and the fd could have been reused by then.
            conn.close_output()
        if proc is not None:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class CheckPool:
    """Up to ``size`` :class:`CheckProcess`; each check goes to the one with the fewest in flight.

    Under a saturating load (4-16 connections) one process used ~0.55 of a core while exports queued
    behind it, one at a time, and the niced indexer lanes took the idle time; two acknowledge 7-10 %
    more (bench_ingest). Another process starts (in the background; the running ones take the checks
    meanwhile) only when a check arrives while every running one has one in flight, so a platform that
    sees one export at a time runs one."""

    def __init__(self, size: int) -> None:
        self.size = max(1, size)
        self._lock = threading.Lock()
        self._running = [CheckProcess()]
        self._starting = False
        self._stopped = False

    @property
    def processes(self) -> int:
        return len(self._running)

    def start(self) -> None:
        self._running[0].start()

    def submit(self, *args: Any) -> concurrent.futures.Future[Any]:
        with self._lock:
            least = min(self._running, key=lambda p: p.in_flight)
            if least.in_flight and not self._starting and len(self._running) < self.size:
                self._starting = True
                threading.Thread(target=self._grow, name="tracing-check-start", daemon=True).start()
        return least.submit(*args)

    def _grow(self) -> None:
        more = CheckProcess()
        try:
            more.start()
        except OSError:  # the running ones go on taking the checks
            LOG.exception("could not start another tracing check process")
            with self._lock:
                self._starting = False
            return
        with self._lock:
            self._starting = False
            if not self._stopped:
                self._running.append(more)
                return
        more.stop()  # the pool was stopped while this one started

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            running = list(self._running)
        for process in running:
            process.stop()


def _settle(fut: concurrent.futures.Future[Any], value: Any, ok: bool) -> None:
    """Complete a check's future, unless its request gave up meanwhile: the request's task was
    cancelled (a server shutting down), which cancels the future. Setting it then raised in the
    reply thread and ended it, and every later check waited forever."""
    with contextlib.suppress(concurrent.futures.InvalidStateError):
        fut.set_result(value) if ok else fut.set_exception(value)


def _serve_checks(conn: child.Duplex) -> None:
    while True:
        try:
            ident, fmt, rest = conn.recv()
            body = conn.recv_bytes()
        except (EOFError, OSError):
            return
        reply: tuple[Any, bool, Any]
        try:
            reply = (ident, True, check(fmt, body, *rest))
        except Exception as exc:
            reply = (ident, False, exc)
        try:
            conn.send(reply)
        except Exception as exc:  # an unpicklable exception: say what it was
            conn.send((ident, False, RuntimeError(f"{type(exc).__name__}: {exc}")))


def main(argv: list[str] | None = None) -> None:
    """Entry of ``python -m devbox.mocks.tracing.indexer index|check`` (started by the platform)."""
    mode = (argv if argv is not None else sys.argv[1:] or ["index"])[0]
    # Ctrl-C in a terminal reaches the whole process group: the platform that started this process
    # stops it in order (flushing what it indexed); dying on the signal here printed a traceback and
    # made the platform restart it on its way out
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    conn = child.child_end()
    if mode == "check":
        _serve_checks(conn)
        return
    # Indexing is the background half of ingest (an acknowledged span is already safe in the WAL): when
    # the CPU is short, the platform's listeners (acknowledging, queries, /healthz) and the check
    # process on the acknowledge path go first, and the indexer catches up when they idle.
    with contextlib.suppress(OSError):
        os.nice(INDEXER_NICE)
    try:
        msg = conn.recv()
    except (EOFError, OSError):
        return
    _, wal_dir, db_path, options = msg
    run(wal_dir, db_path, Options(**options), conn)


if __name__ == "__main__":
    from devbox.mocks.tracing import indexer as _module  # the importable copy (its classes pickle by name)

    _module.main()
