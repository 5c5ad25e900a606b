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

from schemas.operations import CloudOperation


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
    """What to do for one message: send ``sends``, then apply ``writes`` in order (a None value
    deletes the key). With ``acks_first``, every send is acknowledged before the first write."""

    sends: list[Send] = field(default_factory=list)
    writes: dict[str, Any] = field(default_factory=dict)
    acks_first: bool = False
    outcome: str | None = None
    entity: str | None = None
    journal: list[str] = field(default_factory=list)  # codes, for the metric

    def send(self, role: str, key: str, value: BaseModel, partition: int | None = None) -> None:
        self.sends.append(Send(role, key, value, partition))

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
