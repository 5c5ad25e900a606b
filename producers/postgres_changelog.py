"""PostgreSQL adapter of the ``ChangeLog`` port (larger installations), psycopg 3.

Reading the change log without skipping a change
-------------------------------------------------
``change_log.seq`` is an identity column: its value is drawn when the row is inserted, not
when the transaction commits. With concurrent writers, seq 7 can become visible *after*
seq 8; a reader that checkpoints "everything up to 8" would never see 7. (Reading only rows
whose ``xid < pg_snapshot_xmin(pg_current_snapshot())`` does not fix this on its own: a
transaction that is still open may already hold a seq below rows of older, finished
transactions.)

The rule used here: a seq missing from the visible log is a *gap*. Rows are returned in seq
order up to the first gap that is not known to be *settled*. A gap is settled once every
transaction that could still fill it has ended:

* In one snapshot S, every visible row was inserted before S, so every seq up to the
  highest visible seq ``M`` was drawn before S. A seq ≤ M that S cannot see belongs to a
  transaction that was in progress at S (its xid is in ``pg_snapshot_xip(S)``) or that
  rolled back. Transactions starting after S draw seqs above M.
* So once every such transaction has ended (judged in a later snapshot, the same one the
  rows are read in), each seq ≤ M is final: visible now, or never. This is the *barrier*
  ``(M, xids)``; passing it raises ``settled`` to M.
* ``xip(S)`` alone is not every such transaction: PostgreSQL (14+) sets a snapshot's ``xmax``
  to the newest *completed* xid + 1 and leaves running transactions with a higher xid out of
  ``xip`` (they are invisible anyway). A writer that took xid 731 and seq 2 while xid 729 was
  the newest to complete is in no ``xip`` (seen: seq 2 skipped, the concurrent-writers test).
  So the barrier's xids are ``xip(S)`` and every transaction id still held in ``pg_locks``
  (a transaction holds the lock on its own id from its first write to its end) when the
  barrier is set, after ``S``: one that was running at ``S`` and is still running is there;
  one that ended meanwhile is final already.

Without concurrent writers there are no gaps and rows flow at once; a rolled-back
transaction leaves a gap that settles on the next poll (a rollback sends no NOTIFY, so
while a barrier is pending the tailer polls every ``barrier_poll`` seconds). Every read runs
in one snapshot (one statement, or a REPEATABLE READ, READ ONLY transaction) so that the
snapshot, the rows and ``max(seq)`` agree.

``wait_for_changes`` sleeps on ``LISTEN vud_change_log`` (a statement trigger on
``change_log`` sends the NOTIFY at commit): no busy polling.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from kernel.errors import ConfigurationError
from producers.migrations import apply_postgres_migrations
from producers.model import (
    ACCESS_COLUMNS,
    ACCESS_TIME_COLUMNS,
    ENTITIES,
    ENTITY_TABLES,
    ChangeRow,
    EntityRecord,
    records_from_rows,
)
from schemas.directory import EntityType

log = logging.getLogger(__name__)

CHANNEL = "vud_change_log"


_SNAPSHOT_SQL = (
    "SELECT pg_snapshot_xmin(s)::text::bigint, pg_snapshot_xmax(s)::text::bigint, "
    "ARRAY(SELECT x::text::bigint FROM pg_snapshot_xip(s) AS x) FROM pg_current_snapshot() AS s"
)
# Streaming reads are single statements: one statement sees one snapshot (the one
# pg_current_snapshot() returns while it runs), as a REPEATABLE READ transaction of several
# statements did, in one round trip instead of five. Under CPU contention every round trip
# waits for the server process to be scheduled: they were most of a streaming batch's time.
#
# The snapshot, max(seq) and the next change rows; the snapshot columns repeat on every row
# and a single row of NULL change columns stands for "no rows".
_CHANGES_SQL = """
WITH snap AS (
    SELECT pg_snapshot_xmin(s)::text::bigint AS xmin, pg_snapshot_xmax(s)::text::bigint AS xmax,
           ARRAY(SELECT x::text::bigint FROM pg_snapshot_xip(s) AS x) AS xip
    FROM pg_current_snapshot() AS s
), top AS (
    SELECT COALESCE(MAX(seq), 0) AS max_seq FROM change_log
), next AS (
    SELECT seq, entity, entity_id, op, before, committed_at FROM change_log
    WHERE seq > %s ORDER BY seq LIMIT %s
)
SELECT snap.xmin, snap.xmax, snap.xip, top.max_seq,
       next.seq, next.entity, next.entity_id, next.op, next.before, next.committed_at
