"""SQLite adapter of the ``Ledger`` port: applied operation ids with their result."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any


class SqliteLedger:
    def __init__(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS applied (operation_id TEXT PRIMARY KEY, result TEXT NOT NULL, "
            "recorded_at REAL NOT NULL)"
        )
        self._lock = threading.Lock()

    def get(self, operation_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT result FROM applied WHERE operation_id = ?", (operation_id,)
            ).fetchone()
        return json.loads(row[0]) if row else None

    def record(self, operation_id: str, result: dict[str, Any]) -> None:
        with self._lock:
            self._conn.execute(
                "INSERT OR IGNORE INTO applied VALUES (?, ?, ?)",
                (operation_id, json.dumps(result), time.time()),
            )

    def count(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM applied").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()
