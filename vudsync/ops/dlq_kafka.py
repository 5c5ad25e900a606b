"""Kafka adapter of the dead-letter queues: read them, re-drive them, mark them handled, purge.

Retry order, per call: publish every re-driven record → ``flush`` (each acknowledged by the
broker, acks=all) → record them as handled. A crash in between re-drives them once more on
the next retry, which the planner (versions) and the sink (ledger, idempotency keys) absorb.

Purge order: record as handled → delete the records below each partition's handled offset.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from kernel.errors import ConfigurationError
from kernel.publishing.kafka_python import KafkaRecordPublisher
from kernel.settings import Settings
from vudsync.ops.deadletters import (
    DeadLetter,
    DeadLetterRef,
    HandledMarks,
    dead_letter_from_record,
    handled_group,
    queue_topic,
    retry_headers,
    retry_target,
)
from vudsync.ops.kafka_admin import KafkaGroupAdmin
from vudsync.ops.kafka_reader import read_ranges

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QueueDepth:
    queue: str
    topic: str
    unhandled: int
    retained: int  # records still in the topic (handled ones included)


@dataclass(frozen=True)
class RetryOutcome:
    ref: DeadLetterRef
    target: str | None
    skipped: str | None = None  # why it was not re-driven


class KafkaDeadLetterQueues:
    def __init__(self, settings: Settings, bootstrap: str, admin: KafkaGroupAdmin) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.admin = admin
        self.group = handled_group(settings)

    # -- handled marks ------------------------------------------------------------------

    def _partitions(self, queue: str) -> list[int]:
        topic = queue_topic(queue, self.settings)
        return [p for t, p in self.admin.partitions([topic]) if t == topic]

    def marks(self, queue: str) -> tuple[dict[int, HandledMarks], dict[int, int], dict[int, int]]:
        """``(marks, start, end)`` per partition. Records gone from the log count as handled."""
        topic = queue_topic(queue, self.settings)
        partitions = [(topic, p) for p in self._partitions(queue)]
        committed = self.admin.committed_with_metadata(self.group)
        start = {p: o for (_, p), o in self.admin.start_offsets(partitions).items()}
        end = {p: o for (_, p), o in self.admin.end_offsets(partitions).items()}
        marks: dict[int, HandledMarks] = {}
        for _, p in partitions:
            meta = committed.get((topic, p))
            mark = HandledMarks.from_commit(meta.offset if meta else 0, meta.metadata if meta else "")
            marks[p] = mark.mark_below(start.get(p, 0))
        return marks, start, end

    def _save(self, queue: str, marks: dict[int, HandledMarks]) -> None:
        topic = queue_topic(queue, self.settings)
        self.admin.commit(
            self.group,
            {(topic, p): m.offset for p, m in marks.items()},
            {(topic, p): m.metadata() for p, m in marks.items()},
        )

    def depth(self, queue: str) -> QueueDepth:
        marks, start, end = self.marks(queue)
        unhandled = sum(m.unhandled(start.get(p, 0), end.get(p, 0)) for p, m in marks.items())
        retained = sum(max(end.get(p, 0) - start.get(p, 0), 0) for p in marks)
        return QueueDepth(queue, queue_topic(queue, self.settings), unhandled, retained)

    # -- reading ------------------------------------------------------------------------

    def read(self, queue: str, *, include_handled: bool = False) -> list[DeadLetter]:
        """The dead letters of a queue, oldest first per partition."""
        topic = queue_topic(queue, self.settings)
        marks, start, end = self.marks(queue)
        ranges = {
            (topic, p): (
                (start.get(p, 0) if include_handled else max(m.offset, start.get(p, 0))),
                end.get(p, 0),
            )
            for p, m in marks.items()
        }
        out = []
        for record in read_ranges(
            self.bootstrap, ranges, client_id="vudsync-dlq", security=self.settings.kafka_security()
        ):
            handled = marks[record.partition].is_handled(record.offset)
            if include_handled or not handled:
                out.append(dead_letter_from_record(queue, record, handled))
        return out

    def get(self, ref: DeadLetterRef) -> DeadLetter:
        topic = queue_topic(ref.queue, self.settings)
        marks, _, _ = self.marks(ref.queue)
        if ref.partition not in marks:
            raise ConfigurationError(f"{ref}: {topic} has no partition {ref.partition}")
        for record in read_ranges(
            self.bootstrap,
            {(topic, ref.partition): (ref.offset, ref.offset + 1)},
            client_id="vudsync-dlq",
            security=self.settings.kafka_security(),
        ):
            if record.offset == ref.offset:
                return dead_letter_from_record(ref.queue, record, marks[ref.partition].is_handled(ref.offset))
        raise ConfigurationError(
            f"no dead letter at {ref}",
            hint="it may have been purged; `vudsync dlq list --all` lists what is kept",
        )

    # -- acting -------------------------------------------------------------------------

    def _mark(self, queue: str, offsets: dict[int, set[int]]) -> None:
        marks, _, _ = self.marks(queue)  # re-read just before writing: another operator may have acted
        for p, handled in offsets.items():
            marks[p] = marks.get(p, HandledMarks()).mark(handled)
        self._save(queue, marks)

    def retry(
        self, dead_letters: Sequence[DeadLetter], allowed: Callable[[str], bool] | Iterable[str]
    ) -> list[RetryOutcome]:
        """Re-drive through the normal path; see the module docstring for the order."""
        if not callable(allowed):
            allowed = list(allowed)
        outcomes: list[RetryOutcome] = []
        sent: list[DeadLetter] = []
        publisher = KafkaRecordPublisher(
            self.bootstrap, client_id="vudsync-dlq-retry", security=self.settings.kafka_security()
        )
        try:
            for dl in dead_letters:
                target = retry_target(dl, self.settings, allowed)
                if target.topic is None:
                    outcomes.append(RetryOutcome(dl.ref, None, target.why_not))
                    continue
                publisher.publish(target.topic, dl.key or "", dl.value, retry_headers(dl))
                outcomes.append(RetryOutcome(dl.ref, target.topic))
                sent.append(dl)
            publisher.flush()
        finally:
            publisher.close()
        by_queue: dict[str, dict[int, set[int]]] = {}
        for dl in sent:
            by_queue.setdefault(dl.ref.queue, {}).setdefault(dl.ref.partition, set()).add(dl.ref.offset)
        for queue, offsets in by_queue.items():
            self._mark(queue, offsets)
        for dl in sent:
            log.info("dlq: re-drove %s (%s)", dl.ref, dl.subject())
        return outcomes

    def purge(self, queue: str, refs: Sequence[DeadLetterRef] | None) -> int:
        """Mark ``refs`` (None: every dead letter of the queue) handled, then delete the
        handled prefix of each partition from the topic. Returns how many were marked."""
        topic = queue_topic(queue, self.settings)
        marks, start, end = self.marks(queue)
        if refs is None:
            count = sum(m.unhandled(start.get(p, 0), end.get(p, 0)) for p, m in marks.items())
            for p in marks:
                marks[p] = marks[p].mark_below(end.get(p, 0))
        else:
            count = 0
            for ref in refs:
                if ref.partition in marks and not marks[ref.partition].is_handled(ref.offset):
                    marks[ref.partition] = marks[ref.partition].mark([ref.offset])
                    count += 1
        self._save(queue, marks)
        self.admin.delete_records(
            {(topic, p): m.offset for p, m in marks.items() if m.offset > start.get(p, 0)}
        )
        return count
