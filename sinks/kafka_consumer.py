"""confluent-kafka (librdkafka) adapter of the sink's consumer of ``vud.cloud.operations``.

What :class:`sinks.worker.SinkWorker` needs of a consumer (:class:`sinks.ports.OperationsConsumer`):
join a group, poll records in offset order per partition, pause and resume, commit explicit
offsets, and tell the worker when partitions are assigned or revoked.

Why librdkafka and not kafka-python: kafka-python 3.0.12's consumer was seen to hang in a
rejoin for good (the leader's SyncGroup never completing after a member left, while ``poll``
returned at once in a loop at 85 % of a core; seen after ``vudsync replay`` in the recovery e2e
test). librdkafka runs the group protocol on its own C threads, and a revoked-and-reassigned
partition starts again from its committed offset, which is the worker's contract for
rebalances (kafka-python kept the old fetch position, and the worker had to seek back).

Rebalance callbacks run inside :meth:`poll`, on the thread that polls (the worker's consumer
thread): they only hand the news on and return.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from kernel.kafka_security import PLAINTEXT, KafkaSecurity
from kernel.records import Record
from kernel.settings import heartbeat_interval
from sinks.errors import CommitRefused
from sinks.scheduling import TopicPartition as TP

log = logging.getLogger(__name__)

Listener = Callable[[list[TP]], None]


class ConfluentOperationsConsumer:
    """A group member reading one topic; partitions start at their committed offset (the
    earliest when none). Not thread-safe: one thread makes every call."""

    def __init__(
        self,
        bootstrap: str,
        group_id: str,
        client_id: str,
        *,
        security: KafkaSecurity = PLAINTEXT,
        session_timeout: float = 45.0,
        **config: Any,
    ) -> None:
        """``session_timeout``: seconds until the group moves the partitions of a member that
        stopped heartbeating (one killed without leaving the group)."""
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                **security.for_confluent(),
                "group.id": group_id,
                "client.id": client_id,
                "session.timeout.ms": round(session_timeout * 1000),
                "heartbeat.interval.ms": round(heartbeat_interval(session_timeout) * 1000),
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
                "enable.partition.eof": False,
                # rebalances are eager (revoke everything, then assign): the worker drops the
                # queued work of revoked partitions and reads assigned ones from the commit
                "partition.assignment.strategy": "range",
                "logger": log,
                **config,
            }
        )
        self._paused: set[TP] = set()
        self._closed = False

    def subscribe(self, topic: str, on_assigned: Listener, on_revoked: Listener) -> None:
        def assigned(consumer: Consumer, partitions: list[TopicPartition]) -> None:
            self._paused.clear()  # a new assignment is fetched, whatever was paused before
            on_assigned([(p.topic, p.partition) for p in partitions])

        def revoked(consumer: Consumer, partitions: list[TopicPartition]) -> None:
            self._paused.clear()
            on_revoked([(p.topic, p.partition) for p in partitions])

        self._consumer.subscribe([topic], on_assign=assigned, on_revoke=revoked, on_lost=revoked)

    def poll(self, timeout_ms: int, max_records: int) -> dict[TP, list[Record]]:
        """Records that arrived (at most ``max_records``), per partition in offset order."""
        out: dict[TP, list[Record]] = {}
        for message in self._consumer.consume(num_messages=max_records, timeout=timeout_ms / 1000):
            error = message.error()
            if error is not None:
                # partition EOF is off; what comes here is informational or retried by librdkafka
                # itself (a broker down, a rebalance): the next poll goes on
                if error.fatal():
                    raise KafkaException(error)
                log.warning("sink: consumer: %s", error)
                continue
            topic, partition = message.topic(), message.partition()
            offset = message.offset()
            assert topic is not None and partition is not None and offset is not None
            out.setdefault((topic, partition), []).append(
                Record(topic, partition, offset, message.key(), message.value())
            )
        return out

    def assignment(self) -> list[TP]:
        return [(p.topic, p.partition) for p in self._consumer.assignment()]

    def pause(self, *tps: TP) -> None:
        if tps:
            self._consumer.pause([TopicPartition(t, p) for t, p in tps])
            self._paused.update(tps)

    def resume(self, *tps: TP) -> None:
        if tps:
            self._consumer.resume([TopicPartition(t, p) for t, p in tps])
            self._paused.difference_update(tps)

    def paused(self) -> list[TP]:
        return sorted(self._paused)

    def commit(self, offsets: dict[TP, int]) -> None:
        """Commit ``offsets`` (the next offset to read, per partition) and wait for the answer;
        :class:`CommitRefused` when the group took the partitions meanwhile."""
        try:
            answers: Sequence[TopicPartition] | None = self._consumer.commit(
                offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()], asynchronous=False
            )
        except KafkaException as exc:
            raise CommitRefused(str(exc.args[0] if exc.args else exc)) from None
        refused = [a for a in answers or () if a.error is not None]
        if refused:
            raise CommitRefused(", ".join(f"{a.topic}[{a.partition}]: {a.error}" for a in refused))

    def close(self) -> None:
        """Leave the group (the offsets were committed by the worker)."""
        if not self._closed:
            self._closed = True
            self._consumer.close()
