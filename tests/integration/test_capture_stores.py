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
from schemas.events import UserChanged
from schemas.topics import DIRECTORY_DLQ, DIRECTORY_TOPICS
from tests.integration.conftest import MakeCapture
from tests.kafka_read import read_all
from vudsync.topics import ensure_catalogue

US = 1e-6


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


def test_each_access_entry_carries_its_own_change_time_when_capture_folds_a_user_s_changes(
    kafka_settings: Settings, kafka_bootstrap: str, writer: DirectoryWriter, capture: ChangeCapture
) -> None:
    """Rule 6: a grant, a removal and a name edit of one user read in one batch are one event at
    the edit's time; the store's triggers kept each entry's own time and the event carries it:
    the held entry at its grant, the removed one at its removal (the change-log rows' times)."""
    writer.upsert_companies([{"id": "c1", "name": "Fjord AS", "organisation_number": "923609016"}])
    writer.upsert_user(id="u1", username="kari", email="kari@fjord.no")
    position = capture.snapshot()
    writer.grant([("u1", "c1", "business", "role", "Regnskap")])
    writer.grant([("u1", "c1", "business", "role", "Lønn")])
    writer.revoke_entry("u1", "c1", "business", "role", "Lønn")
    writer.update_user("u1", last_name="Berg")
    granted, _, removed, edited = [r.committed_at for r in capture.log.read_changes(position, 100)]
    assert granted <= removed <= edited
    stats = capture.poll_once(position)
    assert stats.last_seq == writer.change_log_position()
    users_topic = kafka_settings.topic(DIRECTORY_TOPICS[EntityType.USER].name)
    records = read_all(kafka_bootstrap, users_topic, until=lambda rs: len(rs) >= 2)
    event = decode_event(records[-1].value)
    assert isinstance(event, UserChanged) and event.state.last_name == "Berg"
    assert event.source.committed_at.timestamp() == pytest.approx(edited, abs=US)
    (company,) = event.state.access
    assert company.services["business"].roles == ("Regnskap",)
    times = {k: v.timestamp() for k, v in event.access_changed_at.items()}
    assert times.keys() == {"c1|business/role/Regnskap", "c1|business/role/Lønn"}
    # the same statement as the change-log row: the same clock (SQLite: the same value;
    # PostgreSQL: clock_timestamp() read just before the change-log trigger's); the event's
    # datetimes hold microseconds (US = one)
    assert times["c1|business/role/Regnskap"] == pytest.approx(granted, abs=0.05)
    assert times["c1|business/role/Regnskap"] <= granted + US
    assert times["c1|business/role/Lønn"] == pytest.approx(removed, abs=0.05)
    assert times["c1|business/role/Lønn"] <= removed + US
    assert (
        event.entry_changed_at("c1", "business", "role", "Lønn").timestamp() == times["c1|business/role/Lønn"]
    )


def test_a_snapshot_s_user_event_carries_the_same_entry_times_as_streaming_gives(
    kafka_settings: Settings, kafka_bootstrap: str, writer: DirectoryWriter, capture: ChangeCapture
) -> None:
    """Rule 6: a snapshot (PostgreSQL reads it by id range, SQLite by ids) carries each entry's
    own change time, as streaming does: an entry held and one removed before the snapshot are
    timed at their grant and removal, not at the snapshot event's time, and a later edit of the
    user streamed after it carries the very same times."""
    writer.upsert_companies([{"id": "c1", "name": "Fjord AS", "organisation_number": "923609016"}])
    writer.upsert_user(id="u1", username="kari", email="kari@fjord.no")
    writer.grant([("u1", "c1", "business", "role", "Regnskap")])
    writer.grant([("u1", "c1", "business", "role", "Lønn")])
    writer.revoke_entry("u1", "c1", "business", "role", "Lønn")
    granted, _, removed = [r.committed_at for r in capture.log.read_changes(0, 100)][-3:]
    position = capture.snapshot()
    writer.update_user("u1", last_name="Berg")
    capture.poll_once(position)
    users_topic = kafka_settings.topic(DIRECTORY_TOPICS[EntityType.USER].name)
    records = read_all(kafka_bootstrap, users_topic, until=lambda rs: len(rs) >= 2)
    snapshot, streamed = (decode_event(r.value) for r in records)
    assert isinstance(snapshot, UserChanged) and isinstance(streamed, UserChanged)
    assert (snapshot.op.value, streamed.op.value) == ("r", "u")
    assert streamed.state.last_name == "Berg"
    times = {k: v.timestamp() for k, v in snapshot.access_changed_at.items()}
    assert times.keys() == {"c1|business/role/Regnskap", "c1|business/role/Lønn"}
    assert times["c1|business/role/Regnskap"] == pytest.approx(granted, abs=0.05)
    assert times["c1|business/role/Lønn"] == pytest.approx(removed, abs=0.05)
    assert snapshot.access_changed_at == streamed.access_changed_at


def test_an_update_of_an_access_row_s_key_times_the_entry_it_gives_up_and_the_one_it_takes(
    writer: DirectoryWriter, capture: ChangeCapture
) -> None:
    """No product path updates an access row, but the triggers must not lie if one does: the
    old key counts as removed and the new one as granted at the update; an update that keeps
    the key (its origin) changes neither entry's time."""
    writer.upsert_companies([{"id": "c1", "name": "Fjord AS", "organisation_number": "923609016"}])
    writer.upsert_user(id="u1", username="kari", email="kari@fjord.no")
    writer.grant([("u1", "c1", "business", "role", "Regnskap"), ("u1", "c1", "business", "role", "Lønn")])
    before = capture.log.read_entities(EntityType.USER, ["u1"])["u1"].access_times
    writer._exec("UPDATE access SET name = ? WHERE user_id = ? AND name = ?", ("Innkjøp", "u1", "Regnskap"))
    writer._exec("UPDATE access SET origin = ? WHERE user_id = ? AND name = ?", ("cloud", "u1", "Lønn"))
    after = dict(capture.log.read_entities(EntityType.USER, ["u1"])["u1"].access_times)
    assert after.keys() == {"c1|business/role/Regnskap", "c1|business/role/Lønn", "c1|business/role/Innkjøp"}
    assert after["c1|business/role/Lønn"] == dict(before)["c1|business/role/Lønn"]
    assert after["c1|business/role/Regnskap"] == after["c1|business/role/Innkjøp"]
    assert after["c1|business/role/Regnskap"] >= dict(before)["c1|business/role/Regnskap"]
