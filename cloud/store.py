"""SQLite persistence of the cloud: schema, connections and the write unit of work.

* WAL journal: readers never block the writer nor each other.
* One writer connection behind a lock, ``BEGIN IMMEDIATE`` per write: writes are
  serialised in this process and safe against another process on the same file.
* One reader connection per thread (the request thread pool).
* :meth:`Store.write` runs an effect, its audit row and the idempotency record in **one**
  transaction, so a crash never keeps one without the others.
* :meth:`Store.batch` lets one thread join many writes into one transaction (a commit
  costs far more than a write here), each write inside its own savepoint: it is still
  all-or-nothing per write, and a refused write leaves no trace. Inside a batch the
  bookkeeping is set-wise: the idempotency keys the batch declares are looked up in one
  query, and the audit and idempotency rows of the completed writes are inserted with
  ``executemany`` before anything reads them and before the commit (the same
  transaction, so a crash still never keeps an effect without them).
* The WAL is copied into the database by a thread of its own
  (:class:`kernel.sqlite_wal.WalCheckpointer`), not by the COMMIT that happens to cross
  SQLite's 1,000-page mark: that COMMIT ran the checkpoint, fsyncs included, while holding
  the write lock every other write waits for.
"""

from __future__ import annotations

import functools
import json
import math
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from cloud.errors import ApiError
from cloud.idempotency import StoredResponse
from kernel.sqlite_wal import WalCheckpointer, immediate

