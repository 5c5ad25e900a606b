"""What the sink may do next, and what it may commit: pure bookkeeping, no I/O.

* :class:`AggregateQueues` — one FIFO per aggregate (the record key). Only the head of a
  queue may be dispatched, and only while no other operation of that aggregate is in
  flight: per-aggregate order holds while different aggregates go concurrently. A head
  that failed with a retryable error stays the head until ``not_before``.
* :class:`OffsetTracker` — per partition, the offsets taken and the ones finished
  (applied, already applied or dead-lettered). The committable offset of a partition is
  the one after its longest finished prefix: a commit never skips an unfinished record.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

# re-exported: sinks.worker, sinks.ports and the consumer import it from here
from kernel.records import TopicPartition as TopicPartition


@dataclass(eq=False)
class Pending:
    """One polled operation on its way to the cloud."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    op: Any  # CloudOperation (kept untyped here: this module knows no schemas)
    aggregate: str
    batchable: bool
    attempts: int = 0
    first_try: float | None = None
    not_before: float = 0.0
    single_only: bool = False  # the batch path could not finish it: apply it alone
    epoch: int | None = None  # the offset tracker's epoch of its partition when it was taken
    last_error: BaseException | None = None
    floor: int | None = None  # the highest source version applied to its slot, when taken

    @property
    def tp(self) -> TopicPartition:
        return (self.topic, self.partition)

    @property
    def coordinates(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


@dataclass
class _Queue:
    items: deque[Pending] = field(default_factory=deque)
    busy: bool = False  # the head is in flight, or waits in the ready lists / delay heap


class AggregateQueues:
    """Per-aggregate FIFOs with at most one operation per aggregate in flight."""

    def __init__(self) -> None:
        self._queues: dict[str, _Queue] = {}
        self._ready_batchable: deque[Pending] = deque()
        self._ready_single: deque[Pending] = deque()
        self._delayed: list[tuple[float, int, Pending]] = []
        self._seq = 0
        self._dropped: set[TopicPartition] = set()
        self.queued = 0  # operations held, in flight included

    def push(self, item: Pending) -> None:
        queue = self._queues.setdefault(item.aggregate, _Queue())
        queue.items.append(item)
        self.queued += 1
        if not queue.busy:
            queue.busy = True
            self._schedule(item)

    def _schedule(self, item: Pending) -> None:
        if item.not_before > 0:
            self._seq += 1
            heapq.heappush(self._delayed, (item.not_before, self._seq, item))
        elif item.batchable and not item.single_only:
            self._ready_batchable.append(item)
        else:
            self._ready_single.append(item)

    def _promote(self, now: float) -> None:
        while self._delayed and self._delayed[0][0] <= now:
            _, _, item = heapq.heappop(self._delayed)
            item.not_before = 0.0
            if item.tp not in self._dropped:
                self._schedule(item)

    def take(self, now: float, limit: int, *, batchable: bool) -> list[Pending]:
        """Up to ``limit`` heads ready at ``now`` (batchable ones or the others)."""
        self._promote(now)
        source = self._ready_batchable if batchable else self._ready_single
        taken: list[Pending] = []
        while source and len(taken) < limit:
            item = source.popleft()
            if item.tp not in self._dropped:
                taken.append(item)
        return taken

    def ready_count(self, now: float) -> tuple[int, int]:
        """(batchable, other) heads ready now."""
        self._promote(now)
        return len(self._ready_batchable), len(self._ready_single)

    def next_ready_at(self) -> float | None:
        """When the earliest delayed head becomes ready (None: nothing delayed)."""
        while self._delayed and self._delayed[0][2].tp in self._dropped:
            heapq.heappop(self._delayed)
        return self._delayed[0][0] if self._delayed else None

    def finish(self, item: Pending) -> None:
        """``item`` is done: its aggregate's next operation becomes ready."""
        queue = self._queues.get(item.aggregate)
        if queue is None or not queue.items or queue.items[0] is not item:
            return  # its partition was dropped meanwhile
        queue.items.popleft()
        self.queued -= 1
        if queue.items:
            self._schedule(queue.items[0])
        else:
            del self._queues[item.aggregate]

    def retry(self, item: Pending, not_before: float) -> None:
        """``item`` stays its aggregate's head and is ready again at ``not_before``."""
        queue = self._queues.get(item.aggregate)
        if queue is None or not queue.items or queue.items[0] is not item:
            return
        item.not_before = not_before
        self._schedule(item)

    def drop(self, partitions: Iterable[TopicPartition]) -> int:
        """Forget every queued operation of ``partitions`` (revoked); returns how many."""
        gone = set(partitions)
        if not gone:
            return 0
        self._dropped |= gone
        dropped = 0
        for aggregate in [a for a, q in self._queues.items() if q.items and q.items[0].tp in gone]:
            dropped += len(self._queues.pop(aggregate).items)
        self.queued -= dropped
        self._ready_batchable = deque(i for i in self._ready_batchable if i.tp not in gone)
        self._ready_single = deque(i for i in self._ready_single if i.tp not in gone)
        self._delayed = [d for d in self._delayed if d[2].tp not in gone]
        heapq.heapify(self._delayed)
        return dropped

    def reassigned(self, partitions: Iterable[TopicPartition]) -> None:
        """``partitions`` are ours again (after a rebalance): accept their records."""
        self._dropped -= set(partitions)


@dataclass
class _Offsets:
    epoch: int
    taken: deque[int] = field(default_factory=deque)
    finished: set[int] = field(default_factory=set)
    next_commit: int | None = None
    committed: int | None = None


class OffsetTracker:
    """Per partition: the longest finished prefix of the offsets taken.

    A partition's tracking starts a new *epoch* each time it is taken up again (after a
    revocation): a record taken in an older epoch that finishes late counts for nothing.
    """

    def __init__(self) -> None:
        self._parts: dict[TopicPartition, _Offsets] = {}
        self._epochs = 0

    def take(self, tp: TopicPartition, offset: int) -> int:
        """Offsets of one partition are taken in increasing order (as polled); returns the
        epoch to hand back to :meth:`finish`."""
        part = self._parts.get(tp)
        if part is None:
            self._epochs += 1
            part = self._parts[tp] = _Offsets(self._epochs)
        part.taken.append(offset)
        return part.epoch

    def finish(self, tp: TopicPartition, offset: int, epoch: int | None = None) -> None:
        part = self._parts.get(tp)
        if part is None or (epoch is not None and epoch != part.epoch):
            return  # revoked meanwhile (and perhaps taken up again since)
        part.finished.add(offset)
        while part.taken and part.taken[0] in part.finished:
            done = part.taken.popleft()
            part.finished.discard(done)
            part.next_commit = done + 1

    def committable(self, partitions: Iterable[TopicPartition] | None = None) -> dict[TopicPartition, int]:
        """The offsets to commit now (next offset to read), where they moved on."""
        chosen = (
            self._parts if partitions is None else {p: self._parts[p] for p in partitions if p in self._parts}
        )
        return {
            tp: part.next_commit
            for tp, part in chosen.items()
            if part.next_commit is not None and part.next_commit != part.committed
        }

    def committed(self, offsets: dict[TopicPartition, int]) -> None:
        for tp, offset in offsets.items():
            if tp in self._parts:
                self._parts[tp].committed = offset

    def last_committed(self, tp: TopicPartition) -> int | None:
        part = self._parts.get(tp)
        return part.committed if part else None

    def outstanding(self) -> int:
        """Records taken and not yet finished (in flight, queued, or waiting to retry)."""
        return sum(len(p.taken) - len(p.finished) for p in self._parts.values())

    def drop(self, partitions: Iterable[TopicPartition]) -> None:
        for tp in partitions:
            self._parts.pop(tp, None)
