"""Writes to a PostgreSQL directory store as VUD would: plain SQL on its tables.

The same methods and semantics as :class:`devtools.seed.writer.SqliteDirectoryWriter`; the
change log is filled by the store's triggers. Bulk writes (more than ``COPY_THRESHOLD`` rows)
go through ``COPY`` into a temporary staging table and one ``INSERT … SELECT … ON CONFLICT``,
so a batch is one statement (and one statement-trigger firing); smaller ones use
``executemany`` (pipelined by psycopg).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from devtools.seed.writer import _COMPANY_DEFAULTS, _USER_DEFAULTS, COMPANY_COLUMNS, USER_COLUMNS
from producers.migrations import apply_postgres_migrations

COPY_THRESHOLD = 50
ACCESS_COLUMNS = ("user_id", "company_id", "application", "kind", "name")
_CATALOGUE_KEYS = {
    "roles": ("name", "description"),
    "layout_groups": ("name", "description"),
    "modules": ("code", "name"),
}


def _user_row(user: dict[str, Any]) -> tuple[Any, ...]:
    values = [user.get(c, _USER_DEFAULTS.get(c)) for c in USER_COLUMNS]
    values[USER_COLUMNS.index("active")] = bool(values[USER_COLUMNS.index("active")])
    return tuple(values)


class PostgresDirectoryWriter:
    """Directory writes on a PostgreSQL store (creates the schema if missing)."""

    placeholder = "%s"

    def __init__(self, url: str) -> None:
        self.conn = psycopg.connect(url, autocommit=True)
        apply_postgres_migrations(self.conn)
        self._depth = 0
        self._staged: set[str] = set()

    def close(self) -> None:
        self.conn.close()

    def analyze(self) -> None:
        """Refresh the planner's statistics after a bulk load. Without them (autovacuum gets to
        a fresh table only a minute or more later) PostgreSQL estimated a capture's
        ``access.user_id = ANY(...)`` lookup of 50 users at 6,000 rows and scanned the whole
        table: 10 ms per read at 60k access rows, ~40 ms at 300k, on every streaming batch."""
        self.conn.execute("ANALYZE")

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One transaction; nested blocks join the outer one (as in the SQLite writer)."""
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        self._depth = 1
        try:
            with self.conn.transaction():
                yield
        except BaseException:
            self._staged.clear()  # staging tables created in a rolled-back transaction are gone
            raise
        finally:
            self._depth = 0

    def _exec(self, query: str, params: Iterable[Any] = ()) -> int:
        with self.transaction():
            return self.conn.execute(query, tuple(params)).rowcount

    def _upsert(
        self, table: str, columns: tuple[str, ...], rows: list[tuple[Any, ...]], conflict: str, action: str
    ) -> None:
        """``INSERT … ON CONFLICT (conflict) action`` for many rows: COPY-staged when large."""
        if not rows:
            return
        cols = ", ".join(columns)
        with self.transaction():
            if len(rows) <= COPY_THRESHOLD:
                marks = ", ".join(["%s"] * len(columns))
                with self.conn.cursor() as cur:
                    cur.executemany(
                        f"INSERT INTO {table} ({cols}) VALUES ({marks}) ON CONFLICT ({conflict}) {action}",
                        rows,
                    )
                return
            stage = f"_stage_{table}"
            if stage not in self._staged:
                # a temp table lives as long as the session; emptied after each use
                self.conn.execute(
                    f"CREATE TEMP TABLE IF NOT EXISTS {stage} (LIKE {table} INCLUDING DEFAULTS)"
                )
                self._staged.add(stage)
            with self.conn.cursor() as cur:
                with cur.copy(f"COPY {stage} ({cols}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
                cur.execute(
                    f"INSERT INTO {table} ({cols}) SELECT DISTINCT ON ({conflict}) {cols} FROM {stage} "
                    f"ORDER BY {conflict} ON CONFLICT ({conflict}) {action}"
                )
                cur.execute(f"DELETE FROM {stage}")

    # -- users ------------------------------------------------------------------------

    def upsert_users(self, users: Iterable[dict[str, Any]]) -> None:
        updates = ", ".join(f"{c} = excluded.{c}" for c in USER_COLUMNS[1:])
        self._upsert("users", USER_COLUMNS, [_user_row(u) for u in users], "id", f"DO UPDATE SET {updates}")

    def upsert_user(self, **user: Any) -> None:
        self.upsert_users([user])

    def update_user(self, user_id: str, **fields: Any) -> None:
        if "active" in fields:
            fields["active"] = bool(fields["active"])
        sets = ", ".join(f"{k} = %s" for k in fields)
        self._exec(f"UPDATE users SET {sets} WHERE id = %s", [*fields.values(), user_id])

    def delete_user(self, user_id: str) -> None:
        with self.transaction():
            self.conn.execute("DELETE FROM access WHERE user_id = %s", (user_id,))
            self.conn.execute("DELETE FROM users WHERE id = %s", (user_id,))

    # -- companies ----------------------------------------------------------------------

    def upsert_companies(self, companies: Iterable[dict[str, Any]]) -> None:
        updates = ", ".join(f"{c} = excluded.{c}" for c in COMPANY_COLUMNS[1:])
        rows = [tuple(c.get(k, _COMPANY_DEFAULTS.get(k)) for k in COMPANY_COLUMNS) for c in companies]
        self._upsert("companies", COMPANY_COLUMNS, rows, "id", f"DO UPDATE SET {updates}")

    def update_company(self, company_id: str, **fields: Any) -> None:
        sets = ", ".join(f"{k} = %s" for k in fields)
        self._exec(f"UPDATE companies SET {sets} WHERE id = %s", [*fields.values(), company_id])

    def delete_company(self, company_id: str) -> None:
        self._exec("DELETE FROM companies WHERE id = %s", (company_id,))

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
            "INSERT INTO application_instances (application, uri, license_key) VALUES (%s, %s, %s)",
            (application, uri, license_key),
        )

    def set_application_instance(self, application: str, uri: str, license_key: str) -> None:
        with self.transaction():
            updated = self._exec(
                "UPDATE application_instances SET uri = %s, license_key = %s WHERE application = %s",
                (uri, license_key, application),
            )
            if not updated:
                self.add_application_instance(application, uri, license_key)

    def delete_application_instance(self, application: str) -> None:
        self._exec("DELETE FROM application_instances WHERE application = %s", (application,))

    def grant(self, rows: Iterable[tuple[str, str, str, str, str]]) -> None:
        """Rows of (user_id, company_id, application, kind, name); kind is role|layout_group|module."""
        self._upsert(
            "access", ACCESS_COLUMNS, [tuple(r) for r in rows], ", ".join(ACCESS_COLUMNS), "DO NOTHING"
        )

    def revoke(self, user_id: str, company_id: str) -> None:
        self._exec("DELETE FROM access WHERE user_id = %s AND company_id = %s", (user_id, company_id))

    def change_log_position(self) -> int:
        row = self.conn.execute("SELECT COALESCE(MAX(seq), 0) FROM change_log").fetchone()
        return int(row[0]) if row else 0
