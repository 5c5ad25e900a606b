"""Small fakes of the ports, for unit tests: in memory, no sockets, no threads of their own.

The record publisher (:class:`FakePublisher`); one per port of the sink (``sinks.ports``):
:class:`FakeCloudDirectory`, :class:`FakeLedger`, :class:`FakeRecordPublisher`,
:class:`FakeOperationsConsumer`; and :class:`FakeClock`, a monotonic clock that moves only
when told; :func:`apply_writes`, a planner table after an effect's writes.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from kernel.errors import RetryableError, VudsyncError
from schemas.operations import CloudOperation
from sinks.ports import Applied, BatchOutcome, Intents
from sinks.scheduling import TopicPartition as TP
from tests.factories import T0

Queued = tuple[str, str, bytes | None]  # topic, key, value


def apply_writes(table: dict[str, Any], writes: Mapping[str, Any]) -> None:
    """Apply a reconciler's ``Effects.writes`` to a planner table held in a dict, as the Faust
    shell applies them to its table: in order, a None value deleting the key."""
    for key, value in writes.items():
        if value is None:
            table.pop(key, None)
        else:
            table[key] = value


class FakeClock:
    """A monotonic clock (call it) frozen until :meth:`advance`; :meth:`utc` is wall time on
    the same scale, starting at ``T0``."""

    def __init__(self, now: float = 1000.0) -> None:
        self.start = self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def utc(self) -> datetime:
        return T0 + timedelta(seconds=self.now - self.start)


class FakeCloudDirectory:
    """Answers each operation with its script (``script[operation_id]``, one answer per
    attempt, the last one repeated), else ``Applied("updated")``; counts the calls."""

    def __init__(
        self,
        script: Mapping[str, Sequence[Applied | VudsyncError]] | None = None,
        *,
        batching: bool = True,
    ) -> None:
        self.script = {oid: list(answers) for oid, answers in (script or {}).items()}
        self.batching = batching
        self.attempts: dict[str, int] = defaultdict(int)
        self.calls: list[list[str]] = []  # the operation ids of each call, in call order
        self.closed = False

    def batchable(self, op: CloudOperation) -> bool:
        return self.batching

    def _answer(self, op: CloudOperation) -> Applied | VudsyncError:
        self.attempts[op.operation_id] += 1
        answers = self.script.get(op.operation_id)
        if not answers:
            return Applied("updated", f"cloud-{op.entity_id}")
        return answers.pop(0) if len(answers) > 1 else answers[0]

    async def apply(self, op: CloudOperation, intents: Intents | None = None) -> Applied:
        self.calls.append([op.operation_id])
        answer = self._answer(op)
        if isinstance(answer, VudsyncError):
            raise answer
        return answer

    async def apply_batch(
        self, ops: Sequence[CloudOperation], intents: Intents | None = None
    ) -> list[BatchOutcome]:
        self.calls.append([op.operation_id for op in ops])
        return [self._answer(op) for op in ops]

    async def aclose(self) -> None:
        self.closed = True


class FakeLedger:
    """The ``Ledger`` port in a dict; remembers the threads that called it."""

    def __init__(self, entries: Mapping[str, dict[str, Any]] | None = None) -> None:
        self.entries: dict[str, dict[str, Any]] = dict(entries or {})
        self.versions: dict[str, int] = {}
        self.intent_entries: dict[str, dict[str, Any]] = {}
        self.threads: set[str] = set()
        self.fail_with: Exception | None = None  # raised by record_many, when set
        self.closed = False

    def get(self, operation_id: str) -> dict[str, Any] | None:
        return self.get_many([operation_id]).get(operation_id)

    def get_many(self, operation_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        self.threads.add(threading.current_thread().name)
        return {oid: self.entries[oid] for oid in operation_ids if oid in self.entries}

    def record_many(
        self, entries: Sequence[tuple[str, dict[str, Any]]], versions: Sequence[tuple[str, int]] = ()
    ) -> None:
        self.threads.add(threading.current_thread().name)
        if self.fail_with is not None:
            raise self.fail_with
        for oid, result in entries:
            self.entries.setdefault(oid, result)
            if result.get("effect") == "linked":
                self.intent_entries.pop(oid, None)
        for slot, version in versions:
            self.versions[slot] = max(version, self.versions.get(slot, version))

    def applied_versions(self, slots: Sequence[str]) -> dict[str, int]:
        self.threads.add(threading.current_thread().name)
        return {slot: self.versions[slot] for slot in slots if slot in self.versions}

    def record_intents(self, intents: Sequence[tuple[str, dict[str, Any]]]) -> None:
        self.threads.add(threading.current_thread().name)
        self.intent_entries.update(intents)

    def intents(self, operation_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        self.threads.add(threading.current_thread().name)
        return {oid: self.intent_entries[oid] for oid in operation_ids if oid in self.intent_entries}

    def close(self) -> None:
        self.closed = True


class FakeRecordPublisher:
    """Keeps what was published; ``flush`` marks everything so far acknowledged."""

    def __init__(self) -> None:
        self.records: list[tuple[str, str, bytes | None, list[tuple[str, bytes]]]] = []
        self.acked = 0  # how many of ``records`` a flush acknowledged
        self.closed = False

    def publish(
        self, topic: str, key: str, value: bytes | None, headers: Sequence[tuple[str, bytes]] = ()
    ) -> None:
        self.records.append((topic, key, value, list(headers)))

    def flush(self, timeout: float = 60.0) -> int:
        self.acked = len(self.records)
        return 0

    def close(self, timeout: float = 10.0) -> None:
        self.closed = True

    def on(self, topic: str) -> list[tuple[str, bytes | None, list[tuple[str, bytes]]]]:
        """(key, value, headers) of the records published to ``topic``, in order."""
        return [(k, v, h) for t, k, v, h in self.records if t == topic]


@dataclass(frozen=True)
class FakeRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


class FakeOperationsConsumer:
    """One consumer-group member that owns every partition it was given records for.

    :meth:`feed` appends records (thread-safe); :meth:`poll` assigns the partitions on its
    first call (through the ``on_assigned`` callback, as librdkafka does inside ``poll``),
    returns up to ``max_records`` records not delivered yet from partitions not paused, and
    waits up to ``timeout_ms`` for a feed when there are none. :meth:`commit` keeps the
    latest offsets per partition.
    """

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self._lock = threading.Condition()
        self._log: dict[TP, list[FakeRecord]] = defaultdict(list)
        self._delivered: dict[TP, int] = defaultdict(int)
        self._paused: set[TP] = set()
        self._assigned: list[TP] = []
        self._on_assigned: Callable[[list[TP]], None] | None = None
        self.committed: dict[TP, int] = {}
        self.closed = False

    def feed(self, partition: int, key: bytes | None, value: bytes | None) -> FakeRecord:
        with self._lock:
            tp = (self.topic, partition)
            record = FakeRecord(self.topic, partition, len(self._log[tp]), key, value)
            self._log[tp].append(record)
            self._lock.notify_all()
            return record

    def end_offsets(self) -> dict[TP, int]:
        with self._lock:
            return {tp: len(records) for tp, records in self._log.items()}

    def subscribe(
        self, topic: str, on_assigned: Callable[[list[TP]], None], on_revoked: Callable[[list[TP]], None]
    ) -> None:
        with self._lock:
            if topic != self.topic:
                raise AssertionError(f"records are on {self.topic!r}, the worker subscribed to {topic!r}")
            self._on_assigned = on_assigned

    def _ready(self) -> list[TP]:
        return [
            tp for tp, rs in self._log.items() if tp not in self._paused and self._delivered[tp] < len(rs)
        ]

    def poll(self, timeout_ms: int, max_records: int) -> dict[TP, list[FakeRecord]]:
        with self._lock:
            new = sorted(set(self._log) - set(self._assigned))
            if new and self._on_assigned is not None:
                self._assigned.extend(new)
                self._on_assigned(new)
            if not self._ready():
                self._lock.wait_for(lambda: bool(self._ready()), timeout=timeout_ms / 1000)
            out: dict[TP, list[FakeRecord]] = {}
            for tp in self._ready():
                if max_records <= 0:
                    break
                first = self._delivered[tp]
                taken = self._log[tp][first : first + max_records]
                self._delivered[tp] += len(taken)
                max_records -= len(taken)
                out[tp] = taken
            return out

    def assignment(self) -> list[TP]:
        with self._lock:
            return list(self._assigned)

    def pause(self, *tps: TP) -> None:
        with self._lock:
            self._paused |= set(tps)

    def resume(self, *tps: TP) -> None:
        with self._lock:
            self._paused -= set(tps)
            self._lock.notify_all()

    def paused(self) -> list[TP]:
        with self._lock:
            return sorted(self._paused)

    def commit(self, offsets: dict[TP, int]) -> None:
        with self._lock:
            self.committed.update(offsets)

    def close(self) -> None:
        self.closed = True


class FakePublisher:
    """The ``RecordPublisher`` port: ``publish`` queues, ``flush`` acknowledges the queue as one
    batch (``batches``). ``fail_flush``: that flush attempt (1-based) raises instead, as a broker
    that did not acknowledge, and keeps the queue for the retry; the attempts after it succeed.
    ``events``, if given, hears ``"<name> flushed <n>"`` per flush."""

    def __init__(
        self, name: str = "publisher", events: list[str] | None = None, fail_flush: int | None = None
    ) -> None:
        self.name = name
        self.events = events if events is not None else []
        self.fail_flush = fail_flush
        self.flush_attempts = 0
        self.queued: list[Queued] = []
        self.batches: list[list[Queued]] = []  # what each flush acknowledged
        self.closed = False

    @property
    def acked(self) -> list[tuple[str, str]]:
        """(topic, key) of every acknowledged record, in order."""
        return [(topic, key) for batch in self.batches for topic, key, _ in batch]

    def publish(self, topic: str, key: str, value: bytes | None, headers: Sequence[Any] = ()) -> None:
        assert not self.closed, f"{self.name}: publish after close"
        self.queued.append((topic, key, value))

    def flush(self, timeout: float = 60.0) -> int:
        self.flush_attempts += 1
        if self.flush_attempts == self.fail_flush:
            raise RetryableError("broker did not acknowledge 1 record(s): test")
        batch, self.queued = self.queued, []
        self.batches.append(batch)
        self.events.append(f"{self.name} flushed {len(batch)}")
        return len(batch)

    def close(self, timeout: float = 10.0) -> None:
        self.closed = True
