"""A Kafka record as vudsync's own consumers hand it on: where it lies, its key and its value.

The sink's librdkafka consumer (:mod:`sinks.kafka_consumer`) and the planner's reader of the
records Faust lost (:class:`processors.service.BrokerRange`) both return these.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

#: a Kafka partition as vudsync's own code names it: (topic, partition)
TopicPartition: TypeAlias = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
