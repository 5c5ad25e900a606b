"""The directory sink: applies ``vud.directory.operations`` to the directory store.

The loop is a thin shell — poll → decode → apply (:class:`~sinks.directory_store.DirectoryStore`,
one transaction per operation, idempotent by operation id) → publish the result → flush →
commit the offsets. **Effects first, then offsets**, for every batch:

1. apply each operation to the store (its effect, its change-log row and its id in
   ``directory_operations_applied`` commit together);
2. publish its result on ``vud.cloud.results`` (keyed by user id: ``vudsync journal`` and
   ``explain`` show it);
3. ``flush`` the producer: every result acknowledged;
4. commit the offsets of what was applied.

A crash between any two steps repeats the batch: the store answers ``already_applied`` for
what it committed, and the result is published again (the same operation id). No exception
escapes the loop: a store or broker failure is retried with back-off (the partition waits —
order per user matters), an undecodable record is dead-lettered on ``vud.directory.dlq`` with
its context headers, as is an operation whose application fails for a reason other than a
transient one. SIGTERM: the operation in hand finishes, its batch is committed, the consumer
leaves the group.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import NamedTuple, TypeVar

from kernel.errors import is_retriable
from kernel.publishing import RecordPublisher
from kernel.retry import Backoff
from schemas.codec import DecodeError, decode_directory_operation, encode
from schemas.deadletter import error_headers
from schemas.directory import EntityType
from schemas.directory_operations import DirectoryOperation
from schemas.results import OperationResult, ResultOutcome
from schemas.topics import DIRECTORY_DLQ
from sinks.directory_metrics import DirectorySinkMetrics
from sinks.directory_store import DirectoryApplied, DirectoryStore
from sinks.errors import CommitRefused
from sinks.ports import OperationsConsumer, PolledRecord
from sinks.scheduling import TopicPartition

log = logging.getLogger(__name__)
T = TypeVar("T")

#: librdkafka's consume() waits this long unless BATCH records came: under a trickle of changes
#: each waits for it (200 ms made the median latency 216 ms at 50 operations/s); an idle poll is
#: one C call
POLL_MS = 20
BATCH = 200

_OUTCOMES = {
    "applied": ResultOutcome.APPLIED,
    "already_applied": ResultOutcome.ALREADY_APPLIED,
    "rejected": ResultOutcome.REJECTED,
}


class _Stopping(Exception):
    """A stop was requested while an operation waited to be retried: leave it uncommitted."""


def result_of(op: DirectoryOperation, applied: DirectoryApplied, now: datetime) -> OperationResult:
    """The journal's view of one applied (or rejected) directory operation."""
    return OperationResult(
        operation_id=op.operation_id,
        kind=op.kind,
        aggregate=f"user:{op.user_id}",
        entity=EntityType.USER,
        entity_id=op.user_id,
        source_version=op.feed_seq,
        outcome=_OUTCOMES[applied.outcome],
        effect=applied.effect or None,
        details={"company_id": op.company_id, "entry": op.entry, "feed_seq": op.feed_seq},
        error=(
            f"the directory cannot hold {op.entry} of {op.user_id} in {op.company_id}: {applied.reason}"
            if applied.reason
            else None
        ),
        source_committed_at=op.cloud_changed_at,
        recorded_at=now,
    )


