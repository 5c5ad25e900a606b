"""SQLite adapter of the journal index: ``<home>/journal.db``.

Entries are keyed by their Kafka coordinates ``(topic, partition, offset)``, so indexing a record
twice is harmless. The index remembers, per partition, the next offset to read; it stores those
positions **in the same transaction** as the entries they cover, so a crash never leaves
entries without their position or a position ahead of its entries.

Indexes: ``(entity_id, time)``, ``(outcome, time)``, ``(time)`` and ``(operation_id)`` — a filter
on any of them answers from the index, not by scanning millions of rows (see
``vudsync bench journal``).
"""

from __future__ import annotations

import dataclasses
import heapq
import json
import sqlite3
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kernel.records import TopicPartition as TP
from kernel.sqlite_wal import immediate
from vudsync.ops.journal import JournalEntry, JournalFilter, WaitingOperation

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    id             INTEGER PRIMARY KEY,
    topic          TEXT    NOT NULL,
    partition      INTEGER NOT NULL,
    offset         INTEGER NOT NULL,
    time           REAL    NOT NULL,
    source         TEXT    NOT NULL,
    outcome        TEXT    NOT NULL,
    entity         TEXT,
    entity_id      TEXT,
    operation_id   TEXT,
    kind           TEXT,
    source_version INTEGER,
    reason         TEXT,
    cloud_id       TEXT,
    effect         TEXT,
    attempts       INTEGER,
    details        TEXT    NOT NULL DEFAULT '{}',
    UNIQUE (topic, partition, offset)
);
CREATE INDEX IF NOT EXISTS entries_by_entity ON entries (entity_id, time);
CREATE INDEX IF NOT EXISTS entries_by_outcome ON entries (outcome, time);
CREATE INDEX IF NOT EXISTS entries_by_time ON entries (time);
CREATE INDEX IF NOT EXISTS entries_by_operation ON entries (operation_id);
-- operations that wait (parked, held, blocked) and have no settling result yet: kept on insert, so that
-- status counts them without a join over millions of entries
CREATE TABLE IF NOT EXISTS waiting (
    operation_id TEXT PRIMARY KEY,
    outcome      TEXT NOT NULL,
    time         REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS positions (
    topic       TEXT    NOT NULL,
    partition   INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (topic, partition)
);
"""

_COLUMNS = (
    "topic",
    "partition",
    "offset",
    "time",
    "source",
    "outcome",
    "entity",
    "entity_id",
    "operation_id",
    "kind",
    "source_version",
    "reason",
    "cloud_id",
    "effect",
    "attempts",
    "details",
)
_INSERT = f"INSERT OR IGNORE INTO entries ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"
_SELECT = f"SELECT id, {', '.join(_COLUMNS)} FROM entries"

# outcomes after which an operation no longer waits, and those that wait
SETTLED = ("applied", "already_applied", "dead_lettered", "rejected", "superseded")
WAITING = ("parked", "held", "blocked")  # blocked: parked on its application (not the findings)


@dataclass(frozen=True)
class JournalStats:
    """What ``vudsync status`` shows from the journal."""

    entries: int
    last_applied: JournalEntry | None
    last_minute: dict[str, int]  # outcome -> entries recorded in the last 60 s
    parked_open: int  # parked operations with no applied / dead-lettered result since
    held_open: int  # held operations (deactivations, revokes of held deletions) not released since
    held_deletions_open: int = 0  # the users / companies those held operations delete


def _row(entry: JournalEntry) -> tuple[Any, ...]:
    return (
        entry.topic,
        entry.partition,
        entry.offset,
        entry.time,
        entry.source,
        entry.outcome,
        entry.entity,
        entry.entity_id,
        entry.operation_id,
        entry.kind,
        entry.source_version,
        entry.reason,
        entry.cloud_id,
        entry.effect,
        entry.attempts,
        json.dumps(dict(entry.details), default=str, separators=(",", ":")),
    )


def _entry(row: Sequence[Any]) -> tuple[int, JournalEntry]:
    values = dict(zip(_COLUMNS, row[1:], strict=True))
    values["details"] = json.loads(values["details"] or "{}")
    return int(row[0]), JournalEntry(**values)


class SqliteJournalIndex:
    """The journal's index in one SQLite file (WAL: readers never wait for the indexer)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(
            str(self.path), check_same_thread=False, isolation_level=None, timeout=30
        )
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # -- writing ------------------------------------------------------------------------

    def add(self, entries: Iterable[JournalEntry], positions: Mapping[TP, int]) -> int:
        """Add entries and advance the read positions, in one transaction; returns rows added.

        A position only moves forward: two indexers running at once cannot move it back.
        """
        rows = [_row(e) for e in entries]
        with self._lock, immediate(self._conn) as conn:
            before = conn.total_changes
            if rows:
                conn.executemany(_INSERT, rows)
            added = conn.total_changes - before
            self._track_waiting(rows)
            conn.executemany(
                "INSERT INTO positions (topic, partition, next_offset) VALUES (?, ?, ?) "
                "ON CONFLICT (topic, partition) DO UPDATE "
                "SET next_offset = max(next_offset, excluded.next_offset)",
                [(t, p, o) for (t, p), o in positions.items()],
            )
        return added

    def _track_waiting(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """Keep ``waiting`` in step with the entries just added (same transaction)."""
        op_at, outcome_at, time_at, kind_at = (
            _COLUMNS.index("operation_id"),
            _COLUMNS.index("outcome"),
            _COLUMNS.index("time"),
            _COLUMNS.index("kind"),
        )
        settled = ", ".join(f"'{o}'" for o in SETTLED)
        waits = [
            (r[op_at], r[outcome_at], r[time_at], r[op_at])
            for r in rows
            if r[outcome_at] in WAITING and r[op_at] and not str(r[kind_at] or "").startswith("journal.")
        ]
        if waits:
            self._conn.executemany(
                "INSERT OR REPLACE INTO waiting (operation_id, outcome, time) SELECT ?, ?, ? "
                f"WHERE NOT EXISTS (SELECT 1 FROM entries WHERE operation_id = ? AND outcome IN ({settled}))",
                waits,
            )
        done = [(r[op_at],) for r in rows if r[outcome_at] in SETTLED and r[op_at]]
        if done:
            self._conn.executemany("DELETE FROM waiting WHERE operation_id = ?", done)

    def positions(self, topics: Iterable[str] | None = None) -> dict[TP, int]:
        with self._lock:
            rows = self._conn.execute("SELECT topic, partition, next_offset FROM positions").fetchall()
        wanted = set(topics) if topics is not None else None
        return {(t, p): o for t, p, o in rows if wanted is None or t in wanted}

    # -- reading ------------------------------------------------------------------------

    def _select(self, flt: JournalFilter, outcomes: tuple[str, ...]) -> list[tuple[int, JournalEntry]]:
        where, params = dataclasses.replace(flt, outcomes=outcomes).where()
        if flt.after_id is not None or not flt.newest_first:
            order = "ORDER BY id ASC"
        else:
            order = "ORDER BY time DESC, id DESC"
        sql = f"{_SELECT} WHERE {where} {order} LIMIT ?"
        with self._lock:
            rows = self._conn.execute(sql, [*params, flt.limit]).fetchall()
        return [_entry(r) for r in rows]

    def query(self, flt: JournalFilter) -> list[tuple[int, JournalEntry]]:
        """Matching entries with their row ids: newest first (at most ``limit``), or in index
        order after ``after_id`` (``--follow``)."""
        if len(flt.outcomes) <= 1 or flt.after_id is not None or not flt.newest_first:
            return self._select(flt, flt.outcomes)
        # One ordered index walk per outcome, merged: SQLite cannot merge an IN list on
        # (outcome, time) in time order, and would sort every match instead.
        per_outcome = [self._select(flt, (o,)) for o in flt.outcomes]
        merged = heapq.merge(*per_outcome, key=lambda r: (-r[1].time, -r[0]))
        return list(merged)[: flt.limit]

    def count(self, flt: JournalFilter) -> int:
        where, params = flt.where()
        with self._lock:
            return int(
                self._conn.execute(f"SELECT COUNT(*) FROM entries WHERE {where}", params).fetchone()[0]
            )

    def last_id(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COALESCE(MAX(id), 0) FROM entries").fetchone()[0])

    def outcomes_of(self, operation_ids: Iterable[str]) -> dict[str, set[str]]:
        """Every outcome recorded for each of these operations."""
        ids = list(dict.fromkeys(operation_ids))
        out: dict[str, set[str]] = {}
        with self._lock:
            for i in range(0, len(ids), 500):
                chunk = ids[i : i + 500]
                marks = ", ".join("?" * len(chunk))
                rows = self._conn.execute(
                    f"SELECT operation_id, outcome FROM entries WHERE operation_id IN ({marks})", chunk
                ).fetchall()
                for op, outcome in rows:
                    out.setdefault(op, set()).add(outcome)
        return out

    def waiting(
        self,
        *,
        entity_id: str | None = None,
        need: str | None = None,
        outcomes: Sequence[str] = WAITING,
        limit: int = 1000,
    ) -> tuple[list[WaitingOperation], int]:
        """Operations that wait now (``outcomes`` among parked, held and blocked, no settling
        result since), oldest first by their first waiting entry, at most ``limit``; and how
        many wait in all. ``entity_id``: that entity's; ``need``: those whose newest entry
        says they wait for it (``company:c1`` …). (An index written before blocked operations
        were tracked lists them from their next result on.)"""
        marks = ", ".join("?" * len(outcomes))
        waits = ", ".join(f"'{o}'" for o in WAITING)
        narrow, params = ("AND e.entity_id = ?", [entity_id]) if entity_id else ("", [])
        if need:  # a coarse filter in SQL; the newest entry decides below
            narrow += " AND w.operation_id IN (SELECT operation_id FROM entries WHERE details LIKE ?)"
            params.append(f'%"{need}"%')
        sql = (
            "SELECT w.operation_id, MIN(e.time) AS since, MAX(e.id) FROM waiting w "
            f"JOIN entries e ON e.operation_id = w.operation_id AND e.outcome IN ({waits}) "
            f"WHERE w.outcome IN ({marks}) {narrow} GROUP BY w.operation_id ORDER BY since, w.operation_id"
        )
        with self._lock:
            rows = self._conn.execute(sql, [*outcomes, *params]).fetchall()
            found = {int(r[2]): float(r[1]) for r in (rows if need else rows[:limit])}
            entries: dict[int, JournalEntry] = {}
            ids = list(found)
            for i in range(0, len(ids), 500):
                chunk = ids[i : i + 500]
                sel = f"{_SELECT} WHERE id IN ({', '.join('?' * len(chunk))})"
                entries.update(_entry(r) for r in self._conn.execute(sel, chunk).fetchall())
        out = [WaitingOperation(since, entries[i]) for i, since in found.items()]
        if need:
            out = [w for w in out if need in w.waiting_for]
            return out[:limit], len(out)
        return out, len(rows)

    def _open(self, outcome: str) -> int:
        sql = "SELECT COUNT(*) FROM waiting WHERE outcome = ?"
        return int(self._conn.execute(sql, (outcome,)).fetchone()[0])

    def stats(self, now: float) -> JournalStats:
        with self._lock:
            total = int(self._conn.execute("SELECT COUNT(*) FROM entries").fetchone()[0])
            last = self._conn.execute(
                f"{_SELECT} WHERE outcome = 'applied' ORDER BY time DESC, id DESC LIMIT 1"
            ).fetchone()
            minute = dict(
                self._conn.execute(
                    "SELECT outcome, COUNT(*) FROM entries WHERE time >= ? GROUP BY outcome", (now - 60,)
                ).fetchall()
            )
            parked = self._open("parked")
            held = self._open("held")
            held_deletions = int(
                self._conn.execute(
                    "SELECT COUNT(DISTINCT e.entity || ':' || e.entity_id) FROM waiting w "
                    "JOIN entries e ON e.operation_id = w.operation_id AND e.outcome = 'held' "
                    "WHERE w.outcome = 'held'"
                ).fetchone()[0]
            )
        return JournalStats(total, _entry(last)[1] if last else None, minute, parked, held, held_deletions)
