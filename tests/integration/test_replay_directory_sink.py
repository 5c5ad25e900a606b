"""``vudsync replay --group directory-sink`` against the real broker, the real directory sink
(``vudsync run directory-sink``) and each store: the writeback's operations read again change
nothing — the store ends the same and its change log gains no row — because the store answers
each operation id it committed (or rejected) as already applied, with the first answer."""

from __future__ import annotations

import json

from kafka.errors import KafkaError

from devtools.processes import wait_until
from devtools.seed.writer import DirectoryWriter
from kernel.settings import Settings
from schemas.codec import decode_model, encode
from schemas.results import OperationResult
from schemas.topics import DIRECTORY_OPERATIONS, RESULTS
from sinks.directory_service import directory_sink_group
from tests.factories import directory_op
from tests.kafka_read import committed, read_all
from tests.pipeline import components, run_cli, wait_for
from vudsync.ops.kafka_admin import group_admin
from vudsync.topics import ensure_catalogue


def _send(bootstrap: str, topic: str, records: list[tuple[str, bytes]]) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        for key, value in records:
            producer.send(topic, key=key.encode(), value=value)
        producer.flush()
    finally:
        producer.close()


def _store_count(writer: DirectoryWriter) -> int:
    row = writer.conn.execute("SELECT COUNT(*) FROM directory_operations_applied").fetchone()
    return int(row[0])


def test_replaying_the_directory_operations_leaves_the_store_as_it_was_without_a_second_write(
    kafka_settings: Settings, kafka_bootstrap: str, store_url: str, writer: DirectoryWriter
) -> None:
    s = kafka_settings.model_copy(update={"store_url": store_url})
    ensure_catalogue(s, kafka_bootstrap)
    writer.upsert_catalogue("roles", [("business", r, r) for r in ("Regnskap", "Lønn", "Salg")])
    writer.upsert_companies([{"id": "c1", "name": "Fjord AS", "organisation_number": "923609016"}])
    writer.upsert_user(id="u1", username="kari", email="kari@fjord.no")
    writer.grant([("u1", "c1", "business", "role", "Regnskap")])
    # granted, granted then revoked in the cloud, and a role the directory does not have
    ops = [
        directory_op("Lønn", 1),
        directory_op("Salg", 2),
        directory_op("Salg", 3, revoke=True),
        directory_op("Revisor", 4),
    ]
    topic, group = s.topic(DIRECTORY_OPERATIONS.name), directory_sink_group(s)
    _send(kafka_bootstrap, topic, [(op.user_id, encode(op)) for op in ops])

    def all_committed() -> bool:
        try:
            return committed(kafka_bootstrap, group, topic, s.topic_partitions) == len(ops)
        except KafkaError:  # the group's coordinator is not elected yet
            return False

    with components(s, kafka_bootstrap, "directory-sink") as procs:
        wait_for(procs, all_committed, 120, "the directory sink's commit")
    rows, position, applied = writer.access_rows("u1"), writer.change_log_position(), _store_count(writer)
    assert rows == [
        ("c1", "business", "role", "Lønn", "cloud"),
        ("c1", "business", "role", "Regnskap", "directory"),
    ]
    assert applied == len(ops)  # the rejection is recorded too: asked again, the same answer
    with group_admin(kafka_bootstrap) as admin:
        wait_until(lambda: not admin.members(group), 60, what="the directory sink's group empty")

    # the dry run says what would be read again, and that the journal knows it applied
    dry = run_cli(
        s, kafka_bootstrap, "replay", "--since", "1h", "--group", "directory-sink", "--dry-run", "--json"
    )
    assert dry.exit_code == 0, dry.output
    report = json.loads(dry.stdout)
    assert report["messages"] == len(ops) and report["unreadable"] == 0
    assert report["operations"]["count"] == len(ops)
    assert report["operations"]["by_kind"] == {"directory.access.grant": 3, "directory.access.revoke": 1}
    assert report["operations"]["already_applied_per_journal"] == 3  # the rejected one is not "applied"
    assert {p["group"] for p in report["partitions"]} == {group}

    done = run_cli(s, kafka_bootstrap, "replay", "--since", "1h", "--group", "directory-sink", "--no-wait")
    assert done.exit_code == 0, done.output
    assert "`vudsync run directory-sink`" in done.output
    assert committed(kafka_bootstrap, group, topic, s.topic_partitions) == 0

    # the directory sink reads every operation again: the store answers each from what it committed
    with components(s, kafka_bootstrap, "directory-sink") as procs:
        wait_for(procs, all_committed, 120, "the directory sink's commit after the replay")
    assert writer.access_rows("u1") == rows
    assert writer.change_log_origins("u1", position) == []  # no second write
    assert _store_count(writer) == applied
    results = read_all(
        kafka_bootstrap, s.topic(RESULTS.name), until=lambda records: len(records) >= 2 * len(ops)
    )
    decoded = [decode_model(OperationResult, rec.value) for rec in results]
    ids = [op.operation_id for op in ops]
    first, again = (
        {r.operation_id: r for r in decoded[: len(ops)]},
        {r.operation_id: r for r in decoded[len(ops) :]},
    )
    assert [first[i].outcome.value for i in ids] == ["applied", "applied", "applied", "rejected"]
    # read again: each answered from what the store recorded, the rejection with its reason
    assert [again[i].outcome.value for i in ids] == ["already_applied"] * len(ops)
    assert [again[i].effect for i in ids[:3]] == ["granted", "granted", "revoked"]
    assert again[ids[3]].error is not None and "unknown_role" in again[ids[3]].error
