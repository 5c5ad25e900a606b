"""The local Kafka broker run by vudsync, and the admin helpers, against the real thing."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from devtools.broker import BrokerStartError, LocalKafkaBroker, free_port
from kernel.admin import (
    BrokerUnavailable,
    TopicSpec,
    admin_client,
    delete_topics,
    ensure_topics,
    list_topics,
    wait_for_broker,
)
from kernel.errors import RetryableError
from kernel.settings import Settings
from tests.fixtures.kafka import TopicFactory

pytestmark = pytest.mark.integration


def _broker_pids(home: Path) -> list[int]:
    """Every kafka.Kafka JVM whose command line names ``home`` (read from /proc)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"kafka.Kafka" in argv and any(str(home).encode() in arg for arg in argv):
            pids.append(int(entry.name))
    return pids


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[LocalKafkaBroker]:
    """A second broker in its own home (the jar cache is shared), stopped after the test."""
    broker = LocalKafkaBroker(
        tmp_path / "home", version=Settings().kafka_version, heap="256m", bind_to_parent=True
    )
    try:
        yield broker
    finally:
        broker.down()


def test_up_twice_starts_one_broker(own_broker: LocalKafkaBroker) -> None:
    first = own_broker.up()
    second = own_broker.up()
    # a fresh object for the same home, as a second `vudsync kafka up` would build
    third = LocalKafkaBroker(own_broker.home, version=own_broker.version).up()

    assert first.running and first.ready and first.pid is not None
    assert second.pid == first.pid == third.pid
    assert second.bootstrap == first.bootstrap == own_broker.bootstrap
    assert _broker_pids(own_broker.home) == [first.pid]
    assert wait_for_broker(str(first.bootstrap), timeout=10)["brokers"]


def test_down_leaves_no_process(own_broker: LocalKafkaBroker) -> None:
    pid = own_broker.up().pid
    assert pid is not None and Path(f"/proc/{pid}").exists()

    assert own_broker.down() is True

    assert not Path(f"/proc/{pid}").exists()
    assert _broker_pids(own_broker.home) == []
    assert not own_broker.record_path.exists()
    assert own_broker.status().running is False
    assert own_broker.down() is False


def test_broker_that_cannot_start_quotes_its_log(tmp_path: Path) -> None:
    broker = LocalKafkaBroker(tmp_path / "home", version=Settings().kafka_version, heap="1k")
    with pytest.raises(BrokerStartError) as caught:
        broker.up(timeout=60)
    assert "heap" in str(caught.value).lower()  # the JVM's own complaint, from broker.log
    assert _broker_pids(broker.home) == []


def test_wait_for_broker_gives_up_at_its_deadline() -> None:
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable) as caught:
        wait_for_broker(f"127.0.0.1:{free_port()}", timeout=1.0)
    assert isinstance(caught.value, RetryableError)
    assert time.monotonic() - started < 5


def test_produce_consume_commit_round_trip(kafka_bootstrap: str, topic_factory: TopicFactory) -> None:
    topic = topic_factory("round-trip", 3)
    group = f"{topic}-group"
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", enable_idempotence=True)
    for i in range(20):
        producer.send(topic, key=f"k{i % 5}".encode(), value=f"v{i}".encode())
    producer.flush()
    producer.close()

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    received: list[bytes] = []
    deadline = time.monotonic() + 60
    try:
        while len(received) < 20 and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                received.extend(record.value for record in records)
        consumer.commit()
    finally:
        consumer.close()

    assert sorted(received) == sorted(f"v{i}".encode() for i in range(20))
    with admin_client(kafka_bootstrap) as admin:
        committed = admin.list_group_offsets({group: None})[group]
    assert sum(meta.offset for meta in committed.values()) == 20
    assert {tp.partition for tp in committed} <= {0, 1, 2}


async def test_aiokafka_round_trip(kafka_bootstrap: str, topic_factory: TopicFactory) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    topic = topic_factory("aio")
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, enable_idempotence=True)
    await producer.start()
    try:
        await producer.send_and_wait(topic, key=b"k", value=b"hello")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=f"{topic}-group",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        record = await consumer.getone()
        await consumer.commit()
        committed = await consumer.committed(TopicPartition(topic, 0))
    finally:
        await consumer.stop()
    assert (record.key, record.value) == (b"k", b"hello")
    assert committed == 1


def test_ensure_topics_is_idempotent(kafka_bootstrap: str, unique_topic_prefix: str) -> None:
    specs = [
        TopicSpec(f"{unique_topic_prefix}users", 3, 1, {"cleanup.policy": "compact"}),
        (f"{unique_topic_prefix}plain", 1, 1, None),  # a plain tuple is a spec too
    ]
    names = [f"{unique_topic_prefix}users", f"{unique_topic_prefix}plain"]

    assert sorted(ensure_topics(kafka_bootstrap, specs)) == sorted(names)
    assert ensure_topics(kafka_bootstrap, specs) == []

    with admin_client(kafka_bootstrap) as admin:
        described = {t["name"]: t for t in admin.describe_topics(names)}
    assert len(described[names[0]]["partitions"]) == 3
    assert set(names) <= set(list_topics(kafka_bootstrap))

    assert sorted(delete_topics(kafka_bootstrap, names)) == sorted(names)
    assert delete_topics(kafka_bootstrap, names) == []  # unknown topics are fine
