"""The PostgreSQL reader's ordering rule (pure): never step over a seq that may still appear."""

from __future__ import annotations

from producers.model import ChangeRow
from producers.postgres_changelog import Barrier, Snapshot, accept_in_order, full_xid
from schemas.directory import EntityType


def rows(*seqs: int) -> list[ChangeRow]:
    return [ChangeRow(s, EntityType.USER, f"u{s}", "u", 0.0) for s in seqs]


def test_contiguous_rows_flow_at_once() -> None:
    assert [r.seq for r in accept_in_order(rows(5, 6, 7), after_seq=4, settled=0)] == [5, 6, 7]


def test_stops_before_an_unsettled_gap() -> None:
    assert [r.seq for r in accept_in_order(rows(5, 7, 8), after_seq=4, settled=4)] == [5]
    assert accept_in_order(rows(6, 7), after_seq=4, settled=4) == []


def test_steps_over_a_settled_gap() -> None:
    assert [r.seq for r in accept_in_order(rows(5, 7, 8, 11), after_seq=4, settled=9)] == [5, 7, 8]
    assert [r.seq for r in accept_in_order(rows(5, 7, 8, 11), after_seq=4, settled=10)] == [5, 7, 8, 11]


def test_a_transaction_has_ended_once_it_left_the_snapshot() -> None:
    snapshot = Snapshot(xmin=100, xmax=110, xip=frozenset({100, 104}))
    assert snapshot.has_ended(99)  # below xmin
    assert snapshot.has_ended(103)  # finished between xmin and xmax
    assert not snapshot.has_ended(104)  # still in progress
    assert not snapshot.has_ended(110)  # not even started when the snapshot was taken


def test_a_barrier_passes_when_all_its_transactions_ended() -> None:
    barrier = Barrier(seq=50, xids=frozenset({100, 104}))
    assert not barrier.passed(Snapshot(100, 110, frozenset({104})))
    assert not barrier.passed(Snapshot(101, 112, frozenset({104, 111})))
    assert barrier.passed(Snapshot(105, 112, frozenset({111})))
    assert Barrier(seq=50, xids=frozenset()).passed(Snapshot(1, 1, frozenset()))


def test_a_32_bit_lock_xid_is_placed_in_the_epoch_of_the_snapshot_near_it() -> None:
    epoch = 3 << 32
    assert full_xid(731, near=epoch + 730) == epoch + 731  # running, above the snapshot's xmax
    assert full_xid(700, near=epoch + 730) == epoch + 700
    # around a wrap of the 32-bit counter: the previous epoch, or the next
    assert full_xid(2**32 - 5, near=epoch + 10) == epoch - 5
    assert full_xid(3, near=epoch - 10) == epoch + 3


def test_a_writer_above_the_snapshots_xmax_holds_the_barrier_until_it_ends() -> None:
    # xmax is the newest completed xid + 1: writer 731 (seq 2) is running yet in no xip
    barrier = Barrier(seq=3, xids=frozenset({731}))
    assert not barrier.passed(Snapshot(xmin=730, xmax=730, xip=frozenset()))
    assert not barrier.passed(Snapshot(xmin=731, xmax=732, xip=frozenset({731})))
    assert barrier.passed(Snapshot(xmin=732, xmax=732, xip=frozenset()))
