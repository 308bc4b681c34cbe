"""The snapshot file: one SQLite database per snapshot, ``.devbox/snapshots/NAME.db``.

Format version 1 (``meta.format_version``). Every table holds JSON as the platform's HTTP APIs
answered it, so a snapshot reads the same whichever devbox version wrote the rows:

- ``meta(key, value)``: ``format_version``, ``created`` (epoch s), ``project``, ``window_start`` /
  ``window_end`` (epoch s, the evidence window), ``source`` (the API it was read from), ``name``.
- ``services(namespace, name, json)``: ``GET /api/naming/services`` rows.
- ``instances(id, namespace, service, json)``: ``GET /api/naming/instances`` rows (tags = metadata,
  weight, health, isolation).
- ``routing_rules(namespace, service, name, json)``: ``GET /api/naming/rules`` rows.
- ``alert_rules(id, json)``, ``silences(id, json)``: ``GET /api/alerts/rules`` / ``/silences``.
- ``alert_transitions(ts, rule, json)`` (``ts`` is the row's ``at``): ``GET /api/alerts/history`` rows of the window.
- ``deploy_events(id, ts, service, kind, json)``: ``GET /api/deploy/events`` of the window
  (reloads, restarts, release batches...), and ``releases(id, json)``: ``/api/deploy/releases`` history.
- ``faults(id, json)``: the fault rules in effect (``GET /api/faults``) when the snapshot was taken.
- ``spans(trace_id, span_id, ts_us, duration_us, service, name, json)``: Zipkin v2 JSON, as the
  Zipkin API answers it (names lower-cased, OTel events as annotations). Traces whose root is a
  health probe are left out.
- ``metric_samples(name, labels, ts, value)``: every series of the Prometheus API over the window
  at ``meta.metric_step`` seconds (labels as JSON).

A reader refuses a file of a newer ``format_version`` instead of guessing.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FORMAT_VERSION = 1

SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE services (namespace TEXT, name TEXT, json TEXT NOT NULL);
CREATE TABLE instances (id TEXT, namespace TEXT, service TEXT, json TEXT NOT NULL);
CREATE TABLE routing_rules (namespace TEXT, service TEXT, name TEXT, json TEXT NOT NULL);
CREATE TABLE alert_rules (id TEXT, json TEXT NOT NULL);
CREATE TABLE silences (id TEXT, json TEXT NOT NULL);
CREATE TABLE alert_transitions (ts REAL, rule TEXT, json TEXT NOT NULL);
CREATE TABLE deploy_events (id INTEGER, ts REAL, service TEXT, kind TEXT, json TEXT NOT NULL);
CREATE TABLE releases (id TEXT, json TEXT NOT NULL);
CREATE TABLE faults (id TEXT, json TEXT NOT NULL);
CREATE TABLE spans (trace_id TEXT, span_id TEXT, ts_us INTEGER, duration_us INTEGER, service TEXT, name TEXT,
                    json TEXT NOT NULL);
CREATE INDEX spans_trace ON spans (trace_id);
CREATE TABLE metric_samples (name TEXT, labels TEXT, ts REAL, value REAL);
"""


class SnapshotError(Exception):
    """A snapshot that cannot be read or written; ``str()`` says why."""


@dataclass
class Evidence:
    """What a snapshot holds, in memory: the platform's state and the evidence of one window.

    Also what ``devbox diff`` and ``devbox why`` read from a live platform (same shapes).
    """

    meta: dict[str, Any] = field(default_factory=dict)
    services: list[dict[str, Any]] = field(default_factory=list)
    instances: list[dict[str, Any]] = field(default_factory=list)
    routing_rules: list[dict[str, Any]] = field(default_factory=list)
    alert_rules: list[dict[str, Any]] = field(default_factory=list)
    silences: list[dict[str, Any]] = field(default_factory=list)
    transitions: list[dict[str, Any]] = field(default_factory=list)
    deploy_events: list[dict[str, Any]] = field(default_factory=list)
    releases: list[dict[str, Any]] = field(default_factory=list)
    faults: list[dict[str, Any]] = field(default_factory=list)
    spans: list[dict[str, Any]] = field(default_factory=list)
    #: ``(name, labels, ts, value)``
    metrics: list[tuple[str, dict[str, str], float, float]] = field(default_factory=list)

    @property
    def window(self) -> tuple[float, float]:
        return float(self.meta.get("window_start") or 0), float(self.meta.get("window_end") or 0)

    def label(self) -> str:
        return str(self.meta.get("name") or self.meta.get("source") or "?")


