"""The Faust planner worker on the real broker: events in, operations out, bad input
dead-lettered; a RocksDB worker killed with SIGKILL recovers its tables."""

from __future__ import annotations

from pathlib import Path

from kafka import KafkaAdminClient, KafkaProducer

from devtools.processes import wait_until
from kernel.settings import Settings
from processors.app import app_id
from processors.topics import ensure_planner_topics
from schemas.codec import decode_operation
from schemas.deadletter import HEADER_OFFSET, HEADER_REASON, HEADER_STAGE, headers_dict
from schemas.directory import ApplicationType, EntityType
from schemas.results import FactKind, PlannerFact
from schemas.topics import DIRECTORY_DLQ, DIRECTORY_TOPICS, OPERATIONS, PLANNER_CONTROL, PLANNER_FACTS
from tests.factories import T0, access, user_event
from tests.kafka_read import read_all
from tests.pipeline import PLANNER_FAILOVER, alive_or_fail, components, connected
from vudsync.topics import ensure_catalogue


def test_planner_plans_users_and_dead_letters_malformed_events(
    kafka_settings: Settings, kafka_bootstrap: str
) -> None:
    ensure_catalogue(kafka_settings, kafka_bootstrap)
    connected(kafka_settings, kafka_bootstrap)
    users = kafka_settings.topic(DIRECTORY_TOPICS[EntityType.USER].name)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    try:
        producer.send(users, key=b"u1", value=user_event(3, uid="u1").model_dump_json().encode())
        producer.send(users, key=b"x1", value=b"this is not json")
        producer.send(users, key=b"x2", value=b'{"entity": "user", "entity_id": "x2"}')
        producer.send(users, key=b"u2", value=user_event(4, uid="u2").model_dump_json().encode())
        producer.send(users, key=b"u1", value=user_event(2, uid="u1").model_dump_json().encode())  # older
        producer.flush()
        with components(kafka_settings, kafka_bootstrap, "planner") as procs:
            ops_topic = kafka_settings.topic(OPERATIONS.name)
            ops = read_all(
                kafka_bootstrap,
                ops_topic,
                timeout=90,
                until=lambda rs: alive_or_fail(procs) and {r.key for r in rs} >= {b"user:u1", b"user:u2"},
            )
            dlq = read_all(
                kafka_bootstrap,
                kafka_settings.topic(DIRECTORY_DLQ.name),
                timeout=30,
                until=lambda rs: len(rs) >= 2,
            )
            assert procs["planner"].alive(), procs["planner"].tail()
        planned = [decode_operation(r.value) for r in ops]
        assert sorted((o.kind, o.entity_id, o.source_version) for o in planned) == [
            ("user.upsert", "u1", 3),
            ("user.upsert", "u2", 4),
        ]
        reasons = {r.key: headers_dict(r.headers) for r in dlq}
        assert reasons[b"x1"][HEADER_REASON].startswith("not JSON")
        assert reasons[b"x2"][HEADER_REASON].startswith("wrong shape")
        assert reasons[b"x1"][HEADER_STAGE] == "decode" and reasons[b"x1"][HEADER_OFFSET].isdigit()
        assert {r.key: r.value for r in dlq}[b"x1"] == b"this is not json", "the original bytes, unchanged"
        # every input partition has a committed offset, quiet ones included (see
        # processors.faust_compat.prime_committed_offsets: faust loses messages on partitions without)
        admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        try:
            committed = admin.list_group_offsets({app_id(kafka_settings): None})[app_id(kafka_settings)]
        finally:
            admin.close()
        control = kafka_settings.topic(PLANNER_CONTROL.name)
        assert {tp.partition for tp in committed if tp.topic == control} == set(
            range(kafka_settings.topic_partitions)
        )
    finally:
        producer.close()


def _committed(bootstrap: str, group: str, topic: str) -> int:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        offsets = admin.list_group_offsets({group: None}).get(group, {})
    finally:
        admin.close()
    return sum(max(o.offset, 0) for tp, o in offsets.items() if tp.topic == topic)


