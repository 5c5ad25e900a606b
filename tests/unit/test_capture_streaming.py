"""Pipelined streaming keeps the checkpoint order (pure: a fake change log and publisher).

``ChangeCapture.run`` reads and encodes batch N+1 while batch N waits for its acks. What must
hold regardless: a checkpoint never covers a record the broker has not acknowledged, a batch is
queued only once the one before it is acknowledged *and* checkpointed (so a restart re-reads at
most one queued batch, and re-sends only versions already sent), and a failed flush moves no
checkpoint.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from kernel.errors import RetryableError
from producers.capture import CaptureConfig, ChangeCapture
from producers.metrics import ProducerMetrics
from producers.model import ChangeRow, EntityRecord
from schemas.codec import decode_event
from schemas.directory import EntityType
from tests.fakes import FakePublisher


class CheckedPublisher(FakePublisher):
    """A fake publisher that checks, at the first record of each batch, that the change log
    checkpointed what the batch before acknowledged."""

    def __init__(self, fail_flush: int | None = None) -> None:
        super().__init__(fail_flush=fail_flush)
        self.log: FakeChangeLog | None = None

    @property
    def acked_versions(self) -> set[int]:
        return {decode_event(v).version for batch in self.batches for _t, _k, v in batch if v}

    def publish(self, topic: str, key: str, value: bytes | None, headers: Sequence[Any] = ()) -> None:
        if not self.queued and self.batches and self.log is not None:  # the first record of a batch
            acked = max(self.acked_versions)
            assert self.log.checkpoint == ("streaming", acked), (
                f"a batch queued while the acknowledged position {acked} is not checkpointed "
                f"(checkpoint {self.log.checkpoint})"
            )
        super().publish(topic, key, value, headers)


class FakeChangeLog:
    """A change log of user changes, one user per change; stops ``stop`` once drained."""

    store_kind = "sqlite"
    db_name = "fake.db"

    def __init__(self, publisher: CheckedPublisher, changes: int) -> None:
        self.publisher = publisher
        publisher.log = self
        self.rows = [
            ChangeRow(s, EntityType.USER, f"u{s}", "u", 1_795_000_000.0 + s) for s in range(1, changes + 1)
        ]
        self.checkpoint: tuple[str, int] | None = ("streaming", 0)
        self.saved: list[int] = []
        self.stop = threading.Event()

    def position(self) -> int:
        return self.rows[-1].seq if self.rows else 0

    def read_changes(self, after_seq: int, limit: int) -> list[ChangeRow]:
        return [r for r in self.rows if r.seq > after_seq][:limit]

    def read_entities(self, entity: EntityType, ids: Sequence[str]) -> dict[str, EntityRecord]:
        return {
            i: EntityRecord(entity, i, {"id": i, "username": i, "email": f"{i}@fjord.no", "first_name": "",
                                        "last_name": "", "language": "nb", "active": 1})
            for i in ids
        }  # fmt: skip

    def snapshot_ids(self, entity: EntityType, batch_size: int) -> Iterator[list[str]]:
        return iter(())

    def snapshot_batches(
        self, entity: EntityType, batch_size: int
    ) -> Iterator[tuple[list[str], dict[str, EntityRecord]]]:
        return iter(())

    def count(self, entity: EntityType) -> int:
        return 0

    def load_checkpoint(self, name: str) -> tuple[str, int] | None:
        return self.checkpoint

    def save_checkpoint(self, name: str, phase: str, seq: int) -> None:
        unacked = {r.seq for r in self.rows if r.seq <= seq} - self.publisher.acked_versions
        assert not unacked, f"checkpoint {seq} covers unacknowledged changes {sorted(unacked)}"
        self.checkpoint = (phase, seq)
        self.saved.append(seq)

    def oldest_uncaptured(self, after_seq: int) -> float | None:
        rows = self.read_changes(after_seq, 1)
        return rows[0].committed_at if rows else None

    def wait_for_changes(self, timeout: float) -> None:
        acked = self.publisher.acked_versions
        if all(r.seq in acked for r in self.rows):
            self.stop.set()

    def close(self) -> None:
        pass


def _capture(log: FakeChangeLog, publisher: CheckedPublisher) -> ChangeCapture:
    config = CaptureConfig(batch_size=3, fingerprint_key=b"k")
    return ChangeCapture(log, publisher, ProducerMetrics(CollectorRegistry()), config)  # type: ignore[arg-type]


def test_each_batch_is_queued_only_after_the_one_before_was_acknowledged() -> None:
    publisher = CheckedPublisher()
    log = FakeChangeLog(publisher, 10)
    acked: list[int] = []
    capture = _capture(log, publisher)
    capture.on_acked = acked.append
    capture.run(log.stop)
    # what each flush acknowledged is exactly one batch of 3 changes, in order
    versions = [[decode_event(v).version for _t, _k, v in batch if v] for batch in publisher.batches]
    assert versions == [[1, 2, 3], [4, 5, 6], [7, 8, 9], [10]]
    assert acked == [3, 6, 9, 10]
    assert log.saved == [3, 6, 9, 10]  # every acknowledged batch, in order


def test_a_failed_flush_moves_no_checkpoint_past_what_was_acknowledged() -> None:
    publisher = CheckedPublisher(fail_flush=2)
    log = FakeChangeLog(publisher, 10)
    with pytest.raises(RetryableError):
        _capture(log, publisher).run(log.stop)
    assert log.checkpoint == ("streaming", 3)  # the first batch, acknowledged; not the second


def test_poll_once_checkpoints_its_batch() -> None:
    publisher = CheckedPublisher()
    log = FakeChangeLog(publisher, 5)
    capture = _capture(log, publisher)
    stats = capture.poll_once(0)
    assert (stats.rows, stats.emitted, stats.last_seq) == (3, 3, 3)
    assert log.checkpoint == ("streaming", 3)
    assert capture.poll_once(3).last_seq == 5 and log.checkpoint == ("streaming", 5)
