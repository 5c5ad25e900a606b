"""Reading topics back in tests: every record until a condition holds or a deadline passes; how far
a group has committed."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

from kernel.kafka_security import PLAINTEXT, KafkaSecurity


def read_all(
    bootstrap: str,
    topic: str,
    *,
    until: Callable[[list[Any]], bool] | None = None,
    timeout: float = 30.0,
    idle: float = 1.0,
    security: KafkaSecurity = PLAINTEXT,
) -> list[Any]:
    """Records of ``topic`` from the beginning: until ``until(records)`` holds; or else until
    every partition is read to the end offset it had when the topic was assigned and no record
    has arrived for ``idle`` seconds (an empty topic too: it used to wait for ``timeout``).
    With ``until`` it fails the test at ``timeout``; without, it returns what it read then."""
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        consumer_timeout_ms=200,
        **security.for_kafka_python(),
    )
    records: list[Any] = []
    deadline = time.monotonic() + timeout
    last_arrival = time.monotonic()
    ends: dict[TopicPartition, int] = {}  # of the partitions once assigned (no until)
    try:
        while time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=200)
            fresh = [r for rs in batch.values() for r in rs]
            if fresh:
                records.extend(fresh)
                last_arrival = time.monotonic()
            if until is not None:
                if until(records):
                    return records
            elif not ends:
                if assigned := consumer.assignment():
                    ends = consumer.end_offsets(list(assigned))
                    last_arrival = time.monotonic()  # an empty topic: idle from its assignment
            elif (
                not fresh
                and time.monotonic() - last_arrival > idle
                and all(consumer.position(tp) >= end for tp, end in ends.items())
            ):
                return records
        if until is not None:
            raise AssertionError(f"{topic}: condition not met within {timeout}s ({len(records)} records)")
        return records
    finally:
        consumer.close()


def committed(
    bootstrap: str, group: str, topic: str, partitions: int, *, security: KafkaSecurity = PLAINTEXT
) -> int:
    """The offsets ``group`` has committed on ``topic``, summed over its partitions."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, **security.for_kafka_python())
    try:
        offsets = admin.list_group_offsets({group: None}).get(group, {})
    finally:
        admin.close()
    return sum(
        max(offsets[TopicPartition(topic, p)].offset, 0)
        for p in range(partitions)
        if TopicPartition(topic, p) in offsets
    )