class DirectorySink:
    """One directory sink worker (a member of the group ``<prefix>vudsync-directory-sink``)."""

    def __init__(
        self,
        consumer: OperationsConsumer,
        topic: str,
        publisher: RecordPublisher,
        store: DirectoryStore,
        metrics: DirectorySinkMetrics,
        clock: Callable[[], datetime],
        *,
        results_topic: str,
        dlq_topic: str,
        backoff: Backoff | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.consumer = consumer
        self.topic = topic
        self.publisher = publisher
        self.store = store
        self.metrics = metrics
        self.clock = clock
        self.results_topic = results_topic
        self.dlq_topic = dlq_topic
        self.backoff = backoff or Backoff(base=0.1, cap=10.0)
        self._stop = stop or threading.Event()  # set: stop after the operation in hand
        self.joined = threading.Event()

    def request_stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        """Until :meth:`request_stop`: poll, apply, publish, flush, commit."""
        self.consumer.subscribe(self.topic, lambda tps: self.joined.set(), lambda tps: None)
        while not self._stop.is_set():
            try:
                polled = self.consumer.poll(POLL_MS, BATCH)
            except Exception as exc:  # the broker is away: librdkafka reconnects; poll again
                log.warning("directory sink: poll failed: %s", exc)
                self._stop.wait(1.0)
                continue
            if polled:
                self.handle_batch(polled)

    def handle_batch(self, polled: Mapping[TopicPartition, Sequence[PolledRecord]]) -> None:
        """Apply, publish, flush, commit (the order the module's docstring gives)."""
        offsets: dict[TopicPartition, int] = {}
        outbox: list[_Out] = []
        try:
            for tp, records in polled.items():
                for record in records:
                    outbox.append(self._handle(record))
                    offsets[tp] = record.offset + 1
        except _Stopping:
            log.info("directory sink: stopping with an operation not applied; it is read again")
        if not offsets:
            return
        try:
            self._until_done("publishing the results", lambda: self._publish(outbox))
        except _Stopping:
            return  # not committed: read again, answered from the store's applied operations
        try:
            self.consumer.commit(offsets)
        except CommitRefused as exc:  # the group moved the partitions: what is applied is known
            log.warning("directory sink: offsets not committed (%s): read again, applied once", exc)

    def _publish(self, outbox: Sequence[_Out]) -> None:
        """Every record of the batch, then wait for the acknowledgements; a failed flush
        forgets what it did not deliver, so a retry publishes the whole batch again (a result
        twice is harmless: the same operation id)."""
        for out in outbox:
            self.publisher.publish(out.topic, out.key, out.value, out.headers)
        self.publisher.flush()

    def _handle(self, record: PolledRecord) -> _Out:
        where = f"{record.topic}[{record.partition}]@{record.offset}"
        try:
            op = decode_directory_operation(record.value)
        except DecodeError as exc:
            return self._dead_letter(record, exc.reason, "decode", exc)
        try:
            applied = self._until_done(where, lambda: self.store.apply(op))
        except _Stopping:
            raise
        except Exception as exc:  # a bug or bad data: the partition goes on, the record is kept
            log.error("directory sink: %s %s failed", where, op.operation_id, exc_info=exc)
            return self._dead_letter(record, f"apply failed: {type(exc).__name__}", "apply", exc)
        now = self.clock()
        result = result_of(op, applied, now)
        if applied.outcome == "rejected":
            self.metrics.rejected.labels(reason=applied.reason or "unknown").inc()
            log.warning("directory sink: %s %s rejected: %s", where, op.entry, applied.reason)
        else:
            self.metrics.applied.labels(effect=applied.effect or applied.outcome).inc()
            if applied.outcome == "applied":
                self.metrics.latency.observe(max((now - op.cloud_changed_at).total_seconds(), 0.0))
                self.metrics.last_applied.set(time.time())
            log.info("directory sink: %s %s %s: %s", where, op.kind, op.entry, applied.effect)
        return _Out(self.results_topic, op.user_id, encode(result))

    def _until_done(self, what: str, call: Callable[[], T]) -> T:
        """``call()`` again, with back-off, while it fails transiently; stops on request."""
        attempt = 0
        while True:
            try:
                return call()
            except Exception as exc:
                if not (is_retriable(exc) or isinstance(exc, OSError | TimeoutError)):
                    raise
                attempt += 1
                delay = self.backoff.delay(attempt)
                self.metrics.retries.labels(reason=type(exc).__name__).inc()
                log.warning(
                    "directory sink: %s failed (attempt %d: %s), again in %.1fs", what, attempt, exc, delay
                )
                if self._stop.wait(delay):
                    raise _Stopping() from exc

    def _dead_letter(self, record: PolledRecord, reason: str, stage: str, exc: BaseException) -> _Out:
        headers = error_headers(
            reason=reason,
            stage=stage,
            exception=type(exc).__name__,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
        )
        self.metrics.dlq.labels(topic=DIRECTORY_DLQ.name).inc()
        log.warning(
            "directory sink: dead-lettered %s[%d]@%d (%s): %s",
            record.topic,
            record.partition,
            record.offset,
            stage,
            reason,
        )
        key = record.key.decode(errors="replace") if record.key else ""
        return _Out(self.dlq_topic, key, record.value, tuple(headers))


class _Out(NamedTuple):
    """A record the batch publishes before its offsets are committed."""

    topic: str
    key: str
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()
