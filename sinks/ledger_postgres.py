"""PostgreSQL adapter of the ``Ledger`` port (larger installations: workers on several hosts
share one ledger), psycopg 3.

One table, ``vudsync_sink_ledger``, keyed by (scope, operation id); the scope is the topic
prefix, so installations (and test runs) sharing a database never see each other's ids.
Writes commit before the result is published: a crash never forgets an applied id that a
result announced.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

SCHEMA = """
CREATE TABLE IF NOT EXISTS vudsync_sink_ledger (
    scope TEXT NOT NULL,
    operation_id TEXT NOT NULL,
    result JSONB NOT NULL,
    recorded_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, operation_id)
)
"""


class PostgresLedger:
    def __init__(self, url: str, *, scope: str = "") -> None:
        self._conn = psycopg.connect(url, autocommit=True, application_name="vudsync-sink")
        self._conn.execute(SCHEMA)
        self._scope = scope
        self._lock = threading.Lock()

    def get(self, operation_id: str) -> dict[str, Any] | None:
        return self.get_many([operation_id]).get(operation_id)

    def get_many(self, operation_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        if not operation_ids:
            return {}
        with self._lock:
            rows = self._conn.execute(
                "SELECT operation_id, result FROM vudsync_sink_ledger "
                "WHERE scope = %s AND operation_id = ANY(%s)",
                (self._scope, list(operation_ids)),
            ).fetchall()
        return {oid: dict(result) for oid, result in rows}

    def record_many(self, entries: Sequence[tuple[str, dict[str, Any]]]) -> None:
        if not entries:
            return
        with self._lock, self._conn.transaction(), self._conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO vudsync_sink_ledger (scope, operation_id, result) VALUES (%s, %s, %s) "
                "ON CONFLICT DO NOTHING",
                [(self._scope, oid, Jsonb(result)) for oid, result in entries],
            )

    def record(self, operation_id: str, result: dict[str, Any]) -> None:
        self.record_many([(operation_id, result)])

    def count(self) -> int:
        with self._lock:
            row = self._conn.execute(
                "SELECT COUNT(*) FROM vudsync_sink_ledger WHERE scope = %s", (self._scope,)
            ).fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        with self._lock:
            self._conn.close()
