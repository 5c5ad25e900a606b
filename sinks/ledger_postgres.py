"""PostgreSQL adapter of the ``Ledger`` port (larger installations: workers on several hosts
share one ledger), psycopg 3.

Three tables: ``vudsync_sink_ledger`` keyed by (scope, operation id);
``vudsync_sink_versions``, the highest source version applied per (scope, version slot); and
``vudsync_sink_intents``, the write-ahead intents of unfinished operations; the
scope is the topic prefix, so installations (and test runs) sharing a database never see each other's ids.
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
);
CREATE TABLE IF NOT EXISTS vudsync_sink_versions (
    scope TEXT NOT NULL,
    slot TEXT NOT NULL,
    version BIGINT NOT NULL,
    PRIMARY KEY (scope, slot)
);
CREATE TABLE IF NOT EXISTS vudsync_sink_intents (
    scope TEXT NOT NULL,
    operation_id TEXT NOT NULL,
    intent JSONB NOT NULL,
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

    def _rows_any(self, table: str, key: str, value: str, keys: Sequence[str]) -> list[tuple[Any, Any]]:
        """``(key, value)`` of the rows of ``table`` (one of this module's) in this ledger's scope
        whose ``key`` is one of ``keys``."""
        if not keys:
            return []
        select = f"SELECT {key}, {value} FROM {table} WHERE scope = %s AND {key} = ANY(%s)"
        with self._lock:
            return self._conn.execute(select, (self._scope, list(dict.fromkeys(keys)))).fetchall()

    def get_many(self, operation_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        rows = self._rows_any("vudsync_sink_ledger", "operation_id", "result", operation_ids)
        return {oid: dict(result) for oid, result in rows}

    def applied_versions(self, slots: Sequence[str]) -> dict[str, int]:
        rows = self._rows_any("vudsync_sink_versions", "slot", "version", slots)
        return {slot: int(version) for slot, version in rows}

    def record_many(
        self, entries: Sequence[tuple[str, dict[str, Any]]], versions: Sequence[tuple[str, int]] = ()
    ) -> None:
        if not entries and not versions:
            return
        with self._lock, self._conn.transaction(), self._conn.cursor() as cur:
            if entries:
                cur.executemany(
                    "INSERT INTO vudsync_sink_ledger (scope, operation_id, result) VALUES (%s, %s, %s) "
                    "ON CONFLICT DO NOTHING",
                    [(self._scope, oid, Jsonb(result)) for oid, result in entries],
                )
                # an intent ends with its operation's outcome (sinks.writes.link_intent); only a
                # link has one (another outcome's leftover is moot: its id is in the ledger)
                if linked := [oid for oid, result in entries if result.get("effect") == "linked"]:
                    cur.execute(
                        "DELETE FROM vudsync_sink_intents WHERE scope = %s AND operation_id = ANY(%s)",
                        (self._scope, linked),
                    )
            if versions:
                cur.executemany(
                    "INSERT INTO vudsync_sink_versions (scope, slot, version) VALUES (%s, %s, %s) "
                    "ON CONFLICT (scope, slot) DO UPDATE "
                    "SET version = GREATEST(vudsync_sink_versions.version, EXCLUDED.version)",
                    [(self._scope, slot, version) for slot, version in versions],
                )

    def record_intents(self, intents: Sequence[tuple[str, dict[str, Any]]]) -> None:
        if not intents:
            return
        with self._lock, self._conn.transaction(), self._conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO vudsync_sink_intents (scope, operation_id, intent) VALUES (%s, %s, %s) "
                "ON CONFLICT (scope, operation_id) DO UPDATE "
                "SET intent = EXCLUDED.intent, recorded_at = now()",
                [(self._scope, oid, Jsonb(intent)) for oid, intent in intents],
            )

    def intents(self, operation_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        rows = self._rows_any("vudsync_sink_intents", "operation_id", "intent", operation_ids)
        return {oid: dict(intent) for oid, intent in rows}

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
