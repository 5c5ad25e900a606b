"""Change capture from a real store to the real broker: the same cases on SQLite and PostgreSQL.

What only one dialect has stays beside it: ``test_capture_sqlite.py`` (migrations, the
application-instance type change), ``test_capture_postgres.py`` (seq gaps, LISTEN/NOTIFY,
concurrent writers, range snapshots).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from devtools.seed.writer import DirectoryWriter
from kernel.settings import Settings
from producers.capture import ChangeCapture
from schemas.codec import decode_event
from schemas.deadletter import HEADER_REASON, HEADER_SOURCE_ROW, headers_dict
from schemas.directory import EntityType
from schemas.topics import DIRECTORY_DLQ, DIRECTORY_TOPICS
from tests.integration.conftest import MakeCapture
from tests.kafka_read import read_all
from vudsync.topics import ensure_catalogue


@pytest.fixture
def capture(
    kafka_settings: Settings,
    kafka_bootstrap: str,
    store_url: str,
    writer: DirectoryWriter,  # first: it migrates the store the capture reads
    make_capture: MakeCapture,
) -> ChangeCapture:
    ensure_catalogue(kafka_settings, kafka_bootstrap)
    return make_capture(kafka_settings, store_url)


def test_snapshot_then_stream_create_update_delete(
    kafka_settings: Settings, kafka_bootstrap: str, writer: DirectoryWriter, capture: ChangeCapture
) -> None:
    writer.upsert_companies([{"id": "c1", "name": "Fjord AS", "organisation_number": "923 609 016"}])
    writer.upsert_user(
        id="u1", username="kari", email="kari@fjord.no", first_name="Kari", last_name="Ødegård"
    )
    writer.grant([("u1", "c1", "business", "role", "Regnskap")])
    position = capture.snapshot()
    writer.update_user("u1", first_name="Kari Anne")
    writer.upsert_user(id="u2", username="ola", email="ola@fjord.no")
    writer.delete_user("u2")
    stats = capture.poll_once(position)
    assert stats.last_seq == writer.change_log_position()
    users_topic = kafka_settings.topic(DIRECTORY_TOPICS[EntityType.USER].name)
    records = read_all(kafka_bootstrap, users_topic, until=lambda rs: len(rs) >= 4)
    by_key: dict[str, list[Any]] = {}
    for r in records:
        by_key.setdefault(r.key.decode(), []).append(r)
    u1 = [decode_event(r.value) for r in by_key["u1"]]
    assert [e.op.value for e in u1] == ["r", "u"]
    assert u1[0].state.access[0].company_id == "c1"
    assert u1[-1].state.first_name == "Kari Anne" and u1[-1].version > u1[0].version
    assert u1[-1].source.store == capture.log.store_kind
    gone = decode_event(by_key["u2"][0].value)
    assert gone.op.value == "d" and gone.state.email == "ola@fjord.no"
    assert by_key["u2"][-1].value is None  # tombstone
    assert capture.log.load_checkpoint("default") == ("streaming", stats.last_seq)


def test_invalid_rows_are_dead_lettered_and_capture_goes_on(
    kafka_settings: Settings, kafka_bootstrap: str, writer: DirectoryWriter, capture: ChangeCapture
) -> None:
    position = capture.snapshot()
    writer.upsert_user(id="bad", username="x", email="not-an-email")
    writer.upsert_user(id="u9", username="y", email="y@fjord.no")
    writer.grant([("u9", "nope", "business", "role", "R")])
    writer.add_application_instance("business", "https://vb.local", "LICENSE-AAA-111")
    writer.add_application_instance("business", "https://vb2.local", "LICENSE-BBB-222")
    writer.upsert_user(id="after", username="z", email="z@fjord.no")
    capture.poll_once(position)
    dlq = read_all(kafka_bootstrap, kafka_settings.topic(DIRECTORY_DLQ.name), until=lambda rs: len(rs) >= 2)
    reasons = {
        headers_dict(r.headers)[HEADER_SOURCE_ROW]: headers_dict(r.headers)[HEADER_REASON] for r in dlq
    }
    assert "e-mail" in reasons["user:bad"]
    assert "single instance" in reasons["application_instance:business"]
    # access to a company the store does not hold yet is no dead letter: the planner parks it
    assert "user:u9" not in reasons
    for r in dlq:
        assert b"LICENSE-" not in (r.value or b"") and "LICENSE-" not in json.dumps(headers_dict(r.headers))
        assert json.loads(r.value)["store"] == capture.log.store_kind
    users = read_all(
        kafka_bootstrap,
        kafka_settings.topic(DIRECTORY_TOPICS[EntityType.USER].name),
        until=lambda rs: {r.key for r in rs} >= {b"u9", b"after"},
    )
    assert b"bad" not in {r.key for r in users}
    (u9,) = [json.loads(r.value) for r in users if r.key == b"u9"]
    assert [a["company_id"] for a in u9["state"]["access"]] == ["nope"]


def test_rows_written_back_from_the_cloud_are_emitted_apart_as_cloud_origin(
    kafka_settings: Settings,
    kafka_bootstrap: str,
    store_url: str,
    writer: DirectoryWriter,
    capture: ChangeCapture,
) -> None:
    from sinks.directory_store import open_directory_store
    from tests.factories import directory_op

    writer.upsert_catalogue("roles", [("business", "Regnskap", ""), ("business", "Lønn", "")])
    writer.upsert_companies([{"id": "c1", "name": "Fjord AS", "organisation_number": "923609016"}])
    writer.upsert_user(id="u1", username="kari", email="kari@fjord.no")
    writer.grant([("u1", "c1", "business", "role", "Regnskap")])
    position = capture.snapshot()
    store = open_directory_store(store_url)
    try:
        assert store.apply(directory_op("Lønn")).effect == "granted"
    finally:
        store.close()
    assert writer.change_log_origins("u1", position) == ["cloud"]
    capture.poll_once(position)
    users_topic = kafka_settings.topic(DIRECTORY_TOPICS[EntityType.USER].name)
    records = read_all(kafka_bootstrap, users_topic, until=lambda rs: len(rs) >= 2)
    first, last = (decode_event(r.value) for r in records[:2])
    assert first.state.access[0].cloud_origin == {}
    (company,) = last.state.access
    assert company.services["business"].roles == ("Regnskap",)
    assert company.cloud_origin["business"].roles == ("Lønn",)
