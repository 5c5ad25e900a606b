"""confluent-kafka (librdkafka) adapter that publishes records and confirms their acknowledgement.

The same contract as :class:`kernel.publishing.kafka_python.KafkaRecordPublisher`: ``publish``
queues; ``flush`` blocks until the broker has acknowledged every queued record (acks=all,
idempotent producer) and raises :class:`RetryableError` if any failed or the timeout passed,
:class:`RecordsTooLarge` if records were refused for their size (and nothing else failed).
Capture advances its checkpoint only after a successful ``flush``.

Why a second adapter: librdkafka batches and sends on its own C threads, so a Python
``produce`` costs a few microseconds; kafka-python's pure-Python ``send`` tops out near
20,000 records/s on a small machine, below the snapshot target (see docs/benchmarks.md).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from kernel.errors import KafkaAccessDenied, OversizedRecord, RecordsTooLarge, RetryableError
from kernel.kafka_security import PLAINTEXT, KafkaSecurity
from kernel.publishing import Headers

log = logging.getLogger(__name__)


DEFAULTS: dict[str, Any] = {
    "acks": "all",
    "enable.idempotence": True,
    # flush() sends lingering records at once (librdkafka ignores linger.ms while flushing), so a
    # linger costs streaming no latency; it lets a snapshot's records travel in fewer, larger
    # produce requests: the local broker's CPU per event fell from ~30-40 µs to ~12 µs
    # (docs/benchmarks.md, "Change capture")
    "linger.ms": 5,
    "batch.size": 1024 * 1024,
    "queue.buffering.max.messages": 200_000,
    "compression.type": "none",
    "message.timeout.ms": 120_000,
    # a delivery report only for a failed record: flush() returning with an empty queue and no
    # report means every record was acknowledged, without a Python callback per record
    "delivery.report.only.error": True,
}
# Over DEFAULTS for the snapshot's own producer (``ChangeCapture(snapshot_publisher=...)``): it
# flushes only every 20,000 records, so a longer linger costs nothing and fills produce requests
# (broker CPU per snapshot event ~35-50 -> ~17-25 µs, 100k-user snapshot ~16,000 -> ~19,500
# events/s on the shared 2-core machine). Streaming keeps 5 ms: its records are queued a few ms
# before the flush, and they should be on their way meanwhile (at 50 ms its p99 rose on
# PostgreSQL, 61 -> 153 ms in one comparison).
SNAPSHOT_OVERRIDES: dict[str, Any] = {"linger.ms": 50}

#: librdkafka errors that waiting will not cure: refused credentials, a topic or cluster ACL
_DENIED = frozenset(
    {
        KafkaError._AUTHENTICATION,
        KafkaError.SASL_AUTHENTICATION_FAILED,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
    }
)
_DENIED_HINT = "check VUDSYNC_KAFKA_USERNAME / VUDSYNC_KAFKA_PASSWORD and the producer's ACLs"


class ConfluentRecordPublisher:
    def __init__(
        self,
        bootstrap: str,
        *,
        client_id: str = "vudsync-producer",
        security: KafkaSecurity = PLAINTEXT,
        **overrides: Any,
    ) -> None:
        config: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            **security.for_confluent(),
            "client.id": client_id,
            "error_cb": self._on_error,
            "on_delivery": self._on_delivery,
            "logger": log,
            **DEFAULTS,
            **overrides,
        }
        try:
            self._producer = Producer(config)
        except KafkaException as exc:
            raise RetryableError(
                f"cannot create a Kafka producer for {bootstrap}: {exc}",
                hint="is the broker up? try `vudsync kafka up`",
            ) from exc
        self._queued = 0
        self._failed: list[str] = []
        self._too_large: list[OversizedRecord] = []
        self._denied: str | None = None

    def _on_error(self, error: KafkaError) -> None:
        # librdkafka retries transient errors itself; a fatal one (idempotence broken) surfaces
        # at the next flush through the failed deliveries. Refused credentials are retried too,
        # for ever: remembered here so that flush fails at once instead of at its time-out.
        if error.code() in _DENIED:
            self._denied = self._denied or error.str()
        log.warning("kafka producer: %s", error)

    def _on_delivery(self, error: KafkaError | None, message: Any) -> None:
        if error is None:
            return
        if error.code() == KafkaError.MSG_SIZE_TOO_LARGE:  # the broker's limit: no retry helps
            key = (message.key() or b"").decode(errors="replace")
            self._too_large.append(OversizedRecord(message.topic(), key, len(message.value() or b"")))
        else:
            if error.code() in _DENIED:
                self._denied = self._denied or error.str()
            self._failed.append(str(error))

    def publish(self, topic: str, key: str, value: bytes | None, headers: Headers = ()) -> None:
        while True:
            try:
                self._producer.produce(
                    topic,
                    value=value,
                    key=key,  # a str is sent as its UTF-8 bytes
                    headers=list(headers) if headers else None,
                    on_delivery=self._on_delivery,
                )
                break
            except BufferError:  # local queue full: let librdkafka drain it
                self._producer.poll(0.05)
            except KafkaException as exc:  # larger than message.max.bytes: refused before sending
                if exc.args[0].code() != KafkaError.MSG_SIZE_TOO_LARGE:
                    raise
                self._too_large.append(OversizedRecord(topic, key, len(value or b"")))
                return
        self._queued += 1
        if self._queued % 1000 == 0:
            self._producer.poll(0)  # serve delivery callbacks as we go

    def flush(self, timeout: float = 60.0) -> int:
        """Wait for every queued record's ack; returns how many were acknowledged.

        Raises :class:`KafkaAccessDenied` when the cluster refused the credentials or an ACL,
        :class:`RecordsTooLarge` when the only failures were records refused for their size
        (the rest is acknowledged), :class:`RetryableError` on any other failure."""
        deadline = time.monotonic() + timeout
        # in slices, so that refused credentials or an ACL end the wait at once
        remaining = self._producer.flush(min(timeout, 0.5))
        while remaining and self._denied is None and (left := deadline - time.monotonic()) > 0:
            remaining = self._producer.flush(min(left, 0.5))
        queued, failed, too_large, denied = self._queued, self._failed, self._too_large, self._denied
        self._queued, self._failed, self._too_large = 0, [], []
        if denied:
            raise KafkaAccessDenied(f"the Kafka cluster refused the producer: {denied}", hint=_DENIED_HINT)
        if failed:
            raise RetryableError(f"broker did not acknowledge {len(failed)} record(s): {failed[0]}")
        if remaining:
            raise RetryableError(f"{remaining} record(s) not acknowledged within {timeout:.0f}s")
        if too_large:
            raise RecordsTooLarge(too_large)
        return queued

    def close(self, timeout: float = 10.0) -> None:
        self._producer.flush(timeout)
