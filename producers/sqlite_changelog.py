"""SQLite adapter of the ``ChangeLog`` port (the embedded default store)."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from kernel.errors import ConfigurationError
from producers import model
from producers.migrations import apply_sqlite_migrations
from producers.model import ENTITIES, ENTITY_TABLES, ChangeRow, EntityRecord, records_from_rows
from schemas.directory import EntityType

_CHUNK = 2000  # ids per IN list (capped by the library's host-parameter limit, 32,766 since 3.32):
# fewer, larger reads are cheaper per entity (the unknown-company check runs once per chunk)


_BUSY_TIMEOUT_MS = 30_000


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_BUSY or "locked" in str(exc)


def connect_sqlite(path: str | Path) -> sqlite3.Connection:
    """A connection in WAL mode, autocommit (explicit BEGIN where needed), rows as ``sqlite3.Row``."""
    conn = sqlite3.connect(str(path), timeout=30, check_same_thread=False, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
    return conn


def connect_sqlite_read_only(path: str | Path) -> sqlite3.Connection:
    """A read-only connection to an existing store (``mode=ro``: no file is ever created,
    nothing can be written, no migration runs). Raises ``sqlite3.OperationalError`` when the
    file does not exist."""
    uri = Path(path).absolute().as_uri() + "?mode=ro"
    conn = sqlite3.connect(uri, uri=True, timeout=30, check_same_thread=False, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
    return conn


def sqlite_path(url: str) -> Path:
    if not url.startswith("sqlite:///"):
        raise ValueError(f"not a sqlite URL: {url!r} (expected sqlite:///path)")
    return Path(url.removeprefix("sqlite:///"))


class SqliteChangeLog:
    """Reads the change log and current rows of a SQLite directory store."""

    store_kind = "sqlite"

    def __init__(
        self,
        path: str | Path,
        *,
        poll_min: float = 0.005,
        poll_max: float = 0.02,
        read_only: bool = False,
    ) -> None:
        """``read_only``: open an existing store for reading only (verify): no directory or
        file is created, no migration applied, and checkpoints cannot be saved."""
        self.path = Path(path)
        self.db_name = self.path.name
        if read_only:
            if not self.path.is_file():
                raise ConfigurationError(
                    f"no directory store at {self.path}",
                    hint="check VUDSYNC_STORE_URL and the working directory",
                )
            self._conn = connect_sqlite_read_only(self.path)
            if not self._conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'change_log'").fetchone():
                self._conn.close()
                raise ConfigurationError(
                    f"{self.path} is not a directory store (no change log)",
                    hint="check VUDSYNC_STORE_URL",
                )
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = connect_sqlite(self.path)
            apply_sqlite_migrations(self._conn)
            # The only writes on this connection are checkpoint rows. Without this, the commit
            # that finds the WAL past 1,000 pages runs the WAL checkpoint (copy + fsync): that
            # stalled streaming for up to 0.5 s under write load. The directory's writers
            # checkpoint it.
            self._conn.execute("PRAGMA wal_autocheckpoint=0")
        self._chunk = min(_CHUNK, self._conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER))
        self._lock = threading.Lock()
        self._poll_min = poll_min
        self._poll_max = poll_max
        self._idle = poll_min

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def position(self) -> int:
        row = self._query("SELECT COALESCE(MAX(seq), 0) FROM change_log")
        return int(row[0][0])

    def read_changes(self, after_seq: int, limit: int) -> list[ChangeRow]:
        with self._lock:
            cur = self._conn.cursor()
            cur.row_factory = None  # tuples: a streaming batch reads up to thousands of these
            try:
                rows = cur.execute(
                    "SELECT seq, entity, entity_id, op, before, committed_at FROM change_log "
                    "WHERE seq > ? ORDER BY seq LIMIT ?",
                    (after_seq, limit),
                ).fetchall()
            finally:
                cur.close()
        kinds = ENTITIES
        return [
            ChangeRow(seq, kinds[kind], entity_id, op, committed_at, json.loads(before) if before else None)
            for seq, kind, entity_id, op, before, committed_at in rows
        ]

    def read_entities(self, entity: EntityType, ids: Sequence[str]) -> dict[str, EntityRecord]:
        out: dict[str, EntityRecord] = {}
        for start in range(0, len(ids), self._chunk):
            chunk = list(ids[start : start + self._chunk])
            out.update(self._read_chunk(entity, chunk))
        return out

    def _read_chunk(self, entity: EntityType, ids: list[str]) -> dict[str, EntityRecord]:
        """Rows as plain tuples (``sqlite3.Row`` and per-row dict building cost more than the
        query itself in a snapshot); one read transaction, so a user's row and access agree."""
        table, id_expr = ENTITY_TABLES[entity]
        marks = ",".join("?" * len(ids))
        with self._lock:
            cur = self._conn.cursor()
            cur.row_factory = None
            cur.execute("BEGIN")
            try:
                cur.execute(f"SELECT {id_expr} AS _eid, * FROM {table} WHERE {id_expr} IN ({marks})", ids)
                rows = cur.fetchall()
                columns = [d[0] for d in cur.description]
                access: list[tuple[Any, ...]] = []
                times: list[tuple[Any, ...]] = []
                if entity is EntityType.USER and rows:
                    cur.execute(
                        f"SELECT {model.ACCESS_COLUMNS} FROM access WHERE user_id IN ({marks}) "
                        "ORDER BY user_id, company_id, application, kind, name",
                        ids,
                    )
                    access = cur.fetchall()
                    cur.execute(
                        f"SELECT {model.ACCESS_TIME_COLUMNS} FROM access_entry_times "
                        f"WHERE user_id IN ({marks})",
                        ids,
                    )
                    times = cur.fetchall()
            finally:
                cur.execute("COMMIT")
                cur.close()
        return records_from_rows(entity, columns, rows, access, times)

    def snapshot_ids(self, entity: EntityType, batch_size: int) -> Iterator[list[str]]:
        table, id_expr = ENTITY_TABLES[entity]
        last = ""
        while True:
            rows = self._query(
                f"SELECT DISTINCT {id_expr} AS eid FROM {table} WHERE {id_expr} > ? ORDER BY eid LIMIT ?",
                (last, batch_size),
            )
            if not rows:
                return
            ids = [r[0] for r in rows]
            yield ids
            last = ids[-1]

    def snapshot_batches(
        self, entity: EntityType, batch_size: int
    ) -> Iterator[tuple[list[str], dict[str, EntityRecord]]]:
        """Ids in batches, then their rows (an in-process ``IN`` lookup costs SQLite little)."""
        for ids in self.snapshot_ids(entity, batch_size):
            yield ids, self.read_entities(entity, ids)

    def users_in_company(self, company_id: str) -> list[str]:
        rows = self._query(
            "SELECT DISTINCT user_id FROM access WHERE company_id = ? ORDER BY user_id", (company_id,)
        )
        return [r[0] for r in rows]

    def count(self, entity: EntityType) -> int:
        table, id_expr = ENTITY_TABLES[entity]
        return int(self._query(f"SELECT COUNT(DISTINCT {id_expr}) FROM {table}")[0][0])

    def load_checkpoint(self, name: str) -> tuple[str, int] | None:
        rows = self._query("SELECT phase, seq FROM capture_checkpoint WHERE name = ?", (name,))
        return (rows[0]["phase"], int(rows[0]["seq"])) if rows else None

    def save_checkpoint(self, name: str, phase: str, seq: int) -> None:
        """Upsert the checkpoint, polling for the write lock every millisecond while a directory
        writer holds it. SQLite's own busy handler backs off in growing sleeps (up to 100 ms
        each): under 5,000 changes/s that held streaming for 50-500 ms at a time."""
        deadline = time.monotonic() + _BUSY_TIMEOUT_MS / 1000
        with self._lock:
            self._conn.execute("PRAGMA busy_timeout=0")
            try:
                while True:
                    try:
                        self._conn.execute(
                            "INSERT INTO capture_checkpoint (name, phase, seq, updated_at) "
                            "VALUES (?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET phase = excluded.phase, "
                            "seq = excluded.seq, updated_at = excluded.updated_at",
                            (name, phase, seq, time.time()),
                        )
                        return
                    except sqlite3.OperationalError as exc:
                        if not _is_busy(exc) or time.monotonic() > deadline:
                            raise
                    time.sleep(0.001)
            finally:
                self._conn.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")

    def oldest_uncaptured(self, after_seq: int) -> float | None:
        rows = self._query(
            "SELECT committed_at FROM change_log WHERE seq > ? ORDER BY seq LIMIT 1", (after_seq,)
        )
        return float(rows[0][0]) if rows else None

    def wait_for_changes(self, timeout: float) -> None:
        """SQLite has no notifications: poll with an interval that grows while idle, up to
        ``poll_max`` (20 ms: the first change after a quiet spell waits at most that long, a
        fifth of the 100 ms p99 budget; an idle poll is one indexed query, ~0.1 ms of CPU)."""
        time.sleep(min(self._idle, timeout))
        self._idle = min(self._idle * 2, self._poll_max)

    def mark_busy(self) -> None:
        """Reset the adaptive poll interval after a non-empty read."""
        self._idle = self._poll_min

    def close(self) -> None:
        with self._lock:
            self._conn.close()
