"""Ports of the producer: where changes come from, where events go."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

from producers.model import ChangeRow, EntityRecord
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
