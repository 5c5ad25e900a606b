"""The journal index (SQLite) counts held deletions in both units `vudsync status` shows when
the planner's metrics are not scraped: the users / companies whose deletion is held, and the
operations (deactivations, revokes) they consist of — as `vudsync deletes list` does."""

from __future__ import annotations

from pathlib import Path

from vudsync.ops.journal import JournalEntry
from vudsync.ops.journal_index import SqliteJournalIndex


def _result(offset: int, outcome: str, entity_id: str, op: str) -> JournalEntry:
    return JournalEntry(
        "vud.cloud.results",
        0,
        offset,
        100.0 + offset,
        "planner",
        outcome,
        "user",
        entity_id,
        op,
        "user.deactivate",
    )


def test_held_operations_and_the_deletions_they_make_up(tmp_path: Path) -> None:
    index = SqliteJournalIndex(tmp_path / "journal.sqlite")
    try:
        held = [("u1", "d1"), ("u1", "r1a"), ("u1", "r1b"), ("u2", "d2"), ("u2", "r2"), ("u3", "d3")]
        entries = [_result(i, "held", uid, op) for i, (uid, op) in enumerate(held)]
        entries.append(_result(len(entries), "applied", "u3", "d3"))  # u3's deletion was approved
        index.add(entries, {("vud.cloud.results", 0): len(entries)})
        stats = index.stats(now=200.0)
        assert (stats.held_deletions_open, stats.held_open) == (2, 5)
    finally:
        index.close()
