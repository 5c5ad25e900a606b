"""The sink's outcome recorder: what became of each operation, told to the ledger, the results
topic, the dead-letter topic and the metrics.

Commit order — the worker's guarantee, of which this module does the middle:

1. apply the operation in the cloud (the worker);
2. record its id in the ledger (:meth:`OutcomeRecorder.applied`, one transaction per call),
   which clears the write-ahead intent recorded before a company link was sent
   (:meth:`OutcomeRecorder.announce`, during 1);
3. publish its result (queued in the producer) — only once the ledger holds it, so a crash
   never forgets an applied id that a result announced;
4. flush the producer (:meth:`OutcomeRecorder.flush`: the broker acknowledged every result
   and dead letter);
5. commit the offsets of the finished prefixes (the worker).

Ledger calls are blocking (an SQLite commit, a PostgreSQL round trip under a lock): they run
on one thread of their own, never on the event loop, one at a time and in the order asked.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, TypeVar

from kernel.publishing import RecordPublisher
from schemas.codec import encode
from schemas.deadletter import HEADER_ATTEMPTS, HEADER_HTTP_STATUS, HEADER_RESPONSE, error_headers
from schemas.operations import CloudOperation, version_slot
from schemas.results import OperationResult, ResultOutcome, result_headers
from schemas.topics import OPERATIONS_DLQ, RESULTS
from sinks.errors import CloudRejected, retry_reason
from sinks.metrics import SinkMetrics
from sinks.ports import Applied, Ledger
from sinks.scheduling import Pending
from sinks.writes import CONFLICT, UNRESOLVED

#: outcomes that wrote nothing and are judged again later: never in the ledger
_NOT_DONE = (CONFLICT, UNRESOLVED)

log = logging.getLogger(__name__)

T = TypeVar("T")


def dead_letter_headers(
    item: Pending, reason: str, stage: str, exc: BaseException
) -> list[tuple[str, bytes]]:
    """The error context of a dead letter: reason, stage, exception, its coordinates
    (topic, partition, offset), attempts, and the HTTP status and response excerpt when the
    cloud gave them (the excerpt is withheld by the adapter when it names a secret)."""
    extra = {HEADER_ATTEMPTS: str(item.attempts)}
    status = getattr(exc, "status", None)
    if isinstance(status, int) and status > 0:
        extra[HEADER_HTTP_STATUS] = str(status)
    if isinstance(exc, CloudRejected) and exc.excerpt:
        extra[HEADER_RESPONSE] = exc.excerpt
    return error_headers(
        reason=reason,
        stage=stage,
        exception=type(exc).__name__,
        topic=item.topic,
        partition=item.partition,
        offset=item.offset,
        extra=extra,
    )


class OutcomeRecorder:
    def __init__(
        self,
        publisher: RecordPublisher,
        ledger: Ledger,
        metrics: SinkMetrics,
        clock: Callable[[], datetime],
        monotonic: Callable[[], float],
        *,
        topic_prefix: str = "",
    ) -> None:
        self.publisher = publisher
        self.ledger = ledger
        self.metrics = metrics
        self.clock = clock
        self.monotonic = monotonic
        self._results_topic = topic_prefix + RESULTS.name
        self._dlq_topic = topic_prefix + OPERATIONS_DLQ.name
        self._ledger_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sink-ledger")

    async def _off_loop(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._ledger_thread, fn, *args)

    async def known(self, operation_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The ledger's entries of the ids applied before (one query for a polled batch)."""
        if not operation_ids:
            return {}
        return await self._off_loop(self.ledger.get_many, operation_ids)

    async def applied_versions(self, slots: Sequence[str]) -> dict[str, int]:
        """The highest source version applied per slot (one query for a polled batch)."""
        if not slots:
            return {}
        return await self._off_loop(self.ledger.applied_versions, slots)

    async def announce(self, intents: Sequence[tuple[str, dict[str, Any]]]) -> None:
        """Write-ahead (the ``Intents`` port, for the cloud adapter): record what operations
        are about to do (a company link, :func:`sinks.writes.link_intent`) durably, before
        their writes are sent; :meth:`applied` clears them with the outcome. A crash between
        the write and the outcome leaves the intent, so the retry reports the link."""
        if intents:
            await self._off_loop(self.ledger.record_intents, intents)

    async def recall(self, operation_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The intents an earlier attempt of these operations announced (the ``Intents`` port)."""
        if not operation_ids:
            return {}
        return await self._off_loop(self.ledger.intents, operation_ids)

    def superseded(self, item: Pending, applied: int) -> None:
        """``item`` is older than version ``applied`` of its slot: not applied, a result saying
        so (the journal shows it, the planner settles it), counted. Not in the ledger: met
        again (a redelivery), it is judged again, the same way."""
        op = item.op
        log.info(
            "sink: %s %s at %s superseded: version %d, its slot has version %d applied",
            op.kind,
            op.operation_id,
            item.coordinates,
            op.source_version,
            applied,
        )
        self._publish_result(
            op,
            ResultOutcome.SUPERSEDED,
            None,
            item.attempts,
            details={"slot": version_slot(op), "applied_version": applied},
        )
        self.metrics.operations.labels(kind=op.kind, outcome=ResultOutcome.SUPERSEDED.value).inc()

    def already_applied(self, op: CloudOperation, entry: dict[str, Any]) -> None:
        """``op`` is in the ledger (a redelivery or replay): its result again, no cloud call."""
        applied = Applied(
            entry.get("effect") or "noop", entry.get("cloud_id"), True, entry.get("details") or {}
        )
        self._publish_result(op, ResultOutcome.ALREADY_APPLIED, applied, attempts=0)
        self.metrics.operations.labels(kind=op.kind, outcome="already_applied").inc()

    async def applied(self, done: Sequence[tuple[Pending, Applied]]) -> None:
        """Operations the cloud applied: the ledger first (one transaction: their ids and the
        versions of their slots), then their results."""
        if not done:
            return
        # a conflict wrote nothing: not in the ledger, so the same operation is judged again
        # once the operator has resolved it (docs/operations.md, "Conflicts"); nor an
        # unresolved assignment, which the planner sends again, same id, once its user is known
        await self._off_loop(
            self.ledger.record_many,
            [
                (i.op.operation_id, {"cloud_id": a.cloud_id, "effect": a.effect, "details": a.details})
                for i, a in done
                if a.effect not in _NOT_DONE
            ],
            [(version_slot(i.op), i.op.source_version) for i, a in done if a.effect != UNRESOLVED],
        )
        now = self.monotonic()
        for item, outcome in done:
            result = ResultOutcome.ALREADY_APPLIED if outcome.replayed else ResultOutcome.APPLIED
            if outcome.effect == CONFLICT:
                result = ResultOutcome.CONFLICT
                log.warning(
                    "sink: %s %s not applied: conflict (%s) with cloud %s",
                    item.op.kind,
                    item.op.operation_id,
                    outcome.details.get("conflict"),
                    outcome.details.get("cloud_id"),
                )
            elif outcome.effect == UNRESOLVED:
                result = ResultOutcome.UNRESOLVED
                # the planner parks the operation itself again: the result carries it
                outcome = Applied(
                    UNRESOLVED, None, False, {**outcome.details, "operation": item.op.model_dump(mode="json")}
                )
            self._publish_result(item.op, result, outcome, item.attempts)
            self.metrics.operations.labels(kind=item.op.kind, outcome=result.value).inc()
            self.metrics.apply_seconds.observe(now - (item.first_try or now))
            if result is ResultOutcome.APPLIED:
                lag = (self.clock() - item.op.source_committed_at).total_seconds()
                self.metrics.end_to_end.observe(max(lag, 0.0))

    def dead_letter(
        self, item: Pending, reason: str, stage: str, exc: BaseException, outcome: ResultOutcome
    ) -> None:
        """The original record to the DLQ with its error context, and a result saying so."""
        key = item.key.decode(errors="replace") if item.key else ""
        self.publisher.publish(
            self._dlq_topic, key, item.value, dead_letter_headers(item, reason, stage, exc)
        )
        self.metrics.dlq.labels(topic=OPERATIONS_DLQ.name).inc()
        op = item.op
        log.warning(
            "sink: dead-lettered %s (%s%s, %s, attempt %d): %s",
            item.coordinates,
            op.kind if op is not None else "undecodable",
            f" {op.operation_id}" if op is not None else "",
            stage,
            item.attempts,
            reason,
        )
        if op is not None:
            self._publish_result(
                op, outcome, None, item.attempts, error=reason, details={"stage": stage, "dlq": True}
            )
            self.metrics.operations.labels(kind=op.kind, outcome=outcome.value).inc()
        else:
            self.metrics.operations.labels(kind="unknown", outcome=outcome.value).inc()

    def retried(self, error: BaseException) -> None:
        self.metrics.retries.labels(reason=retry_reason(error)).inc()

    def called(self, endpoint: str, result: str) -> None:
        self.metrics.calls.labels(endpoint=endpoint, result=result).inc()

    async def flush(self) -> None:
        """Return once the broker acknowledged every result and dead letter published so far;
        ``RetryableError`` when it did not."""
        await asyncio.get_running_loop().run_in_executor(None, self.publisher.flush)

    def close(self) -> None:
        """Wait for the ledger call in progress, if any (the ledger itself is the caller's)."""
        self._ledger_thread.shutdown(wait=True)

    def _publish_result(
        self,
        op: CloudOperation,
        outcome: ResultOutcome,
        applied: Applied | None,
        attempts: int,
        error: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        result = OperationResult.for_operation(
            op,
            outcome,
            self.clock(),
            cloud_id=applied.cloud_id if applied else None,
            effect=applied.effect if applied else None,
            details=applied.details if applied else (details or {}),
            error=error,
            attempts=attempts,
        )
        # keyed by entity id: the planner's partition of that entity learns its cloud id
        self.publisher.publish(self._results_topic, op.entity_id, encode(result), result_headers(result))
