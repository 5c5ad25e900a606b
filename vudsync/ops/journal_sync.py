"""Fills the journal index from Kafka: ``vud.cloud.results`` and both dead-letter topics.

Incremental: reading starts at the positions the index stored with its last entries, and
every batch of entries is added in one transaction with the positions after it (see
:class:`~vudsync.ops.journal_index.SqliteJournalIndex`). A record is mapped by the pure
:mod:`vudsync.ops.journal`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from kernel.settings import Settings
from schemas.topics import DIRECTORY_DLQ, OPERATIONS_DLQ, RESULTS
from vudsync.ops.journal import (
    SOURCE_DIRECTORY_DLQ,
    SOURCE_OPERATIONS_DLQ,
    JournalEntry,
    entry_from_dead_letter,
    entry_from_result,
)
from vudsync.ops.journal_index import SqliteJournalIndex
from vudsync.ops.kafka_admin import KafkaGroupAdmin
from vudsync.ops.kafka_reader import PartitionTail


def journal_topics(settings: Settings) -> dict[str, str]:
    """Full topic name → journal source."""
    return {
        settings.topic(RESULTS.name): "results",
        settings.topic(DIRECTORY_DLQ.name): SOURCE_DIRECTORY_DLQ,
        settings.topic(OPERATIONS_DLQ.name): SOURCE_OPERATIONS_DLQ,
    }


def to_entries(records: Iterable[Any], sources: dict[str, str]) -> list[JournalEntry]:
    """Kafka records → journal entries (dead letters reported as results are left to the result)."""
    out: list[JournalEntry] = []
    for r in records:
        source = sources[r.topic]
        if source == "results":
            out.append(entry_from_result(r.topic, r.partition, r.offset, r.value, r.timestamp))
        else:
            entry = entry_from_dead_letter(
                source, r.topic, r.partition, r.offset, r.key, r.value, r.headers, r.timestamp
            )
            if entry is not None:
                out.append(entry)
    return out


class JournalIndexer:
    """Reads the journal's topics from the index's positions on and adds what it reads."""

    def __init__(self, settings: Settings, bootstrap: str, index: SqliteJournalIndex) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.index = index
        self.sources = journal_topics(settings)
        self._tail: PartitionTail | None = None

    def _open(self, admin: KafkaGroupAdmin) -> PartitionTail:
        if self._tail is None:
            partitions = admin.partitions(self.sources)
            stored = self.index.positions(self.sources)
            self._tail = PartitionTail(
                self.bootstrap,
                {tp: stored.get(tp) for tp in partitions},
                client_id="vudsync-journal",
                security=self.settings.kafka_security(),
            )
        return self._tail

    def _add(self, tail: PartitionTail, records: list[Any]) -> int:
        return self.index.add(to_entries(records, self.sources), tail.positions())

    def catch_up(
        self,
        admin: KafkaGroupAdmin,
        *,
        timeout: float = 600.0,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Index everything published up to now; returns how many entries were added."""
        tail = self._open(admin)
        ends = tail.end_offsets()
        added = 0
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            positions = tail.positions()
            if all(positions.get(tp, 0) >= end for tp, end in ends.items()):
                self.index.add((), positions)
                return added
            records = tail.poll(0.5)
            if records:
                added += self._add(tail, records)
                if progress:
                    progress(len(records))
        return added

    def poll(self, timeout: float = 1.0) -> int:
        """One batch of new records (``--follow``); returns entries added."""
        if self._tail is None:
            raise RuntimeError("catch_up first")
        records = self._tail.poll(timeout)
        return self._add(self._tail, records) if records else 0

    def close(self) -> None:
        if self._tail is not None:
            self._tail.close()
            self._tail = None


def journal_path(settings: Settings) -> str:
    return str(settings.journal_path or settings.home / "journal.db")
