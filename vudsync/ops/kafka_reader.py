"""kafka-python adapter that reads fixed offset ranges of partitions, without a consumer group.

Nothing is committed and no group is joined: reading for a report, a dry run or the journal
never moves a pipeline component's position.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from kernel.admin import translate
from kernel.errors import RetryableError
from kernel.kafka_credentials import check_credentials
from kernel.kafka_security import PLAINTEXT, KafkaSecurity
from kernel.records import TopicPartition as TP


def _consumer(
    bootstrap: str, client_id: str, security: KafkaSecurity, max_poll_records: int = 2000
) -> KafkaConsumer:
    check_credentials(bootstrap, security)  # kafka-python would retry a refusal until its deadline
    try:
        return KafkaConsumer(
            bootstrap_servers=bootstrap,
            **security.for_kafka_python(),
            client_id=client_id,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=max_poll_records,
        )
    except Exception as exc:
        raise translate(exc, f"connect a reader to {bootstrap}") from exc


def read_ranges(
    bootstrap: str,
    ranges: Mapping[TP, tuple[int, int]],
    *,
    timeout: float = 120.0,
    client_id: str = "vudsync-ops-reader",
    security: KafkaSecurity = PLAINTEXT,
) -> Iterator[Any]:
    """Every record with ``start <= offset < end`` of each partition, partition by partition in
    offset order within a partition. Gaps (compaction, deleted records) are skipped. Raises
    :class:`RetryableError` when the ranges cannot be read within ``timeout`` seconds."""
    wanted = {tp: (max(start, 0), end) for tp, (start, end) in ranges.items() if end > max(start, 0)}
    if not wanted:
        return
    consumer = _consumer(bootstrap, client_id, security)
    try:
        tps = [TopicPartition(*tp) for tp in wanted]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, wanted[(tp.topic, tp.partition)][0])
        remaining = set(wanted)
        deadline = time.monotonic() + timeout
        while remaining:
            if time.monotonic() > deadline:
                raise RetryableError(f"reading {sorted(remaining)} did not finish within {timeout:.0f}s")
            batches = consumer.poll(timeout_ms=500)
            for tp, records in batches.items():
                key = (tp.topic, tp.partition)
                end = wanted[key][1]
                for record in records:
                    if record.offset < end:
                        yield record
            for key in list(remaining):
                if consumer.position(TopicPartition(*key)) >= wanted[key][1]:
                    remaining.discard(key)
                    consumer.pause(TopicPartition(*key))
    finally:
        consumer.close()


class PartitionTail:
    """Reads partitions from given offsets on, batch by batch (``--follow``)."""

    def __init__(
        self,
        bootstrap: str,
        start: Mapping[TP, int | None],
        client_id: str,
        *,
        security: KafkaSecurity = PLAINTEXT,
    ) -> None:
        self._consumer = _consumer(bootstrap, client_id, security, max_poll_records=5000)
        tps = [TopicPartition(*tp) for tp in start]
        self._consumer.assign(tps)
        for tp in tps:
            offset = start[(tp.topic, tp.partition)]
            if offset is None:
                self._consumer.seek_to_beginning(tp)
            else:
                self._consumer.seek(tp, offset)

    def poll(self, timeout: float = 0.5) -> list[Any]:
        if not self._consumer.assignment():  # no topic exists yet: nothing to wait for
            time.sleep(timeout)
            return []
        batches = self._consumer.poll(timeout_ms=int(timeout * 1000))
        return [r for records in batches.values() for r in records]

    def positions(self) -> dict[TP, int]:
        return {(tp.topic, tp.partition): self._consumer.position(tp) for tp in self._consumer.assignment()}

    def end_offsets(self) -> dict[TP, int]:
        if not self._consumer.assignment():
            return {}
        ends = self._consumer.end_offsets(list(self._consumer.assignment()))
        return {(tp.topic, tp.partition): int(o) for tp, o in ends.items()}

    def close(self) -> None:
        self._consumer.close()
