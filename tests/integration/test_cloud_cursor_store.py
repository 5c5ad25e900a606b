"""cloud-capture's cursor in the directory store (SQLite and PostgreSQL): saved and loaded with
the ids it knew unlinked at that position, in one write; a store without the migration is
refused with the command that fixes it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from cloudcapture.ports import SavedCursor
from cloudcapture.service import open_cursor_store
from kernel.errors import ConfigurationError
from producers.migrations import migration_files
from producers.service import open_store_migrations

pytestmark = pytest.mark.integration


def test_the_cursor_and_the_ids_known_unlinked_there_round_trip(store_url: str) -> None:
    open_store_migrations(store_url)  # `vudsync store init`
    store = open_cursor_store(store_url)
    try:
        assert store.load("cloud-capture") is None
        first = SavedCursor("c1.0.7.100", 7, frozenset({"company:cc9", "user:cu7"}))
        store.save("cloud-capture", first)
        assert store.load("cloud-capture") == first
        linked = SavedCursor("c1.0.9.101", 9, frozenset())  # both linked since
        store.save("cloud-capture", linked)
        assert store.load("cloud-capture") == linked
    finally:
        store.close()
    again = open_cursor_store(store_url)  # a restart reads what was saved
    try:
        assert again.load("cloud-capture") == linked
    finally:
        again.close()


def test_a_sqlite_store_without_the_unlinked_column_is_refused_with_what_to_run(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    for version, sql in migration_files("sqlite"):
        if version.startswith("0006_cloud_capture_unlinked"):
            break
        conn.executescript(sql)
    conn.close()
    with pytest.raises(ConfigurationError) as refused:
        open_cursor_store(f"sqlite:///{path}")
    assert "vudsync store init" in (refused.value.hint or "")
