"""The naming registry's SQLite file (``state_dir/naming.db``): services, rules and instances.

Written in batches from :meth:`devbox.mocks.naming.core.Registry.drain_dirty` (in a worker thread), read
once at start. Instances are kept too, so a restarted devbox still knows who was registered; their
health is then decided by the heartbeat clock again.

LIMITATIONS: last-writer-wins rows, no history of changes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

from devbox.mocks.naming.core import Dirty
from devbox.mocks.naming.models import Instance, Namespace, Service

from devbox.platform.store import Database

LOG = logging.getLogger(__name__)

MIGRATIONS = [
    """
    CREATE TABLE namespaces (name TEXT PRIMARY KEY, data TEXT NOT NULL);
    CREATE TABLE services (namespace TEXT NOT NULL, name TEXT NOT NULL, data TEXT NOT NULL,
                           PRIMARY KEY (namespace, name));
    CREATE TABLE instances (id TEXT PRIMARY KEY, namespace TEXT NOT NULL, service TEXT NOT NULL,
                            data TEXT NOT NULL);
    CREATE TABLE rules (namespace TEXT NOT NULL, service TEXT NOT NULL, name TEXT NOT NULL,
                        data TEXT NOT NULL, PRIMARY KEY (namespace, service, name));
    """,
]


class NamingStore:
    """Rows of JSON, one table per kind; the core's dataclasses are the schema."""

    def __init__(self, path: Path) -> None:
        self.db = Database(path, MIGRATIONS)

    def close(self) -> None:
        self.db.close()

    def load(self) -> tuple[list[Namespace], list[Service], list[Instance], list[dict[str, Any]]]:
        with self.db.lock:
            conn = self.db.conn
            namespaces = [Namespace(**json.loads(d)) for (d,) in conn.execute("SELECT data FROM namespaces")]
            services = [_service(json.loads(d)) for (d,) in conn.execute("SELECT data FROM services")]
            instances = [Instance(**json.loads(d)) for (d,) in conn.execute("SELECT data FROM instances")]
            rules = [json.loads(d) for (d,) in conn.execute("SELECT data FROM rules")]
        return namespaces, services, instances, rules

    def write(self, dirty: Dirty) -> None:
        """Apply one batch of changes in one transaction."""
        if not dirty:
            return
        with self.db.lock:
            conn = self.db.conn
            conn.execute("BEGIN")
            try:
                conn.executemany(
                    "INSERT OR REPLACE INTO namespaces VALUES (?, ?)",
                    [(n.name, json.dumps(dataclasses.asdict(n))) for n in dirty.namespaces],
                )
                conn.executemany(
                    "INSERT OR REPLACE INTO services VALUES (?, ?, ?)",
                    [(s.namespace, s.name, json.dumps(dataclasses.asdict(s))) for s in dirty.services],
                )
                conn.executemany("DELETE FROM services WHERE namespace=? AND name=?", dirty.deleted_services)
                conn.executemany(
                    "INSERT OR REPLACE INTO instances VALUES (?, ?, ?, ?)",
                    [(i.id, i.namespace, i.service, json.dumps(dataclasses.asdict(i))) for i in dirty.instances],
                )
                conn.executemany("DELETE FROM instances WHERE id=?", [(i,) for i in dirty.deleted_instances])
                conn.executemany(
                    "INSERT OR REPLACE INTO rules VALUES (?, ?, ?, ?)",
                    [(r["namespace"], r["service"], r["name"], json.dumps(r)) for r in dirty.rules],
                )
                conn.executemany(
                    "DELETE FROM rules WHERE namespace=? AND service=? AND name=?", dirty.deleted_rules
                )
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")


def _service(data: dict[str, Any]) -> Service:
    known = {f.name for f in dataclasses.fields(Service)}
    return Service(**{k: v for k, v in data.items() if k in known})
