"""The planner's message handler: decode → reconcile → send → write the table → record.

A thin shell around :class:`processors.engine.Reconciler`; no business rule lives here.

No exception escapes :meth:`PlannerHandlers.on_message` — Faust acks and *loses* a message
whose agent raises. Every failure is classified:

- **retry**: the broker did not take a record (``KafkaError``, timeouts, ``RetryableError``).
  The same message is handled again, with backoff, for as long as it takes: the partition
  waits rather than skip, because order per entity matters. The plan is recomputed from the
  table, which only changes after the sends (same ids; duplicates are no-ops downstream).
- **park**: an operation whose prerequisites are missing waits in the table (the engine).
- **dead-letter**: a message that does not decode, or whose handling fails for any other
  reason (a bug, bad data), goes to ``vud.directory.dlq`` with its context headers (reason,
  stage, exception, topic/partition/offset) and the partition moves on.

Order of effects per message (see :class:`~processors.engine.Effects`): send every record;
when ``acks_first``, wait until the broker acknowledged all of them; then write the table.
Offsets are committed by Faust after it flushed the producer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

import faust
from aiokafka.errors import KafkaError
from faust.types import Message

from kernel.errors import RetryableError
from kernel.records import Record
from kernel.retry import Backoff
from processors.control import CONTROL_ADAPTER, GATE_PARTITION
from processors.engine import Coords, Effects, Input, Reconciler
from processors.facts import teaches
from processors.faust_compat import Committed, Deliveries, OwnedKeys, SendNow, current_event_as
from processors.gauge_keys import WaitingSummaries, WatchedKeys
from processors.keys import PARKED
from processors.metrics import PlannerMetrics
from processors.staging import STAGED
from processors.topics import PlannerTopics
from schemas.codec import DecodeError, decode_cloud_change, decode_event, decode_model, encode
from schemas.deadletter import error_headers
from schemas.directory import ApplicationType
from schemas.results import OperationResult, PlannerFact, kind_and_outcome, result_headers
from schemas.topics import (
    CLOUD_CHANGES,
    DIRECTORY_DLQ,
    PLANNER_CONTROL,
    PLANNER_FACTS,
    RESULTS,
    entity_for_topic,
)

log = logging.getLogger(__name__)

RETRYABLE: tuple[type[BaseException], ...] = (KafkaError, TimeoutError, ConnectionError, RetryableError)
#: the planner's waits between tries: kernel's full-jitter back-off, at most 0.2 s before the
#: second try, doubling, never more than ``MAX_BACKOFF``
MAX_BACKOFF = 30.0
BACKOFF_BASE = 0.1

#: ``(topic, partition, first, last)`` → the records at offsets ``first``..``last`` that the
#: partition still holds (none for offsets compacted away), in offset order
FetchRange = Callable[[str, int, int, int], Awaitable[list[Record]]]
#: what the handler reads of a message: topic, partition, offset, key, value
Incoming = Message | Record


class PlannerHandlers:
    def __init__(
        self,
        reconciler: Reconciler,
        table: Any,
        topics: PlannerTopics,
        metrics: PlannerMetrics,
        committed: Committed,
        topic_prefix: str = "",
        fetch: FetchRange | None = None,
        send_now: SendNow | None = None,
        owned_keys: OwnedKeys | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self.reconciler = reconciler
        self.table = table
        self.topics = topics
        self.metrics = metrics
        self.committed = committed
        self.prefix = topic_prefix
        self._results = topic_prefix + RESULTS.name
        self._facts = topic_prefix + PLANNER_FACTS.name
        self._control = topic_prefix + PLANNER_CONTROL.name
        self._cloud = topic_prefix + CLOUD_CHANGES.name
        self._inputs = {
            self._results: "results",
            self._facts: "facts",
            self._control: "control",
            self._cloud: "cloud_changes",
        }
        self.fetch = fetch
        self.send_now = send_now
        self.owned_keys = owned_keys
        self.backoff = backoff or Backoff(base=BACKOFF_BASE, cap=MAX_BACKOFF)
        self.deliveries = Deliveries(committed)
        # the keys the gauges read, kept as written (:mod:`processors.gauge_keys`)
        self.watched = WatchedKeys((PARKED, reconciler.review_prefix()))
        self._summaries = WaitingSummaries()
        self.in_message = False  # the stall watchdog does not seek while a message is handled

    # -- the entry points -------------------------------------------------------------

    def skips(self, topic: str, headers: Sequence[tuple[str, bytes | None]] | None) -> bool:
        """Whether a record teaches the planner nothing, judged before its value is decoded: a
        result whose headers say an outcome or kind the planner learns nothing from (its own
        journal entries — parked, held … — and applied access), :func:`processors.facts.teaches`.
        A result without the headers is read in full."""
        if topic != self._results:
            return False
        said = kind_and_outcome(headers)
        return said is not None and not teaches(*said)

    def skipped(self, topic: str, partition: int, offset: int) -> None:
        """A record :meth:`skips` judged before the stream: acknowledged, not handled; the
        delivery tracker counts it as delivered."""
        self.deliveries.skipped(topic, partition, offset)
        self.metrics.child(self.metrics.skipped, self._inputs.get(topic, "directory")).inc()

    async def on_message(self, event: faust.EventT[Any]) -> None:
        """Handle one message of any input; never raises (but lets cancellation through)."""
        await self.on_batch([event])

    async def on_batch(self, events: Sequence[faust.EventT[Any]]) -> None:
        """Handle a batch of messages of any inputs, in order; never raises (but lets
        cancellation through). Planned together (:meth:`Reconciler.on_batch`): one send of
        every record, one wait for the acknowledgements, one write per table key."""
        self.in_message = True
        try:
            msgs: list[Incoming] = []
            for event in events:
                msg = event.message
                missed = self.deliveries.observe(msg.topic, msg.partition, msg.offset)
                log.debug("planner: delivered %s[%d]@%d", msg.topic, msg.partition, msg.offset)
                if missed is not None:
                    msgs.extend(await self._read_missed(msg.topic, msg.partition, *missed))
                msgs.append(msg)
            await self._handle_until_done(msgs, {e.message.partition: e for e in events})
        finally:
            self.in_message = False

    async def _read_missed(self, topic: str, partition: int, first: int, last: int) -> list[Record]:
        """Offsets ``first``..``last`` never reached the planner: read them straight from the
        broker, to be handled now, in order, before the message in hand.

        Why: faust-streaming 0.15.3 can lose a delivery in a rebalance (a record fetched, then
        cancelled, yet counted as read), and its commit passes such a hole (``_add_gap``,
        ``Consumer._new_offset``): a result, a fact or a deletion request never handled. Seeking
        the consumer back is not enough: records fetched before the seek are still delivered
        after it and move Faust's read offset on again, so that it drops the records the seek
        fetched (seen in the two-worker kill test: two facts of a partition lost for good).
        On a compacted topic the offsets may simply be gone; the broker then returns fewer
        records, or none, and nothing is guessed. The gap is found by
        :class:`processors.faust_compat.Deliveries` (the catalogue of Faust workarounds).
        """
        if self.fetch is None:
            log.warning("planner: %s[%d] offsets %d-%d never reached it", topic, partition, first, last)
            return []
        attempt = 0
        while True:
            try:
                records = await self.fetch(topic, partition, first, last)
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the broker is slow or away: the partition waits for it
                attempt += 1
                delay = self.backoff.delay(attempt)
                self.metrics.retries.labels(reason=type(exc).__name__).inc()
                log.warning(
                    "planner: reading %s[%d] offsets %d-%d failed (attempt %d: %s), again in %.1fs",
                    topic,
                    partition,
                    first,
                    last,
                    attempt,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
        log.log(
            logging.WARNING if records else logging.INFO,
            "planner: %s[%d] offsets %d-%d never reached the planner: %d read from the broker and "
            "handled now%s",
            topic,
            partition,
            first,
            last,
            len(records),
            "" if len(records) == last - first + 1 else " (the others are compacted away)",
        )
        if records:
            self.metrics.child(self.metrics.retries, "undelivered").inc(len(records))
        return records

    async def _handle_until_done(self, msgs: Sequence[Incoming], events: Mapping[int, Any]) -> None:
        """Decode, plan and perform ``msgs`` as one batch until the broker took every record;
        dead-letter what does not decode or fails to plan. ``events``: an event of each
        partition in the batch, under which its table writes are made (Faust's changelog
        partition is the current event's)."""
        inputs: list[Input] = []
        sources: list[Incoming] = []
        rejected: list[tuple[Incoming, str, str, BaseException | None]] = []
        for msg in msgs:
            try:
                item = self._decode_input(msg)
            except _Undecodable as exc:
                rejected.append((msg, exc.reason, "decode", exc.cause))
                continue
            if item is not None:
                inputs.append(item)
                sources.append(msg)
        for index, error in await self._perform_until_done(inputs, events):
            msg = sources[index]
            log.error("planner failed on %s[%d]@%d", msg.topic, msg.partition, msg.offset, exc_info=error)
            rejected.append((msg, f"planning failed: {error}", "plan", error))
        for msg, reason, stage, cause in rejected:
            await self._dead_letter_until_sent(msg, reason, stage, cause)

    async def _perform_until_done(
        self, inputs: Sequence[Input], events: Mapping[int, Any]
    ) -> list[tuple[int, Exception]]:
        """Plan and perform ``inputs``, again (with backoff) while the broker does not take a
        record: the plan is recomputed from the table, which only changes after the sends
        (the same ids). Returns the inputs that failed (index, exception): those the
        reconciler could not plan, and — when performing the batch fails otherwise — whichever
        fails when each is planned and performed alone."""
        attempt = 0
        while True:
            try:
                fx = self.reconciler.on_batch(inputs)
                await self.perform(fx, events)
                return fx.failed
            except asyncio.CancelledError:
                raise
            except RETRYABLE as exc:
                attempt += 1
                delay = self.backoff.delay(attempt)
                self.metrics.retries.labels(reason=type(exc).__name__).inc()
                first = inputs[0].coords
                log.warning(
                    "planner: %s on a batch of %d from %s[%d]@%d (attempt %d), retrying in %.1fs",
                    type(exc).__name__,
                    len(inputs),
                    first.topic,
                    first.partition,
                    first.offset,
                    attempt,
                    delay,
                )
                await asyncio.sleep(delay)
            except Exception as exc:
                if len(inputs) == 1:
                    return [(0, exc)]
                log.warning("planner: a batch of %d failed (%s): one message at a time", len(inputs), exc)
                failed: list[tuple[int, Exception]] = []
                for i, item in enumerate(inputs):
                    failed += [(i, e) for _, e in await self._perform_until_done([item], events)]
                return failed

    def _decode_input(self, msg: Incoming) -> Input | None:
        """The message as the reconciler takes it; None for a tombstone (counted, skipped)."""
        coords = Coords(msg.topic, msg.partition, msg.offset)
        self.metrics.child(self.metrics.messages, self._inputs.get(msg.topic, "directory")).inc()
        if msg.topic == self._results:
            if self.skips(msg.topic, getattr(msg, "headers", None)):
                return None  # a record read again from the broker (a lost delivery): skipped too
            return Input("result", self._decode(msg, lambda raw: decode_model(OperationResult, raw)), coords)
        if msg.topic == self._facts:
            return Input("fact", self._decode(msg, lambda raw: decode_model(PlannerFact, raw)), coords)
        if msg.topic == self._control:
            control = self._decode(msg, lambda raw: CONTROL_ADAPTER.validate_json(raw or b""))
            return Input("control", control, coords)
        if msg.topic == self._cloud:
            change = self._decode(msg, decode_cloud_change)
            return Input("cloud", change, coords)
        expected = entity_for_topic(msg.topic, self.prefix)
        if msg.value is None:  # the tombstone after a delete event: compaction's, not ours
            self.metrics.events.labels(
                entity=expected.value if expected else "unknown", outcome="tombstone"
            ).inc()
            return None
        ev = self._decode(msg, decode_event)
        if expected is not None and ev.entity is not expected:
            raise _Undecodable(f"a {ev.entity.value} event on the {expected.value} topic")
        return Input("directory", ev, coords, self.committed(msg.topic, msg.partition))

    @staticmethod
    def _decode(msg: Incoming, decode: Callable[[bytes | None], Any]) -> Any:
        try:
            return decode(msg.value)
        except DecodeError as exc:
            raise _Undecodable(exc.reason, exc) from None
        except ValueError as exc:  # pydantic's ValidationError (control messages)
            raise _Undecodable(f"wrong shape: {str(exc).splitlines()[0]}", exc) from None

    # -- effects ----------------------------------------------------------------------

    async def perform(self, fx: Effects, events: Mapping[int, Any] | None = None) -> None:
        """Send, (wait for the acks,) write — in that order; then count.

        Records are handed to the Kafka producer at once (``send``), not to Faust's buffer
        (``send_soon``): before a commit Faust flushes its buffer only until no record has
        left it for 0.1 s (``BufferedProducer.flush_atmost``), so under load a commit can pass
        records still in the buffer, and a SIGKILL then loses them (a fact never learned, a
        parked operation never released). The Kafka producer's own flush waits for all.

        A batch's writes go to the changelog partition each was made for: under an event of
        that partition (``events``), as Faust's table takes the partition from the current event.
        """
        futures = []
        for s in fx.sends:
            topic = self.topics.by_role(s.role)
            # a result (the planner's journal entries: parked, held …) says its kind and outcome
            # in headers, so that this planner skips reading it back (:meth:`skips`)
            headers = result_headers(s.value) if isinstance(s.value, OperationResult) else None
            futures.append(
                await topic.send(
                    key=s.key.encode(), value=encode(s.value), partition=s.partition, headers=headers
                )
            )
        if fx.acks_first and futures:
            if self.send_now is not None:  # waited for: do not let them linger in a batch
                await self.send_now()
            await asyncio.gather(*futures)
        if fx.partitions is None or events is None:
            self._write(fx.writes, fx.partitions)
        else:
            by_partition: dict[int, dict[str, Any]] = {}
            for key, value in fx.writes.items():
                by_partition.setdefault(fx.partitions[key], {})[key] = value
            for partition, writes in by_partition.items():
                with current_event_as(events[partition]):
                    self._write(writes, fx.partitions)
        metrics = self.metrics
        for s in fx.sends:
            if s.role == "operations":
                metrics.child(metrics.planned, s.value.kind).inc()  # type: ignore[attr-defined]
            elif s.role == STAGED:
                metrics.child(metrics.staged, s.value.operation.kind).inc()  # type: ignore[attr-defined]
        for code in fx.journal:
            metrics.child(metrics.journal, code).inc()
            metrics.count_writeback(code)
        for s in fx.sends:
            if s.role == "directory_operations":
                metrics.child(metrics.writeback_planned, s.value.kind).inc()  # type: ignore[attr-defined]
        if fx.outcome is not None and fx.entity is not None:
            metrics.child(metrics.events, fx.entity, fx.outcome).inc()
        for entity, outcome in fx.tallies:
            metrics.child(metrics.events, entity, outcome).inc()

    def _write(self, writes: Mapping[str, Any], partitions: Mapping[str, int] | None) -> None:
        """The table writes; the parked keys' partitions told to ``owned_keys`` (the gauges
        count only what this worker's partitions hold: :class:`faust_compat.OwnedKeys`), the
        keys the gauges read to :attr:`watched`."""
        table = self.table
        owned = self.owned_keys
        watched = self.watched
        for key, value in writes.items():
            if value is None:
                table.pop(key, None)
            else:
                table[key] = value
            watched.wrote(key, value is None)
            if owned is not None and partitions is not None and key.startswith(PARKED):
                owned.wrote(key, partitions[key], value is None)

    # -- dead letters -----------------------------------------------------------------

    async def dead_letter(self, msg: Incoming, reason: str, stage: str, exc: BaseException | None) -> None:
        headers = error_headers(
            reason=reason,
            stage=stage,
            exception=type(exc).__name__ if exc else "",
            topic=msg.topic,
            partition=msg.partition,
            offset=msg.offset,
        )
        fut = await self.topics.dlq.send(key=msg.key, value=msg.value, headers=headers)
        await fut  # a dead letter is the message's only trace: wait until it is durable
        self.metrics.dlq.labels(topic=DIRECTORY_DLQ.name).inc()
        log.warning("dead-lettered %s[%d]@%d (%s): %s", msg.topic, msg.partition, msg.offset, stage, reason)

    async def _dead_letter_until_sent(
        self, msg: Incoming, reason: str, stage: str, exc: BaseException | None
    ) -> None:
        attempt = 0
        while True:
            try:
                await self.dead_letter(msg, reason, stage, exc)
                return
            except asyncio.CancelledError:
                raise
            except Exception as send_exc:  # the broker refuses even the dead letter: wait for it
                attempt += 1
                log.error(
                    "planner: cannot dead-letter %s[%d]@%d: %s",
                    msg.topic,
                    msg.partition,
                    msg.offset,
                    send_exc,
                )
                await asyncio.sleep(self.backoff.delay(attempt))

    # -- the gate's clock -------------------------------------------------------------

    async def tick_gate(self, assignment: Iterable[Any]) -> None:
        """While deletions settle at the gate, stamp the gate's clock on the control topic, so a
        quiet window closes; the agent handles the tick. Only the worker assigned the gate's
        partition (``assignment``: the consumer's topic partitions): one that lost it may still
        hold its old state."""
        if not any(tp.topic == self._control and tp.partition == GATE_PARTITION for tp in assignment):
            return
        tick = self.reconciler.gate_tick()
        if tick is not None:
            await self.topics.by_role("control").send(
                key=b"gate", value=encode(tick), partition=GATE_PARTITION
            )

    # -- gauges -----------------------------------------------------------------------

    def table_changed(self) -> None:
        """The table may hold keys the agent did not write (recovered from the changelog, a
        rebalance): the next gauge refresh walks it once (:class:`gauge_keys.WatchedKeys`)."""
        self.watched.stale()

    def export_gauges(self, revoked: frozenset[int] = frozenset()) -> None:
        """Set the gauges from the partitions this worker owns now (all it holds without
        ``owned_keys``), less ``revoked`` ones (see :class:`processors.faust_compat.OwnedKeys`)."""
        # only the watched keys: the table holds several keys per entity (half a million at
        # 100,000 users) and every gauge below reads only its parked keys or its review keys
        store = self.reconciler.store
        keys = self.watched.keys(store, PARKED)
        gate_here = True
        if self.owned_keys is not None:
            owned = self.owned_keys.owned(revoked)
            keys = list(self.owned_keys.select(keys, owned))
            gate_here = GATE_PARTITION in owned
        waiting, oldest = self._summaries.summarise(store, keys)
        self.metrics.parked.set(waiting.parked)
        self.metrics.held_operations.set(waiting.held)
        self.metrics.blocked.set(waiting.blocked)
        self.metrics.parked_oldest_age.set(self.reconciler.age(oldest))
        self.metrics.held_deletions.set(self.reconciler.held_deletions() if gate_here else 0)
        reviews = self.watched.keys(store, self.reconciler.review_prefix()) if gate_here else []
        self.metrics.review_waiting.set(self.reconciler.reviews_waiting(reviews) if gate_here else 0)
        mismatched = self.reconciler.mismatched_applications() if gate_here else {}
        for app in ApplicationType:
            self.metrics.application_blocked.labels(app.value).set(1 if app in mismatched else 0)


class _Undecodable(Exception):
    """A message that is not what its topic carries: dead-lettered with stage ``decode``."""

    def __init__(self, reason: str, cause: BaseException | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.cause = cause
