"""The feed cursor in a PostgreSQL directory store: the ``capture_checkpoint`` table, beside the
producer's checkpoint (row ``name``, ``phase`` 'streaming', ``seq`` the feed position, ``cursor``;
migration ``0002_cloud_feed_cursor``; ``unlinked``, the ids known unlinked there: migration
``0005_cloud_capture_unlinked``)."""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg

from cloudcapture.ports import SavedCursor
from kernel.errors import ConfigurationError, RetryableError

MIGRATE_HINT = (
    "the store lacks migration 0002_cloud_feed_cursor or 0005_cloud_capture_unlinked: "
    "run `vudsync store init` once"
)


class PostgresCursorStore:
    store_kind = "postgresql"

    def __init__(self, url: str) -> None:
        self._url = url
        self._lock = threading.Lock()
        self._conn = self._connect()
        found = self._conn.execute(
            "SELECT count(*) FROM information_schema.columns WHERE table_name = 'capture_checkpoint' "
            "AND column_name IN ('cursor', 'unlinked') AND table_schema = current_schema()"
        ).fetchone()
        if found is None or found[0] != 2:
            self._conn.close()
            raise ConfigurationError("the store has no column for the feed cursor", hint=MIGRATE_HINT)

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            return psycopg.connect(self._url, autocommit=True)
        except psycopg.OperationalError:
            raise RetryableError("the directory store (PostgreSQL) does not answer") from None

    def _live(self) -> psycopg.Connection[Any]:
        """The connection, opened again after the server closed or lost it (a restart)."""
        if self._conn.broken or self._conn.closed:
            self._conn = self._connect()
        return self._conn

    def load(self, name: str) -> SavedCursor | None:
        try:
            with self._lock:
                row = (
                    self._live()
                    .execute(
                        "SELECT cursor, seq, unlinked FROM capture_checkpoint "
                        "WHERE name = %s AND cursor IS NOT NULL",
                        (name,),
                    )
                    .fetchone()
                )
        except psycopg.OperationalError:
            raise RetryableError("reading the feed cursor: the directory store does not answer") from None
        return (
            None if row is None else SavedCursor(str(row[0]), int(row[1]), SavedCursor.unlinked_from(row[2]))
        )

    def save(self, name: str, cursor: SavedCursor) -> None:
        """One autocommit statement, committed synchronously: the cursor is all that says which
        feed items were published (the producer's checkpoint may commit asynchronously because
        its change log stays in the same database; a lost cursor would re-read a feed that may
        have expired since, a full read)."""
        try:
            with self._lock:
                self._live().execute(
                    "INSERT INTO capture_checkpoint (name, phase, seq, cursor, unlinked, updated_at) "
                    "VALUES (%s, 'streaming', %s, %s, %s, %s) ON CONFLICT (name) DO UPDATE SET "
                    "phase = excluded.phase, seq = excluded.seq, cursor = excluded.cursor, "
                    "unlinked = excluded.unlinked, "
                    "updated_at = excluded.updated_at",
                    (name, cursor.position, cursor.cursor, cursor.unlinked_json(), time.time()),
                )
        except psycopg.OperationalError:
            raise RetryableError("saving the feed cursor: the directory store does not answer") from None

    def close(self) -> None:
        with self._lock:
            self._conn.close()
