"""The record publisher port, and its adapters (one module each, named by technology).

* :class:`RecordPublisher` — the port every stage that writes Kafka records depends on.
* :class:`kernel.publishing.confluent.ConfluentRecordPublisher` — librdkafka (the capture's and
  the sink's producers).
* :class:`kernel.publishing.kafka_python.KafkaRecordPublisher` — kafka-python (ops commands).

The adapters are imported from their own modules, so a process loads only the Kafka client it
uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

Headers = Sequence[tuple[str, bytes]]


class RecordPublisher(Protocol):
    """Where records go: ``publish`` queues a record; ``flush`` returns once the broker has
    acknowledged every queued record (the number still queued, 0), raising
    :class:`kernel.errors.RetryableError` otherwise. A stage advances its own checkpoint or
    commits its offsets only after a successful ``flush``."""

    def publish(self, topic: str, key: str, value: bytes | None, headers: Headers = ()) -> None: ...

    def flush(self, timeout: float = 60.0) -> int: ...

    def close(self, timeout: float = 10.0) -> None: ...
