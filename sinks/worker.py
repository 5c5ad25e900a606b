"""The sink worker loop: apply operations to the cloud, exactly once in effect.

Commit order for every polled batch, per record: ledger check → apply (retries with backoff,
circuit breaker) → record in the ledger → publish the result (or the dead letter); then, for
the batch: flush the producer (every result acknowledged) → commit offsets, only up to the
last record of each partition whose whole prefix is done. A crash anywhere re-delivers
records whose offsets were not committed; the ledger and the cloud's idempotency keys turn
them into "already applied" without a second effect.

Order: operations on one aggregate (the record key) are applied one after another, in
offset order; different aggregates are applied concurrently (bounded).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata

from producers.kafka_publisher import KafkaRecordPublisher
from schemas.codec import DecodeError, decode_operation, encode
from schemas.deadletter import HEADER_ATTEMPTS, HEADER_HTTP_STATUS, HEADER_RESPONSE, error_headers
from schemas.operations import CloudOperation
from schemas.results import OperationResult, ResultOutcome
from schemas.topics import OPERATIONS_DLQ, RESULTS
from sinks.errors import AuthenticationFailed, CircuitOpen, CloudRejected
from sinks.metrics import SinkMetrics
from sinks.ports import Applied, CloudDirectory, Ledger
from sinks.resilience import Backoff, CircuitBreaker
from vudsync.errors import PermanentError, RetryableError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SinkConfig:
    topic_prefix: str = ""
    concurrency: int = 16
    max_attempts: int = 8  # for retryable failures other than an open circuit
    poll_timeout_ms: int = 200
    max_poll_records: int = 500


class _Stopped(Exception):
    """Stop was requested while an operation waited to be retried."""


class SinkWorker:
    def __init__(
        self,
        consumer: KafkaConsumer,
        publisher: KafkaRecordPublisher,
        cloud: CloudDirectory,
        ledger: Ledger,
        metrics: SinkMetrics,
        config: SinkConfig,
        clock: Callable[[], datetime],
        backoff: Backoff | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self.consumer = consumer
        self.publisher = publisher
        self.cloud = cloud
        self.ledger = ledger
        self.metrics = metrics
        self.config = config
        self.clock = clock
        self.backoff = backoff or Backoff()
        self.breaker = breaker or CircuitBreaker(on_change=lambda o: metrics.circuit_open.set(1 if o else 0))
        self._stop = asyncio.Event()
        self._results_topic = config.topic_prefix + RESULTS.name
        self._dlq_topic = config.topic_prefix + OPERATIONS_DLQ.name

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stop.is_set():
            polled = await loop.run_in_executor(
                None, lambda: self.consumer.poll(self.config.poll_timeout_ms, self.config.max_poll_records)
            )
            records = [r for batch in polled.values() for r in batch]
            if records:
                await self.process(records)

    async def process(self, records: list[Any]) -> None:
        """Apply one polled batch, then flush results and commit what is done."""
        by_key: dict[bytes | None, list[Any]] = defaultdict(list)
        for record in sorted(records, key=lambda r: (r.partition, r.offset)):
            by_key[record.key].append(record)
        done: set[tuple[str, int, int]] = set()
        gate = asyncio.Semaphore(self.config.concurrency)

        async def run_aggregate(chain: list[Any]) -> None:
            async with gate:
                for record in chain:
                    try:
                        await self._handle(record)
                    except _Stopped:
                        return  # the rest of this aggregate waits for the next run, in order
                    done.add((record.topic, record.partition, record.offset))

        await asyncio.gather(*(run_aggregate(chain) for chain in by_key.values()))
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self.publisher.flush)
        offsets = self._committable(records, done)
        if offsets:
            await loop.run_in_executor(None, lambda: self.consumer.commit(offsets))

    @staticmethod
    def _committable(
        records: list[Any], done: set[tuple[str, int, int]]
    ) -> dict[TopicPartition, OffsetAndMetadata]:
        """Per partition, the offset after the longest fully done prefix of the batch."""
        per_tp: dict[tuple[str, int], list[int]] = defaultdict(list)
        for r in records:
            per_tp[(r.topic, r.partition)].append(r.offset)
        out: dict[TopicPartition, OffsetAndMetadata] = {}
        for (topic, partition), offsets in per_tp.items():
            last = None
            for offset in sorted(offsets):
                if (topic, partition, offset) not in done:
                    break
                last = offset
            if last is not None:
                out[TopicPartition(topic, partition)] = OffsetAndMetadata(last + 1, "", -1)
        return out

    # -- one record -------------------------------------------------------------------

    async def _handle(self, record: Any) -> None:
        try:
            op = decode_operation(record.value)
        except DecodeError as exc:
            self._dead_letter(record, None, exc.reason, "decode", exc, attempts=0)
            return
        known = self.ledger.get(op.operation_id)
        if known is not None:
            self._publish_result(
                op,
                ResultOutcome.ALREADY_APPLIED,
                known.get("cloud_id"),
                known.get("effect"),
                known.get("details") or {},
                attempts=0,
            )
            self.metrics.operations.labels(kind=op.kind, outcome="already_applied").inc()
            return
        with self.metrics.apply_seconds.time():
            applied, attempts, failure = await self._apply_with_retries(op)
        if applied is None:
            assert failure is not None
            self._dead_letter(record, op, str(failure), "apply", failure, attempts)
            return
        outcome = ResultOutcome.ALREADY_APPLIED if applied.replayed else ResultOutcome.APPLIED
        self.ledger.record(
            op.operation_id,
            {"cloud_id": applied.cloud_id, "effect": applied.effect, "details": applied.details},
        )
        self._publish_result(op, outcome, applied.cloud_id, applied.effect, applied.details, attempts)
        self.metrics.operations.labels(kind=op.kind, outcome=outcome.value).inc()
        if outcome is ResultOutcome.APPLIED:
            lag = (self.clock() - op.source_committed_at).total_seconds()
            self.metrics.end_to_end.observe(max(lag, 0.0))

    async def _apply_with_retries(
        self, op: CloudOperation
    ) -> tuple[Applied | None, int, PermanentError | RetryableError | None]:
        attempt = 0
        while True:
            if self._stop.is_set():
                raise _Stopped
            try:
                self.breaker.before_call()
                attempt += 1
                applied = await self.cloud.apply(op)
                self.breaker.success()
                return applied, attempt, None
            except PermanentError as exc:
                self.breaker.success()  # the cloud answered: it is up
                return None, attempt, exc
            except RetryableError as exc:
                reason = type(exc).__name__
                if isinstance(exc, AuthenticationFailed):
                    log.error(
                        "sink: %s — %s; circuit open for %.0fs", exc, exc.hint or "", exc.retry_after or 30
                    )
                    self.breaker.failure(open_for=exc.retry_after)
                elif not isinstance(exc, CircuitOpen):
                    self.breaker.failure()
                    self.metrics.retries.labels(reason=reason).inc()
                    if attempt >= self.config.max_attempts:
                        return None, attempt, exc
                delay = self.backoff.delay(attempt, exc.retry_after)
                log.debug(
                    "sink: %s on %s (attempt %d), retry in %.2fs", reason, op.operation_id, attempt, delay
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), timeout=delay)

    def _publish_result(
        self,
        op: CloudOperation,
        outcome: ResultOutcome,
        cloud_id: str | None,
        effect: str | None,
        details: dict[str, Any],
        attempts: int,
        error: str | None = None,
    ) -> None:
        result = OperationResult(
            operation_id=op.operation_id,
            kind=op.kind,
            aggregate=op.aggregate,
            entity=op.entity,
            entity_id=op.entity_id,
            source_version=op.source_version,
            outcome=outcome,
            cloud_id=cloud_id,
            effect=effect,
            details=details,
            error=error,
            attempts=attempts,
            source_committed_at=op.source_committed_at,
            recorded_at=self.clock(),
        )
        self.publisher.publish(self._results_topic, op.entity_id, encode(result))

    def _dead_letter(
        self,
        record: Any,
        op: CloudOperation | None,
        reason: str,
        stage: str,
        exc: BaseException,
        attempts: int,
    ) -> None:
        extra = {HEADER_ATTEMPTS: str(attempts)}
        if isinstance(exc, CloudRejected):
            extra[HEADER_HTTP_STATUS] = str(exc.status)
            extra[HEADER_RESPONSE] = exc.excerpt
        headers = error_headers(
            reason=reason,
            stage=stage,
            exception=type(exc).__name__,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            extra=extra,
        )
        key = record.key.decode() if record.key else ""
        self.publisher.publish(self._dlq_topic, key, record.value, headers)
        self.metrics.dlq.labels(topic=OPERATIONS_DLQ.name).inc()
        log.warning(
            "sink dead-lettered %s[%d]@%d (%s): %s",
            record.topic,
            record.partition,
            record.offset,
            stage,
            reason,
        )
        if op is not None:
            self._publish_result(
                op, ResultOutcome.DEAD_LETTERED, None, None, {"stage": stage}, attempts, error=reason
            )
            self.metrics.operations.labels(kind=op.kind, outcome="dead_lettered").inc()
        else:
            self.metrics.operations.labels(kind="unknown", outcome="dead_lettered").inc()