FROM snap CROSS JOIN top LEFT JOIN next ON TRUE
ORDER BY next.seq
"""
_BEGIN_READ = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
# the transaction ids held now, 32-bit (pg_locks has no xid8): see full_xid
_RUNNING_XIDS_SQL = (
    "SELECT transactionid::text::bigint FROM pg_locks "
    "WHERE locktype = 'transactionid' AND mode = 'ExclusiveLock' AND granted"
)
# which users' access rows and entry times a read takes: those of the ids it reads, or (a
# snapshot batch read by range, see snapshot_batches) those after %(after)s up to the batch's
# last user; the same condition on both tables, so a batch's times come with its access rows
_BY_IDS = "user_id = ANY(%(ids)s)"
_BY_RANGE = (
    "user_id > %(after)s AND user_id <= "
    "(SELECT max(b.id) FROM (SELECT id FROM users WHERE id > %(after)s ORDER BY id LIMIT %(limit)s) b)"
)
_ACCESS_SQL = f"SELECT {ACCESS_COLUMNS} FROM access WHERE {_BY_IDS}"
_ACCESS_TIMES_SQL = f"SELECT {ACCESS_TIME_COLUMNS} FROM access_entry_times WHERE {_BY_IDS}"
_ACCESS_RANGE_SQL = f"SELECT {ACCESS_COLUMNS} FROM access WHERE {_BY_RANGE}"
_ACCESS_TIMES_RANGE_SQL = f"SELECT {ACCESS_TIME_COLUMNS} FROM access_entry_times WHERE {_BY_RANGE}"
_RANGE_READ = frozenset({EntityType.USER, EntityType.COMPANY})


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The parts of a ``pg_snapshot`` the reader needs (xids as 64-bit integers)."""

    xmin: int
    xmax: int
    xip: frozenset[int]

    def has_ended(self, xid: int) -> bool:
        """Whether transaction ``xid`` had ended (committed or rolled back) when this was taken."""
        return xid < self.xmin or (xid < self.xmax and xid not in self.xip)


def full_xid(xid32: int, near: int) -> int:
    """The 64-bit transaction id (epoch and xid) of a 32-bit ``xid32`` within 2^31 of the
    64-bit ``near`` (a snapshot's xmax): xids of running transactions are never further."""
    delta = (xid32 - near + 2**31) % 2**32 - 2**31
    return near + delta


@dataclass(frozen=True, slots=True)
class Barrier:
    """Once every transaction in ``xids`` has ended, every seq ≤ ``seq`` is final."""

    seq: int
    xids: frozenset[int]

    def passed(self, snapshot: Snapshot) -> bool:
        return all(snapshot.has_ended(x) for x in self.xids)


def accept_in_order(rows: Sequence[ChangeRow], after_seq: int, settled: int) -> list[ChangeRow]:
    """The prefix of ``rows`` (sorted by seq) that is safe to emit after ``after_seq``.

    A row is safe when no seq between the previous row and it can still appear: it follows
    directly, or the gap before it lies at or below ``settled`` (pure; unit-tested).
    """
    out: list[ChangeRow] = []
    expected = after_seq + 1
    for row in rows:
        if row.seq != expected and row.seq - 1 > settled:
            break
        out.append(row)
        expected = row.seq + 1
    return out


def _dbname(url: str) -> str:
    return str(psycopg.conninfo.conninfo_to_dict(url).get("dbname") or "postgres")


