"""Versioned DDL of the directory store, applied in order; each file once."""

from __future__ import annotations

import sqlite3
from importlib import resources
from typing import Any

_SQLITE_LEDGER = "CREATE TABLE IF NOT EXISTS schema_migrations (version TEXT PRIMARY KEY, applied_at REAL)"


def migration_files(dialect: str) -> list[tuple[str, str]]:
    """``(version, sql)`` of every migration of a dialect ('sqlite' or 'postgresql'), in order."""
    folder = resources.files("producers.migrations").joinpath(dialect)
    files = sorted(p.name for p in folder.iterdir() if p.name.endswith(".sql"))
    return [(name.removesuffix(".sql"), folder.joinpath(name).read_text()) for name in files]


def apply_sqlite_migrations(conn: sqlite3.Connection) -> list[str]:
    """Apply pending migrations; returns the versions applied now. Safe to call twice."""
    conn.execute(_SQLITE_LEDGER)
    conn.commit()
    done = {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
    applied: list[str] = []
    for version, sql in migration_files("sqlite"):
        if version in done:
            continue
        conn.executescript(
            f"BEGIN IMMEDIATE;\n{sql}\nINSERT INTO schema_migrations VALUES "
            f"('{version}', julianday('now'));\nCOMMIT;"
        )
        applied.append(version)
    return applied


def apply_postgres_migrations(conn: Any) -> list[str]:
    """Apply pending migrations on a psycopg connection; returns the versions applied now."""
    with conn.transaction():
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(version TEXT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        conn.execute("SELECT pg_advisory_xact_lock(74201)")
        done = {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
        applied: list[str] = []
        for version, sql in migration_files("postgresql"):
            if version in done:
                continue
            conn.execute(sql)
            conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
            applied.append(version)
    return applied
