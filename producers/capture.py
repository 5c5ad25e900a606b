"""Change capture: snapshot, then streaming from the change log, at least once.

Checkpoint order (per batch): read change rows → read current state → publish events →
``flush`` (every record acknowledged by the broker, acks=all) → save checkpoint. A crash
anywhere before the checkpoint re-sends the batch: duplicates carry the same versions,
and consumers ignore versions they have seen.

One bad record never stops the capture: a row whose mapping fails in any way, and an event
the broker refuses as too large, become dead letters on ``vud.directory.dlq`` (reason and
context headers) and the checkpoint moves on; only failures that another try may cure (the
broker unreachable) stop a batch and repeat it.

Snapshot without a gap: the change-log position P is recorded *before* the snapshot reads
any entity, snapshot events carry version P, and streaming resumes after P, so a change
committed during the snapshot is emitted by streaming even if the snapshot saw it too.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from kernel.errors import OversizedRecord, RecordsTooLarge
from kernel.publishing import RecordPublisher
from producers.encoding import EventEncoder
from producers.mapping import RowRejected, SourceInfo, deleted_record
from producers.metrics import ProducerMetrics
from producers.model import ChangeRow, EntityRecord
from producers.ports import ChangeLog
from producers.signals import SNAPSHOT_ORDER
from schemas.deadletter import HEADER_SOURCE_ROW, error_headers
from schemas.directory import EntityType
from schemas.events import Op, Repair
from schemas.topics import DIRECTORY_DLQ, DIRECTORY_TOPICS

if TYPE_CHECKING:
    from producers.adhoc import AdhocSnapshots

log = logging.getLogger(__name__)

_ENTITY_BY_TOPIC = {spec.name: entity for entity, spec in DIRECTORY_TOPICS.items()}


ProgressFn = Callable[[EntityType, int, int], None]
PublisherFactory = Callable[[], RecordPublisher]
BatchSource = Callable[[EntityType], Iterator[tuple[list[str], dict[str, EntityRecord]]]]
AckedFn = Callable[[int], None]  # called with a streaming batch's last seq once the broker acked it


@dataclass(frozen=True)
class CaptureConfig:
    name: str = "default"
    topic_prefix: str = ""
    batch_size: int = 2000
    fingerprint_key: bytes = field(default=b"", repr=False)  # a secret: never in a repr or a log
    snapshot_flush_every: int = 20_000  # records between two waits for broker acks in a snapshot


@dataclass
class BatchStats:
    rows: int = 0
    emitted: int = 0
    rejected: int = 0
    superseded: int = 0
    last_seq: int = 0


# (entity, entity id, event JSON or None when rejected, its rejections, whether it is a delete)
Action = tuple[EntityType, str, bytes | None, list[RowRejected], bool]


@dataclass(frozen=True)
class Reemitted:
    """What :meth:`ChangeCapture.reemit` sent: the version its events carry, the ids published,
    those capture rejects (id → reason), those the store does not hold, and how many the broker
    refused as too large (dead-lettered by reference, as streaming does)."""

    version: int
    emitted: tuple[str, ...]
    rejected: dict[str, str]
    missing: tuple[str, ...]
    oversized: int = 0


@dataclass
class PreparedBatch:
    """A streaming batch read and encoded, not yet queued: ``actions`` in change order."""

    rows: int = 0
    last_seq: int = 0
    first_committed_at: float | None = None
    actions: list[Action] = field(default_factory=list)
    superseded: list[EntityType] = field(default_factory=list)


class ChangeCapture:
    """Drives one store's change log into the directory topics."""

    def __init__(
        self,
        change_log: ChangeLog,
        publisher: RecordPublisher,
        metrics: ProducerMetrics,
        config: CaptureConfig,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_acked: AckedFn | None = None,
        snapshot_publisher: PublisherFactory | None = None,
        adhoc: AdhocSnapshots | None = None,
    ) -> None:
        self.log = change_log
        self.publisher = publisher
        self.metrics = metrics
        self.config = config
        self.clock = clock
        self.source = SourceInfo(store=change_log.store_kind, db=change_log.db_name)
        self.encoder = EventEncoder(self.source, config.fingerprint_key)
        self.on_acked = on_acked  # observation hook (the benchmark's latency clock)
        # A snapshot may send through its own producer, tuned for bulk (a longer linger: fewer,
        # larger produce requests, half the broker's CPU per event), closed when it is done;
        # streaming keeps ``publisher``, whose short linger the pipelined loop relies on.
        self.snapshot_publisher = snapshot_publisher
        # time.monotonic() of the last successful read of the store: the producer's readiness
        self.last_read: float | None = None
        # ad-hoc snapshots requested through the signal table (producers.adhoc), polled between batches
        self.adhoc = adhoc

    # -- topics -----------------------------------------------------------------------

    def _topic(self, entity: EntityType) -> str:
        return self.config.topic_prefix + DIRECTORY_TOPICS[entity].name

    def _dlq_topic(self) -> str:
        return self.config.topic_prefix + DIRECTORY_DLQ.name

    def _reject(self, rejection: RowRejected) -> None:
        body = {
            "entity": rejection.entity.value,
            "entity_id": rejection.entity_id,
            "version": rejection.version,
            "reason": rejection.reason,
            "source_row": rejection.row_ref,
            "store": self.source.store,
            "db": self.source.db,
        }
        headers = error_headers(
            reason=rejection.reason,
            stage="capture",
            exception=rejection.exception,
            extra={HEADER_SOURCE_ROW: rejection.row_ref},
        )
        self.publisher.publish(self._dlq_topic(), rejection.entity_id, json.dumps(body).encode(), headers)
        self.metrics.dlq.labels(topic=DIRECTORY_DLQ.name).inc()
        log.warning("capture rejected %s v%d: %s", rejection.row_ref, rejection.version, rejection.reason)

    def _oversized(self, record: OversizedRecord) -> None:
        """Dead-letter a reference to an event the broker refused for its size (not the event)."""
        entity = _ENTITY_BY_TOPIC.get(record.topic.removeprefix(self.config.topic_prefix))
        reason = f"event of {record.size} bytes is larger than the broker accepts"
        body = {
            "entity": entity.value if entity else None,
            "entity_id": record.key,
            "reason": reason,
            "topic": record.topic,
            "size": record.size,
            "store": self.source.store,
            "db": self.source.db,
        }
        headers = error_headers(
            reason=reason, stage="capture", exception=RecordsTooLarge.__name__, topic=record.topic
        )
        self.publisher.publish(self._dlq_topic(), record.key, json.dumps(body).encode(), headers)
        self.metrics.dlq.labels(topic=DIRECTORY_DLQ.name).inc()
        log.warning("capture dead-lettered %s[%s]: %s", record.topic, record.key, reason)

    def _flush(self, publisher: RecordPublisher) -> Counter[EntityType]:
        """``publisher.flush()``; events it refused as too large become dead letters (sent
        through ``self.publisher`` and flushed too). Returns the refused events per entity."""
        try:
            publisher.flush()
            return Counter()
        except RecordsTooLarge as exc:
            refused = exc.records
        for record in refused:
            self._oversized(record)
        self.publisher.flush()  # a dead letter refused too: raised, the batch is repeated
        return Counter(
            entity
            for r in refused
            if (entity := _ENTITY_BY_TOPIC.get(r.topic.removeprefix(self.config.topic_prefix)))
        )

    # -- snapshot ---------------------------------------------------------------------

    def read_ahead(self, entity: EntityType) -> Iterator[tuple[list[str], dict[str, EntityRecord]]]:
        """Snapshot batches ``(ids, records)``; the next batch is read on a helper thread while
        the caller maps and publishes this one (the database works meanwhile). Only the helper
        touches the change log until the generator is exhausted."""
        batches = iter(self.log.snapshot_batches(entity, self.config.batch_size))

        def read_next() -> tuple[list[str], dict[str, EntityRecord]] | None:
            return next(batches, None)

        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="snapshot-read") as pool:
            upcoming = pool.submit(read_next)
            while (batch := upcoming.result()) is not None:
                self.last_read = time.monotonic()
                upcoming = pool.submit(read_next)
                yield batch

    def snapshot(self, progress: ProgressFn | None = None) -> int:
        """Emit every current entity (op ``r``); returns the position streaming resumes after."""
        position = self.log.position()
        self.log.save_checkpoint(self.config.name, "snapshot", position)
        log.info("snapshot: starting at change-log position %d", position)
        totals = {e: self.log.count(e) for e in SNAPSHOT_ORDER}
        for entity, total in totals.items():
            self.metrics.snapshot_entities.labels(entity=entity.value).set(total)
            self.metrics.snapshot_done.labels(entity=entity.value).set(0)
        bulk = self.snapshot_publisher() if self.snapshot_publisher else None
        try:
            self.snapshot_entities(position, totals, bulk or self.publisher, progress)
        finally:
            if bulk is not None:
                bulk.close()
        self.log.save_checkpoint(self.config.name, "streaming", position)
        self.metrics.position.set(position)
        log.info("snapshot: done, streaming from position %d", position)
        return position

    def snapshot_entities(
        self,
        position: int,
        totals: dict[EntityType, int],
        publisher: RecordPublisher,
        progress: ProgressFn | None,
        batches: BatchSource | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        """Emit every entity of ``totals``' types (in snapshot order) through ``publisher``
        (dead letters through ``self.publisher``); returns once the broker has acknowledged all
        of them. ``batches``: where an entity type's ``(ids, records)`` come from (default: all
        of them, read ahead); ``stop``: leave after the batch in hand once it is set."""

        def flush() -> int:
            refused = self._flush(publisher)
            if publisher is not self.publisher:
                refused += self._flush(self.publisher)  # the dead letters
            return sum(refused.values())

        now_ts = time.time()
        encode = self.encoder.encode
        publish = publisher.publish
        read = batches or self.read_ahead
        for entity in SNAPSHOT_ORDER:
            if entity not in totals or (stop is not None and stop.is_set()):
                continue
            done = unacked = 0
            topic = self._topic(entity)
            for ids, records in read(entity):
                now = self.clock()
                for entity_id in ids:
                    record = records.get(entity_id)
                    if record is None:  # deleted since listed: streaming emits the delete
                        continue
                    value, rejections = encode(
                        record,
                        op=Op.READ,
                        version=position,
                        seq=position,
                        committed_at=now_ts,
                        now=now,
                        snapshot=True,
                    )
                    for rejection in rejections:
                        self._reject(rejection)
                    if value is not None:
                        publish(topic, entity_id, value)
                done += len(ids)
                unacked += len(ids)
                # wait for acks every many batches, not every batch: the snapshot's checkpoint
                # is only written at its end, and a per-batch flush stalls the pipeline
                if unacked >= self.config.snapshot_flush_every:
                    unacked -= flush()
                    self.metrics.captured.labels(entity=entity.value).inc(unacked)
                    unacked = 0
                self.metrics.snapshot_done.labels(entity=entity.value).set(done)
                log.debug("snapshot %s: %d/%d emitted", entity.value, done, totals[entity])
                if progress:
                    progress(entity, done, totals[entity])
                if stop is not None and stop.is_set():
                    break
            if unacked:
                unacked -= flush()
                self.metrics.captured.labels(entity=entity.value).inc(unacked)

    # -- on demand --------------------------------------------------------------------

    def reemit(
        self,
        entity: EntityType,
        ids: Sequence[str],
        *,
        repairs: Mapping[str, Repair] | None = None,
        removed: Mapping[str, dict[str, Any]] | None = None,
    ) -> Reemitted:
        """Emit the current state of these entities again, exactly as the snapshot does (op
        ``r``, version = the change-log position read *before* the state, encoded by the same
        encoder, published by this capture's publisher), and return once the broker acked them.

        The planner takes such an event like any other: a state it has seen plans nothing (so
        re-emitting twice applies nothing twice), a newer one is planned with the same gates. A
        change committed after the position is read is streamed with a higher version, so it
        wins. A row capture rejects is reported, not dead-lettered again (its dead letter was
        written when it was captured); an id the store does not hold is reported as missing.

        ``repairs`` (``vudsync verify --repair``): the events of these ids carry the
        :class:`~schemas.events.Repair`, so the planner re-asserts their state even when it has
        seen it. ``removed``: ids the store does not hold whose cloud objects are still live,
        with a row of their last known values (the cloud's): each is emitted as a removal
        (op ``d``, with its repair), so the planner deactivates it through the gate.
        """
        repairs = repairs or {}
        position = self.log.position()
        records = self.log.read_entities(entity, list(ids))
        self.last_read = time.monotonic()
        now = self.clock()
        topic = self._topic(entity)
        emitted: list[str] = []
        rejected: dict[str, str] = {}
        gone = {i: row for i, row in (removed or {}).items() if i not in records}
        for entity_id, op in [*((i, Op.READ) for i in ids), *((i, Op.DELETE) for i in gone)]:
            record = (
                records.get(entity_id)
                if op is Op.READ
                else deleted_record(entity, entity_id, gone[entity_id])
            )
            if record is None:
                continue
            value, rejections = self.encoder.encode(
                record,
                op=op,
                version=position,
                seq=position,
                committed_at=now.timestamp(),
                now=now,
                snapshot=op is Op.READ,
            )
            if value is None:
                rejected[entity_id] = "; ".join(r.reason for r in rejections) or "rejected by capture"
                continue
            repair = repairs.get(entity_id)
            if repair is not None:
                value = _with_repair(value, repair)
            self.publisher.publish(topic, entity_id, value)
            emitted.append(entity_id)
        oversized = sum(self._flush(self.publisher).values())  # dead-lettered by reference
        missing = tuple(i for i in ids if i not in records)
        return Reemitted(position, tuple(emitted), rejected, missing, oversized)

    # -- streaming --------------------------------------------------------------------

    def _prepare(self, after_seq: int) -> PreparedBatch:
        """Read one batch of change rows after ``after_seq``, the changed entities' current
        state, and encode their events; publishes nothing."""
        rows = self.log.read_changes(after_seq, self.config.batch_size)
        self.last_read = time.monotonic()
        if not rows:
            return PreparedBatch(last_seq=after_seq)
        batch = PreparedBatch(rows=len(rows), last_seq=rows[-1].seq, first_committed_at=rows[0].committed_at)
        last: dict[tuple[EntityType, str], ChangeRow] = {}
        deletes: dict[tuple[EntityType, str], ChangeRow] = {}
        for row in rows:
            key = (row.entity, row.entity_id)
            last.pop(key, None)  # re-inserted: ``last`` stays in order of each key's newest seq
            last[key] = row
            if row.op == "d":
                deletes[key] = row
        by_entity: dict[EntityType, list[str]] = {}
        for entity, entity_id in last:
            by_entity.setdefault(entity, []).append(entity_id)
        current = {e: self.log.read_entities(e, ids) for e, ids in by_entity.items()}
        now = self.clock()
        encode = self.encoder.encode
        for key, row in last.items():
            entity, entity_id = key
            record = current[entity].get(entity_id)
            if record is not None:
                op = Op.CREATE if row.op == "c" else Op.UPDATE
                committed_at = row.committed_at
            elif key in deletes:
                gone = deletes[key]
                record = deleted_record(entity, entity_id, gone.before)
                op = Op.DELETE
                committed_at = gone.committed_at
            else:
                # deleted by a later change-log row, whose delete event carries it
                batch.superseded.append(entity)
                continue
            value, rejections = encode(
                record, op=op, version=row.seq, seq=row.seq, committed_at=committed_at, now=now
            )
            batch.actions.append((entity, entity_id, value, rejections, op is Op.DELETE))
        return batch

    def _publish(self, batch: PreparedBatch) -> BatchStats:
        """Queue a prepared batch's records (dead letters, events, tombstones) in change order."""
        stats = BatchStats(rows=batch.rows, last_seq=batch.last_seq, superseded=len(batch.superseded))
        for entity in batch.superseded:
            self.metrics.superseded.labels(entity=entity.value).inc()
        for entity, entity_id, value, rejections, deleted in batch.actions:
            for rejection in rejections:
                self._reject(rejection)
                stats.rejected += 1
            if value is None:
                continue
            topic = self._topic(entity)
            self.publisher.publish(topic, entity_id, value)
            if deleted:
                self.publisher.publish(topic, entity_id, None)  # tombstone for compaction
            stats.emitted += 1
        return stats

    def _acknowledge(self, batch: PreparedBatch, stats: BatchStats) -> None:
        """Wait until the broker has acknowledged everything queued (acks=all), then count it.
        Only after this may a checkpoint cover the batch."""
        refused = self._flush(self.publisher)
        captured = Counter(entity for entity, _id, value, _rejections, _deleted in batch.actions if value)
        captured.subtract(refused)
        for entity, count in captured.items():
            self.metrics.captured.labels(entity=entity.value).inc(count)
        if self.on_acked:
            self.on_acked(stats.last_seq)

    def _save_checkpoint(self, seq: int) -> None:
        self.log.save_checkpoint(self.config.name, "streaming", seq)
        self.metrics.position.set(seq)

    def _update_lag(self, after_seq: int) -> None:
        oldest = self.log.oldest_uncaptured(after_seq)
        self.metrics.capture_lag.set(0 if oldest is None else max(0.0, time.time() - oldest))

    def poll_once(self, after_seq: int) -> BatchStats:
        """Capture one batch of change rows after ``after_seq``; checkpoint after the ack."""
        batch = self._prepare(after_seq)
        if not batch.rows:
            self.metrics.capture_lag.set(0)
            return BatchStats(last_seq=after_seq)
        stats = self._publish(batch)
        self._acknowledge(batch, stats)
        self._save_checkpoint(stats.last_seq)
        self._update_lag(stats.last_seq)
        return stats

    def run(self, stop: threading.Event, progress: ProgressFn | None = None) -> None:
        """Snapshot if needed, then stream until ``stop`` is set (finishing the batch).

        Streaming is pipelined in one thread: while the broker acknowledges batch N (its
        records already queued; librdkafka sends on its own threads), batch N+1 is read and
        encoded. Then N is flushed and checkpointed, and only then is N+1 queued: so the
        checkpoint only ever covers acknowledged records, and at most one queued batch is
        ever beyond it. That is what keeps a restart's re-sends to versions already sent: the
        re-read batch starts where that batch started and covers at least its rows, so it
        dedupes each entity to the same or a newer version (were the checkpoint further
        behind, re-read batches could split an old one and send an entity's skipped older
        version after its newer one). On stop, a prepared but unqueued batch is dropped.
        """
        checkpoint = self.log.load_checkpoint(self.config.name)
        if checkpoint is None or checkpoint[0] != "streaming":
            position = self.snapshot(progress)
        else:
            position = checkpoint[1]
            log.info("streaming: resuming after change-log position %d", position)
        mark = getattr(self.log, "mark_busy", None)
        batch = self._prepare(position)
        try:
            self._stream(stop, position, batch, mark)
        finally:
            if self.adhoc is not None:
                self.adhoc.join()

    def _stream(
        self, stop: threading.Event, position: int, batch: PreparedBatch, mark: Callable[[], None] | None
    ) -> None:
        while not stop.is_set():
            if self.adhoc is not None:
                self.adhoc.poll(self, stop)  # an ad-hoc snapshot runs beside streaming, on its own thread
            if not batch.rows:
                self.metrics.capture_lag.set(0)
                self.log.wait_for_changes(0.5)
                batch = self._prepare(position)
                continue
            if mark:
                mark()
            stats = self._publish(batch)
            following = self._prepare(stats.last_seq)  # overlaps with the broker's acks
            self._acknowledge(batch, stats)
            self._save_checkpoint(stats.last_seq)
            position = stats.last_seq
            if not following.rows:  # changes committed during the flush: look again now
                following = self._prepare(position)
            if following.first_committed_at is not None:  # the oldest change not yet captured
                self.metrics.capture_lag.set(max(0.0, time.time() - following.first_committed_at))
            batch = following


def _with_repair(value: bytes, repair: Repair) -> bytes:
    """An encoded event with its repair set (few events: verify's repairs only)."""
    event = json.loads(value)
    event["repair"] = repair.model_dump(mode="json")
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()
