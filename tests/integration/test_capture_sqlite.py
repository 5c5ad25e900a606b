"""Change capture from a real SQLite store to the real broker: what only SQLite has (its
migrations, the application-instance type change). The cases both stores share run on each
in ``test_capture_stores.py``."""

from __future__ import annotations

import json
from pathlib import Path

from devtools.seed.writer import SqliteDirectoryWriter
from kernel.settings import Settings
from producers.migrations import migration_files
from producers.sqlite_changelog import connect_sqlite
from schemas.codec import decode_event
from schemas.directory import EntityType
from schemas.topics import DIRECTORY_TOPICS
from tests.integration.conftest import MakeCapture
from tests.kafka_read import read_all
from vudsync.topics import ensure_catalogue


def _type_change_rows(writer: SqliteDirectoryWriter, after_seq: int) -> list[tuple[str, str, dict | None]]:
    rows = writer.conn.execute(
        "SELECT entity_id, op, before FROM change_log WHERE entity = 'application_instance' AND seq > ? "
        "ORDER BY seq",
        (after_seq,),
    ).fetchall()
    return [(entity_id, op, json.loads(before) if before else None) for entity_id, op, before in rows]


def test_application_instance_type_change_logs_a_delete_of_the_old_type(
    kafka_settings: Settings, kafka_bootstrap: str, make_capture: MakeCapture
) -> None:
    """As on PostgreSQL: the new type is logged 'u', the old one 'd' with its last state, and
    capture emits the old type's delete and tombstone (migration 0002)."""
    ensure_catalogue(kafka_settings, kafka_bootstrap)
    writer = SqliteDirectoryWriter(kafka_settings.home / "dir.db")
    writer.add_application_instance("business", "https://vb.local", "LICENSE-AAA-111")
    capture = make_capture(kafka_settings, f"sqlite:///{kafka_settings.home / 'dir.db'}")
    position = capture.snapshot()
    with writer.transaction():
        writer.conn.execute("UPDATE application_instances SET application = 'reporting'")
    assert _type_change_rows(writer, position) == [
        ("reporting", "u", None),
        ("business", "d", {"application": "business", "uri": "https://vb.local"}),
    ]
    capture.poll_once(position)
    topic = kafka_settings.topic(DIRECTORY_TOPICS[EntityType.APPLICATION_INSTANCE].name)
    records = read_all(kafka_bootstrap, topic, until=lambda rs: len(rs) >= 4)  # r, u, d, tombstone
    business = [r for r in records if r.key == b"business"]
    assert [decode_event(r.value).op.value for r in business[:-1]] == ["r", "d"]
    assert business[-1].value is None
    reporting = [decode_event(r.value) for r in records if r.key == b"reporting"]
    assert [e.op.value for e in reporting] == ["u"] and reporting[0].state.uri == "https://vb.local"
    for r in records:
        assert b"LICENSE-" not in (r.value or b"")


def test_a_store_made_by_migration_0001_is_upgraded(tmp_path: Path) -> None:
    """An existing store (0001 only) gets the corrected trigger when the writer opens it."""
    path = tmp_path / "old.db"
    conn = connect_sqlite(path)
    conn.execute("CREATE TABLE schema_migrations (version TEXT PRIMARY KEY, applied_at REAL)")
    version, sql = migration_files("sqlite")[0]
    conn.executescript(f"BEGIN;\n{sql}\nINSERT INTO schema_migrations VALUES ('{version}', 0);\nCOMMIT;")
    conn.close()
    writer = SqliteDirectoryWriter(path)
    try:
        applied = [v for (v,) in writer.conn.execute("SELECT version FROM schema_migrations ORDER BY 1")]
        assert applied[:2] == ["0001_directory", "0002_application_instance_type_change"]
        writer.add_application_instance("document_center", "https://dc.local", "LICENSE-CCC-333")
        start = writer.change_log_position()
        with writer.transaction():
            writer.conn.execute("UPDATE application_instances SET application = 'business'")
        assert _type_change_rows(writer, start) == [
            ("business", "u", None),
            ("document_center", "d", {"application": "document_center", "uri": "https://dc.local"}),
        ]
    finally:
        writer.close()
