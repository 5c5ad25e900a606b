"""Writes to the directory store as Visma User Directory does: plain SQL on its tables.

The change log is filled by the store's triggers, never by this writer. Used by the demo,
``vudsync seed``, tests and benchmarks. One transaction per ``with writer.transaction():``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from producers.migrations import apply_sqlite_migrations
from producers.sqlite_changelog import connect_sqlite

USER_COLUMNS = ("id", "username", "email", "first_name", "last_name", "language", "active")
COMPANY_COLUMNS = ("id", "name", "organisation_number", "country", "status")


class SqliteDirectoryWriter:
    """Directory writes on a SQLite store (creates the schema if missing)."""

    placeholder = "?"

    def __init__(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.conn = connect_sqlite(path)
        apply_sqlite_migrations(self.conn)
        self._depth = 0

    def close(self) -> None:
        self.conn.close()

    def analyze(self) -> None:
        """After a bulk load (the PostgreSQL writer refreshes statistics here). SQLite plans the
        capture's reads as primary-key lookups whatever its statistics: nothing to do."""

    @contextmanager
    def transaction(self) -> Iterator[None]:
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        self.conn.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        else:
            self.conn.execute("COMMIT")
        finally:
            self._depth = 0

    def _exec(self, sql: str, params: Iterable[Any] = ()) -> None:
        with self.transaction():
            self.conn.execute(sql, tuple(params))

    def _many(self, sql: str, rows: Iterable[Iterable[Any]]) -> None:
        with self.transaction():
            self.conn.executemany(sql, [tuple(r) for r in rows])

    # -- users ------------------------------------------------------------------------

    def upsert_users(self, users: Iterable[dict[str, Any]]) -> None:
        cols = ", ".join(USER_COLUMNS)
        updates = ", ".join(f"{c} = excluded.{c}" for c in USER_COLUMNS[1:])
        self._many(
            f"INSERT INTO users ({cols}) VALUES ({', '.join('?' * len(USER_COLUMNS))}) "
            f"ON CONFLICT(id) DO UPDATE SET {updates}",
            ([u.get(c, _USER_DEFAULTS.get(c)) for c in USER_COLUMNS] for u in users),
        )

    def upsert_user(self, **user: Any) -> None:
        self.upsert_users([user])

    def update_user(self, user_id: str, **fields: Any) -> None:
        sets = ", ".join(f"{k} = ?" for k in fields)
        self._exec(f"UPDATE users SET {sets} WHERE id = ?", [*fields.values(), user_id])

    def delete_user(self, user_id: str) -> None:
        with self.transaction():
            self.conn.execute("DELETE FROM access WHERE user_id = ?", (user_id,))
            self.conn.execute("DELETE FROM users WHERE id = ?", (user_id,))

    # -- companies ----------------------------------------------------------------------

    def upsert_companies(self, companies: Iterable[dict[str, Any]]) -> None:
        cols = ", ".join(COMPANY_COLUMNS)
        updates = ", ".join(f"{c} = excluded.{c}" for c in COMPANY_COLUMNS[1:])
        self._many(
            f"INSERT INTO companies ({cols}) VALUES ({', '.join('?' * len(COMPANY_COLUMNS))}) "
            f"ON CONFLICT(id) DO UPDATE SET {updates}",
            ([c.get(k, _COMPANY_DEFAULTS.get(k)) for k in COMPANY_COLUMNS] for c in companies),
        )

    def update_company(self, company_id: str, **fields: Any) -> None:
        sets = ", ".join(f"{k} = ?" for k in fields)
        self._exec(f"UPDATE companies SET {sets} WHERE id = ?", [*fields.values(), company_id])

    def delete_company(self, company_id: str) -> None:
        self._exec("DELETE FROM companies WHERE id = ?", (company_id,))

    # -- catalogues, instances, access ----------------------------------------------------

    def upsert_catalogue(self, table: str, rows: Iterable[tuple[str, str, str]]) -> None:
        """``table`` is roles | layout_groups (application, name, description) or modules
        (application, code, name)."""
        key, other = {
            "roles": ("name", "description"),
            "layout_groups": ("name", "description"),
            "modules": ("code", "name"),
        }[table]
        self._many(
            f"INSERT INTO {table} (application, {key}, {other}) VALUES (?, ?, ?) "
            f"ON CONFLICT(application, {key}) DO UPDATE SET {other} = excluded.{other}",
            rows,
        )

    def add_application_instance(self, application: str, uri: str, license_key: str) -> None:
        self._exec(
            "INSERT INTO application_instances (application, uri, license_key) VALUES (?, ?, ?)",
            (application, uri, license_key),
        )

    def set_application_instance(self, application: str, uri: str, license_key: str) -> None:
        with self.transaction():
            updated = self.conn.execute(
                "UPDATE application_instances SET uri = ?, license_key = ? WHERE application = ?",
                (uri, license_key, application),
            ).rowcount
            if not updated:
                self.add_application_instance(application, uri, license_key)

    def grant(self, rows: Iterable[tuple[str, str, str, str, str]]) -> None:
        """Rows of (user_id, company_id, application, kind, name); kind is role|layout_group|module."""
        self._many(
            "INSERT OR IGNORE INTO access (user_id, company_id, application, kind, name) "
            "VALUES (?, ?, ?, ?, ?)",
            rows,
        )

    def revoke(self, user_id: str, company_id: str) -> None:
        self._exec("DELETE FROM access WHERE user_id = ? AND company_id = ?", (user_id, company_id))

    def change_log_position(self) -> int:
        return int(self.conn.execute("SELECT COALESCE(MAX(seq), 0) FROM change_log").fetchone()[0])


_USER_DEFAULTS: dict[str, Any] = {"first_name": "", "last_name": "", "language": "nb", "active": 1}
_COMPANY_DEFAULTS: dict[str, Any] = {"country": "NO", "status": "active"}


def open_writer(url: str) -> SqliteDirectoryWriter:
    if url.startswith("sqlite:///"):
        return SqliteDirectoryWriter(url.removeprefix("sqlite:///"))
    if url.startswith(("postgresql://", "postgres://")):
        from devtools.seed.pg_writer import PostgresDirectoryWriter

        return PostgresDirectoryWriter(url)  # type: ignore[return-value]
    raise ValueError(f"unsupported store URL {url.split('://')[0]!r}")
