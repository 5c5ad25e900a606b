"""The directory sink's store: one directory operation applied in one transaction, at most once.

Port :class:`DirectoryStore`; adapters :class:`SqliteDirectoryStore` and
:class:`PostgresDirectoryStore` over the same statements (the store's schema is the
producer's migrations: ``vudsync store init`` creates ``access.origin`` and
``directory_operations_applied``).

One transaction per operation, in this order: look the operation id up in
``directory_operations_applied`` (found: ``already_applied``, with the outcome recorded then,
nothing written) → check that the user, the company and the catalogue entry exist on premise
(else ``rejected`` with a reason) → write the ``access`` row (origin ``cloud``) → record the
operation id and its outcome → commit. The access row's trigger writes its change-log row,
``origin = 'cloud'``, in the same transaction: the effect, its change-log row and the proof
that it was applied commit together or not at all, so a redelivered operation (a crash before
the offset commit, a replay) is applied once. A rejection is recorded too: asked again, the
answer is the same.

A grant never changes an entry the store holds already, whatever its origin (an entry the
directory granted itself stays the directory's) — except an *adoption* (``adopt``: an operator
rejected the writeback's revoke of it), which turns a row of origin ``cloud`` into the
directory's; a revoke removes only a row of origin ``cloud``.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from kernel.errors import ConfigurationError, RetryableError
from schemas.directory_operations import DirectoryOperation, GrantDirectoryAccess

#: the catalogue table and key column of each entry kind
_CATALOGUE = {
    "role": ("roles", "name"),
    "layout_group": ("layout_groups", "name"),
    "module": ("modules", "code"),
}


@dataclass(frozen=True, slots=True)
class DirectoryApplied:
    """What became of one operation: ``outcome`` applied | already_applied | rejected;
    ``effect`` granted | revoked | held_already | not_held (applied), the first outcome's effect
    (already applied); ``reason`` why it was rejected (unknown_role, unknown_user …)."""

    outcome: str
    effect: str
    reason: str | None = None


class DirectoryStore(Protocol):
    """Where the directory sink writes: the directory store."""

    def apply(self, op: DirectoryOperation) -> DirectoryApplied: ...

    def ping(self) -> None:
        """Raise when the store cannot be reached."""

    def close(self) -> None: ...


class _Statements:
    """The apply transaction over a DB-API cursor; ``?`` placeholders (PostgreSQL's are swapped)."""

    def __init__(self, execute: Callable[[str, tuple[Any, ...]], list[tuple[Any, ...]]]) -> None:
        self._execute = execute

    def one(self, sql: str, *params: Any) -> tuple[Any, ...] | None:
        rows = self._execute(sql, params)
        return rows[0] if rows else None

    def apply(self, op: DirectoryOperation) -> DirectoryApplied:
        found = self.one(
            "SELECT outcome FROM directory_operations_applied WHERE operation_id = ?", op.operation_id
        )
        if found is not None:  # recorded as "<outcome>:<effect or reason>"
            first, _, detail = str(found[0]).partition(":")
            if first == "rejected":
                return DirectoryApplied("already_applied", "", detail)
            return DirectoryApplied("already_applied", detail)
        reason = self._missing(op)
        if reason is not None:
            result = DirectoryApplied("rejected", "", reason)
        else:
            result = DirectoryApplied("applied", self._write(op))
        recorded = f"{result.outcome}:{result.effect or result.reason}"
        self._execute(
            "INSERT INTO directory_operations_applied (operation_id, kind, outcome) VALUES (?, ?, ?)",
            (op.operation_id, op.kind, recorded),
        )
        return result

    def _missing(self, op: DirectoryOperation) -> str | None:
        if self.one("SELECT 1 FROM users WHERE id = ?", op.user_id) is None:
            return "unknown_user"
        if self.one("SELECT 1 FROM companies WHERE id = ?", op.company_id) is None:
            return "unknown_company"
        if isinstance(op, GrantDirectoryAccess):  # a revoke of what the catalogue lost is harmless
            table, column = _CATALOGUE[op.entry_kind]
            sql = f"SELECT 1 FROM {table} WHERE application = ? AND {column} = ?"
            if self.one(sql, op.application.value, op.name) is None:
                return f"unknown_{op.entry_kind}"
        return None

    def _write(self, op: DirectoryOperation) -> str:
        key = (op.user_id, op.company_id, op.application.value, op.entry_kind, op.name)
        where = "user_id = ? AND company_id = ? AND application = ? AND kind = ? AND name = ?"
        held = self.one(f"SELECT origin FROM access WHERE {where}", *key)
        if isinstance(op, GrantDirectoryAccess):
            if op.adopt:  # an operator kept it against the cloud's revoke: now the directory's
                if held is None or held[0] != "cloud":
                    return "not_held" if held is None else "held_already"
                self._execute(f"UPDATE access SET origin = 'directory' WHERE {where}", key)
                return "adopted"
            if held is not None:
                return "held_already"
            # a directory writer may grant the same entry between the look-up and this insert
            # (PostgreSQL, read committed): then it is the directory's, and held already
            inserted = self._execute(
                "INSERT INTO access (user_id, company_id, application, kind, name, origin) "
                "VALUES (?, ?, ?, ?, ?, 'cloud') ON CONFLICT DO NOTHING RETURNING 1",
                key,
            )
            return "granted" if inserted else "held_already"
        if held is None or (held[0] != "cloud" and not op.any_origin):
            return "not_held"
        self._execute(f"DELETE FROM access WHERE {where}", key)
        return "revoked"


class SqliteDirectoryStore:
    """The embedded store. ``BEGIN IMMEDIATE``: the write lock from the start, so the checks
    and the write see one state; a writer holding the lock longer than ``busy_timeout`` makes
    :meth:`apply` raise :class:`~kernel.errors.RetryableError` (the sink tries again)."""

    def __init__(self, path: str | Path, busy_timeout_ms: int = 10_000) -> None:
        self._path = str(path)
        if not Path(self._path).exists():
            raise ConfigurationError(
                f"no directory store at {self._path}", hint="create it with `vudsync store init`"
            )
        self._conn = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None)
        self._conn.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
        self._lock = threading.Lock()
        _require_schema(self._tables())

    def _tables(self) -> set[str]:
        return {r[0] for r in self._conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}

    def apply(self, op: DirectoryOperation) -> DirectoryApplied:
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise RetryableError(f"directory store busy: {exc}") from None
            try:
                result = _Statements(lambda sql, p: self._conn.execute(sql, p).fetchall()).apply(op)
                self._conn.execute("COMMIT")
                return result
            except BaseException as exc:
                self._conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.OperationalError):
                    raise RetryableError(f"directory store: {exc}") from None
                raise

    def ping(self) -> None:
        with self._lock:
            self._conn.execute("SELECT 1").fetchall()

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class PostgresDirectoryStore:
    """The PostgreSQL store: one transaction per operation on an autocommit connection;
    a lost connection is reopened at the next operation (:class:`RetryableError` meanwhile)."""

    def __init__(self, url: str) -> None:
        import psycopg

        self._psycopg = psycopg
        self._url = url
        self._conn: Any = None
        self._lock = threading.Lock()
        with self._connection() as conn:
            rows = conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
            ).fetchall()
        _require_schema({r[0] for r in rows})

    @contextmanager
    def _connection(self) -> Iterator[Any]:
        try:
            if self._conn is None or self._conn.closed:
                self._conn = self._psycopg.connect(self._url, autocommit=True)
            yield self._conn
        except self._psycopg.OperationalError as exc:
            if self._conn is not None:
                self._conn.close()
            self._conn = None
            raise RetryableError(f"directory store: {type(exc).__name__}") from None

    def apply(self, op: DirectoryOperation) -> DirectoryApplied:
        with self._lock, self._connection() as conn, conn.transaction():
            # one transaction per operation id at a time (a second worker after a rebalance waits,
            # then finds it applied, instead of failing on the applied table's primary key)
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (op.operation_id,))

            def execute(sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
                cur = conn.execute(sql.replace("?", "%s"), params)
                return list(cur.fetchall()) if cur.description is not None else []

            return _Statements(execute).apply(op)

    def ping(self) -> None:
        with self._lock, self._connection() as conn:
            conn.execute("SELECT 1")

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def _require_schema(tables: set[str]) -> None:
    if "directory_operations_applied" not in tables or "access" not in tables:
        raise ConfigurationError(
            "the directory store has no writeback schema (access.origin, directory_operations_applied)",
            hint="upgrade it with `vudsync store init` (or start the producer once)",
        )


def open_directory_store(url: str) -> DirectoryStore:
    """The adapter for a store URL (``sqlite:///path`` or ``postgresql://…``)."""
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresDirectoryStore(url)
    if url.startswith("sqlite:///"):
        return SqliteDirectoryStore(url.removeprefix("sqlite:///"))
    raise ConfigurationError(
        f"VUDSYNC_STORE_URL: unsupported scheme in {url.split(':', 1)[0]!r}",
        hint="use sqlite:///path/directory.db or postgresql://user@host/db",
    )
