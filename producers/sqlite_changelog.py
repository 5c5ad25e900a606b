"""SQLite adapter of the ``ChangeLog`` port (the embedded default store)."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from producers.migrations import apply_sqlite_migrations
from producers.model import ChangeRow, EntityRecord
from schemas.directory import EntityType

_TABLES: dict[EntityType, tuple[str, str]] = {
    # entity -> (table, SQL expression of the entity id)
    EntityType.COMPANY: ("companies", "id"),
    EntityType.USER: ("users", "id"),
    EntityType.ROLE: ("roles", "application || ':' || name"),
    EntityType.LAYOUT_GROUP: ("layout_groups", "application || ':' || name"),
    EntityType.MODULE: ("modules", "application || ':' || code"),
    EntityType.APPLICATION_INSTANCE: ("application_instances", "application"),
}
_CHUNK = 500  # SQLite's host-parameter limit is far above this; keeps IN lists modest


def connect_sqlite(path: str | Path) -> sqlite3.Connection:
    """A connection in WAL mode, autocommit (explicit BEGIN where needed), rows as ``sqlite3.Row``."""
    conn = sqlite3.connect(str(path), timeout=30, check_same_thread=False, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


def sqlite_path(url: str) -> Path:
    if not url.startswith("sqlite:///"):
        raise ValueError(f"not a sqlite URL: {url!r} (expected sqlite:///path)")
    return Path(url.removeprefix("sqlite:///"))


class SqliteChangeLog:
    """Reads the change log and current rows of a SQLite directory store."""

    store_kind = "sqlite"

    def __init__(self, path: str | Path, *, poll_min: float = 0.005, poll_max: float = 0.05) -> None:
        self.path = Path(path)
        self.db_name = self.path.name
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = connect_sqlite(self.path)
        apply_sqlite_migrations(self._conn)
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
        rows = self._query(
            "SELECT seq, entity, entity_id, op, before, committed_at FROM change_log "
            "WHERE seq > ? ORDER BY seq LIMIT ?",
            (after_seq, limit),
        )
        return [
            ChangeRow(
                seq=r["seq"],
                entity=EntityType(r["entity"]),
                entity_id=r["entity_id"],
                op=r["op"],
                committed_at=r["committed_at"],
                before=json.loads(r["before"]) if r["before"] else None,
            )
            for r in rows
        ]

    def read_entities(self, entity: EntityType, ids: Sequence[str]) -> dict[str, EntityRecord]:
        out: dict[str, EntityRecord] = {}
        for start in range(0, len(ids), _CHUNK):
            chunk = list(ids[start : start + _CHUNK])
            out.update(self._read_chunk(entity, chunk))
        return out

    def _read_chunk(self, entity: EntityType, ids: list[str]) -> dict[str, EntityRecord]:
        table, id_expr = _TABLES[entity]
        marks = ",".join("?" * len(ids))
        with self._lock:
            # one read transaction, so that a user's row and its access agree
            self._conn.execute("BEGIN")
            try:
                rows = self._conn.execute(
                    f"SELECT {id_expr} AS _eid, * FROM {table} WHERE {id_expr} IN ({marks})", ids
                ).fetchall()
                access: dict[str, list[tuple[str, str, str, str]]] = {}
                unknown: set[str] = set()
                if entity is EntityType.USER and rows:
                    for a in self._conn.execute(
                        "SELECT user_id, company_id, application, kind, name FROM access "
                        f"WHERE user_id IN ({marks}) ORDER BY user_id, company_id, application, kind, name",
                        ids,
                    ):
                        access.setdefault(a[0], []).append((a[1], a[2], a[3], a[4]))
                    companies = sorted({c for grants in access.values() for c, *_ in grants})
                    known: set[str] = set()
                    for start in range(0, len(companies), _CHUNK):
                        part = companies[start : start + _CHUNK]
                        known.update(
                            r[0]
                            for r in self._conn.execute(
                                f"SELECT id FROM companies WHERE id IN ({','.join('?' * len(part))})",
                                part,
                            )
                        )
                    unknown = set(companies) - known
            finally:
                self._conn.execute("COMMIT")
        out: dict[str, EntityRecord] = {}
        counts: dict[str, int] = {}
        for r in rows:
            eid = r["_eid"]
            counts[eid] = counts.get(eid, 0) + 1
            data = {k: r[k] for k in r.keys() if k != "_eid"}  # noqa: SIM118 (Row iterates values)
            if entity is EntityType.APPLICATION_INSTANCE or entity in (
                EntityType.ROLE,
                EntityType.LAYOUT_GROUP,
                EntityType.MODULE,
            ):
                data.pop("id", None)
            grants = tuple(access.get(eid, ()))
            out[eid] = EntityRecord(
                entity,
                eid,
                data,
                access=grants,
                unknown_companies=frozenset(c for c, *_ in grants if c in unknown),
                instances=counts[eid],
            )
        return out

    def snapshot_ids(self, entity: EntityType, batch_size: int) -> Iterator[list[str]]:
        table, id_expr = _TABLES[entity]
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

    def count(self, entity: EntityType) -> int:
        table, id_expr = _TABLES[entity]
        return int(self._query(f"SELECT COUNT(DISTINCT {id_expr}) FROM {table}")[0][0])

    def load_checkpoint(self, name: str) -> tuple[str, int] | None:
        rows = self._query("SELECT phase, seq FROM capture_checkpoint WHERE name = ?", (name,))
        return (rows[0]["phase"], int(rows[0]["seq"])) if rows else None

    def save_checkpoint(self, name: str, phase: str, seq: int) -> None:
        with self._lock:
            self._conn.execute(
                "INSERT INTO capture_checkpoint (name, phase, seq, updated_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET phase = excluded.phase, seq = excluded.seq, "
                "updated_at = excluded.updated_at",
                (name, phase, seq, time.time()),
            )

    def oldest_uncaptured(self, after_seq: int) -> float | None:
        rows = self._query(
            "SELECT committed_at FROM change_log WHERE seq > ? ORDER BY seq LIMIT 1", (after_seq,)
        )
        return float(rows[0][0]) if rows else None

    def wait_for_changes(self, timeout: float) -> None:
        """SQLite has no notifications: poll with an interval that grows while idle, up to
        ``poll_max`` (50 ms: the first change after a quiet spell waits at most that long,
        which keeps capture p99 under 100 ms; an idle poll is one indexed query)."""
        time.sleep(min(self._idle, timeout))
        self._idle = min(self._idle * 2, self._poll_max)

    def mark_busy(self) -> None:
        """Reset the adaptive poll interval after a non-empty read."""
        self._idle = self._poll_min

    def close(self) -> None:
        with self._lock:
            self._conn.close()
