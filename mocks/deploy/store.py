"""Deploy events in SQLite (``.devbox/deploy.db``): what happened to which instance, and when."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from devbox.mocks.deploy.models import DeployEvent, EventKind

from devbox.platform.store import Database

LOG = logging.getLogger(__name__)

MIGRATIONS = [
    """
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        ts REAL NOT NULL,
        service TEXT NOT NULL,
        instance TEXT,
        kind TEXT NOT NULL,
        message TEXT NOT NULL,
        data TEXT NOT NULL
    );
    CREATE INDEX events_service ON events(service, id);
    """,
]


class EventStore:
    """Appends events and lists them newest last. Single small inserts: cheap enough on the loop."""

    def __init__(self, path: Path, *, keep: int = 50_000) -> None:
        self.db = Database(path, MIGRATIONS)
        self.keep = keep

    def add(self, event: DeployEvent) -> DeployEvent:
        with self.db.lock:
            cur = self.db.conn.execute(
                "INSERT INTO events (ts, service, instance, kind, message, data) VALUES (?,?,?,?,?,?)",
                (event.ts, event.service, event.instance, event.kind.value, event.message,
                 json.dumps(event.data, default=str)),
            )
            event.id = cur.lastrowid
            if event.id and event.id % 1000 == 0:
                self.db.conn.execute("DELETE FROM events WHERE id <= ?", (event.id - self.keep,))
        return event

    def list(
        self,
        *,
        service: str | None = None,
        instance: str | None = None,
        kind: str | None = None,
        since_id: int = 0,
        limit: int = 200,
    ) -> list[DeployEvent]:
        where, args = ["id > ?"], [since_id]
        for column, value in (("service", service), ("instance", instance), ("kind", kind)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        sql = f"SELECT id, ts, service, instance, kind, message, data FROM events WHERE {' AND '.join(where)}"
        with self.db.lock:
            rows = self.db.conn.execute(f"{sql} ORDER BY id DESC LIMIT ?", (*args, limit)).fetchall()
        return [
            DeployEvent(id=r[0], ts=r[1], service=r[2], instance=r[3], kind=EventKind(r[4]), message=r[5],
                        data=json.loads(r[6]))
            for r in reversed(rows)
        ]

    def close(self) -> None:
        self.db.close()
