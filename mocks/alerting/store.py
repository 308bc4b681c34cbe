"""alerting.db: transition history, silences and the rules created over the API.

Silences and API rules are small and read back whole at start; history grows and is queried by
rule, service and time, and pruned past ``history_days``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from devbox.mocks.alerting.models import Matcher, MatchType, Silence, Transition

from devbox.platform.store import Database

LOG = logging.getLogger(__name__)

MIGRATIONS = [
    """
    CREATE TABLE history (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at REAL NOT NULL,
        rule TEXT,
        alertname TEXT NOT NULL,
        service TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        from_state TEXT NOT NULL,
        to_state TEXT NOT NULL,
        value REAL,
        labels TEXT NOT NULL,
        annotations TEXT NOT NULL,
        silenced_by TEXT NOT NULL,
        notified INTEGER NOT NULL
    );
    CREATE INDEX history_at ON history(at);
    CREATE INDEX history_rule ON history(rule, at);
    CREATE INDEX history_service ON history(service, at);
    CREATE TABLE silences (
        id TEXT PRIMARY KEY,
        matchers TEXT NOT NULL,
        starts_at REAL NOT NULL,
        ends_at REAL NOT NULL,
        created_by TEXT NOT NULL,
        comment TEXT NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE rules (
        id TEXT PRIMARY KEY,
        body TEXT NOT NULL,
        updated_at REAL NOT NULL
    );
    """
]


class AlertStore:
    def __init__(self, path: Path) -> None:
        self.db = Database(path, MIGRATIONS)

    def close(self) -> None:
        self.db.close()

    # --- history ----------------------------------------------------------------------------

    def add_transitions(self, transitions: list[Transition]) -> None:
        rows = [
            (
                t.at,
                t.rule_id,
                t.alertname,
                t.service,
                t.fingerprint,
                t.from_state.value,
                t.to_state.value,
                t.value if t.value is None or t.value == t.value else None,
                json.dumps(t.labels, sort_keys=True),
                json.dumps(t.annotations, sort_keys=True),
                json.dumps(t.silenced_by),
                int(t.notified),
            )
            for t in transitions
        ]
        if not rows:
            return
        with self.db.lock:
            self.db.conn.execute("BEGIN")
            self.db.conn.executemany(
                "INSERT INTO history (at, rule, alertname, service, fingerprint, from_state, to_state, value,"
                " labels, annotations, silenced_by, notified) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                rows,
            )
            self.db.conn.execute("COMMIT")

    def history(
        self,
        *,
        rule: str | None = None,
        service: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 500,
    ) -> list[dict[str, Any]]:
        where, args = [], []
        if rule:
            # a rule id (group/name) or a bare alert name
            where.append("(rule = ? OR alertname = ?)")
            args += [rule, rule]
        if service:
            where.append("service = ?")
            args.append(service)
        if since is not None:
            where.append("at >= ?")
            args.append(since)
        if until is not None:
            where.append("at <= ?")
            args.append(until)
        sql = "SELECT id, at, rule, alertname, service, fingerprint, from_state, to_state, value, labels, annotations,"
        sql += " silenced_by, notified FROM history"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY at DESC, id DESC LIMIT ?"
        args.append(limit)
        with self.db.lock:
            rows = self.db.conn.execute(sql, args).fetchall()
        out = []
        for row in rows:
            silenced_by = json.loads(row[11])
            out.append(
                {
                    "id": row[0],
                    "at": row[1],
                    "rule": row[2],
                    "alertname": row[3],
                    "service": row[4],
                    "fingerprint": row[5],
                    "from": row[6],
                    "to": row[7],
                    "value": row[8],
                    "labels": json.loads(row[9]),
                    "annotations": json.loads(row[10]),
                    "silenced": bool(silenced_by),
                    "silenced_by": silenced_by,
                    "notified": bool(row[12]),
                }
            )
        return out

    def prune_history(self, before: float) -> int:
        with self.db.lock:
            return self.db.conn.execute("DELETE FROM history WHERE at < ?", (before,)).rowcount

    # --- silences ---------------------------------------------------------------------------

    def save_silence(self, s: Silence) -> None:
        matchers = json.dumps([{"name": m.name, "value": m.value, "type": m.type.value} for m in s.matchers])
        with self.db.lock:
            self.db.conn.execute(
                "INSERT OR REPLACE INTO silences (id, matchers, starts_at, ends_at, created_by, comment, updated_at)"
                " VALUES (?,?,?,?,?,?,?)",
                (s.id, matchers, s.starts_at, s.ends_at, s.created_by, s.comment, s.updated_at),
            )

    def silences(self) -> list[Silence]:
        with self.db.lock:
            rows = self.db.conn.execute(
                "SELECT id, matchers, starts_at, ends_at, created_by, comment, updated_at FROM silences"
            ).fetchall()
        return [
            Silence(
                id=r[0],
                matchers=[Matcher(m["name"], m["value"], MatchType(m["type"])) for m in json.loads(r[1])],
                starts_at=r[2],
                ends_at=r[3],
                created_by=r[4],
                comment=r[5],
                updated_at=r[6],
            )
            for r in rows
        ]

    def delete_silences_before(self, ends_before: float) -> None:
        with self.db.lock:
            self.db.conn.execute("DELETE FROM silences WHERE ends_at < ?", (ends_before,))

    # --- rules created over the API --------------------------------------------------------

    def save_rule(self, rule_id: str, body: dict[str, Any], now: float) -> None:
        with self.db.lock:
            self.db.conn.execute(
                "INSERT OR REPLACE INTO rules (id, body, updated_at) VALUES (?,?,?)", (rule_id, json.dumps(body), now)
            )

    def delete_rule(self, rule_id: str) -> None:
        with self.db.lock:
            self.db.conn.execute("DELETE FROM rules WHERE id = ?", (rule_id,))

    def rules(self) -> list[tuple[str, dict[str, Any]]]:
        with self.db.lock:
            rows = self.db.conn.execute("SELECT id, body FROM rules ORDER BY id").fetchall()
        return [(r[0], json.loads(r[1])) for r in rows]
