"""Change capture from a real SQLite store to the real broker: what only SQLite has (its
migrations, the application-instance type change). The cases both stores share run on each
in ``test_capture_stores.py``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kafka.admin import KafkaAdminClient, NewTopic
from prometheus_client import CollectorRegistry

from devtools.seed.writer import SqliteDirectoryWriter
from kernel.publishing.confluent import ConfluentRecordPublisher
from kernel.settings import Settings
from producers.capture import CaptureConfig, ChangeCapture
from producers.metrics import ProducerMetrics
from producers.migrations import migration_files
from producers.sqlite_changelog import SqliteChangeLog, connect_sqlite
from schemas.codec import decode_event
from schemas.deadletter import (
    HEADER_EXCEPTION,
    HEADER_REASON,
    HEADER_SOURCE_ROW,
    HEADER_STAGE,
    HEADER_TOPIC,
    headers_dict,
)
from schemas.directory import EntityType
from schemas.topics import DIRECTORY_DLQ, DIRECTORY_TOPICS
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


@pytest.mark.parametrize("limit", ["broker", "client"])
def test_a_row_that_fails_to_map_or_an_event_too_large_is_a_dead_letter_not_a_crash_loop(
    kafka_settings: Settings, kafka_bootstrap: str, limit: str
) -> None:
    """Issue 17: a non-text license key crashed the producer at start, again and again; an
    event above the size limit made every flush fail, a retry loop. Both are dead letters
    now, in the snapshot and in streaming, and the capture goes on past them. ``limit``: the
    broker refuses the record (the topic's max.message.bytes), or the client does before
    sending (its message.max.bytes)."""
    users_topic = kafka_settings.topic(DIRECTORY_TOPICS[EntityType.USER].name)
    small = 20_000
    if limit == "broker":
        admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        admin.create_topics([NewTopic(users_topic, 6, 1, topic_configs={"max.message.bytes": str(small)})])
        admin.close()
    ensure_catalogue(kafka_settings, kafka_bootstrap)
    writer = SqliteDirectoryWriter(kafka_settings.home / "dir.db")
    writer.add_application_instance("business", "https://vb.local", b"LIC-BYTES-0001")  # type: ignore[arg-type]
    writer.upsert_companies([{"id": "c1", "name": "Fjord AS", "organisation_number": "923 609 016"}])
    writer.upsert_user(id="big", username="big", email="big@fjord.no")
    roles = [("big", "c1", "business", "role", f"Rolle {i:04d} " + "x" * 60) for i in range(400)]
    writer.grant(roles)  # ~30 kB of access: above ``small``
    writer.upsert_user(id="u1", username="kari", email="kari@fjord.no")
    overrides = {"message.max.bytes": small} if limit == "client" else {}
    capture = ChangeCapture(
        SqliteChangeLog(kafka_settings.home / "dir.db"),
        ConfluentRecordPublisher(kafka_bootstrap, **overrides),
        ProducerMetrics(CollectorRegistry()),
        CaptureConfig(topic_prefix=kafka_settings.topic_prefix, fingerprint_key=b"k"),
    )
    try:
        position = capture.snapshot()
        assert capture.log.load_checkpoint("default") == ("streaming", position)
        writer.update_user("big", first_name="Stor")
        writer.set_application_instance("business", "https://vb.local", b"LIC-BYTES-0002")  # type: ignore[arg-type]
        writer.upsert_user(id="u2", username="ola", email="ola@fjord.no")
        stats = capture.poll_once(position)
        assert capture.log.load_checkpoint("default") == ("streaming", stats.last_seq)
    finally:
        capture.publisher.close()
        capture.log.close()
    dlq = read_all(kafka_bootstrap, kafka_settings.topic(DIRECTORY_DLQ.name), until=lambda rs: len(rs) >= 4)
    letters = [(headers_dict(r.headers), json.loads(r.value)) for r in dlq]
    instance = [h for h, _ in letters if h.get(HEADER_SOURCE_ROW) == "application_instance:business"]
    assert len(instance) == 2  # snapshot and streaming
    assert all(h[HEADER_EXCEPTION] == "AttributeError" and h[HEADER_STAGE] == "capture" for h in instance)
    big = [(h, body) for h, body in letters if body["entity_id"] == "big"]
    assert len(big) == 2
    for headers, body in big:
        assert headers[HEADER_EXCEPTION] == "RecordsTooLarge" and headers[HEADER_TOPIC] == users_topic
        assert "larger than the broker accepts" in headers[HEADER_REASON] and body["size"] > small
        assert body["entity"] == "user"
    for r in dlq:
        assert b"LIC-BYTES" not in (r.value or b"") and "LIC-BYTES" not in json.dumps(headers_dict(r.headers))
    users = read_all(kafka_bootstrap, users_topic, until=lambda rs: {r.key for r in rs} >= {b"u1", b"u2"})
    assert b"big" not in {r.key for r in users}
