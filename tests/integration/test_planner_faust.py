"""The Faust planner worker on the real broker: events in, operations out, bad input dead-lettered."""

from __future__ import annotations

from kafka import KafkaProducer

from schemas.codec import decode_operation
from schemas.deadletter import HEADER_OFFSET, HEADER_REASON, HEADER_STAGE, headers_dict
from schemas.directory import EntityType
from schemas.topics import DIRECTORY_DLQ, DIRECTORY_TOPICS, OPERATIONS
from tests.factories import user_event
from tests.kafka_read import read_all
from tests.pipeline import alive_or_fail, components
from vudsync.settings import Settings
from vudsync.topics import ensure_catalogue


def test_planner_plans_users_and_dead_letters_malformed_events(
    kafka_settings: Settings, kafka_bootstrap: str
) -> None:
    ensure_catalogue(kafka_settings, kafka_bootstrap)
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
        assert dlq[0].value == b"this is not json"
    finally:
        producer.close()
