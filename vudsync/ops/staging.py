"""Staging mode, the operator's side: read what is staged, promote it, discard it.

What is staged lives on the one partition of ``vud.cloud.operations.staged``
(:mod:`processors.staging`). The *staging mark* is the committed offset of the consumer group
``<prefix>vudsync-staging`` on it: no consumer ever joins that group; ``promote`` and
``discard`` move its offset past what they settled (with who and what in the offset's
metadata), and everything from the mark on is what is staged now. Reading commits nothing.

Promote, in order:

1. read the listing up to ``--up-to`` (the highest offset the diff showed) — exactly what it
   showed, nothing staged after it;
2. judge its deletions as one burst with the planner's own accidental-delete rule
   (:func:`processors.deletions.on_burst`): over the threshold it applies nothing unless the
   operator approves that many deletions by number (``--approve-deletions N``);
3. publish the ready operations onto ``vud.cloud.operations``, keyed by aggregate, in staged
   order (same ids: the sink's ledger and the cloud's idempotency keys make a second promote
   harmless) → ``flush`` (acknowledged);
4. move the mark past ``--up-to``;
5. the shown operations that waited for what step 3 creates (an assignment waiting for its
   user): the sink applies the creations, the planner learns the cloud ids from the results
   and — still staging — stages those operations again, ready. Promote follows the staged
   topic from the mark and publishes each of them as it comes (create before assign), until
   all are sent or ``wait`` seconds passed; then moves the mark past the records that only
   repeated what it promoted.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from kernel.publishing.kafka_python import KafkaRecordPublisher
from kernel.records import TopicPartition as TP
from kernel.settings import Settings
from processors import deletions
from processors.deletions import GateState
from schemas.codec import DecodeError, decode_model, encode
from schemas.operations import CloudOperation, StagedOperation
from schemas.topics import OPERATIONS, OPERATIONS_STAGED
from vudsync.ops.kafka_admin import KafkaGroupAdmin
from vudsync.ops.kafka_reader import PartitionTail, read_ranges
from vudsync.ops.staging_diff import Promotion, Staged, StagedRecord, settled_through

CLIENT_ID = "vudsync-staging"


def staging_group(settings: Settings) -> str:
    """The group whose committed offset is the staging mark (no consumer joins it)."""
    return f"{settings.topic_prefix}vudsync-staging"


def staged_partition(settings: Settings) -> TP:
    return (settings.topic(OPERATIONS_STAGED.name), 0)


def _decode(records: list[object]) -> tuple[StagedRecord, ...]:
    out = []
    for record in records:
        try:
            staged = decode_model(StagedOperation, record.value)  # type: ignore[attr-defined]
        except DecodeError:
            continue  # not a staged operation: nothing to promote
        out.append(StagedRecord(int(record.offset), staged))  # type: ignore[attr-defined]
    return tuple(out)


@dataclass(frozen=True)
class StagedCount:
    mark: int
    end: int

    @property
    def count(self) -> int:
        return max(self.end - self.mark, 0)


def staged_count(settings: Settings, admin: KafkaGroupAdmin) -> StagedCount | None:
    """Records staged and not yet promoted or discarded (None: no staged topic)."""
    tp = staged_partition(settings)
    if tp not in admin.partitions([tp[0]]):
        return None
    start, end = admin.start_offsets([tp]).get(tp, 0), admin.end_offsets([tp]).get(tp, 0)
    mark = max(admin.committed(staging_group(settings)).get(tp, 0), start)
    return StagedCount(mark, end)


def read_staged(settings: Settings, bootstrap: str, admin: KafkaGroupAdmin, timeout: float = 120.0) -> Staged:
    """What is staged now: the records from the mark to the end of the staged topic."""
    now = staged_count(settings, admin)
    if now is None:
        return Staged(0, 0)
    tp = staged_partition(settings)
    records = list(
        read_ranges(
            bootstrap,
            {tp: (now.mark, now.end)},
            timeout=timeout,
            client_id=CLIENT_ID,
            security=settings.kafka_security(),
        )
    )
    return Staged(now.mark, now.end, _decode(records))


def move_mark(settings: Settings, admin: KafkaGroupAdmin, offset: int, why: str) -> None:
    """Settle everything before ``offset`` (never moves the mark back)."""
    tp = staged_partition(settings)
    if admin.committed(staging_group(settings)).get(tp, 0) >= offset:
        return
    admin.commit(staging_group(settings), {tp: offset}, {tp: why[:200]})


def deletions_go(settings: Settings, promotion: Promotion) -> bool:
    """The planner's accidental-delete rule on the promotion's deletions, judged as one burst."""
    from processors.service import planner_settings  # Faust's import: only when promoting

    _, go = deletions.on_burst(
        GateState(),
        promotion.destructive,
        committed_at=time.time(),
        partition=0,
        live=0,
        settings=planner_settings(settings),
    )
    return go


@dataclass
class PromoteReport:
    up_to: int
    published: int = 0  # ready operations published at once
    released: int = 0  # operations published once the planner staged them again, ready
    still_waiting: dict[str, tuple[str, ...]] = field(default_factory=dict)
    mark: int = 0

    def as_dict(self) -> dict[str, object]:
        return {
            "up_to": self.up_to,
            "published": self.published,
            "released": self.released,
            "still_waiting": {k: list(v) for k, v in self.still_waiting.items()},
            "mark": self.mark,
        }


class _Publisher:
    def __init__(self, settings: Settings, bootstrap: str) -> None:
        self.topic = settings.topic(OPERATIONS.name)
        self._inner = KafkaRecordPublisher(bootstrap, client_id=CLIENT_ID, security=settings.kafka_security())

    def publish(self, op: CloudOperation) -> None:
        self._inner.publish(self.topic, op.aggregate, encode(op))

    def flush(self) -> None:
        self._inner.flush(timeout=60)

    def close(self) -> None:
        self._inner.close(timeout=10)


def promote(
    settings: Settings,
    bootstrap: str,
    admin: KafkaGroupAdmin,
    chosen: Staged,
    promotion: Promotion,
    *,
    operator: str,
    wait: float,
    progress: Callable[[str, int, int], None] = lambda what, done, total: None,
) -> PromoteReport:
    """Apply ``promotion`` (what ``chosen``, the listing up to its bound, showed): see the
    module's docstring for the order. Returns what was published and what still waits."""
    up_to = chosen.high_water if chosen.high_water is not None else chosen.mark - 1
    report = PromoteReport(up_to=up_to)
    publisher = _Publisher(settings, bootstrap)
    promoted: set[str] = set()
    try:
        for i, op in enumerate(promotion.ready, 1):
            publisher.publish(op)
            promoted.add(op.operation_id)
            if i % 500 == 0 or i == len(promotion.ready):
                progress("published", i, len(promotion.ready))
        publisher.flush()
        report.published = len(promotion.ready)
        stamp = f"promoted up to {up_to} by {operator} at {datetime.now(UTC).isoformat()}"
        move_mark(settings, admin, up_to + 1, stamp)
        waiting = dict(promotion.waiting)
        after: list[StagedRecord] = []
        if waiting:
            tail = PartitionTail(
                bootstrap,
                {staged_partition(settings): up_to + 1},
                CLIENT_ID,
                security=settings.kafka_security(),
            )
            deadline = time.monotonic() + wait
            try:
                while waiting and time.monotonic() < deadline:
                    for r in _decode(tail.poll(0.5)):
                        after.append(r)
                        oid = r.operation.operation_id
                        if oid in waiting and not r.staged.waiting_for:
                            publisher.publish(r.operation)
                            promoted.add(oid)
                            del waiting[oid]
                            report.released += 1
                            if report.released % 100 == 0 or not waiting:
                                publisher.flush()
                                progress("released", report.released, len(promotion.waiting))
                publisher.flush()
            finally:
                tail.close()
        report.still_waiting = waiting
        mark = settled_through(up_to + 1, after, promoted)
        move_mark(settings, admin, mark, stamp)
        report.mark = mark
    finally:
        publisher.close()
    return report


def discard(settings: Settings, admin: KafkaGroupAdmin, up_to: int, operator: str) -> None:
    """Drop what a listing up to ``up_to`` showed: the mark moves past it; the cloud is untouched."""
    stamp = f"discarded up to {up_to} by {operator} at {datetime.now(UTC).isoformat()}"
    move_mark(settings, admin, up_to + 1, stamp)
