"""The ``capture_signal`` table of a directory store (SQLite or PostgreSQL): the one table an
operator's command writes (``vudsync snapshot``), and the producer's side of it.

One class over either store's DB-API connection: the statements are the same but for the
parameter mark. It opens an *existing* store: it creates no file and applies no migration (the
producer does, when it starts); a store without the table is a producer that never ran this
version, said as such.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from typing import Any

from kernel.errors import ConfigurationError
from producers.signals import (
    SignalStatus,
    SnapshotSignal,
    Where,
    decode_entities,
    encode_entities,
    parse_where,
)
from producers.sqlite_changelog import connect_sqlite_read_only, sqlite_path
from schemas.directory import EntityType

_COLUMNS = (
    "id, entities, filter, status, requested_at, started_at, finished_at, position, emitted, total, error"
)
NO_TABLE_HINT = (
    "start the producer (`vudsync run producer`) once with this version: it adds the table to the store"
)


class SignalTable:
    """Requests, claims and progress of ad-hoc snapshots in one store."""

    def __init__(self, conn: Any, mark: str, *, close: bool = True) -> None:
        self._conn = conn
        self._mark = mark
        self._owned = close

    # -- statements ---------------------------------------------------------------------

    def _run(self, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        cur = self._conn.cursor()
        try:
            cur.execute(statement.replace("?", self._mark), tuple(params))
            return list(cur.fetchall()) if cur.description is not None else []
        finally:
            cur.close()

    @staticmethod
    def _signal(row: Sequence[Any]) -> SnapshotSignal:
        sid, entities, where, status, requested, started, finished, position, emitted, total, error = row
        return SnapshotSignal(
            id=int(sid),
            entities=decode_entities(entities),
            where=parse_where(where),
            status=SignalStatus(status),
            requested_at=float(requested),
            started_at=None if started is None else float(started),
            finished_at=None if finished is None else float(finished),
            position=None if position is None else int(position),
            emitted=int(emitted),
            total=None if total is None else int(total),
            error=error,
        )

    # -- the command's side --------------------------------------------------------------

    def request(self, entities: tuple[EntityType, ...], where: Where | None) -> int:
        """Insert a pending snapshot request; returns its id."""
        rows = self._run(
            "INSERT INTO capture_signal (kind, entities, filter, status, requested_at) "
            "VALUES ('snapshot', ?, ?, 'pending', ?) RETURNING id",
            (encode_entities(entities), where.text() if where else None, time.time()),
        )
        return int(rows[0][0])

    def get(self, signal_id: int) -> SnapshotSignal | None:
        rows = self._run(f"SELECT {_COLUMNS} FROM capture_signal WHERE id = ?", (signal_id,))
        return self._signal(rows[0]) if rows else None

    def cancel_pending(self, signal_id: int) -> bool:
        """Cancel a request no producer has claimed; False when one has (it runs on)."""
        rows = self._run(
            "UPDATE capture_signal SET status = 'cancelled', finished_at = ? "
            "WHERE id = ? AND status = 'pending' RETURNING id",
            (time.time(), signal_id),
        )
        return bool(rows)

    def recent(self, limit: int = 5) -> list[SnapshotSignal]:
        """The newest requests, newest first."""
        rows = self._run(f"SELECT {_COLUMNS} FROM capture_signal ORDER BY id DESC LIMIT ?", (limit,))
        return [self._signal(r) for r in rows]

    # -- the producer's side -------------------------------------------------------------

    def next_open(self) -> SnapshotSignal | None:
        """The oldest request not finished: a running one first (the producer stopped while
        emitting it: it starts it again), then the oldest pending."""
        rows = self._run(
            f"SELECT {_COLUMNS} FROM capture_signal WHERE status IN ('pending', 'running') "
            "ORDER BY CASE status WHEN 'running' THEN 0 ELSE 1 END, id LIMIT 1"
        )
        return self._signal(rows[0]) if rows else None

    def claim(self, signal_id: int, position: int, total: int) -> bool:
        """Mark a request running at ``position`` with ``total`` entities to emit; False when
        it was cancelled meanwhile."""
        rows = self._run(
            "UPDATE capture_signal SET status = 'running', started_at = ?, position = ?, total = ?, "
            "emitted = 0, error = NULL WHERE id = ? AND status IN ('pending', 'running') RETURNING id",
            (time.time(), position, total, signal_id),
        )
        return bool(rows)

    def progress(self, signal_id: int, emitted: int) -> None:
        self._run("UPDATE capture_signal SET emitted = ? WHERE id = ?", (emitted, signal_id))

    def finish(self, signal_id: int, emitted: int, error: str | None = None) -> None:
        status = SignalStatus.FAILED if error else SignalStatus.DONE
        self._run(
            "UPDATE capture_signal SET status = ?, emitted = ?, finished_at = ?, error = ? WHERE id = ?",
            (status.value, emitted, time.time(), error, signal_id),
        )

    def close(self) -> None:
        if self._owned:
            self._conn.close()


def open_signal_table(url: str, *, read_only: bool = False) -> SignalTable:
    """The signal table of an existing store, writable (the one table an ops command writes:
    ``vudsync snapshot``) or ``read_only`` (``vudsync status``). Raises
    :class:`ConfigurationError` when the store or its table is missing."""
    conn: Any
    if url.startswith("sqlite:///"):
        path = sqlite_path(url)
        if not path.is_file():
            raise ConfigurationError(
                f"no directory store at {path}", hint="check VUDSYNC_STORE_URL and the working directory"
            )
        if read_only:
            conn = connect_sqlite_read_only(path)
        else:
            conn = sqlite3.connect(str(path), timeout=30, check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA busy_timeout=30000")
        found = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'capture_signal'").fetchone()
        mark = "?"
    elif url.startswith(("postgresql://", "postgres://")):
        import psycopg

        conn = psycopg.connect(url, autocommit=True)
        if read_only:
            conn.execute("SET default_transaction_read_only TO on")
        row = conn.execute("SELECT to_regclass('capture_signal')").fetchone()
        found = row if row is not None and row[0] is not None else None
        mark = "%s"
    else:
        raise ConfigurationError(f"unsupported store URL scheme in {url.split('://')[0]!r}")
    if found is None:
        conn.close()
        raise ConfigurationError(
            "the directory store has no signal table (capture_signal)", hint=NO_TABLE_HINT
        )
    return SignalTable(conn, mark)
