"""The sink worker: apply operations to the cloud, exactly once in effect, in order per aggregate.

This module is the loop; the decisions and the records are elsewhere:

* :mod:`sinks.policy` — pure: what a call says about the cloud, and per operation whether to
  record it, apply it alone, dead-letter it, give up on it or retry it;
* :mod:`sinks.outcomes` — the outcome recorder: ledger (off the event loop), results, dead
  letters with their headers, metrics;
* :mod:`sinks.scheduling` — pure bookkeeping: per-aggregate queues, committable offsets;
* :mod:`sinks.resilience` — backoff and circuit breaker.

Three activities share one event loop:

* **consume** — polls ``vud.cloud.operations`` (librdkafka, in one dedicated thread),
  decodes each record, answers operations already in the ledger at once (``already_applied``,
  no cloud call), queues the others per aggregate; commits. With ``max_outstanding`` records
  unfinished it stops taking more (librdkafka keeps what it prefetched), and only when that
  lasts ``hold_timeout`` (a cloud down or throttling) pauses the partitions (the consumer keeps
  polling, so it stays in its group) until half of them are done.
* **dispatch** — takes the ready heads of the aggregate queues (at most one operation per
  aggregate in flight) and sends them: simple operations together through
  ``POST /v1/batch`` when several are ready, the rest one by one; at most ``concurrency``
  calls in flight; none while the circuit is open (one probe when it half-opens).
* **supersede** — an operation older than the version already applied to its slot
  (:func:`schemas.operations.version_slot`: the ledger's, read when it is taken, or one this
  worker applied since) is not sent: result ``superseded``. Checked when it is about to be
  sent, since an older operation may wait behind a newer one of its aggregate (a ``dlq retry``
  of v10 queued behind v12).
* **settle** — per operation, as the policy says: applied → ledger → result; retryable
  failure → the operation stays its aggregate's head and is tried again after a backoff with
  full jitter (at least ``Retry-After``), until the policy gives up (dead letter, result
  ``failed``); permanent failure (4xx) → dead letter with its error context → result
  ``dead_lettered``, and the aggregate moves on.

Commit order, for every commit: apply in the cloud → record applied ids in the ledger →
publish the results (both as each call settles) → flush the producer (every result and dead
letter acknowledged by the broker) → commit, per partition, the offset after the longest
finished prefix. A crash anywhere re-delivers what was not committed; the ledger and the
cloud's idempotency keys turn it into ``already_applied`` without a second effect.

SIGTERM (:meth:`SinkWorker.request_stop`): stop polling and dispatching, let the calls in
flight finish (bounded by the HTTP timeout), flush, commit, return. A rebalance drops the
queued work of the partitions it takes away (the new owner reads them from the last commit);
partitions it gives back are read again from their committed offset.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from kernel.errors import RecordsTooLarge, RetryableError, VudsyncError
from kernel.publishing import RecordPublisher
from schemas.codec import DecodeError, decode_operation
from schemas.operations import CloudOperation, version_slot
from schemas.results import ResultOutcome
from sinks.errors import CircuitOpen, CloudUnavailable, CommitRefused
from sinks.metrics import SinkMetrics
from sinks.outcomes import OutcomeRecorder
from sinks.policy import SinkPolicy, Step
from sinks.ports import Applied, BatchOutcome, CloudDirectory, Ledger, OperationsConsumer
from sinks.resilience import Backoff, CircuitBreaker
from sinks.scheduling import AggregateQueues, OffsetTracker, Pending
from sinks.scheduling import TopicPartition as TP

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class SinkConfig:
    topic_prefix: str = ""
    concurrency: int = 16  # cloud calls in flight (a batch is one call)
    batch: bool = True  # use POST /v1/batch when several simple operations are ready
    batch_size: int = 500  # at most this many operations per batch (the cloud takes ≤ 500)
    max_attempts: int = 8  # give up on a retryable failure only after this many attempts …
    retry_timeout: float = 300.0  # … and this many seconds, while the cloud answers others
    auth_cooldown: float = 30.0  # circuit open after refused credentials
    poll_timeout_ms: int = 100
    max_poll_records: int = 500
    max_outstanding: int = 5000  # take no more records while this many are unfinished …
    hold_timeout: float = 5.0  # … and pause the partitions when that lasts this long
    commit_interval: float = 1.0
    drain_timeout: float = 30.0  # SIGTERM: wait this long for the calls in flight
    stall_interval: float = 30.0  # warn when nothing finished for this long


class SinkFatal(RuntimeError):
    """The worker cannot go on safely (results not acknowledged): exit without committing."""


class SinkWorker:
    def __init__(
        self,
        consumer: OperationsConsumer,
        topic: str,
        publisher: RecordPublisher,
        cloud: CloudDirectory,
        ledger: Ledger,
        metrics: SinkMetrics,
        config: SinkConfig,
        clock: Callable[[], datetime],
        *,
        backoff: Backoff | None = None,
        breaker: CircuitBreaker | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.consumer = consumer
        self.topic = topic
        self.publisher = publisher
        self.cloud = cloud
        self.ledger = ledger
        self.metrics = metrics
        self.config = config
        self.clock = clock
        self.monotonic = monotonic
        self.backoff = backoff or Backoff()
        self.breaker = breaker or CircuitBreaker(clock=monotonic, on_change=self._circuit_changed)
        self.policy = SinkPolicy(config.max_attempts, config.retry_timeout, config.auth_cooldown)
        self.recorder = OutcomeRecorder(
            publisher, ledger, metrics, clock, monotonic, topic_prefix=config.topic_prefix
        )
        self.queues = AggregateQueues()
        self.tracker = OffsetTracker()
        self._consumer_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sink-consumer")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._room = asyncio.Event()  # set when an outstanding record finishes
        self._held_since: float | None = None
        self._calls: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._closed = False
        self._paused = False
        self._auth_logged_at = -1e9
        self._last_look = 0.0
        self._finished = 0
        self._fatal: SinkFatal | None = None
        self._finished_at_last_look = 0
        # slot → highest source version this worker applied; bounded (an entry evicted falls
        # back to the floor read from the ledger when its operation was taken)
        self._applied_versions: OrderedDict[str, int] = OrderedDict()

    # -- lifecycle --------------------------------------------------------------------

    def request_stop(self) -> None:
        """Graceful stop (SIGTERM): finish the calls in flight, flush, commit, return."""
        self._stop.set()
        self._wake.set()

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self._consumer_call(
            self.consumer.subscribe,
            self.topic,
            lambda tps: self._from_io_thread(tps, assigned=True),
            lambda tps: self._from_io_thread(tps, assigned=False),
        )
        dispatcher = asyncio.create_task(self._dispatch_loop(), name="sink-dispatch")
        fatal = False
        try:
            await self._consume_loop()
        except BaseException:
            fatal = True
            raise
        finally:
            self._stopping = True
            self._wake.set()
            await dispatcher
            if not fatal and self._fatal is None:
                await self._commit()
            self._closed = True
            self._consumer_thread.shutdown(wait=True)
            self.recorder.close()
            log.info("sink: drained (%d operations left uncommitted for redelivery)", self.queues.queued)
        if self._fatal is not None:
            raise self._fatal

    async def _consumer_call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """One thread makes every consumer call (its rebalance callbacks run inside ``poll``)."""
        assert self._loop is not None
        return await self._loop.run_in_executor(self._consumer_thread, lambda: fn(*args, **kwargs))

    # -- consume ----------------------------------------------------------------------

    async def _consume_loop(self) -> None:
        last_commit = self._last_look = self.monotonic()
        while not self._stop.is_set():
            room = await self._room_to_take()
            if room is not None:
                polled = await self._consumer_call(
                    self.consumer.poll, self.config.poll_timeout_ms, min(room, self.config.max_poll_records)
                )
                await self._accept_all([r for records in polled.values() for r in records])
                if polled:
                    self._wake.set()
            now = self.monotonic()
            if now - last_commit >= self.config.commit_interval:
                await self._commit()
                last_commit = now
            if now - self._last_look >= self.config.stall_interval:
                self._last_look = now
                self._report_stall()

    async def _accept_all(self, records: list[Any]) -> None:
        """Polled records: dead letter, known answer (one ledger query, off the loop), or
        queued for the cloud. No rebalance can interleave: only this loop polls."""
        decoded: list[tuple[Any, CloudOperation, int]] = []
        for record in records:
            tp = (record.topic, record.partition)
            epoch = self.tracker.take(tp, record.offset)
            try:
                decoded.append((record, decode_operation(record.value), epoch))
            except DecodeError as exc:
                item = Pending(
                    record.topic, record.partition, record.offset, record.key, record.value, None, "", False
                )
                self.recorder.dead_letter(item, exc.reason, "decode", exc, ResultOutcome.DEAD_LETTERED)
                self.tracker.finish(tp, record.offset, epoch)
        known = await self.recorder.known([op.operation_id for _, op, _ in decoded])
        fresh = [(r, op, e) for r, op, e in decoded if op.operation_id not in known]
        floors = await self.recorder.applied_versions([version_slot(op) for _, op, _ in fresh])
        for record, op, epoch in decoded:
            entry = known.get(op.operation_id)
            if entry is not None:  # applied before (a redelivery or replay): answer, no cloud call
                self.recorder.already_applied(op, entry)
                self.tracker.finish((record.topic, record.partition), record.offset, epoch)
                continue
            self.queues.push(
                Pending(
                    record.topic,
                    record.partition,
                    record.offset,
                    record.key,
                    record.value,
                    op,
                    op.aggregate,
                    self.cloud.batchable(op),
                    epoch=epoch,
                    floor=floors.get(version_slot(op)),
                )
            )

    def _report_stall(self) -> None:
        """Warn when records are outstanding but none finished since the last look."""
        outstanding = self.tracker.outstanding()
        if outstanding and self._finished == self._finished_at_last_look:
            ready = self.queues.ready_count(self.monotonic())
            log.warning(
                "sink: no progress for %.0fs: %d outstanding, %d queued, ready %s, %d calls in flight, "
                "circuit %s, paused=%s",
                self.config.stall_interval,
                outstanding,
                self.queues.queued,
                ready,
                len(self._calls),
                self.breaker.state.value,
                self._paused,
            )
        self._finished_at_last_look = self._finished

    async def _room_to_take(self) -> int | None:
        """How many records the next poll may take; ``None``: do not poll now (holding).

        With ``max_outstanding`` records unfinished the worker first *holds*: it stops
        polling and waits for room, while librdkafka keeps the records it prefetched. A hold
        longer than ``hold_timeout`` (a cloud that is down or throttling) pauses the
        partitions, so that the worker can poll again — it stays in its group, rebalance
        callbacks run — without taking records; it resumes them at half of
        ``max_outstanding``. Pausing is not the first resort: librdkafka drops a paused
        partition's prefetched records and fetched them again only up to a second after the
        resume, in which a busy worker ran dry (the sink bench's cloud sat idle ~15% of the
        time).
        """
        outstanding = self.tracker.outstanding()
        self.metrics.outstanding.set(outstanding)
        room = self.config.max_outstanding - outstanding
        if self._paused:
            if outstanding <= self.config.max_outstanding // 2:
                await self._consumer_call(lambda: self.consumer.resume(*self.consumer.paused()))
                self._set_paused(False)
            return max(room, 1)  # paused partitions return nothing; the poll serves callbacks
        if room > 0:
            self._held_since = None
            return room
        now = self.monotonic()
        if self._held_since is None:
            self._held_since = now
        held = now - self._held_since
        if held >= self.config.hold_timeout:
            await self._consumer_call(lambda: self.consumer.pause(*self.consumer.assignment()))
            self._set_paused(True)
            log.info(
                "sink: %d records outstanding for %.0fs, partitions paused until %d are left",
                outstanding,
                held,
                self.config.max_outstanding // 2,
            )
            self._held_since = None
            return 1
        self._room.clear()
        wait = min(self.config.hold_timeout - held, self.config.poll_timeout_ms / 1000)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._room.wait(), timeout=wait)
        return None

    def _set_paused(self, paused: bool) -> None:
        self._paused = paused
        self.metrics.paused.set(1 if paused else 0)

    async def _commit(self) -> None:
        """Commit the finished prefixes. Order is the guarantee: apply → record the ledger →
        publish the result (both as each call settles, :meth:`_settle`) → flush the producer
        → commit the offsets. Only finished records count, and a record finishes only once
        its result (or dead letter) is published."""
        offsets = self.tracker.committable()
        if not offsets:
            return
        try:
            await self.recorder.flush()
        except (RetryableError, RecordsTooLarge) as exc:  # a result too large: as before, stop
            raise SinkFatal(f"results not acknowledged by the broker, nothing committed: {exc}") from exc
        try:
            await self._consumer_call(self.consumer.commit, offsets)
        except CommitRefused as exc:  # a rebalance took the partitions: their new owner re-delivers
            log.warning("sink: commit of %s failed (%s); the records will be re-delivered", offsets, exc)
            return
        self.tracker.committed(offsets)

    # -- rebalance (called inside poll, on the consumer's thread) ---------------------

    def _from_io_thread(self, tps: list[TP], *, assigned: bool) -> None:
        loop = self._loop
        if not tps or self._closed or loop is None or loop.is_closed():
            return
        loop.call_soon_threadsafe(self._assign if assigned else self._revoke, tps)

    def _revoke(self, tps: list[TP]) -> None:
        """Partitions taken away: forget their queued work and their offsets at once.

        Calls in flight finish (their results are published); the new owner reads from the
        last commit (at most ``commit_interval`` old) and meets those operations again, in
        order: the ledger or the cloud's idempotency keys answer them without a second effect.
        """
        dropped = self.queues.drop(tps)
        self.tracker.drop(tps)
        self._room.set()
        log.info("sink: partitions revoked: %s (%d queued operations dropped)", sorted(tps), dropped)

    def _assign(self, tps: list[TP]) -> None:
        self.queues.reassigned(tps)
        # an assignment fetches its partitions, paused before or not: held again at the limit
        self._set_paused(False)
        log.info("sink: partitions assigned: %s", sorted(tps))

    # -- dispatch ---------------------------------------------------------------------

    async def _dispatch_loop(self) -> None:
        prefer_batch = True
        while not self._stopping:
            self._wake.clear()
            prefer_batch = self._launch_ready(prefer_batch)
            timeout = self._idle_timeout()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=timeout)
        if self._calls:
            _done, pending = await asyncio.wait(set(self._calls), timeout=self.config.drain_timeout)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)

    def _idle_timeout(self) -> float | None:
        now = self.monotonic()
        waits: list[float] = []
        ready_at = self.queues.next_ready_at()
        if ready_at is not None:
            waits.append(ready_at - now)
        if self.breaker.is_open:
            waits.append(self.breaker.retry_in())
        return max(0.001, min(waits)) if waits else None

    def _launch_ready(self, prefer_batch: bool) -> bool:
        """Start calls while slots are free and heads are ready; returns the next preference."""
        while len(self._calls) < self.config.concurrency and not self._stopping:
            now = self.monotonic()
            batchable, single = self.queues.ready_count(now)
            if not batchable and not single:
                break
            try:
                self.breaker.before_call()
            except CircuitOpen:
                break
            use_batchable = batchable > 0 and (prefer_batch or single == 0)
            limit = self.config.batch_size if (use_batchable and self.config.batch) else 1
            items = self.queues.take(now, limit, batchable=use_batchable)
            if not items:
                self.breaker.release()
                break
            prefer_batch = not use_batchable
            task = asyncio.create_task(self._call(items))
            self._calls.add(task)
            task.add_done_callback(self._call_done)
        return prefer_batch

    def _call_done(self, task: asyncio.Task[None]) -> None:
        self._calls.discard(task)
        self._wake.set()
        if not task.cancelled() and (exc := task.exception()) is not None:
            # recording an outcome failed (ledger or broker): stop without committing, so the
            # records are re-delivered to a healthy worker; never go on with a hole
            log.error("sink: recording an outcome failed; stopping without a commit", exc_info=exc)
            self._fatal = SinkFatal(f"recording an outcome failed: {type(exc).__name__}: {exc}")
            self.request_stop()

    # -- one call ---------------------------------------------------------------------

    def _supersede(self, items: list[Pending]) -> list[Pending]:
        """Answer the items older than what is applied to their slots (``superseded``, not
        sent); the others go. Their aggregates' earlier operations have settled (one in flight
        per aggregate), so the worker's own record of what it applied is current."""
        going: list[Pending] = []
        for item in items:
            slot = version_slot(item.op)
            mine = self._applied_versions.get(slot)
            applied = item.floor if mine is None else max(mine, item.floor or mine)
            if self.policy.superseded(item.op.source_version, applied):
                assert applied is not None
                self.recorder.superseded(item, applied)
                self._finish(item)
            else:
                going.append(item)
        return going

    def _remember_applied(self, applied: Sequence[tuple[Pending, Applied]]) -> None:
        limit = max(self.config.max_outstanding * 4, 1024)
        for item, _ in applied:
            slot = version_slot(item.op)
            version = max(item.op.source_version, self._applied_versions.pop(slot, -1))
            self._applied_versions[slot] = version
            if len(self._applied_versions) > limit:
                self._applied_versions.popitem(last=False)

    async def _call(self, items: list[Pending]) -> None:
        items = self._supersede(items)
        if not items:
            self.breaker.release()
            self._wake.set()
            return
        started = self.monotonic()
        for item in items:
            item.attempts += 1
            if item.first_try is None:
                item.first_try = started
        self.metrics.in_flight.inc(len(items))
        endpoint = "batch" if len(items) > 1 else "single"
        outcomes: list[BatchOutcome]
        call_error: VudsyncError | None = None
        try:
            if len(items) > 1:
                self.metrics.batch_size.observe(len(items))
                outcomes = await self.cloud.apply_batch([i.op for i in items], self.recorder)
            else:
                outcomes = [await self.cloud.apply(items[0].op, self.recorder)]
        except asyncio.CancelledError:
            self.breaker.release()
            raise
        except VudsyncError as exc:
            call_error = exc
            outcomes = [exc] * len(items)
        except Exception as exc:  # a bug or an unexpected answer: retried, and bounded like a 5xx
            log.exception("sink: unexpected error on a %s call of %d operations", endpoint, len(items))
            call_error = CloudUnavailable(f"unexpected {type(exc).__name__}", reason="unexpected")
            outcomes = [call_error] * len(items)
        finally:
            self.metrics.in_flight.dec(len(items))
        self._judge(call_error, endpoint)
        if self.policy.split(call_error, len(items)):
            log.warning("sink: batch of %d refused (%s); applying them one by one", len(items), call_error)
            outcomes = [None] * len(items)
        await self._settle(items, outcomes, shared=call_error is not None)

    def _judge(self, error: VudsyncError | None, endpoint: str) -> None:
        """Tell the circuit breaker what the call says about the cloud (the policy judges)."""
        verdict = self.policy.judge(error)
        if verdict.cloud_up:
            self.breaker.success()
        else:
            self.breaker.failure(open_for=verdict.open_for)
        if verdict.open_for is not None and error is not None:
            now = self.monotonic()
            if now - self._auth_logged_at >= self.config.auth_cooldown:
                self._auth_logged_at = now
                log.error(
                    "sink: %s — %s; circuit open, next probe in %.0fs (no requests until then)",
                    error,
                    error.hint or "check the cloud client credentials",
                    self.breaker.retry_in(),
                )
        self.recorder.called(endpoint, verdict.result)

    async def _settle(
        self, items: Sequence[Pending], outcomes: Sequence[BatchOutcome], shared: bool = False
    ) -> None:
        """Take each item's next step (the policy decides), then record the applied ones —
        ledger, then results (:meth:`OutcomeRecorder.applied`) — before they finish.
        ``shared``: the call failed as a whole, so its items wait one (jittered) delay
        together and travel as a batch again."""
        applied: list[tuple[Pending, Applied]] = []
        delay: float | None = None
        for item, outcome in zip(items, outcomes, strict=True):
            now = self.monotonic()
            step = self.policy.next_step(
                outcome, item.attempts, now - (item.first_try or now), self.breaker.is_open
            )
            if step is Step.RECORD:
                assert isinstance(outcome, Applied)
                applied.append((item, outcome))
            elif step is Step.ALONE:
                item.single_only = True
                item.attempts -= 1  # not a failure: the batch path hands it to the full path
                self.queues.retry(item, 0.0)
            elif step is Step.DEAD_LETTER:
                assert isinstance(outcome, VudsyncError)
                self.recorder.dead_letter(item, str(outcome), "apply", outcome, ResultOutcome.DEAD_LETTERED)
                self._finish(item)
            else:
                assert isinstance(outcome, VudsyncError)
                if shared and delay is None:
                    delay = self.backoff.delay(item.attempts, self.policy.retry_floor(outcome))
                self._retry(item, outcome, step, delay)
        await self.recorder.applied(applied)
        self._remember_applied(applied)
        for item, _ in applied:
            self._finish(item)
        self._wake.set()

    def _retry(self, item: Pending, error: VudsyncError, step: Step, delay: float | None = None) -> None:
        """A retryable failure: give up on it (dead letter, result ``failed``) or try again."""
        item.last_error = error
        if step is Step.GIVE_UP:
            reason = f"gave up after {item.attempts} attempts: {error}"
            self.recorder.dead_letter(item, reason, "apply", error, ResultOutcome.FAILED)
            self._finish(item)
            return
        now = self.monotonic()
        if delay is None:
            delay = self.backoff.delay(item.attempts, self.policy.retry_floor(error))
        self.recorder.retried(error)
        if self.policy.warns(item.attempts):
            log.warning(
                "sink: %s %s at %s still failing after %d attempts: %s",
                item.op.kind,
                item.op.operation_id,
                item.coordinates,
                item.attempts,
                error,
            )
        self.queues.retry(item, now + delay)

    def _finish(self, item: Pending) -> None:
        self._finished += 1
        self._room.set()
        self.queues.finish(item)
        self.tracker.finish(item.tp, item.offset, item.epoch)

    # -- circuit ------------------------------------------------------------------

    def _circuit_changed(self, is_open: bool) -> None:
        self.metrics.circuit_open.set(1 if is_open else 0)
        if is_open:
            log.warning("sink: circuit to the cloud opened; probing in %.1fs", self.breaker.retry_in())
        else:
            log.warning("sink: circuit to the cloud closed; the cloud answers again")
