"""Span storage: one SQLite file (``<state_dir>/tracing.db``), indexed for the Zipkin queries.

Blocking by design: the indexer's lanes are its writers, one at a time (:mod:`devbox.mocks.tracing.indexer`,
spans from the WAL in big transactions that also record the lane's WAL position); the platform
reads it through its own connection in threads (WAL mode: readers never block the writer). Each
span's Zipkin JSON is rendered at index time (column ``zipkin``), so a trace is read by
concatenating stored text.

Tables: ``spans`` (one row per span: attributes as one JSON column, the fidelity fields of
:meth:`Span.detail` as another, the annotation values Zipkin's ``annotationQuery`` matches as a
third; indexes on trace id, time and service — the service case-insensitively, as Zipkin
queries), ``tag_values`` (the distinct values of the few *indexed* keys only — the autocomplete
keys and ``error`` — tags are searched in the JSON column within the query's window), ``links`` and
``service_minutes`` (dependency links and span counts per minute, :mod:`~devbox.mocks.tracing.links`),
``resources`` and ``resource_tags`` (resource attribute sets, stored and indexed once),
``names`` (service, span and remote-service names, so ``/services`` does not scan the spans).

Why so few rows per span: per-tag rows cost more than everything else on the write path
(issue 15); a query names a service and a window, so scanning the JSON of that window's spans is
cheap where an index per tag was not.

LIMITATIONS: one writer at a time (SQLite); tag values longer than 256 characters are stored
with the span but not indexed; ``names`` keeps a name until retention passes its last use;
resources (and so their tag values offered for autocompletion) are never deleted.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devbox.mocks.tracing import links
from devbox.mocks.tracing.convert import annotation_values, index_tags, resource_tags, to_zipkin
from devbox.mocks.tracing.models import Span
from devbox.mocks.tracing.wal import LANE_SHARES, Position

from devbox.platform.store import Database

if TYPE_CHECKING:
    import networkx as nx

LOG = logging.getLogger(__name__)


#: ``json.dumps(value, separators=(",", ":"), default=str, ensure_ascii=False)`` without building a
#: JSONEncoder and a C encoder per call (half of its cost for a span's small dicts; the indexer
#: calls it 2-3 times a span). No circular-reference check: stored values come from decoded
#: protobuf or JSON, which cannot hold cycles.
_ENCODE = json.encoder.c_make_encoder(  # type: ignore[attr-defined]
    None, str, json.encoder.encode_basestring, None, ":", ",", False, False, True,  # type: ignore[attr-defined]
) if json.encoder.c_make_encoder is not None else None  # type: ignore[attr-defined]


def dumps(value: Any) -> str:
    if _ENCODE is not None:
        return "".join(_ENCODE(value, 0))
    return json.dumps(value, separators=(",", ":"), default=str, ensure_ascii=False)


loads = json.loads

MIGRATIONS = [
    """
    CREATE TABLE resources (id INTEGER PRIMARY KEY, json TEXT NOT NULL UNIQUE);
    CREATE TABLE spans (
        trace_id TEXT NOT NULL, span_id TEXT NOT NULL, parent_id TEXT, name TEXT NOT NULL,
        kind TEXT NOT NULL, service TEXT NOT NULL, remote_service TEXT, start_us INTEGER NOT NULL,
        duration_us INTEGER NOT NULL, error INTEGER NOT NULL, status_message TEXT NOT NULL,
        attributes TEXT NOT NULL, resource_id INTEGER NOT NULL
    );
    CREATE UNIQUE INDEX spans_id ON spans (trace_id, span_id, kind);
    CREATE INDEX spans_time ON spans (start_us);
    CREATE INDEX spans_service ON spans (service, start_us);
    CREATE INDEX spans_operation ON spans (service, name, start_us);
    CREATE INDEX spans_duration ON spans (service, duration_us);
    CREATE TABLE tags (
        key TEXT NOT NULL, value TEXT NOT NULL, trace_id TEXT NOT NULL, span_id TEXT NOT NULL,
        start_us INTEGER NOT NULL, PRIMARY KEY (key, value, trace_id, span_id)
    ) WITHOUT ROWID;
    CREATE INDEX tags_time ON tags (start_us);
    CREATE TABLE names (
        service TEXT NOT NULL, kind TEXT NOT NULL, value TEXT NOT NULL, last_us INTEGER NOT NULL,
        PRIMARY KEY (service, kind, value)
    ) WITHOUT ROWID;
    """,
    # Tags point at their span's rowid: a third of the size of repeating trace and span ids.
    """
    DROP TABLE tags;
    CREATE TABLE tags (
        key TEXT NOT NULL, value TEXT NOT NULL, span_rowid INTEGER NOT NULL, start_us INTEGER NOT NULL,
        PRIMARY KEY (key, value, span_rowid)
    ) WITHOUT ROWID;
    CREATE INDEX tags_time ON tags (start_us);
    INSERT OR IGNORE INTO tags
        SELECT j.key, CASE j.type WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' ELSE CAST(j.value AS TEXT) END,
               s.rowid, s.start_us
        FROM spans s, json_each(s.attributes) j
        WHERE j.type IN ('text', 'integer', 'real', 'true', 'false') AND length(CAST(j.value AS TEXT)) <= 256;
    """,
    # Resource attributes are searchable once per resource, not once per span of it.
    """
    CREATE TABLE resource_tags (
        key TEXT NOT NULL, value TEXT NOT NULL, resource_id INTEGER NOT NULL,
        PRIMARY KEY (key, value, resource_id)
    ) WITHOUT ROWID;
    INSERT OR IGNORE INTO resource_tags
        SELECT j.key, CASE j.type WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' ELSE CAST(j.value AS TEXT) END,
               r.id
        FROM resources r, json_each(r.json) j
        WHERE j.type IN ('text', 'integer', 'real', 'true', 'false') AND length(CAST(j.value AS TEXT)) <= 256
              AND j.key != 'service.name';
    """,
    # The full span model (events, links, annotations, endpoints, flags) and a slimmer write path:
    # case-insensitive service lookups (Zipkin), no operation/duration indexes (a service's window
    # is filtered instead), tag rows only for indexed keys (older rows stay valid).
    """
    ALTER TABLE spans ADD COLUMN detail TEXT;
    ALTER TABLE spans ADD COLUMN annotation_values TEXT;
    DROP INDEX spans_service;
    DROP INDEX spans_operation;
    DROP INDEX spans_duration;
    CREATE INDEX spans_service ON spans (service COLLATE NOCASE, start_us);
    """,
    # Issue 15: each span's Zipkin JSON is rendered once, at index time, so reading a trace is a
    # concatenation of stored bytes; the WAL position indexed up to commits with the spans.
    """
    ALTER TABLE spans ADD COLUMN zipkin TEXT;
    CREATE TABLE wal_progress (id INTEGER PRIMARY KEY CHECK (id = 1), segment INTEGER NOT NULL,
                               offset INTEGER NOT NULL);
    """,
    # Issue 15: dependency links and per-service counts kept at index time (see links.py), so
    # /dependencies and /api/topology sum minute buckets instead of linking every span of their
    # window; the indexed keys' values live once in tag_values (autocomplete) instead of a row per
    # span (the most expensive part of the write path); tag searches read the window's JSON.
    """
    CREATE TABLE links (
        minute INTEGER NOT NULL, parent TEXT NOT NULL, child TEXT NOT NULL, calls INTEGER NOT NULL,
        errors INTEGER NOT NULL, sum_us INTEGER NOT NULL, max_us INTEGER NOT NULL, hist TEXT NOT NULL,
        PRIMARY KEY (minute, parent, child)
    ) WITHOUT ROWID;
    CREATE TABLE service_minutes (
        minute INTEGER NOT NULL, service TEXT NOT NULL, spans INTEGER NOT NULL, errors INTEGER NOT NULL,
        PRIMARY KEY (minute, service)
    ) WITHOUT ROWID;
    CREATE TABLE tag_values (
        key TEXT NOT NULL, value TEXT NOT NULL, last_us INTEGER NOT NULL, PRIMARY KEY (key, value)
    ) WITHOUT ROWID;
    INSERT INTO tag_values SELECT key, value, max(start_us) FROM tags GROUP BY key, value;
    DROP TABLE tags;
    """,
    # Issue 15: the WAL is indexed by several processes (lanes), each recording how far it got; what
    # is certainly indexed is the least of their positions.
    """
    CREATE TABLE wal_lanes (lane INTEGER PRIMARY KEY, segment INTEGER NOT NULL, offset INTEGER NOT NULL);
    INSERT INTO wal_lanes SELECT 0, segment, offset FROM wal_progress;
    DROP TABLE wal_progress;
    """,
    # Which lane indexes which record changed (indexer.lane_of: the lead's share became smaller). A
    # store whose lanes ran before says so here: its lane positions are read with the shares they were
    # written under (SpanStore.lane_shares), then every lane resumes from the least (reset_lanes).
    """
    CREATE TABLE wal_lane_shares (version INTEGER NOT NULL);
    INSERT INTO wal_lane_shares SELECT 1 WHERE EXISTS (SELECT 1 FROM wal_lanes);
    """,
]

#: The page size of a new span store (SQLite's default is 4 KiB). A span's row is ~1 KB and each
#: batch appends thousands: with 16 KiB pages the insert and the commit took 3 us a span less
#: (~15 % of the write; bench/bench_indexer.py). A store created before keeps its 4 KiB pages.
PAGE_SIZE = 16384

#: Most ``annotationQuery`` terms one query may hold (SQLite's expression depth is bounded).
MAX_QUERY_TERMS = 64

_SPAN_COLUMNS = (
    "trace_id, span_id, parent_id, name, kind, service, remote_service, start_us, duration_us, error, "
    "status_message, attributes, resource_id, detail"
)
_INSERT_COLUMNS = f"{_SPAN_COLUMNS}, annotation_values, zipkin"
_LIGHT_COLUMNS = _SPAN_COLUMNS.replace(", attributes, resource_id, detail", "")
#: A span as the dependency linker reads it (links.Light)
_LINK_COLUMNS = "span_id, parent_id, kind, service, remote_service, start_us, duration_us, error"
#: Trace ids per ``IN (...)`` query (under SQLite's oldest default limit of 999 parameters).
_IN_CHUNK = 500

#: A span decoded for storage: trace_id, span_id, parent_id, name, kind, service, remote_service,
#: start_us, duration_us, error (0/1), status_message, attributes JSON, resource key (a key of
#: :attr:`Rows.resources`), detail JSON, annotation values JSON, Zipkin JSON, and the (key, value)
#: pairs of its indexed tags. A missing parent id, remote service, detail or annotation values is 0
#: (stored as NULL: the INSERT writes ``NULLIF(?, 0)``): the sqlite3 module binds None through its
#: adapter lookup, which fails through an AttributeError (~0.5 us a parameter; a span on the
#: indexer's path had two to four), where an int is bound directly. A text column never holds 0.
Row = tuple[Any, ...]


@dataclass
class Rows:
    """A batch of :data:`Row` tuples and the resources they name (canonical JSON -> attributes)."""

    rows: list[Row] = field(default_factory=list)
    resources: dict[str, dict[str, Any]] = field(default_factory=dict)

    def resource(self, resource: dict[str, Any]) -> str:
        """The key of a resource (its canonical JSON), remembered with the batch."""
        text = json.dumps(resource, sort_keys=True, separators=(",", ":"), default=str)
        self.resources.setdefault(text, resource)
        return text

    def extend(self, other: Rows) -> None:
        self.rows.extend(other.rows)
        self.resources.update(other.resources)


def row_of(s: Span, resource_key: str, indexed_keys: Collection[str]) -> Row:
    """A :class:`Span` as a :data:`Row` (the general path; OTLP protobuf has a faster decoder)."""
    detail = s.detail()
    values = annotation_values(s) if detail else None
    return (s.trace_id, s.span_id, 0 if s.parent_id is None else s.parent_id, s.name, s.kind, s.service,
            0 if s.remote_service is None else s.remote_service, s.start_us,
            s.duration_us, int(s.error), s.status_message, dumps(s.attributes) if s.attributes else "{}",
            resource_key, dumps(detail) if detail else 0, dumps(values) if values else 0,
            dumps(to_zipkin(s)), index_tags(s, indexed_keys))


@dataclass
class Aggregates:
    """What a batch's rows add to the tables besides ``spans``: the last use of each (service,
    kind, name) and indexed (key, value), [spans, errors] per (minute, service), each trace's spans
    as the linker reads them, and the dependency-link counts of linking each trace's new spans alone
    (:meth:`SpanStore._index` corrects the traces that had spans stored before)."""

    names: dict[tuple[str, str, str], int]
    values: dict[tuple[str, str], int]
    per_minute: dict[tuple[int, str], list[int]]
    traces: dict[str, list[links.Light]]
    delta: links.Delta


@dataclass
class Prepared:
    """A batch ready to write (:meth:`SpanStore.prepare`): the resource ids it was bound with, its
    rows bound with them (None when a resource is new to the store: bound in the transaction), its
    trace ids, its aggregates."""

    batch: Rows
    rids: dict[str, int | None]
    bound: list[Row] | None
    trace_ids: list[str]
    aggregates: Aggregates


def _aggregates(rows: Sequence[Row]) -> Aggregates:
    names: dict[tuple[str, str, str], int] = {}
    values: dict[tuple[str, str], int] = {}
    per_minute: dict[tuple[int, str], list[int]] = {}
    traces: dict[str, list[links.Light]] = {}
    minute_us = links.MINUTE_US
    for r in rows:
        service, start, remote = r[5], r[7], r[6]
        if r[3]:
            k = (service, "span", r[3])
            if names.get(k, 0) < start:
                names[k] = start
        if remote:
            k = (service, "remote", remote)
            if names.get(k, 0) < start:
                names[k] = start
        for pair in r[16]:
            if values.get(pair, 0) < start:
                values[pair] = start
        m = (start // minute_us, service)
        counts = per_minute.get(m)
        if counts is None:
            counts = per_minute[m] = [0, 0]
        counts[0] += 1
        counts[1] += r[9]
        light = (r[1], r[2] or None, r[4], service, remote or None, start, r[8], r[9])
        trace = traces.get(r[0])
        if trace is None:
            traces[r[0]] = [light]
        else:
            trace.append(light)
    delta: links.Delta = {}
    for spans in traces.values():
        links.add_calls(delta, links.calls_of(spans), +1)
    return Aggregates(names, values, per_minute, traces, delta)


@dataclass
class TraceQuery:
    """What ``/api/v2/traces`` and ``devbox traces ls`` filter on. Times in µs; None = any."""

    service: str | None = None
    remote_service: str | None = None
    span_name: str | None = None
    #: ``key=value`` (tag equals) or ``key`` (tag present) terms, all of which must match one span.
    tags: list[tuple[str, str | None]] = field(default_factory=list)
    min_duration_us: int | None = None
    max_duration_us: int | None = None
    start_us: int | None = None
    end_us: int | None = None
    #: The trace has an error span (in any service) — devbox's list, not Zipkin's.
    errors_only: bool = False
    #: The trace has a span at least this long (in any service) — devbox's list, not Zipkin's.
    trace_min_duration_us: int | None = None
    #: Leave out traces whose root span has one of these names (health probes) — devbox's list.
    exclude_roots: tuple[str, ...] = ()
    limit: int = 10


class TooManyTerms(ValueError):
    """An ``annotationQuery`` with more than :data:`MAX_QUERY_TERMS` terms."""


def parse_annotation_query(text: str) -> list[tuple[str, str | None]]:
    """Zipkin's ``annotationQuery``: terms joined by `` and ``; ``k=v`` (a tag) or a bare word (a tag
    key or an annotation value). Raises :class:`TooManyTerms` past :data:`MAX_QUERY_TERMS`."""
    terms: list[tuple[str, str | None]] = []
    for part in text.split(" and "):
        part = part.strip()
        if not part:
            continue
        key, sep, value = part.partition("=")
        terms.append((key.strip(), value.strip() if sep else None))
        if len(terms) > MAX_QUERY_TERMS:
            raise TooManyTerms(f"annotationQuery has more than {MAX_QUERY_TERMS} terms")
    return terms


def _json_path(key: str) -> str | None:
    """The SQLite JSON path of a top-level key, or None when the key cannot be quoted in one."""
    if '"' in key or "\\" in key:
        return None
    return f'$."{key}"'


#: Zipkin tags that an OTLP span gets from its status and scope (see ``convert.to_zipkin``), found
#: in the ``detail`` column rather than the attributes.
_DERIVED_TAGS = {
    "otel.status_code": "json_extract(detail, '$.status_code')",
    "otel.scope.name": "json_extract(detail, '$.scope.name')",
    "otel.scope.version": "json_extract(detail, '$.scope.version')",
    "otel.status_description": "CASE json_extract(detail, '$.status_code') WHEN 'ERROR' THEN status_message END",
    "error": "CASE error WHEN 1 THEN coalesce(nullif(status_message, ''), 'true') END",
}

_TAG_TEXT = ("CASE json_type(attributes, ?) WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' "
             "ELSE CAST(json_extract(attributes, ?) AS TEXT) END")


class SpanStore:
    """The span table and its queries. Thread-safe through the database lock."""

    def __init__(self, path: Path, *, indexed_keys: Iterable[str] = ()) -> None:
        #: Tag keys whose values get index rows (autocompletion, fast equality search).
        self.indexed_keys = frozenset(indexed_keys) | {"error"}
        self.db = Database(path, MIGRATIONS, page_size=PAGE_SIZE)
        with self.db.lock:
            # a bigger page cache keeps the index pages hot: inserts touch four b-trees per span
            self.db.conn.execute("PRAGMA cache_size = -65536")
            # checkpoint every ~40 MB of WAL rather than 4 MB: fewer fsyncs under a steady stream
            # of exports (durability across a process kill does not depend on checkpoints)
            page_size = self.db.conn.execute("PRAGMA page_size").fetchone()[0]
            self.db.conn.execute(f"PRAGMA wal_autocheckpoint = {40 * 2**20 // page_size}")
        self._resources: dict[str, int] = {}
        self._resource_json: dict[int, dict[str, Any]] = {}
        with self.db.lock:
            self._count = self.db.conn.execute("SELECT COUNT(*) FROM spans").fetchone()[0]

    def close(self) -> None:
        self.db.close()

    @property
    def count(self) -> int:
        """Spans stored (kept in memory; exact as long as this process is the only writer)."""
        return self._count

    # --- writes ----------------------------------------------------------------------------

    def _resource_id(self, conn: sqlite3.Connection, text: str, resource: dict[str, Any]) -> int:
        rid = self._resources.get(text)
        if rid is None:
            conn.execute("INSERT OR IGNORE INTO resources (json) VALUES (?)", (text,))
            rid = conn.execute("SELECT id FROM resources WHERE json = ?", (text,)).fetchone()[0]
            conn.executemany("INSERT OR IGNORE INTO resource_tags VALUES (?,?,?)",
                             [(k, v, rid) for k, v in resource_tags(resource)])
            self._resources[text] = rid
        return rid

    def lane_positions(self) -> list[Position]:
        """How far each indexer lane committed its records, by lane (empty before the first start)."""
        with self.db.lock:
            rows = self.db.conn.execute("SELECT segment, offset FROM wal_lanes ORDER BY lane").fetchall()
        return [Position(segment, offset) for segment, offset in rows]

    def wal_position(self) -> Position:
        """How far the WAL was certainly indexed: the least position any lane committed with its spans."""
        return min(self.lane_positions(), default=Position(0, 0))

    def lane_shares(self) -> int:
        """The lane shares the lane positions were written under (:data:`LANE_SHARES` unless a devbox
        before them left its positions here)."""
        with self.db.lock:
            row = self.db.conn.execute("SELECT max(version) FROM wal_lane_shares").fetchone()
        return int(row[0]) if row[0] is not None else LANE_SHARES

    def reset_lanes(self, lanes: int) -> list[Position]:
        """Before ``lanes`` indexer processes start: where each resumes. The same number of lanes as
        last time, under the same shares, resume from their own positions; another number, or other
        shares, all resume from the least (the records a lane indexed past it are read again and kept
        as they were: a span is stored once)."""
        positions = self.lane_positions()
        if len(positions) == lanes and self.lane_shares() == LANE_SHARES:
            return positions
        position = min(positions, default=Position(0, 0))
        with self.db.lock:
            conn = self.db.conn
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("DELETE FROM wal_lanes")
            conn.executemany("INSERT INTO wal_lanes VALUES (?, ?, ?)",
                             [(lane, position.segment, position.offset) for lane in range(lanes)])
            conn.execute("DELETE FROM wal_lane_shares")
            conn.execute("COMMIT")
        return [position] * lanes

    def add_count(self, n: int) -> None:
        """Spans another indexer lane stored (this one keeps the total: :attr:`count`)."""
        self._count += n

    def insert(self, spans: Sequence[Span], *, wal_position: Position | None = None) -> int:
        """Store spans in one transaction (a span already stored is kept as it was); returns how many
        were new. Returns after the commit, which also records ``wal_position`` when given."""
        batch = Rows()
        keys = self.indexed_keys
        texts: dict[int, str] = {}  # spans of one export share their resource dict
        for sp in spans:
            text = texts.get(id(sp.resource))
            if text is None:
                text = texts[id(sp.resource)] = batch.resource(sp.resource)
            batch.rows.append(row_of(sp, text, keys))
        return self.insert_rows(batch, wal_position=wal_position)

    def prepare(self, batch: Rows) -> Prepared:
        """What ``batch`` writes, worked out before the write transaction (:class:`Prepared`): an
        indexer lane calls it outside the lanes' write lock, so the other lane can write meanwhile."""
        rows_in = batch.rows
        rids = {text: self._resources.get(text) for text in batch.resources}
        bound: list[Row] | None = None
        if None not in rids.values():  # every resource stored before: bind now
            bound = [(*r[:12], rids[r[12]], *r[13:16]) for r in rows_in]
        return Prepared(batch, rids, bound, list({r[0]: None for r in rows_in}), _aggregates(rows_in))

    def insert_rows(self, batch: Rows | Prepared, *, wal_position: Position | None = None, lane: int = 0) -> int:
        """:meth:`insert` for spans already decoded into :data:`Row` tuples (the indexer's path), or
        the result of :meth:`prepare`; ``wal_position`` is recorded as ``lane``'s."""
        prepared = batch if isinstance(batch, Prepared) else self.prepare(batch)
        rows_in = prepared.batch.rows
        if not rows_in and wal_position is None:
            return 0
        with self.db.lock:
            conn = self.db.conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                # the stored spans of the traces this batch adds to, as they were before it (linking)
                before = self._stored_spans(conn, prepared.trace_ids)
                # new rows get rowids from here up (no AUTOINCREMENT: max + 1, in order), so the rows
                # written can be told from duplicates (a duplicate keeps its old row)
                first = (conn.execute("SELECT max(rowid) FROM spans").fetchone()[0] or 0) + 1
                rows = prepared.bound
                # a resource new to this process (or forgotten since: a rolled back write): its id is known here
                if rows is None or any(self._resources.get(t) != rid for t, rid in prepared.rids.items()):
                    rid_of = {text: self._resource_id(conn, text, res)
                              for text, res in prepared.batch.resources.items()}
                    rows = [(*r[:12], rid_of[r[12]], *r[13:16]) for r in rows_in]
                before_changes = conn.total_changes
                conn.executemany(f"INSERT OR IGNORE INTO spans ({_INSERT_COLUMNS}) VALUES "
                                 "(?,?,NULLIF(?,0),?,?,?,NULLIF(?,0),?,?,?,?,?,?,NULLIF(?,0),NULLIF(?,0),?)", rows)
                added = conn.total_changes - before_changes
                aggregates = prepared.aggregates
                if added != len(rows_in):  # some were already there: count only the rows written now
                    kept = set(conn.execute("SELECT trace_id, span_id, kind FROM spans WHERE rowid >= ?", (first,)))
                    written = []
                    for r in rows_in:  # the first of a batch's duplicates is the one written
                        key = (r[0], r[1], r[4])
                        if key in kept:
                            kept.discard(key)
                            written.append(r)
                    aggregates = _aggregates(written)
                self._index(conn, aggregates, before)
                if wal_position is not None:
                    conn.execute("INSERT OR REPLACE INTO wal_lanes VALUES (?, ?, ?)",
                                 (lane, wal_position.segment, wal_position.offset))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                self._resources.clear()
                raise
            self._count += added
            return added

    def _stored_spans(self, conn: sqlite3.Connection, trace_ids: list[str]) -> dict[str, list[links.Light]]:
        """The stored spans of these traces (those that have some), as the linker reads them: a query per
        :data:`_IN_CHUNK` trace ids rather than one per trace (a trace's rows come in the trace-id
        index's order either way)."""
        before: dict[str, list[links.Light]] = {}
        for i in range(0, len(trace_ids), _IN_CHUNK):
            chunk = trace_ids[i:i + _IN_CHUNK]
            marks = ",".join("?" * len(chunk))
            for row in conn.execute(f"SELECT trace_id, {_LINK_COLUMNS} FROM spans WHERE trace_id IN ({marks})", chunk):
                stored = before.get(row[0])
                if stored is None:
                    before[row[0]] = [row[1:]]
                else:
                    stored.append(row[1:])
        return before

    def _index(self, conn: sqlite3.Connection, aggregates: Aggregates, before: dict[str, list[links.Light]]) -> None:
        """Writes the names, distinct tag values, per-service counts and dependency links of the rows
        written; the links of a trace that had spans stored before are worked out again here, whole."""
        conn.executemany(
            "INSERT INTO names VALUES (?,?,?,?) ON CONFLICT (service, kind, value) "
            "DO UPDATE SET last_us = max(last_us, excluded.last_us)", [(*k, v) for k, v in aggregates.names.items()])
        conn.executemany(
            "INSERT INTO tag_values VALUES (?,?,?) ON CONFLICT (key, value) "
            "DO UPDATE SET last_us = max(last_us, excluded.last_us)", [(*k, v) for k, v in aggregates.values.items()])
        conn.executemany(
            "INSERT INTO service_minutes VALUES (?,?,?,?) ON CONFLICT (minute, service) "
            "DO UPDATE SET spans = spans + excluded.spans, errors = errors + excluded.errors",
            [(*k, *v) for k, v in aggregates.per_minute.items()])
        delta = aggregates.delta
        for tid, old in before.items():
            new = aggregates.traces.get(tid)
            if new and old:  # linked alone before the lock: link the trace's spans before and after instead
                links.add_calls(delta, links.calls_of(new), -1)
                links.add_calls(delta, links.calls_of(old), -1)
                links.add_calls(delta, links.calls_of(old + new), +1)
        self._add_links(conn, delta)

    def _add_links(self, conn: sqlite3.Connection, delta: links.Delta) -> None:
        out = []
        for key, (calls, errors, sum_us, max_us, hist) in delta.items():
            if not (calls or errors or sum_us or any(hist.values())):
                continue  # re-linked to the same effect (a late parent that changed nothing here)
            row = conn.execute("SELECT calls, errors, sum_us, max_us, hist FROM links "
                               "WHERE minute = ? AND parent = ? AND child = ?", key).fetchone()
            if row is not None:
                merged = {int(b): n for b, n in loads(row[4]).items()}
                for b, n in hist.items():
                    merged[b] = merged.get(b, 0) + n
                calls, errors, sum_us = calls + row[0], errors + row[1], sum_us + row[2]
                max_us, hist = max(max_us, row[3]), merged
            hist = {b: n for b, n in hist.items() if n}
            out.append((*key, calls, errors, sum_us, max_us, dumps(hist)))
        conn.executemany("INSERT OR REPLACE INTO links VALUES (?,?,?,?,?,?,?,?)", out)

    def enforce_retention(self, *, now_us: int, max_age_us: int, max_spans: int) -> int:
        """Delete spans older than ``max_age_us`` and the oldest beyond ``max_spans``; returns how many."""
        cutoff = now_us - max_age_us
        with self.db.lock:
            conn = self.db.conn
            if self._count > max_spans:
                row = conn.execute("SELECT start_us FROM spans ORDER BY start_us LIMIT 1 OFFSET ?",
                                   (self._count - max_spans,)).fetchone()
                if row is not None:
                    cutoff = max(cutoff, row[0])
            conn.execute("BEGIN IMMEDIATE")
            try:
                deleted = conn.execute("DELETE FROM spans WHERE start_us < ?", (cutoff,)).rowcount
                if deleted:
                    conn.execute("DELETE FROM tag_values WHERE last_us < ?", (cutoff,))
                    conn.execute("DELETE FROM names WHERE last_us < ?", (cutoff,))
                    conn.execute("DELETE FROM links WHERE minute < ?", (cutoff // links.MINUTE_US,))
                    conn.execute("DELETE FROM service_minutes WHERE minute < ?", (cutoff // links.MINUTE_US,))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            self._count -= deleted
        if deleted:
            LOG.info("tracing retention deleted %d spans older than %d", deleted, cutoff)
        return deleted

    # --- reads -----------------------------------------------------------------------------

    def _rows_to_spans(self, conn: sqlite3.Connection, rows: Iterable[Sequence[Any]], *,
                       details: bool = True) -> list[Span]:
        if not details:
            return [Span(trace_id=r[0], span_id=r[1], parent_id=r[2], name=r[3], kind=r[4], service=r[5],
                         remote_service=r[6], start_us=r[7], duration_us=r[8], error=bool(r[9]),
                         status_message=r[10]) for r in rows]
        out = []
        for r in rows:
            rid = r[12]
            resource = self._resource_json.get(rid)
            if resource is None:
                row = conn.execute("SELECT json FROM resources WHERE id = ?", (rid,)).fetchone()
                resource = json.loads(row[0]) if row else {}
                self._resource_json[rid] = resource
            span = Span(
                trace_id=r[0], span_id=r[1], parent_id=r[2], name=r[3], kind=r[4], service=r[5],
                remote_service=r[6], start_us=r[7], duration_us=r[8], error=bool(r[9]), status_message=r[10],
                attributes=loads(r[11]), resource=resource,
            )
            if r[13]:
                span.set_detail(loads(r[13]))
            out.append(span)
        return out

    def trace(self, trace_id: str) -> list[Span]:
        """Every stored span of a trace, by start time (empty when unknown)."""
        with self.db.lock:
            conn = self.db.conn
            rows = conn.execute(f"SELECT {_SPAN_COLUMNS} FROM spans WHERE trace_id = ? ORDER BY start_us",
                                (trace_id,)).fetchall()
            return self._rows_to_spans(conn, rows)

    def trace_zipkin(self, trace_id: str) -> bytes | None:
        """A trace as the Zipkin API's JSON array, from the JSON stored at index time (None when
        unknown). Rows written before that column existed are rendered from their fields
        (:func:`convert.to_zipkin`; rendering every span at read time instead made a 1,000-span trace
        ~10x slower: 129 ms p50 with 1M spans stored, bench_queries)."""
        with self.db.lock:
            conn = self.db.conn
            rows = conn.execute(f"SELECT zipkin, {_SPAN_COLUMNS} FROM spans WHERE trace_id = ? ORDER BY start_us",
                                (trace_id,)).fetchall()
            if not rows:
                return None
            spans = iter(self._rows_to_spans(conn, [r[1:] for r in rows if r[0] is None]))
        return ("[" + ",".join(r[0] if r[0] is not None else dumps(to_zipkin(next(spans))) for r in rows)
                + "]").encode()

    def find_trace_ids(self, q: TraceQuery) -> list[str]:
        """Trace ids with at least one span matching every condition, newest first."""
        where, args = [], []
        # Names match case-insensitively, as Zipkin's queries do (it lower-cases names on ingest).
        for column, value in (("service", q.service), ("remote_service", q.remote_service), ("name", q.span_name)):
            if value is not None:
                where.append(f"{column} = ? COLLATE NOCASE")
                args.append(value)
        if q.min_duration_us is not None:
            where.append("duration_us >= ?")
            args.append(q.min_duration_us)
        if q.max_duration_us is not None:
            where.append("duration_us <= ?")
            args.append(q.max_duration_us)
        if q.start_us is not None:
            where.append("start_us >= ?")
            args.append(q.start_us)
        if q.end_us is not None:
            where.append("start_us <= ?")
            args.append(q.end_us)
        # Trace-level conditions probe the trace's other spans through the trace-id index, once per
        # candidate row; with the newest-first early stop below that beats materialising the window.
        if q.errors_only:
            where.append("EXISTS (SELECT 1 FROM spans e WHERE e.trace_id = spans.trace_id AND e.error = 1)")
        if q.exclude_roots:
            marks = ",".join("?" * len(q.exclude_roots))
            where.append("NOT EXISTS (SELECT 1 FROM spans r WHERE r.trace_id = spans.trace_id "
                         f"AND r.parent_id IS NULL AND r.name IN ({marks}))")
            args.extend(q.exclude_roots)
        if q.trace_min_duration_us is not None:
            where.append("EXISTS (SELECT 1 FROM spans d WHERE d.trace_id = spans.trace_id AND d.duration_us >= ?)")
            args.append(q.trace_min_duration_us)
        for key, value in q.tags:
            term, term_args = self._tag_term(key, value)
            where.append(term)
            args.extend(term_args)
        sql = "SELECT trace_id FROM spans"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY start_us DESC"
        # Newest matching spans first, stopping at ``limit`` distinct traces: a trace's first
        # appearance is its newest matching span, so this is the GROUP BY ... ORDER BY max(start)
        # answer without grouping the whole window.
        found: dict[str, None] = {}
        with self.db.lock:
            for (trace_id,) in self.db.conn.execute(sql, args):
                found[trace_id] = None
                if len(found) >= q.limit:
                    break
        return list(found)

    def _tag_term(self, key: str, value: str | None) -> tuple[str, list[Any]]:
        """One ``annotationQuery`` term as SQL: ``key=value`` matches a tag of the span or of its
        resource; a bare word matches a tag key or an annotation value (Zipkin's rule)."""
        path = _json_path(key)
        resource = ("resource_id IN (SELECT resource_id FROM resource_tags WHERE key = ?"
                    + (" AND value = ?)" if value is not None else ")"))
        resource_args: list[Any] = [key] if value is None else [key, value]
        if value is not None:
            if path is None:
                own, own_args = "0", []
            else:
                own, own_args = f"{_TAG_TEXT} = ?", [path, path, value]
            if key in _DERIVED_TAGS:
                own, own_args = f"({own} OR {_DERIVED_TAGS[key]} = ?)", [*own_args, value]
            return f"({own} OR {resource})", [*own_args, *resource_args]
        if key == "error":
            own, own_args = "error = 1", []
        elif path is None:
            own, own_args = "0", []
        else:
            own, own_args = "json_type(attributes, ?) IS NOT NULL", [path]
        if key in _DERIVED_TAGS:
            own = f"({own} OR {_DERIVED_TAGS[key]} IS NOT NULL)"
        annotated = ("(annotation_values IS NOT NULL AND "
                     "EXISTS (SELECT 1 FROM json_each(spans.annotation_values) WHERE json_each.value = ?))")
        return f"({own} OR {annotated} OR {resource})", [*own_args, key, *resource_args]

    def summaries(self, trace_ids: Sequence[str]) -> list[dict[str, Any]]:
        """One line per trace: root span, services, span and error counts, start and duration."""
        out = []
        with self.db.lock:
            conn = self.db.conn
            for tid in trace_ids:
                row = conn.execute(
                    "SELECT MIN(start_us), MAX(start_us + duration_us), COUNT(*), SUM(error), "
                    "group_concat(DISTINCT service) FROM spans WHERE trace_id = ?", (tid,)
                ).fetchone()
                if not row or row[2] == 0:
                    continue
                root = conn.execute(
                    "SELECT service, name, error, status_message FROM spans WHERE trace_id = ? "
                    "ORDER BY parent_id IS NOT NULL, start_us, duration_us DESC LIMIT 1", (tid,)
                ).fetchone()
                out.append({
                    "trace_id": tid, "start_us": row[0], "duration_us": row[1] - row[0], "spans": row[2],
                    "errors": row[3], "services": sorted((row[4] or "").split(",")),
                    "root_service": root[0], "root_name": root[1],
                })
        return out

    def spans_between(self, start_us: int, end_us: int, limit: int, *,
                      details: bool = True) -> tuple[list[Span], bool]:
        """Spans that started in [start_us, end_us], newest first, at most ``limit``; and whether
        the window held more. ``details=False`` leaves attributes and resource empty (the graph
        analyses do not need them, and decoding them is most of the cost)."""
        with self.db.lock:
            conn = self.db.conn
            columns = _SPAN_COLUMNS if details else _LIGHT_COLUMNS
            rows = conn.execute(
                f"SELECT {columns} FROM spans WHERE start_us BETWEEN ? AND ? ORDER BY start_us DESC LIMIT ?",
                (start_us, end_us, limit + 1),
            ).fetchall()
            truncated = len(rows) > limit
            return self._rows_to_spans(conn, rows[:limit], details=details), truncated

    def services(self) -> list[str]:
        with self.db.lock:
            return [r[0] for r in self.db.conn.execute("SELECT DISTINCT service FROM names ORDER BY service")]

    def names(self, service: str, kind: str) -> list[str]:
        """``kind`` "span": operation names of a service; "remote": services it calls (remoteEndpoint).
        The service matches case-insensitively."""
        with self.db.lock:
            return [r[0] for r in self.db.conn.execute(
                "SELECT DISTINCT value FROM names WHERE service = ? COLLATE NOCASE AND kind = ? ORDER BY value",
                (service, kind))]

    def tag_values(self, key: str, limit: int = 1000, scan: int = 100_000) -> list[str]:
        """Values of a tag key: from the index for indexed keys and resources; for other keys from
        the newest ``scan`` spans (their JSON is read, no index row was written)."""
        with self.db.lock:
            conn = self.db.conn
            values = {r[0] for r in conn.execute(
                "SELECT value FROM tag_values WHERE key = ? UNION SELECT value FROM resource_tags WHERE key = ? "
                "LIMIT ?", (key, key, limit))}
            path = _json_path(key)
            if key not in self.indexed_keys and path is not None:
                values.update(r[0] for r in conn.execute(
                    f"SELECT DISTINCT {_TAG_TEXT} AS v FROM (SELECT attributes FROM spans ORDER BY rowid DESC "
                    "LIMIT ?) WHERE v IS NOT NULL", (path, path, scan)))
            return sorted(values)[:limit]

    # --- dependency links (kept at index time, see links.py) -------------------------------

    def dependency_links(self, start_us: int, end_us: int) -> list[dict[str, Any]]:
        """Zipkin's ``/dependencies`` over the minute buckets of [start_us, end_us]."""
        with self.db.lock:
            rows = self.db.conn.execute(
                "SELECT parent, child, sum(calls), sum(errors) FROM links WHERE minute BETWEEN ? AND ? "
                "GROUP BY parent, child HAVING sum(calls) > 0 ORDER BY parent, child",
                (start_us // links.MINUTE_US, end_us // links.MINUTE_US)).fetchall()
        return [{"parent": a, "child": b, "callCount": n, "errorCount": e} for a, b, n, e in rows]

    def topology_graph(self, start_us: int, end_us: int) -> tuple[nx.DiGraph, int]:
        """:func:`analysis.topology_graph`'s graph from the minute buckets of [start_us, end_us]
        (latency percentiles from the histogram), and the number of spans in the window."""
        import networkx as nx  # not in the indexer process: it never answers this

        lo, hi = start_us // links.MINUTE_US, end_us // links.MINUTE_US
        with self.db.lock:
            conn = self.db.conn
            nodes = conn.execute("SELECT service, sum(spans), sum(errors) FROM service_minutes "
                                 "WHERE minute BETWEEN ? AND ? GROUP BY service", (lo, hi)).fetchall()
            edges = conn.execute("SELECT parent, child, calls, errors, sum_us, max_us, hist FROM links "
                                 "WHERE minute BETWEEN ? AND ?", (lo, hi)).fetchall()
        graph = nx.DiGraph()
        for service, spans, errors in nodes:
            graph.add_node(service, spans=spans, errors=errors)
        merged: dict[tuple[str, str], list[Any]] = {}
        for parent, child, calls, errors, sum_us, max_us, hist in edges:
            m = merged.get((parent, child))
            if m is None:
                m = merged[(parent, child)] = [0, 0, 0, 0, {}]
            m[0] += calls
            m[1] += errors
            m[2] += sum_us
            m[3] = max(m[3], max_us)
            for b, n in loads(hist).items():
                m[4][int(b)] = m[4].get(int(b), 0) + n
        for (caller, callee), (calls, errors, sum_us, max_us, hist) in merged.items():
            if calls <= 0:
                continue
            for name in (caller, callee):
                if name not in graph:
                    graph.add_node(name, spans=0, errors=0)
            graph.add_edge(
                caller, callee, calls=calls, errors=errors, error_rate=errors / calls,
                p50_us=links.percentile(hist, calls, 0.5, max_us), p90_us=links.percentile(hist, calls, 0.9, max_us),
                p99_us=links.percentile(hist, calls, 0.99, max_us), mean_us=round(sum_us / calls), max_us=max_us,
            )
        return graph, sum(n[1] for n in nodes)
