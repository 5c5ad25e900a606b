"""Per-aggregate queues and the committable offsets: pure bookkeeping."""

from __future__ import annotations

from sinks.scheduling import AggregateQueues, OffsetTracker, Pending

TOPIC = "ops"


def item(offset: int, aggregate: str, *, partition: int = 0, batchable: bool = True) -> Pending:
    return Pending(TOPIC, partition, offset, aggregate.encode(), b"{}", object(), aggregate, batchable)


def test_one_operation_per_aggregate_in_flight_in_offset_order() -> None:
    queues = AggregateQueues()
    a1, b1, a2, a3 = item(0, "user:a"), item(1, "user:b"), item(2, "user:a"), item(3, "user:a")
    for i in (a1, b1, a2, a3):
        queues.push(i)
    assert queues.take(0.0, 10, batchable=True) == [a1, b1]  # a2 waits for a1
    assert queues.take(0.0, 10, batchable=True) == []
    queues.finish(a1)
    assert queues.take(0.0, 10, batchable=True) == [a2]
    queues.finish(b1)
    queues.finish(a2)
    assert queues.take(0.0, 10, batchable=True) == [a3]


def test_a_retried_head_blocks_its_aggregate_until_ready_but_not_others() -> None:
    queues = AggregateQueues()
    a1, a2, b1 = item(0, "user:a"), item(1, "user:a"), item(2, "user:b")
    for i in (a1, a2, b1):
        queues.push(i)
    assert queues.take(0.0, 10, batchable=True) == [a1, b1]
    queues.retry(a1, not_before=5.0)
    queues.finish(b1)
    assert queues.take(4.9, 10, batchable=True) == []
    assert queues.next_ready_at() == 5.0
    assert queues.take(5.0, 10, batchable=True) == [a1]  # the same head again, a2 still waits
    queues.finish(a1)
    assert queues.take(5.0, 10, batchable=True) == [a2]


def test_batchable_and_single_heads_are_taken_separately() -> None:
    queues = AggregateQueues()
    simple, multi = item(0, "role:x"), item(1, "company:c", batchable=False)
    queues.push(simple)
    queues.push(multi)
    assert queues.ready_count(0.0) == (1, 1)
    assert queues.take(0.0, 10, batchable=False) == [multi]
    assert queues.take(0.0, 10, batchable=True) == [simple]


def test_a_head_the_batch_could_not_finish_goes_single() -> None:
    queues = AggregateQueues()
    head = item(0, "user:a")
    queues.push(head)
    assert queues.take(0.0, 10, batchable=True) == [head]
    head.single_only = True
    queues.retry(head, 0.0)
    assert queues.take(0.0, 10, batchable=True) == []
    assert queues.take(0.0, 10, batchable=False) == [head]


def test_drop_forgets_revoked_partitions_and_reassign_accepts_them_again() -> None:
    queues = AggregateQueues()
    a1, a2 = item(0, "user:a", partition=0), item(1, "user:a", partition=0)
    b1 = item(0, "user:b", partition=1)
    for i in (a1, a2, b1):
        queues.push(i)
    taken = queues.take(0.0, 10, batchable=True)
    assert taken == [a1, b1]
    assert queues.drop([(TOPIC, 0)]) == 2
    assert queues.queued == 1
    queues.finish(a1)  # the call in flight ends after the revocation: no effect
    assert queues.take(0.0, 10, batchable=True) == []
    queues.reassigned([(TOPIC, 0)])
    again = item(0, "user:a", partition=0)
    queues.push(again)
    assert queues.take(0.0, 10, batchable=True) == [again]


def test_commit_only_the_longest_finished_prefix() -> None:
    tracker = OffsetTracker()
    tp = (TOPIC, 0)
    for offset in range(10, 15):
        tracker.take(tp, offset)
    tracker.finish(tp, 11)
    tracker.finish(tp, 12)
    assert tracker.committable() == {}  # 10 is not finished: nothing may be committed
    tracker.finish(tp, 10)
    assert tracker.committable() == {tp: 13}
    tracker.committed({tp: 13})
    assert tracker.committable() == {}  # unchanged since the last commit
    assert tracker.outstanding() == 2
    tracker.finish(tp, 14)
    tracker.finish(tp, 13)
    assert tracker.committable() == {tp: 15}


def test_partitions_are_tracked_independently_and_dropped() -> None:
    tracker = OffsetTracker()
    p0, p1 = (TOPIC, 0), (TOPIC, 1)
    tracker.take(p0, 0)
    tracker.take(p1, 7)
    tracker.finish(p1, 7)
    assert tracker.committable() == {p1: 8}
    assert tracker.committable([p0]) == {}
    tracker.drop([p0, p1])
    tracker.finish(p0, 0)  # after the revocation: ignored
    assert tracker.committable() == {} and tracker.outstanding() == 0


def test_a_late_finish_from_before_a_revocation_counts_for_nothing() -> None:
    tracker = OffsetTracker()
    tp = (TOPIC, 0)
    old = tracker.take(tp, 0)
    tracker.take(tp, 1)
    tracker.drop([tp])  # revoked, then taken up again from the committed offset
    new = tracker.take(tp, 0)
    tracker.take(tp, 1)
    assert new != old
    tracker.finish(tp, 1, old)  # the old epoch's call ends late
    tracker.finish(tp, 0, new)
    assert tracker.committable() == {tp: 1}  # offset 1 of the new epoch is still open
    assert tracker.outstanding() == 1
