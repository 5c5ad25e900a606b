"""SQLite adapter of the ``Ledger`` port: applied operation ids with their result, the
highest source version applied per slot, and the write-ahead intents of unfinished operations.

WAL journal with ``synchronous=NORMAL``: a process crash (SIGKILL) loses nothing committed;
a power loss may lose the last commits, which only costs a cloud call answered from the
cloud's idempotency store. Several sink workers on one machine may share the file (writes
wait for each other up to ``busy_timeout``). The WAL is checkpointed by a thread of its own
(:class:`kernel.sqlite_wal.WalCheckpointer`), not inside a ``record_many`` commit, which runs
on the sink's event loop: such a commit took 20-90 ms instead of 4.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kernel.sqlite_wal import WalCheckpointer, immediate


class SqliteLedger:
    def __init__(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._path = str(path)
        self._conn = self._connect()
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS applied (operation_id TEXT PRIMARY KEY, result TEXT NOT NULL, "
            "recorded_at REAL NOT NULL)"
        )
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS versions (slot TEXT PRIMARY KEY, version INTEGER NOT NULL)"
        )
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS intents (operation_id TEXT PRIMARY KEY, intent TEXT NOT NULL, "
            "recorded_at REAL NOT NULL)"
        )
        self._lock = threading.Lock()
        self._checkpointer = WalCheckpointer(self._connect, name="ledger-checkpointer")
        self._checkpointer.start(self._conn)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA busy_timeout=30000")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    def get(self, operation_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT result FROM applied WHERE operation_id = ?", (operation_id,)
            ).fetchone()
        return json.loads(row[0]) if row else None

    def _rows_in(self, select: str, keys: Sequence[str]) -> list[tuple[Any, Any]]:
        """The rows of ``select … IN ({marks})`` for ``keys``, in chunks of SQLite's
        bound-parameter limit."""
        wanted = list(dict.fromkeys(keys))
        rows: list[tuple[Any, Any]] = []
        with self._lock:
            for first in range(0, len(wanted), 500):
                chunk = wanted[first : first + 500]
                marks = ",".join("?" * len(chunk))
                rows.extend(self._conn.execute(select.format(marks=marks), chunk).fetchall())
        return rows

    def get_many(self, operation_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        select = "SELECT operation_id, result FROM applied WHERE operation_id IN ({marks})"
        return {oid: json.loads(result) for oid, result in self._rows_in(select, operation_ids)}

    def applied_versions(self, slots: Sequence[str]) -> dict[str, int]:
        select = "SELECT slot, version FROM versions WHERE slot IN ({marks})"
        return {slot: int(version) for slot, version in self._rows_in(select, slots)}

    def record_many(
        self, entries: Sequence[tuple[str, dict[str, Any]]], versions: Sequence[tuple[str, int]] = ()
    ) -> None:
        if not entries and not versions:
            return
        now = time.time()
        rows = [(oid, json.dumps(result), now) for oid, result in entries]
        with self._lock:
            with immediate(self._conn) as conn:
                conn.executemany("INSERT OR IGNORE INTO applied VALUES (?, ?, ?)", rows)
                # an intent ends with its operation's outcome (sinks.writes.link_intent); only a
                # link has one (another outcome's leftover is moot: its id is in ``applied``)
                conn.executemany(
                    "DELETE FROM intents WHERE operation_id = ?",
                    [(oid,) for oid, result in entries if result.get("effect") == "linked"],
                )
                conn.executemany(
                    "INSERT INTO versions VALUES (?, ?) ON CONFLICT (slot) DO UPDATE "
                    "SET version = max(version, excluded.version)",
                    versions,
                )
            self._checkpointer.after_commit(self._conn)

    def record_intents(self, intents: Sequence[tuple[str, dict[str, Any]]]) -> None:
        if not intents:
            return
        now = time.time()
        rows = [(oid, json.dumps(intent), now) for oid, intent in intents]
        with self._lock:
            with immediate(self._conn) as conn:
                conn.executemany("INSERT OR REPLACE INTO intents VALUES (?, ?, ?)", rows)
            self._checkpointer.after_commit(self._conn)

    def intents(self, operation_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        select = "SELECT operation_id, intent FROM intents WHERE operation_id IN ({marks})"
        return {oid: json.loads(intent) for oid, intent in self._rows_in(select, operation_ids)}

    def record(self, operation_id: str, result: dict[str, Any]) -> None:
        self.record_many([(operation_id, result)])

    def count(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM applied").fetchone()[0])

    def close(self) -> None:
        self._checkpointer.stop()
        with self._lock:
            self._conn.close()
