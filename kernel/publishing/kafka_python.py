"""kafka-python adapter that publishes records and confirms their acknowledgement.

``publish`` queues; ``flush`` blocks until the broker has acknowledged every queued record
(acks=all, idempotent producer) and raises if any failed. Capture advances its checkpoint
only after a successful ``flush``.
"""

from __future__ import annotations

import logging
from typing import Any

from kafka import KafkaProducer
from kafka.errors import AuthorizationError, KafkaError, MessageSizeTooLargeError

from kernel.errors import KafkaAccessDenied, OversizedRecord, RecordsTooLarge, RetryableError
from kernel.kafka_credentials import check_credentials
from kernel.kafka_security import PLAINTEXT, KafkaSecurity
from kernel.publishing import Headers

log = logging.getLogger(__name__)

_DENIED_HINT = "check the component's ACLs (docs/operations.md)"


class KafkaRecordPublisher:
    def __init__(
        self,
        bootstrap: str,
        *,
        client_id: str = "vudsync-producer",
        security: KafkaSecurity = PLAINTEXT,
        **overrides: Any,
    ) -> None:
        config: dict[str, Any] = {
            "bootstrap_servers": bootstrap,
            **security.for_kafka_python(),
            "client_id": client_id,
            "acks": "all",
            "enable_idempotence": True,
            "linger_ms": 5,
            "batch_size": 256 * 1024,
            "max_in_flight_requests_per_connection": 5,
            "retries": 2**31 - 1,
            "compression_type": None,
        }
        config.update(overrides)
        check_credentials(bootstrap, security)  # kafka-python would retry a refusal until its deadline
        try:
            self._producer = KafkaProducer(**config)
        except KafkaError as exc:
            raise RetryableError(
                f"cannot connect to Kafka at {bootstrap}: {exc}",
                hint="is the broker up? try `vudsync kafka up`",
            ) from exc
        self._pending: list[tuple[OversizedRecord, Any]] = []
        self._too_large: list[OversizedRecord] = []

    def publish(
        self,
        topic: str,
        key: str,
        value: bytes | None,
        headers: Headers = (),
        *,
        partition: int | None = None,
    ) -> None:
        """Queue one record; ``partition`` pins it (ops commands that address every partition,
        or the planner's gate on partition 0) instead of the key's hash choosing."""
        record = OversizedRecord(topic, key, len(value or b""))  # what a refusal will name
        try:
            future = self._producer.send(
                topic, key=key.encode(), value=value, headers=list(headers) or None, partition=partition
            )
        except MessageSizeTooLargeError:  # above max_request_size: refused before sending
            self._too_large.append(record)
            return
        except AuthorizationError as exc:  # the topic's metadata is refused: the ACL forbids it
            raise KafkaAccessDenied(f"publish to {topic}: {type(exc).__name__}", hint=_DENIED_HINT) from exc
        self._pending.append((record, future))

    def flush(self, timeout: float = 60.0) -> int:
        """Wait for every queued record's ack; returns how many were acknowledged.

        Raises :class:`RecordsTooLarge` when the only failures were records refused for their
        size, :class:`RetryableError` on any other failure."""
        pending, self._pending = self._pending, []
        too_large, self._too_large = self._too_large, []
        try:
            self._producer.flush(timeout=timeout)
            for record, future in pending:
                try:
                    future.get(timeout=timeout)
                except MessageSizeTooLargeError:  # the broker's limit: no retry helps
                    too_large.append(record)
        except AuthorizationError as exc:
            refused = f"the broker refused a record: {type(exc).__name__}"
            raise KafkaAccessDenied(refused, hint=_DENIED_HINT) from exc
        except KafkaError as exc:
            raise RetryableError(f"broker did not acknowledge a record: {exc}") from exc
        if too_large:
            raise RecordsTooLarge(too_large)
        return len(pending) - len(too_large)

    def close(self, timeout: float = 10.0) -> None:
        try:
            self._producer.flush(timeout=timeout)
        finally:
            self._producer.close(timeout=timeout)
