"""What handling one message amounts to: the records to send and the table writes. Pure.

The reconciler never touches Kafka or the table's writes itself: it reads the partition's state
through a :class:`Tx` and returns :class:`Effects`, which the Faust shell
(:mod:`processors.handlers`) performs — in the order :attr:`Effects.acks_first` says.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from pydantic import BaseModel

from processors.model import DIRECTORY_OPERATIONS, Parked, Planned
from processors.needs import Need
from schemas.operations import CloudOperation

#: the role of ``vud.directory.operations`` among the planner's outputs (writeback)
DIRECTORY_ROLE = "directory_operations"


@dataclass(frozen=True)
class Coords:
    """Where a message came from: ``topic[partition]@offset``."""

    topic: str
    partition: int
    offset: int


class Send(NamedTuple):
    """One record to send. (A named tuple: two or three per event, built at a third of a
    frozen dataclass's cost.)"""

    role: str  # operations | results | facts | control
    key: str
    value: BaseModel
    partition: int | None = None  # None: by key


@dataclass
class Effects:
    """What to do for one message — or a batch of them: send ``sends``, then apply ``writes``
    in order (a None value deletes the key). With ``acks_first``, every send is acknowledged
    before the first write.

    A batch's effects (:meth:`processors.engine.Reconciler.on_batch`) also say in which
    partition's changelog each write goes (``partitions``: the partition of the message that
    made it), what each directory event came to (``tallies``), and which messages failed to
    plan (``failed``: their index in the batch and the exception; they left no effect)."""

    sends: list[Send] = field(default_factory=list)
    writes: dict[str, Any] = field(default_factory=dict)
    acks_first: bool = False
    outcome: str | None = None
    entity: str | None = None
    journal: list[str] = field(default_factory=list)  # codes, for the metric
    partitions: dict[str, int] | None = None  # batches: key → the partition it was written for
    tallies: list[tuple[str, str]] = field(default_factory=list)  # batches: (entity, outcome)
    failed: list[tuple[int, Exception]] = field(default_factory=list)  # batches: index, error
    #: operations parked now, or still parked after a release: each with the needs it waited
    #: for before (None: parked now) — what staging mode shows (processors.staging)
    waiting: list[tuple[Parked, tuple[Need, ...] | None]] = field(default_factory=list)
    #: cloud changes of the writeback a release took from the table (their JSON): the
    #: reconciler decides each again, in this step (processors.cloud_changes)
    released: list[dict[str, Any]] = field(default_factory=list)
    #: the writeback's store revokes an operator's rejection dropped now: the reconciler
    #: re-asserts each entry (processors.cloud_changes.CloudChanges.reassert)
    rejected: list[Planned] = field(default_factory=list)

    def send(self, role: str, key: str, value: BaseModel, partition: int | None = None) -> None:
        self.sends.append(Send(role, key, value, partition))

    def send_operation(self, op: Planned) -> None:
        """An operation to the topic of its kind: a cloud operation by its aggregate, a
        directory operation (writeback) to the directory sink's, by user id."""
        if isinstance(op, DIRECTORY_OPERATIONS):
            self.sends.append(Send(DIRECTORY_ROLE, op.user_id, op))
        else:
            self.sends.append(Send("operations", op.aggregate, op))

    def absorb(self, other: Effects) -> None:
        """Take the sends and journal codes of ``other``, a step planned inside this one over the
        same :class:`Tx` (its writes are the Tx's, taken once at the end)."""
        self.sends.extend(other.sends)
        self.journal.extend(other.journal)
        self.released.extend(other.released)
        self.rejected.extend(other.rejected)
        self.acks_first = self.acks_first or other.acks_first

    def operations(self) -> list[CloudOperation]:
        return [s.value for s in self.sends if s.role == "operations"]  # type: ignore[misc]


_UNREAD = object()


class Tx:
    """Reads through the writes of the message being handled; ``late`` writes go last.

    Store reads are remembered for the message's duration: the store does not change while a
    message is handled (its writes are collected here and made afterwards), and one event
    reads the same keys several times (the user's cloud id for each of its operations, the
    verdict's two keys for each application) — a Faust table read is several Python calls.
    """

    def __init__(self, store: Mapping[str, Any]) -> None:
        self.store = store
        self.writes: dict[str, Any] = {}
        self.late: dict[str, Any] = {}
        self._read: dict[str, Any] = {}

    def get(self, key: str) -> Any:
        if self.late and key in self.late:
            return self.late[key]
        if self.writes and key in self.writes:
            return self.writes[key]
        value = self._read.get(key, _UNREAD)
        if value is _UNREAD:
            value = self._read[key] = self.store.get(key)
        return value

    def set(self, key: str, value: Any, *, late: bool = False) -> None:
        if late:
            self.writes.pop(key, None)
            self.late[key] = value
        else:
            self.writes[key] = value

    def effects(self, fx: Effects) -> Effects:
        fx.writes = {**self.writes, **self.late}
        return fx


class BatchTx(Tx):
    """A :class:`Tx` shared by the messages of a batch, handled one after the other: each reads
    through the writes of those before it (as if the table had been written in between), the
    writes of a key collapse into one (the last), and ``late`` writes go after every other.

    :meth:`begin` starts a message (the partition its writes belong to) and :meth:`rollback`
    undoes what the current message wrote, for a message whose planning failed. The effects of
    a message carry no writes (:meth:`effects`): the batch's are taken once, at its end.
    """

    def __init__(self, store: Mapping[str, Any]) -> None:
        super().__init__(store)
        self.partitions: dict[str, int] = {}
        self._partition = 0
        self._undo: list[tuple[str, Any, Any, int | None]] = []

    def begin(self, partition: int) -> None:
        self._partition = partition
        self._undo.clear()

    def set(self, key: str, value: Any, *, late: bool = False) -> None:
        writes, latest = self.writes, self.late
        self._undo.append((key, writes.get(key, _UNREAD), latest.get(key, _UNREAD), self.partitions.get(key)))
        if late:
            writes.pop(key, None)
            latest[key] = value
        else:
            latest.pop(key, None)
            writes[key] = value
        self.partitions[key] = self._partition

    def rollback(self) -> None:
        for key, written, late, partition in reversed(self._undo):
            for target, before in ((self.writes, written), (self.late, late)):
                if before is _UNREAD:
                    target.pop(key, None)
                else:
                    target[key] = before
            if partition is None:
                self.partitions.pop(key, None)
            else:
                self.partitions[key] = partition
        self._undo.clear()

    def effects(self, fx: Effects) -> Effects:
        return fx

    def all_writes(self) -> dict[str, Any]:
        return {**self.writes, **self.late}
