"""The feed cursor in a SQLite directory store: the ``capture_checkpoint`` table, beside the
producer's checkpoint (row ``name``, ``phase`` 'streaming', ``seq`` the feed position, ``cursor``;
migration ``0003_cloud_feed_cursor``; ``unlinked``, the ids known unlinked there: migration
``0006_cloud_capture_unlinked``)."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from cloudcapture.ports import SavedCursor
from kernel.errors import ConfigurationError, RetryableError

_BUSY_TIMEOUT_MS = 30_000
MIGRATE_HINT = (
    "the store lacks migration 0003_cloud_feed_cursor or 0006_cloud_capture_unlinked: "
    "run `vudsync store init` once"
)


class SqliteCursorStore:
    store_kind = "sqlite"

    def __init__(self, path: str | Path) -> None:
        if not Path(path).exists():
            raise ConfigurationError(
                f"no directory store at {path}", hint="check VUDSYNC_STORE_URL, or run `vudsync store init`"
            )
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(str(path), timeout=30, check_same_thread=False, isolation_level=None)
        self._conn.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
        columns = {row[1] for row in self._conn.execute("PRAGMA table_info(capture_checkpoint)")}
        if not {"cursor", "unlinked"} <= columns:
            self._conn.close()
            raise ConfigurationError("the store has no column for the feed cursor", hint=MIGRATE_HINT)

    def load(self, name: str) -> SavedCursor | None:
        try:
            with self._lock:
                row = self._conn.execute(
                    "SELECT cursor, seq, unlinked FROM capture_checkpoint "
                    "WHERE name = ? AND cursor IS NOT NULL",
                    (name,),
                ).fetchone()
        except sqlite3.OperationalError as exc:  # locked past the busy timeout, disk I/O
            raise RetryableError(f"reading the feed cursor: {type(exc).__name__}") from None
        return (
            None if row is None else SavedCursor(str(row[0]), int(row[1]), SavedCursor.unlinked_from(row[2]))
        )

    def save(self, name: str, cursor: SavedCursor) -> None:
        try:
            with self._lock:
                self._conn.execute(
                    "INSERT INTO capture_checkpoint (name, phase, seq, cursor, unlinked, updated_at) "
                    "VALUES (?, 'streaming', ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET "
                    "phase = excluded.phase, seq = excluded.seq, cursor = excluded.cursor, "
                    "unlinked = excluded.unlinked, "
                    "updated_at = excluded.updated_at",
                    (name, cursor.position, cursor.cursor, cursor.unlinked_json(), time.time()),
                )
        except sqlite3.OperationalError as exc:  # locked past the busy timeout, disk I/O
            raise RetryableError(f"saving the feed cursor: {type(exc).__name__}") from None

    def close(self) -> None:
        with self._lock:
            self._conn.close()
