"""Records Faust lost on their way to the planner are read straight from the real broker
(``processors.service.BrokerRange``): exactly the offsets asked for, in order, on one
partition; a range past the end or already compacted away gives what is left."""

from __future__ import annotations

import asyncio

from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

from processors.service import BrokerRange


def _topic_with(bootstrap: str, name: str, records: int) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(name, num_partitions=2, replication_factor=1)])
    finally:
        admin.close()
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        for i in range(records):
            producer.send(name, key=f"k{i}".encode(), value=f"v{i}".encode(), partition=1)
        producer.send(name, key=b"other", value=b"partition 0", partition=0)
        producer.flush()
    finally:
        producer.close()


def test_a_range_of_one_partition_is_read_from_the_broker(
    kafka_bootstrap: str, unique_topic_prefix: str
) -> None:
    topic = f"{unique_topic_prefix}missed"
    _topic_with(kafka_bootstrap, topic, 1200)

    async def read() -> list[list[tuple[int, bytes | None, bytes | None]]]:
        reader = BrokerRange(kafka_bootstrap)
        try:
            ranges = [(1, 5, 7), (1, 0, 0), (1, 100, 1150), (1, 1198, 1300), (1, 1200, 1210), (0, 0, 3)]
            out = []
            for partition, first, last in ranges:
                got = await reader(topic, partition, first, last)
                assert all((r.topic, r.partition) == (topic, partition) for r in got)
                out.append([(r.offset, r.key, r.value) for r in got])
            return out
        finally:
            await reader.close()

    middle, first, long, past_end, beyond, other = asyncio.run(read())
    assert middle == [(o, f"k{o}".encode(), f"v{o}".encode()) for o in (5, 6, 7)]
    assert first == [(0, b"k0", b"v0")]
    assert [o for o, _, _ in long] == list(range(100, 1151))  # over several fetches
    assert [o for o, _, _ in past_end] == [1198, 1199]
    assert beyond == []
    assert other == [(0, b"other", b"partition 0")]


def test_the_range_reader_closes_its_consumer_when_idle_and_opens_one_again(
    kafka_bootstrap: str, unique_topic_prefix: str
) -> None:
    topic = f"{unique_topic_prefix}missed-idle"
    _topic_with(kafka_bootstrap, topic, 10)

    async def scenario() -> tuple[bool, bool, list[int], bool]:
        reader = BrokerRange(kafka_bootstrap, idle_close=0.5)
        try:
            await reader(topic, 1, 2, 3)
            open_after_read = reader.connected
            deadline = asyncio.get_running_loop().time() + 20
            while reader.connected and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.05)
            closed_when_idle = not reader.connected
            again = await reader(topic, 1, 7, 8)  # a later loss opens a consumer again
            return open_after_read, closed_when_idle, [r.offset for r in again], reader.connected
        finally:
            await reader.close()

    open_after_read, closed_when_idle, again, open_again = asyncio.run(scenario())
    assert open_after_read
    assert closed_when_idle, "the consumer stayed open 20 s after its last read"
    assert again == [7, 8]
    assert open_again
