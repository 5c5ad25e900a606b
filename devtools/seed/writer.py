"""Writes to the directory store as Visma User Directory does: plain SQL on its tables.

The change log is filled by the store's triggers, never by this writer. Used by the demo,
``vudsync seed``, tests and benchmarks. One transaction per ``with writer.transaction():``.

:class:`DirectoryWriter` holds the writes, in SQL both dialects accept (``?`` marks a
parameter); :class:`SqliteDirectoryWriter` and
:class:`devtools.seed.pg_writer.PostgresDirectoryWriter` supply the connection, the
transactions and the bulk upsert.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from kernel.sqlite_wal import immediate
from producers.migrations import apply_sqlite_migrations
from producers.sqlite_changelog import connect_sqlite

USER_COLUMNS = ("id", "username", "email", "first_name", "last_name", "language", "active")
COMPANY_COLUMNS = ("id", "name", "organisation_number", "country", "status")
ACCESS_COLUMNS = ("user_id", "company_id", "application", "kind", "name")
_USER_DEFAULTS: dict[str, Any] = {"first_name": "", "last_name": "", "language": "nb", "active": 1}
_COMPANY_DEFAULTS: dict[str, Any] = {"country": "NO", "status": "active"}
_CATALOGUE_KEYS = {
    "roles": ("name", "description"),
    "layout_groups": ("name", "description"),
    "modules": ("code", "name"),
}


def _user_row(user: dict[str, Any]) -> tuple[Any, ...]:
    values = [user.get(c, _USER_DEFAULTS.get(c)) for c in USER_COLUMNS]
    values[USER_COLUMNS.index("active")] = bool(values[USER_COLUMNS.index("active")])
    return tuple(values)


class DirectoryWriter:
    """The directory's writes, whatever the store. Subclasses give ``conn`` (a DB-API connection
    whose ``execute`` returns its cursor: sqlite3's, psycopg's), ``placeholder``,
    :meth:`_outermost` (the store's own transaction) and :meth:`_upsert`."""

    placeholder = "?"
    conn: Any  # the store's DB-API connection
    _depth = 0  # transaction blocks open

    def close(self) -> None:
        self.conn.close()

    def analyze(self) -> None:
        """Refresh the store's statistics after a bulk load."""
        raise NotImplementedError

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One transaction; nested blocks join the outer one."""
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        self._depth = 1
        try:
            with self._outermost():
                yield
        finally:
            self._depth = 0

    def _outermost(self) -> AbstractContextManager[None]:
        """The store's transaction: committed when the block ends, rolled back if it raises."""
        raise NotImplementedError

    def _run(self, sql: str, params: tuple[Any, ...]) -> int:
        """Execute one statement in the store's own parameter style; its row count."""
        return int(self.conn.execute(sql, params).rowcount)

    def _upsert(
        self, table: str, columns: tuple[str, ...], rows: list[tuple[Any, ...]], conflict: str, action: str
    ) -> None:
        """``INSERT … ON CONFLICT (conflict) action`` for many rows."""
        raise NotImplementedError

    def _exec(self, sql: str, params: Iterable[Any] = ()) -> int:
        """One statement in its own transaction (or the one open); ``?`` marks a parameter."""
        with self.transaction():
            return self._run(sql.replace("?", self.placeholder), tuple(params))

    # -- users ------------------------------------------------------------------------

    def upsert_users(self, users: Iterable[dict[str, Any]]) -> None:
        updates = ", ".join(f"{c} = excluded.{c}" for c in USER_COLUMNS[1:])
        self._upsert("users", USER_COLUMNS, [_user_row(u) for u in users], "id", f"DO UPDATE SET {updates}")

    def upsert_user(self, **user: Any) -> None:
        self.upsert_users([user])

    def update_user(self, user_id: str, **fields: Any) -> None:
        if "active" in fields:
            fields["active"] = bool(fields["active"])
        sets = ", ".join(f"{k} = ?" for k in fields)
        self._exec(f"UPDATE users SET {sets} WHERE id = ?", [*fields.values(), user_id])

    def delete_user(self, user_id: str) -> None:
        with self.transaction():
            self._exec("DELETE FROM access WHERE user_id = ?", (user_id,))
            self._exec("DELETE FROM users WHERE id = ?", (user_id,))

    # -- companies ----------------------------------------------------------------------

    def upsert_companies(self, companies: Iterable[dict[str, Any]]) -> None:
        updates = ", ".join(f"{c} = excluded.{c}" for c in COMPANY_COLUMNS[1:])
        rows = [tuple(c.get(k, _COMPANY_DEFAULTS.get(k)) for k in COMPANY_COLUMNS) for c in companies]
        self._upsert("companies", COMPANY_COLUMNS, rows, "id", f"DO UPDATE SET {updates}")

    def update_company(self, company_id: str, **fields: Any) -> None:
        sets = ", ".join(f"{k} = ?" for k in fields)
        self._exec(f"UPDATE companies SET {sets} WHERE id = ?", [*fields.values(), company_id])

    def delete_company(self, company_id: str) -> None:
        self._exec("DELETE FROM companies WHERE id = ?", (company_id,))

    # -- catalogues, instances, access ----------------------------------------------------

    def upsert_catalogue(self, table: str, rows: Iterable[tuple[str, str, str]]) -> None:
        """``table`` is roles | layout_groups (application, name, description) or modules
        (application, code, name)."""
        key, other = _CATALOGUE_KEYS[table]
        self._upsert(
            table,
            ("application", key, other),
            [tuple(r) for r in rows],
            f"application, {key}",
            f"DO UPDATE SET {other} = excluded.{other}",
        )

    def add_application_instance(self, application: str, uri: str, license_key: str) -> None:
        self._exec(
            "INSERT INTO application_instances (application, uri, license_key) VALUES (?, ?, ?)",
            (application, uri, license_key),
        )

    def set_application_instance(self, application: str, uri: str, license_key: str) -> None:
        with self.transaction():
            updated = self._exec(
                "UPDATE application_instances SET uri = ?, license_key = ? WHERE application = ?",
                (uri, license_key, application),
            )
            if not updated:
                self.add_application_instance(application, uri, license_key)

    def delete_application_instance(self, application: str) -> None:
        self._exec("DELETE FROM application_instances WHERE application = ?", (application,))

    def grant(self, rows: Iterable[tuple[str, str, str, str, str]]) -> None:
        """Rows of (user_id, company_id, application, kind, name); kind is role|layout_group|module."""
        self._upsert(
            "access", ACCESS_COLUMNS, [tuple(r) for r in rows], ", ".join(ACCESS_COLUMNS), "DO NOTHING"
        )

    def revoke(self, user_id: str, company_id: str) -> None:
        self._exec("DELETE FROM access WHERE user_id = ? AND company_id = ?", (user_id, company_id))

    def revoke_entry(self, user_id: str, company_id: str, application: str, kind: str, name: str) -> None:
        """Remove one entry on premise, whatever its origin (an administrator's removal)."""
        self._exec(
            "DELETE FROM access WHERE user_id = ? AND company_id = ? AND application = ? AND kind = ? "
            "AND name = ?",
            (user_id, company_id, application, kind, name),
        )

    def access_rows(self, user_id: str) -> list[tuple[str, str, str, str, str]]:
        """The user's access rows: (company_id, application, kind, name, origin), sorted."""
        sql = (
            "SELECT company_id, application, kind, name, origin FROM access WHERE user_id = ? "
            "ORDER BY company_id, application, kind, name"
        ).replace("?", self.placeholder)
        return [tuple(r) for r in self.conn.execute(sql, (user_id,)).fetchall()]

    def change_log_origins(self, entity_id: str, after_seq: int = 0) -> list[str]:
        """The origin of each change-log row of ``entity_id`` after ``after_seq``, in order."""
        sql = ("SELECT origin FROM change_log WHERE entity_id = ? AND seq > ? ORDER BY seq").replace(
            "?", self.placeholder
        )
        return [str(r[0]) for r in self.conn.execute(sql, (entity_id, after_seq)).fetchall()]

    def change_log_position(self) -> int:
        row = self.conn.execute("SELECT COALESCE(MAX(seq), 0) FROM change_log").fetchone()
        return int(row[0]) if row else 0


class SqliteDirectoryWriter(DirectoryWriter):
    """Directory writes on a SQLite store (creates the schema if missing)."""

    placeholder = "?"

    def __init__(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.conn = connect_sqlite(path)
        apply_sqlite_migrations(self.conn)

    def analyze(self) -> None:
        """After a bulk load (the PostgreSQL writer refreshes statistics here). SQLite plans the
        capture's reads as primary-key lookups whatever its statistics: nothing to do."""

    @contextmanager
    def _outermost(self) -> Iterator[None]:
        with immediate(self.conn):
            yield

    def _upsert(
        self, table: str, columns: tuple[str, ...], rows: list[tuple[Any, ...]], conflict: str, action: str
    ) -> None:
        cols, marks = ", ".join(columns), ", ".join("?" * len(columns))
        with self.transaction():
            self.conn.executemany(
                f"INSERT INTO {table} ({cols}) VALUES ({marks}) ON CONFLICT ({conflict}) {action}", rows
            )


def open_writer(url: str) -> DirectoryWriter:
    if url.startswith("sqlite:///"):
        return SqliteDirectoryWriter(url.removeprefix("sqlite:///"))
    if url.startswith(("postgresql://", "postgres://")):
        from devtools.seed.pg_writer import PostgresDirectoryWriter

        return PostgresDirectoryWriter(url)
    raise ValueError(f"unsupported store URL {url.split('://')[0]!r}")