def _send(producer: KafkaProducer, topic: str, key: str, value: bytes, partition: int | None = None) -> None:
    producer.send(topic, key=key.encode(), value=value, partition=partition).get(timeout=30)


def _fact(kind: FactKind, subject: str, **kw: object) -> bytes:
    return (
        PlannerFact(kind=kind, subject=subject, observed_at=T0, source="connect", **kw)
        .model_dump_json()
        .encode()
    )  # type: ignore[arg-type]


def test_a_rocksdb_worker_recovers_its_tables_after_sigkill(
    kafka_settings: Settings, kafka_bootstrap: str
) -> None:
    """Parked state and the previous state of an entity survive a SIGKILL of a RocksDB worker:
    restarted on the same folder, it releases what waited and plans only the diff."""
    settings = kafka_settings.model_copy(update={"topic_partitions": 1})
    ensure_catalogue(settings, kafka_bootstrap)
    ensure_planner_topics(settings, kafka_bootstrap)
    users = settings.topic(DIRECTORY_TOPICS[EntityType.USER].name)
    facts = settings.topic(PLANNER_FACTS.name)
    ops_topic = settings.topic(OPERATIONS.name)
    env = {"VUDSYNC_PLANNER_STORE": "rocksdb", "VUDSYNC_TOPIC_PARTITIONS": "1", **PLANNER_FAILOVER}
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    connected(settings, kafka_bootstrap)
    try:
        for app in ApplicationType:
            _send(
                producer, facts, f"registry:{app.value}", _fact(FactKind.REGISTRY, app.value, present=False)
            )
        _send(
            producer,
            facts,
            "catalogue:business:roles:Regnskap",
            _fact(FactKind.CATALOGUE, "business:roles:Regnskap"),
        )
        _send(producer, users, "u1", user_event(3, access=(access("c1"),)).model_dump_json().encode())
        with components(settings, kafka_bootstrap, "planner:rocks", **env) as procs:
            read_all(
                kafka_bootstrap,
                ops_topic,
                timeout=120,
                until=lambda rs: alive_or_fail(procs) and len(rs) >= 1,
            )
            # the assignment waits for u1 and c1 in the table; once the event is committed it is
            # never delivered again, so what the restarted worker knows comes from its store
            wait_until(
                lambda: alive_or_fail(procs) and _committed(kafka_bootstrap, app_id(settings), users) >= 1,
                60,
                what="the event committed",
            )
            procs["planner:rocks"].kill()
        datadir = Path(settings.home) / "planner" / "rocks"
        assert any(p.is_dir() for p in datadir.rglob("*state*")), list(datadir.rglob("*"))

        _send(producer, facts, "user:u1", _fact(FactKind.USER, "u1", cloud_id="cu-1"))
        _send(producer, facts, "company:c1", _fact(FactKind.COMPANY, "c1", cloud_id="cc-1"))
        _send(
            producer,
            users,
            "u1",
            user_event(4, first_name="Kari Anne", access=(access("c1"),)).model_dump_json().encode(),
        )
        with components(settings, kafka_bootstrap, "planner:rocks", **env) as procs:
            records = read_all(
                kafka_bootstrap,
                ops_topic,
                timeout=120,
                until=lambda rs: alive_or_fail(procs) and len({r.value for r in rs}) >= 3,
            )
        planned = [decode_operation(r.value) for r in records]
        by_kind = {(o.kind, o.source_version) for o in planned}
        # released from the recovered parked state, with the cloud ids learned after the restart
        (assign,) = [o for o in planned if o.kind == "access.assign"]
        assert (assign.cloud_user_id, assign.cloud_company_id, assign.source_version) == ("cu-1", "cc-1", 3)
        # v4 diffed against the recovered v3: a name change only, no second assignment
        assert ("user.upsert", 4) in by_kind and ("access.assign", 4) not in by_kind
    finally:
        producer.close()
