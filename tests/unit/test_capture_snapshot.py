"""The snapshot through its own (bulk-tuned) producer: pure, a fake change log and publishers.

What must hold: entity events go through the snapshot producer, dead letters through the
streaming one; both are acknowledged before the checkpoint moves to streaming; the snapshot
producer is closed afterwards (also when the snapshot fails), and streaming never uses it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from kernel.errors import OversizedRecord, RecordsTooLarge, RetryableError
from producers.capture import CaptureConfig, ChangeCapture
from producers.metrics import ProducerMetrics
from producers.model import EntityRecord
from schemas.directory import EntityType
from tests.fakes import FakePublisher


def _user(user_id: str, email: str) -> EntityRecord:
    row = {"id": user_id, "username": user_id, "email": email, "first_name": "Åse", "last_name": "Ø",
           "language": "nb", "active": 1}  # fmt: skip
    return EntityRecord(EntityType.USER, user_id, row)


class ChangeLog:
    store_kind = "sqlite"
    db_name = "fake.db"

    def __init__(self, events: list[str]) -> None:
        self.events = events
        self.users = {"u1": _user("u1", "u1@fjord.no"), "u2": _user("u2", "not-an-email")}

    def position(self) -> int:
        return 7

    def read_entities(self, entity: EntityType, ids: list[str]) -> dict[str, EntityRecord]:
        return {i: self.users[i] for i in ids if i in self.users} if entity is EntityType.USER else {}

    def snapshot_batches(
        self, entity: EntityType, batch_size: int
    ) -> Iterator[tuple[list[str], dict[str, EntityRecord]]]:
        if entity is EntityType.USER:
            yield list(self.users), dict(self.users)

    def count(self, entity: EntityType) -> int:
        return len(self.users) if entity is EntityType.USER else 0

    def save_checkpoint(self, name: str, phase: str, seq: int) -> None:
        self.events.append(f"checkpoint {phase} {seq}")


def _capture(events: list[str], main: FakePublisher, bulk: list[FakePublisher]) -> ChangeCapture:
    def snapshot_publisher() -> FakePublisher:
        bulk.append(FakePublisher("bulk", events))
        return bulk[-1]

    return ChangeCapture(
        ChangeLog(events),  # type: ignore[arg-type]
        main,
        ProducerMetrics(CollectorRegistry()),
        CaptureConfig(topic_prefix="t-", fingerprint_key=b"k"),
        snapshot_publisher=snapshot_publisher,
    )


def test_events_through_the_snapshot_producer_dead_letters_through_the_main_one() -> None:
    events: list[str] = []
    main = FakePublisher("main", events)
    bulk: list[FakePublisher] = []
    assert _capture(events, main, bulk).snapshot() == 7
    assert [b.acked for b in bulk] == [[("t-vud.directory.users", "u1")]]
    assert main.acked == [("t-vud.directory.dlq", "u2")]
    assert events == ["checkpoint snapshot 7", "bulk flushed 1", "main flushed 1", "checkpoint streaming 7"]
    assert bulk[0].closed and not main.closed


def test_a_failed_snapshot_flush_closes_the_snapshot_producer_and_moves_no_checkpoint() -> None:
    events: list[str] = []
    main = FakePublisher("main", events, fail_flush=1)
    bulk: list[FakePublisher] = []
    with pytest.raises(RetryableError):
        _capture(events, main, bulk).snapshot()
    assert bulk[0].closed
    assert "checkpoint streaming 7" not in events


class _Exploding(dict):  # type: ignore[type-arg]
    def __getitem__(self, key: object) -> object:
        raise RuntimeError("driver lost a column")


class RefusingPublisher(FakePublisher):
    """Refuses u1's event for its size at flush, as the adapters report it."""

    def flush(self, timeout: float = 60.0) -> int:
        big = 2_000_000
        refused = [OversizedRecord(t, k, big) for t, k, _ in self.queued if k == "u1" and "dlq" not in t]
        self.queued = [(t, k, v) for t, k, v in self.queued if k != "u1" or "dlq" in t]
        acked = super().flush(timeout)
        if refused:
            raise RecordsTooLarge(refused)
        return acked


def test_a_refused_event_and_a_row_that_raises_are_dead_letters_and_the_snapshot_completes() -> None:
    events: list[str] = []
    main = FakePublisher("main", events)
    bulk: list[FakePublisher] = []

    def snapshot_publisher() -> FakePublisher:
        bulk.append(RefusingPublisher("bulk", events))
        return bulk[-1]

    change_log = ChangeLog(events)
    change_log.users["u3"] = EntityRecord(EntityType.USER, "u3", _Exploding())
    registry = CollectorRegistry()
    capture = ChangeCapture(
        change_log,  # type: ignore[arg-type]
        main,
        ProducerMetrics(registry),
        CaptureConfig(topic_prefix="t-", fingerprint_key=b"k"),
        snapshot_publisher=snapshot_publisher,
    )
    assert capture.snapshot() == 7
    assert bulk[0].acked == []  # u1 refused for its size; u2 and u3 rejected
    assert sorted(main.acked) == [("t-vud.directory.dlq", u) for u in ("u1", "u2", "u3")]
    assert events[-1] == "checkpoint streaming 7"
    # the snapshot counts the rows it went through (rejected ones too, as before), less the refused
    assert registry.get_sample_value("vudsync_source_changes_captured_total", {"entity": "user"}) == 2
    assert registry.get_sample_value("vudsync_dlq_messages_total", {"topic": "vud.directory.dlq"}) == 3


def test_reemit_sends_the_current_state_as_the_snapshot_does_through_the_streaming_producer() -> None:
    events: list[str] = []
    main = FakePublisher("main", events)
    bulk: list[FakePublisher] = []
    sent = _capture(events, main, bulk).reemit(EntityType.USER, ["u1", "u2", "gone"])
    assert (sent.version, sent.emitted, sent.missing) == (7, ("u1",), ("gone",))
    assert "email" in sent.rejected["u2"], "reported, not dead-lettered again"
    assert main.acked == [("t-vud.directory.users", "u1")] and bulk == []
    (_topic, _key, value) = main.batches[0][0]
    assert value is not None and b'"op":"r"' in value and b'"version":7' in value
    assert not any(e.startswith("checkpoint") for e in events), "the capture's checkpoint is not its business"