def _dump(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)


def write(path: Path, ev: Evidence) -> Path:
    """Write ``ev`` as a new snapshot file at ``path`` (replacing one of the same name)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".db.tmp")
    tmp.unlink(missing_ok=True)
    db = sqlite3.connect(tmp)
    try:
        db.executescript(SCHEMA)
        meta = {**ev.meta, "format_version": FORMAT_VERSION}
        db.executemany("INSERT INTO meta VALUES (?, ?)", [(k, _dump(v)) for k, v in meta.items()])
        db.executemany("INSERT INTO services VALUES (?, ?, ?)",
                       [(s.get("namespace"), s.get("name"), _dump(s)) for s in ev.services])
        db.executemany("INSERT INTO instances VALUES (?, ?, ?, ?)",
                       [(i.get("id"), i.get("namespace"), i.get("service"), _dump(i)) for i in ev.instances])
        db.executemany("INSERT INTO routing_rules VALUES (?, ?, ?, ?)",
                       [(r.get("namespace"), r.get("service"), r.get("name"), _dump(r)) for r in ev.routing_rules])
        db.executemany("INSERT INTO alert_rules VALUES (?, ?)", [(r.get("id"), _dump(r)) for r in ev.alert_rules])
        db.executemany("INSERT INTO silences VALUES (?, ?)", [(s.get("id"), _dump(s)) for s in ev.silences])
        db.executemany("INSERT INTO alert_transitions VALUES (?, ?, ?)",
                       [(t.get("at"), t.get("rule") or t.get("alertname"), _dump(t)) for t in ev.transitions])
        db.executemany("INSERT INTO deploy_events VALUES (?, ?, ?, ?, ?)",
                       [(e.get("id"), e.get("ts"), e.get("service"), e.get("kind"), _dump(e))
                        for e in ev.deploy_events])
        db.executemany("INSERT INTO releases VALUES (?, ?)", [(r.get("id"), _dump(r)) for r in ev.releases])
        db.executemany("INSERT INTO faults VALUES (?, ?)", [(f.get("id"), _dump(f)) for f in ev.faults])
        db.executemany(
            "INSERT INTO spans VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(s.get("traceId"), s.get("id"), s.get("timestamp"), s.get("duration"),
              (s.get("localEndpoint") or {}).get("serviceName"), s.get("name"), _dump(s)) for s in ev.spans],
        )
        db.executemany("INSERT INTO metric_samples VALUES (?, ?, ?, ?)",
                       [(n, _dump(labels), ts, v) for n, labels, ts, v in ev.metrics])
        db.commit()
    finally:
        db.close()
    tmp.replace(path)
    return path


def _rows(db: sqlite3.Connection, table: str, order: str = "rowid") -> Iterable[Any]:
    return (json.loads(r[0]) for r in db.execute(f"SELECT json FROM {table} ORDER BY {order}"))


def read(path: Path) -> Evidence:
    """The snapshot at ``path``. Raises :class:`SnapshotError` for a missing, foreign or newer file."""
    if not path.is_file():
        raise SnapshotError(f"no snapshot at {path}")
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        try:
            meta = {k: json.loads(v) for k, v in db.execute("SELECT key, value FROM meta")}
        except sqlite3.DatabaseError as exc:
            raise SnapshotError(f"{path} is not a devbox snapshot ({exc})") from None
        version = int(meta.get("format_version") or 0)
        if version > FORMAT_VERSION:
            raise SnapshotError(f"{path} has snapshot format {version}; this devbox reads up to {FORMAT_VERSION}")
        return Evidence(
            meta=meta,
            services=list(_rows(db, "services")),
            instances=list(_rows(db, "instances")),
            routing_rules=list(_rows(db, "routing_rules")),
            alert_rules=list(_rows(db, "alert_rules")),
            silences=list(_rows(db, "silences")),
            transitions=list(_rows(db, "alert_transitions", "ts")),
            deploy_events=list(_rows(db, "deploy_events", "ts")),
            releases=list(_rows(db, "releases")),
            faults=list(_rows(db, "faults")),
            spans=list(_rows(db, "spans", "ts_us")),
            metrics=[(n, json.loads(labels), ts, v)
                     for n, labels, ts, v in db.execute("SELECT name, labels, ts, value FROM metric_samples")],
        )
    finally:
        db.close()