class PostgresChangeLog:
    """Reads the change log and current rows of a PostgreSQL directory store."""

    store_kind = "postgresql"

    def __init__(
        self,
        url: str,
        *,
        barrier_poll: float = 0.02,
        apply_migrations: bool = True,
        read_only: bool = False,
    ) -> None:
        """``read_only``: every transaction of the session is READ ONLY (verify): no migration
        is applied and checkpoints cannot be saved."""
        self.db_name = _dbname(url)
        self._url = url
        self._conn: psycopg.Connection[Any] = psycopg.connect(url, autocommit=True)
        if read_only:
            self._conn.execute("SET default_transaction_read_only TO on")
            found = self._conn.execute("SELECT to_regclass('change_log')").fetchone()
            if found is None or found[0] is None:
                self._conn.close()
                raise ConfigurationError(
                    f"database {self.db_name!r} is not a directory store (no change log)",
                    hint="check VUDSYNC_STORE_URL",
                )
        elif apply_migrations:
            apply_postgres_migrations(self._conn)
        # this connection only ever writes the checkpoint: commit it asynchronously (see
        # save_checkpoint), set once for the session instead of SET LOCAL in each transaction
        self._conn.execute("SET synchronous_commit TO off")
        self._conn.row_factory = dict_row
        self._listener: psycopg.Connection[Any] | None = None
        self._listen()  # subscribed before the first read: no commit after it goes unnoticed
        self._lock = threading.Lock()
        self._settled = 0
        self._barrier: Barrier | None = None
        self._barrier_poll = barrier_poll

    # -- reading in one snapshot ----------------------------------------------------------

    @contextmanager
    def _read(self) -> Iterator[psycopg.Cursor[Any]]:
        """A cursor in a REPEATABLE READ, READ ONLY transaction: every query sees one snapshot."""
        with self._lock:
            self._conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            try:
                with self._conn.cursor() as cur:
                    yield cur
            finally:
                self._conn.execute("COMMIT")

    @staticmethod
    def _snapshot(cur: psycopg.Cursor[Any]) -> Snapshot:
        row = cur.execute(_SNAPSHOT_SQL).fetchone()
        assert row is not None
        xmin, xmax, xip = row.values()
        return Snapshot(int(xmin), int(xmax), frozenset(int(x) for x in xip))

    def _running_xids(self, near: int) -> frozenset[int]:
        """The transactions running now (holding the lock on their own id), as 64-bit xids."""
        with self._lock, self._conn.cursor(row_factory=psycopg.rows.tuple_row) as cur:
            return frozenset(full_xid(int(x), near) for (x,) in cur.execute(_RUNNING_XIDS_SQL))

    def _advance(self, snapshot: Snapshot, max_seq: int) -> None:
        """Pass the pending barrier if its transactions have ended; set one from ``snapshot``
        (taken before this call) and the transactions running now (see the module's docs)."""
        if self._barrier is not None and self._barrier.passed(snapshot):
            self._settled = max(self._settled, self._barrier.seq)
            self._barrier = None
        if self._barrier is None and max_seq > self._settled:
            barrier = Barrier(max_seq, snapshot.xip | self._running_xids(snapshot.xmax))
            if barrier.passed(snapshot):  # nothing in flight: final already
                self._settled = max_seq
            else:
                self._barrier = barrier

    def position(self) -> int:
        """The newest position P such that every change ≤ P is final (waits for in-flight writers)."""
        started = time.monotonic()
        warned = False
        target: int | None = None
        while True:
            with self._read() as cur:
                snapshot = self._snapshot(cur)
                max_seq = self._max_seq(cur)
            self._advance(snapshot, max_seq)
            target = max_seq if target is None else target
            if self._settled >= target:
                return self._settled
            assert self._barrier is not None
            if not warned and time.monotonic() - started > 5:
                log.warning(
                    "position: waiting for %d open transaction(s) before the snapshot starts",
                    len(self._barrier.xids),
                )
                warned = True
            self.wait_for_changes(self._barrier_poll)

    @staticmethod
    def _max_seq(cur: psycopg.Cursor[Any]) -> int:
        row = cur.execute("SELECT COALESCE(MAX(seq), 0) AS m FROM change_log").fetchone()
        return int(row["m"]) if row else 0

    def read_changes(self, after_seq: int, limit: int) -> list[ChangeRow]:
        """Change rows after ``after_seq`` in seq order, stopping before an unsettled gap."""
        with self._lock, self._conn.cursor(row_factory=psycopg.rows.tuple_row) as cur:
            raw = cur.execute(_CHANGES_SQL, (after_seq, limit)).fetchall()
        xmin, xmax, xip, max_seq = raw[0][:4]
        self._advance(Snapshot(int(xmin), int(xmax), frozenset(int(x) for x in xip)), int(max_seq))
        kinds = ENTITIES
        rows = [
            ChangeRow(
                int(seq),
                kinds[kind],
                entity_id,
                op,
                float(committed_at),
                json.loads(before) if isinstance(before, str) else before,
            )
            for _xmin, _xmax, _xip, _max, seq, kind, entity_id, op, before, committed_at in raw
            if seq is not None
        ]
        accepted = accept_in_order(rows, after_seq, self._settled)
        if len(accepted) < len(rows):
            log.debug(
                "change log: %d row(s) wait behind seq %d (open transactions)",
                len(rows) - len(accepted),
                (accepted[-1].seq if accepted else after_seq) + 1,
            )
        return accepted

    def read_entities(self, entity: EntityType, ids: Sequence[str]) -> dict[str, EntityRecord]:
        """Current rows in one snapshot (a REPEATABLE READ transaction: a user's row and access
        agree), as tuples (dict rows cost more per entity than the query itself).

        The whole transaction is one message (a client-side-bound cursor sends several
        statements at once and reads their results in turn): one round trip instead of five;
        each access row says whether its company exists (no third query).
        """
        if not ids:
            return {}
        table, id_expr = ENTITY_TABLES[entity]
        statements: list[sql.Composable] = [
            sql.SQL("SELECT {} AS _eid, * FROM {} WHERE {} = ANY(%(ids)s)").format(
                sql.SQL(id_expr), sql.Identifier(table), sql.SQL(id_expr)
            )
        ]
        if entity is EntityType.USER:
            statements.append(sql.SQL(_ACCESS_SQL))
            statements.append(sql.SQL(_ACCESS_TIMES_SQL))
        columns, results = self._read_statements(statements, {"ids": list(ids)})
        return self._records(entity, columns, results)

    def snapshot_batches(
        self, entity: EntityType, batch_size: int
    ) -> Iterator[tuple[list[str], dict[str, EntityRecord]]]:
        """Users and companies are read by id range (``id > last ORDER BY id LIMIT n``, and the
        users' access rows and access entry times by the same range), in one snapshot per
        batch: an index range scan instead of sending 2,000 ids twice as array literals
        (client-side quoting) and looking each up (the server's CPU per user fell by about
        half; docs/benchmarks.md). The other types are small, and an application type can
        have several rows: ids, then rows."""
        if entity not in _RANGE_READ:
            for ids in self.snapshot_ids(entity, batch_size):
                yield ids, self.read_entities(entity, ids)
            return
        table = sql.Identifier(ENTITY_TABLES[entity][0])
        statements: list[sql.Composable] = [
            sql.SQL("SELECT id AS _eid, * FROM {} WHERE id > %(after)s ORDER BY id LIMIT %(limit)s").format(
                table
            )
        ]
        if entity is EntityType.USER:
            statements.append(sql.SQL(_ACCESS_RANGE_SQL))
            statements.append(sql.SQL(_ACCESS_TIMES_RANGE_SQL))
        after = ""
        while True:
            columns, results = self._read_statements(statements, {"after": after, "limit": batch_size})
            if not results[0]:
                return
            ids = [r[0] for r in results[0]]
            yield ids, self._records(entity, columns, results)
            after = ids[-1]

    def _read_statements(
        self, statements: list[sql.Composable], params: dict[str, Any]
    ) -> tuple[list[str], list[list[tuple[Any, ...]]]]:
        """Run ``statements`` in one REPEATABLE READ transaction sent as one message; returns
        the first result's column names and every result's rows."""
        query = sql.SQL("; ").join([sql.SQL(_BEGIN_READ), *statements, sql.SQL("COMMIT")])
        with self._lock, psycopg.ClientCursor(self._conn, row_factory=psycopg.rows.tuple_row) as cur:
            try:
                cur.execute(query, params)
            except BaseException:
                self._conn.rollback()  # the statements after the failed one never ran
                raise
            results = []
            columns: list[str] = []
            while True:
                if cur.description is not None:
                    if not columns:
                        columns = [c.name for c in cur.description]
                    results.append(cur.fetchall())
                if not cur.nextset():
                    break
        return columns, results

    @staticmethod
    def _records(
        entity: EntityType, columns: list[str], results: list[list[tuple[Any, ...]]]
    ) -> dict[str, EntityRecord]:
        """Records from the entity rows (``results[0]``) and, for users, their access rows
        (``results[1]``) and access entry times (``results[2]``)."""
        if entity is not EntityType.USER:
            return records_from_rows(entity, columns, results[0])
        return records_from_rows(entity, columns, results[0], results[1], results[2])

    def snapshot_ids(self, entity: EntityType, batch_size: int) -> Iterator[list[str]]:
        table, id_expr = ENTITY_TABLES[entity]
        query = sql.SQL("SELECT DISTINCT {e} AS eid FROM {t} WHERE {e} > %s ORDER BY eid LIMIT %s").format(
            e=sql.SQL(id_expr), t=sql.Identifier(table)
        )
        last = ""
        while True:
            with self._lock:
                rows = self._conn.execute(query, (last, batch_size)).fetchall()
            if not rows:
                return
            ids = [r["eid"] for r in rows]
            yield ids
            last = ids[-1]

    def users_in_company(self, company_id: str) -> list[str]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT DISTINCT user_id FROM access WHERE company_id = %s ORDER BY user_id", (company_id,)
            ).fetchall()
        return [r["user_id"] for r in rows]

    def count(self, entity: EntityType) -> int:
        table, id_expr = ENTITY_TABLES[entity]
        query = sql.SQL("SELECT COUNT(DISTINCT {}) AS n FROM {}").format(
            sql.SQL(id_expr), sql.Identifier(table)
        )
        with self._lock:
            row = self._conn.execute(query).fetchone()
        return int(row["n"]) if row else 0

    # -- checkpoint ----------------------------------------------------------------------

    def load_checkpoint(self, name: str) -> tuple[str, int] | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT phase, seq FROM capture_checkpoint WHERE name = %s", (name,)
            ).fetchone()
        return (row["phase"], int(row["seq"])) if row else None

    def save_checkpoint(self, name: str, phase: str, seq: int) -> None:
        """Upsert the checkpoint. Committed asynchronously: should the *database server* crash
        and lose the last few commits, capture resumes from an older checkpoint and re-sends
        (at least once), so the fsync wait buys nothing."""
        with self._lock:  # one autocommit statement: one round trip per batch, not four
            self._conn.execute(
                "INSERT INTO capture_checkpoint (name, phase, seq, updated_at) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (name) DO UPDATE SET phase = excluded.phase, seq = excluded.seq, "
                "updated_at = excluded.updated_at",
                (name, phase, seq, time.time()),
            )

    def oldest_uncaptured(self, after_seq: int) -> float | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT committed_at FROM change_log WHERE seq > %s ORDER BY seq LIMIT 1", (after_seq,)
            ).fetchone()
        return float(row["committed_at"]) if row else None

    # -- waking up -----------------------------------------------------------------------

    def _listen(self) -> psycopg.Connection[Any]:
        if self._listener is None or self._listener.closed:
            self._listener = psycopg.connect(self._url, autocommit=True)
            self._listener.execute(sql.SQL("LISTEN {}").format(sql.Identifier(CHANNEL)))
        return self._listener

    def wait_for_changes(self, timeout: float) -> None:
        """Sleep on LISTEN until a commit that wrote change-log rows, or ``timeout`` seconds.

        The listener is subscribed from the first call on, so a commit that lands between a
        read and this call still wakes it. While a gap waits on open transactions, sleep at
        most ``barrier_poll`` seconds: a rollback (or a transaction that wrote no change-log
        row) ends without a NOTIFY.
        """
        listener = self._listen()
        if self._barrier is not None:
            timeout = min(timeout, self._barrier_poll)
        for _ in listener.notifies(timeout=timeout, stop_after=1):
            pass

    def close(self) -> None:
        with self._lock:
            self._conn.close()
            if self._listener is not None:
                self._listener.close()