Clock = Callable[[], float]

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS clients (
    client_id TEXT PRIMARY KEY,
    secret_hash TEXT NOT NULL,
    is_customer_admin INTEGER NOT NULL,
    scopes TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tokens (
    token_hash TEXT PRIMARY KEY,
    client_id TEXT NOT NULL REFERENCES clients(client_id) ON DELETE CASCADE,
    scopes TEXT NOT NULL,
    expires_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS tokens_expiry ON tokens(expires_at);
CREATE TABLE IF NOT EXISTS companies (
    id TEXT PRIMARY KEY,
    external_id TEXT UNIQUE,
    name TEXT NOT NULL,
    organisation_number TEXT NOT NULL UNIQUE,
    country TEXT,
    status TEXT NOT NULL,
    version INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS users (
    id TEXT PRIMARY KEY,
    external_id TEXT UNIQUE,
    email TEXT NOT NULL,
    email_key TEXT NOT NULL UNIQUE,
    username TEXT,
    first_name TEXT,
    last_name TEXT,
    language TEXT,
    active INTEGER NOT NULL,
    version INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS catalogue (
    service TEXT NOT NULL,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    description TEXT,
    version INTEGER NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (service, kind, name)
);
CREATE TABLE IF NOT EXISTS application_instances (
    service TEXT PRIMARY KEY,
    uri TEXT NOT NULL,
    license_fingerprint TEXT NOT NULL,
    version INTEGER NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS access (
    user_id TEXT NOT NULL REFERENCES users(id),
    company_id TEXT NOT NULL REFERENCES companies(id),
    services TEXT NOT NULL,
    version INTEGER NOT NULL,
    updated_at TEXT NOT NULL,
    entries TEXT NOT NULL DEFAULT '{}',  -- "service/kind/name" -> [origin, modified_at]
    PRIMARY KEY (user_id, company_id)
);
CREATE TABLE IF NOT EXISTS idempotency (
    client_id TEXT NOT NULL,
    key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    status INTEGER NOT NULL,
    body TEXT,
    headers TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (client_id, key)
);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    idempotency_key TEXT,
    client_id TEXT NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    resource_type TEXT NOT NULL,
    resource_id TEXT NOT NULL,
    effect TEXT NOT NULL
);
-- no index on idempotency_key: only tests ask for one key's rows, on small audits, and
-- a random-key index dirtied a page per batched write (≈ 30 % of the bytes written)
DROP INDEX IF EXISTS audit_key;
CREATE INDEX IF NOT EXISTS audit_resource ON audit(resource_id);
"""

# columns added after a table was first created: (table, column, declaration)
_ADDED_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("access", "entries", "TEXT NOT NULL DEFAULT '{}'"),
    ("users", "customer_admin", "INTEGER NOT NULL DEFAULT 0"),
)


def _add_missing_columns(conn: sqlite3.Connection) -> None:
    """A database made by an older version gains the columns added since (its rows: defaults)."""
    for table, column, declaration in _ADDED_COLUMNS:
        if column not in {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")


# wiped by POST /admin/reset (clients and tokens stay)
DATA_TABLES: tuple[str, ...] = (
    "access",
    "companies",
    "users",
    "catalogue",
    "application_instances",
    "idempotency",
    "audit",
)


def _dumps(body: Any) -> str:
    """As the response was rendered (key order kept), so a replay is byte-identical.

    orjson writes the same JSON several times faster; what it refuses (integers over 64
    bits, lone surrogates) the standard library writes.
    """
    try:
        return orjson.dumps(body).decode("utf-8")
    except (orjson.JSONEncodeError, UnicodeDecodeError):
        return json.dumps(body, ensure_ascii=False, separators=(",", ":"))


@functools.lru_cache(maxsize=64)
def iso(ts: float) -> str:
    """RFC 3339 UTC timestamp with microseconds (cached: one write stamps several rows).

    ``datetime.fromtimestamp(ts, UTC).isoformat()`` with ``Z`` (no fraction when the
    microseconds are 0), made from a cached whole second: every write stamps a new
    instant, and formatting a datetime was ≈ 3% of a batched write.
    """
    if ts < 0:
        return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")
    # datetime's own rounding: the fraction in microseconds, half to even
    fraction, whole = math.modf(ts)
    micros = round(fraction * 1e6)
    if micros >= 1_000_000:
        micros -= 1_000_000
        whole += 1.0
    second = _iso_second(int(whole))
    return f"{second}.{micros:06d}Z" if micros else f"{second}Z"


@functools.lru_cache(maxsize=16)
def _iso_second(whole: int) -> str:
    return datetime.fromtimestamp(whole, UTC).isoformat().replace("+00:00", "")


@dataclass(frozen=True, slots=True)
class Effect:
    """One audited change. ``effect`` is a past participle or ``noop``."""

    resource_type: str
    resource_id: str
    effect: str


@dataclass(slots=True)
class Outcome:
    """What a write action answers; ``effect`` is audited when present."""

    status: int
    body: Any
    effect: Effect | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class WriteRequest:
    """Who writes what, and under which idempotency key."""

    client_id: str
    method: str
    path: str
    idempotency_key: str | None
    fingerprint: str


@dataclass(frozen=True, slots=True)
class WriteResult:
    response: StoredResponse
    replayed: bool


WriteAction = Callable[[sqlite3.Connection, float], Outcome]

_SELECT_KEY = "SELECT fingerprint, status, body, headers FROM idempotency WHERE client_id = ? AND key = ?"
_SELECT_KEYS = (
    "SELECT key, fingerprint, status, body, headers FROM idempotency WHERE client_id = ? AND key IN "
)
# keys looked up per query (well under SQLite's limit on bound parameters)
_KEYS_PER_QUERY = 500
_INSERT_AUDIT = (
    "INSERT INTO audit (at, idempotency_key, client_id, method, path, resource_type, resource_id,"
    " effect) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_KEY = (
    "INSERT INTO idempotency (client_id, key, fingerprint, status, body, headers, created_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)


class Store:
    """The cloud's database. Open with :meth:`open`, close with :meth:`close`."""

    def __init__(self, path: Path, *, clock: Clock, synchronous: str = "NORMAL") -> None:
        self._path = path
        self._clock = clock
        self._synchronous = synchronous
        self._write_lock = threading.Lock()
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._writer: sqlite3.Connection | None = None
        self._checkpointer: WalCheckpointer | None = None

    # -- lifecycle -------------------------------------------------------------------

    def open(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        writer = self._connect()
        writer.executescript(SCHEMA)
        _add_missing_columns(writer)
        self._writer = writer
        self._checkpointer = WalCheckpointer(self._connect, name="cloud-checkpointer")
        self._checkpointer.start(writer)

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
            self._checkpointer = None
        with self._write_lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        conn.execute("PRAGMA busy_timeout=10000")
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    @property
    def journal_mode(self) -> str:
        row = self.reader().execute("PRAGMA journal_mode").fetchone()
        return str(row[0])

    # -- reads -----------------------------------------------------------------------

    def reader(self) -> sqlite3.Connection:
        """This thread's read connection (autocommit: each statement sees the latest commit).

        Inside an open :meth:`batch` of this thread it is the batch's write connection, so
        a read sees the writes made before it in the batch, as if they were committed.
        """
        batch: _Batch | None = getattr(self._local, "batch", None)
        if batch is not None and batch.conn is not None:
            batch.flush()  # the audit and idempotency rows of the writes before this read
            return batch.conn
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            conn.execute("PRAGMA query_only=ON")
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    # -- writes ----------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A plain write transaction (tokens, clients, reset): commit or roll back."""
        if getattr(self._local, "batch", None) is not None:
            raise RuntimeError("a plain transaction inside a batch would wait for itself")
        with self._write_lock:
            conn = self._writer
            if conn is None:
                raise RuntimeError("store is closed")
            with immediate(conn):
                yield conn
            self._committed(conn)

    def _committed(self, writer: sqlite3.Connection) -> None:
        """After a commit, still holding the write lock."""
        if self._checkpointer is not None:
            self._checkpointer.after_commit(writer)

    def write(self, request: WriteRequest, action: WriteAction) -> WriteResult:
        """Apply ``action`` exactly once per idempotency key.

        Order inside one transaction: look the key up (replay or refuse) → run the
        action → append its audit row → store the response under the key → commit.
        An :class:`ApiError` from the action rolls everything back and stores nothing.

        Inside a :meth:`batch` of this thread the key is looked up in the batch's
        set-wise look-up (see :meth:`batch`); the action runs in a savepoint of the
        batch's transaction (released on success, rolled back on any error, so a failed
        write leaves nothing and the others keep theirs); its audit row and idempotency
        record join the batch's pending rows, written in the same transaction before any
        read of this batch and before its commit.
        """
        batch: _Batch | None = getattr(self._local, "batch", None)
        if batch is None:
            with self.transaction() as conn:
                key = request.idempotency_key
                if key is not None:
                    found = conn.execute(_SELECT_KEY, (request.client_id, key)).fetchone()
                    if found is not None:
                        return _replay(request, tuple(found))
                result, audit_row, key_row = self._run(conn, request, action)
                if audit_row is not None:
                    conn.execute(_INSERT_AUDIT, audit_row)
                if key_row is not None:
                    conn.execute(_INSERT_KEY, key_row)
                return result
        conn = batch.begin()
        if request.idempotency_key is not None:
            stored = batch.lookup(request.client_id, request.idempotency_key)
            if stored is not None:
                return _replay(request, stored)
        conn.execute("SAVEPOINT batch_item")
        try:
            result, audit_row, key_row = self._run(conn, request, action)
        except BaseException:
            # an I/O or "database full" error may have rolled the whole transaction back
            if conn.in_transaction:
                conn.execute("ROLLBACK TO batch_item")
                conn.execute("RELEASE batch_item")
            raise
        conn.execute("RELEASE batch_item")
        batch.add(request.client_id, audit_row, key_row)
        return result

    @contextmanager
    def batch(self, keys: Iterable[str] = ()) -> Iterator[None]:
        """Join this thread's writes into one transaction until the block ends.

        The transaction (and the write lock) is taken at the first write, so a batch of
        reads never blocks writers. Each :meth:`write` keeps its own savepoint, so every
        write stays all-or-nothing with its audit row and idempotency record. At the end
        the completed writes are committed **even when the block raises**: as if each had
        been sent alone, a write that was answered before a failure keeps its effect.
        Until that commit nothing of the batch is durable, and no answer has left.

        ``keys``: the idempotency keys the batch's writes will carry (a hint). They are
        looked up in one query at the first write of each client instead of one query
        per write; a key not declared is looked up on its own. The batch holds the write
        lock from that query to its commit, so what it found stays true; a key stored by
        a write of the batch itself is found among its pending rows (the same key twice
        in one batch: the second is a replay, or 422 with another body).
        """
        if getattr(self._local, "batch", None) is not None:
            raise RuntimeError("batches do not nest")
        batch = _Batch(self, keys)
        self._local.batch = batch
        try:
            yield
        finally:
            self._local.batch = None
            batch.end()

    def _run(
        self, conn: sqlite3.Connection, request: WriteRequest, action: WriteAction
    ) -> tuple[WriteResult, tuple[Any, ...] | None, tuple[Any, ...] | None]:
        """Run the action: its result, its audit row and its idempotency row (not written yet)."""
        now = self._clock()
        outcome = action(conn, now)
        stamp = iso(now)
        key = request.idempotency_key
        audit_row: tuple[Any, ...] | None = None
        key_row: tuple[Any, ...] | None = None
        if outcome.effect is not None:
            audit_row = (
                stamp,
                key,
                request.client_id,
                request.method,
                request.path,
                outcome.effect.resource_type,
                outcome.effect.resource_id,
                outcome.effect.effect,
            )
        if key is not None and 200 <= outcome.status < 300:
            key_row = (
                request.client_id,
                key,
                request.fingerprint,
                outcome.status,
                None if outcome.body is None else _dumps(outcome.body),
                _dumps(outcome.headers),
                stamp,
            )
        stored = StoredResponse(outcome.status, outcome.body, dict(outcome.headers))
        return WriteResult(stored, replayed=False), audit_row, key_row

    def reset(self) -> None:
        """Wipe the directory data, audit and idempotency keys; keep clients and tokens."""
        with self.transaction() as conn:
            for table in DATA_TABLES:
                conn.execute(f"DELETE FROM {table}")

    # -- meta ------------------------------------------------------------------------

    def meta(self, key: str, default: Callable[[], str]) -> str:
        """A persistent setting of this database, created with ``default()`` if missing."""
        with self.transaction() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
            if row is not None:
                return str(row["value"])
            value = default()
            conn.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (key, value))
            return value


# a stored idempotency record: (fingerprint, status, body JSON, headers JSON)
KeyRecord = tuple[str, int, str | None, str]


def _replay(request: WriteRequest, record: KeyRecord | tuple[Any, ...]) -> WriteResult:
    """The stored response of ``request``'s key, or 422 when the key was used for another request."""
    fingerprint, status, body, headers = record
    if fingerprint != request.fingerprint:
        raise ApiError(422, "idempotency_key_reused", "this Idempotency-Key was used for a different request")
    parsed = None if body is None else json.loads(body)
    return WriteResult(StoredResponse(status, parsed, json.loads(headers)), replayed=True)


class _Batch:
    """The batch transaction of one thread (see :meth:`Store.batch`); opened at its first write.

    Holds the set-wise bookkeeping: the idempotency records found for the declared keys
    (per client, loaded at the client's first look-up) and the pending audit and
    idempotency rows of the writes completed so far, which :meth:`flush` inserts.
    """

    def __init__(self, store: Store, keys: Iterable[str]) -> None:
        self._store = store
        self.conn: sqlite3.Connection | None = None
        self._declared = frozenset(keys)
        self._loaded: set[str] = set()  # clients whose declared keys were looked up
        self._records: dict[tuple[str, str], KeyRecord] = {}  # stored or pending, by (client, key)
        self._audit_rows: list[tuple[Any, ...]] = []
        self._key_rows: list[tuple[Any, ...]] = []

    def begin(self) -> sqlite3.Connection:
        if self.conn is not None:
            return self.conn
        lock = self._store._write_lock
        lock.acquire()
        try:
            conn = self._store._writer
            if conn is None:
                raise RuntimeError("store is closed")
            conn.execute("BEGIN IMMEDIATE")
        except BaseException:
            lock.release()
            raise
        self.conn = conn
        return conn

    def lookup(self, client_id: str, key: str) -> KeyRecord | None:
        """The record stored (or pending) under ``key`` for this client, or ``None``."""
        conn = self.conn
        assert conn is not None, "lookup before begin"
        record = self._records.get((client_id, key))
        if record is not None:
            return record
        if key not in self._declared:
            row = conn.execute(_SELECT_KEY, (client_id, key)).fetchone()
            return None if row is None else (row[0], row[1], row[2], row[3])
        if client_id not in self._loaded:
            self._loaded.add(client_id)
            declared = sorted(self._declared)
            for start in range(0, len(declared), _KEYS_PER_QUERY):
                chunk = declared[start : start + _KEYS_PER_QUERY]
                sql = _SELECT_KEYS + "(" + ",".join("?" * len(chunk)) + ")"
                for row in conn.execute(sql, (client_id, *chunk)):
                    self._records[(client_id, row[0])] = (row[1], row[2], row[3], row[4])
            return self._records.get((client_id, key))
        return None  # declared, looked up, not stored, not pending

    def add(self, client_id: str, audit_row: tuple[Any, ...] | None, key_row: tuple[Any, ...] | None) -> None:
        """A completed write's rows, to be inserted by :meth:`flush`."""
        if audit_row is not None:
            self._audit_rows.append(audit_row)
        if key_row is not None:
            self._key_rows.append(key_row)
            _, key, fingerprint, status, body, headers, _ = key_row
            self._records[(client_id, key)] = (fingerprint, status, body, headers)

    def flush(self) -> None:
        """Insert the pending audit and idempotency rows (in the batch's transaction, in order)."""
        conn = self.conn
        if conn is None:
            return
        if self._audit_rows:
            rows, self._audit_rows = self._audit_rows, []
            conn.executemany(_INSERT_AUDIT, rows)
        if self._key_rows:
            rows, self._key_rows = self._key_rows, []
            conn.executemany(_INSERT_KEY, rows)

    def end(self) -> None:
        conn = self.conn
        if conn is None:
            return
        try:
            if conn.in_transaction:
                try:
                    self.flush()
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
                self._store._committed(conn)
        finally:
            self.conn = None
            self._store._write_lock.release()
