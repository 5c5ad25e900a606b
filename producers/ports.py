"""Ports of the producer: where changes come from, where events go."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

from producers.model import ChangeRow, EntityRecord
from producers.signals import SnapshotSignal
from schemas.directory import EntityType


class ChangeLog(Protocol):
    """A directory store with a trigger-written change log and a durable checkpoint."""

    store_kind: str  # 'sqlite' | 'postgresql'
    db_name: str

    def position(self) -> int:
        """The newest change-log position (0 when empty)."""

    def read_changes(self, after_seq: int, limit: int) -> list[ChangeRow]:
        """Change rows with seq > ``after_seq``, oldest first, at most ``limit``."""

    def read_entities(self, entity: EntityType, ids: Sequence[str]) -> dict[str, EntityRecord]:
        """The current rows of these entities; missing ids are absent from the result."""

    def snapshot_ids(self, entity: EntityType, batch_size: int) -> Iterator[list[str]]:
        """Every current entity id of a type, in batches."""

    def snapshot_batches(
        self, entity: EntityType, batch_size: int
    ) -> Iterator[tuple[list[str], dict[str, EntityRecord]]]:
        """Every current entity of a type in id order, in batches ``(ids, records)``; each
        batch's records are read in one snapshot of the store (as ``read_entities``). An id
        may be missing from ``records`` when the entity was deleted since it was listed."""

    def users_in_company(self, company_id: str) -> list[str]:
        """The ids of the users with access in a company, in id order (``--where company=``)."""

    def count(self, entity: EntityType) -> int:
        """How many entities of a type exist now (for snapshot progress)."""

    def load_checkpoint(self, name: str) -> tuple[str, int] | None:
        """``(phase, seq)`` of the named capture, or None before the first snapshot."""

    def save_checkpoint(self, name: str, phase: str, seq: int) -> None:
        """Durably record the capture's phase and position."""

    def oldest_uncaptured(self, after_seq: int) -> float | None:
        """Commit time (unix seconds) of the oldest change after ``after_seq``, if any."""

    def wait_for_changes(self, timeout: float) -> None:
        """Block until the change log may have grown, or ``timeout`` seconds pass."""

    def close(self) -> None: ...


class SnapshotSignals(Protocol):
    """The producer's side of the signal table (``capture_signal``): ad-hoc snapshot requests."""

    def next_open(self) -> SnapshotSignal | None:
        """The request to work on: one left running by a stopped producer, else the oldest pending."""

    def claim(self, signal_id: int, position: int, total: int) -> bool:
        """Mark it running; False when it was cancelled meanwhile."""

    def progress(self, signal_id: int, emitted: int) -> None: ...

    def finish(self, signal_id: int, emitted: int, error: str | None = None) -> None:
        """Done (``error`` None) or failed."""

    def close(self) -> None: ...
