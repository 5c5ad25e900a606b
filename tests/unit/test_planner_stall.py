"""The planner's stall watchdog and its delivery record (pure decisions, fake Faust objects:
no broker)."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pytest
from faust.types import TP
from prometheus_client import CollectorRegistry

from processors.faust_compat import (
    FIRST_DELIVERY_SECONDS,
    STALL_SECONDS,
    STUCK_REBALANCE_SECONDS,
    Deliveries,
    committed_offsets,
    reread_if_stalled,
)
from processors.metrics import PlannerMetrics
from tests.fakes import FakeClock

USERS0 = TP("vud.directory.users", 0)
USERS1 = TP("vud.directory.users", 1)
CONTROL0 = TP("vud.planner.control", 0)
CHANGELOG0 = TP("vudsync-planner-state-changelog", 0)
INPUTS = frozenset({USERS0.topic, CONTROL0.topic})


class FakeConsumer:
    """What the watchdog uses of Faust's consumer. Faust keeps a committed offset of 0 as None.
    ``positions``: how far the fetcher handed records over to Faust (default: all of them)."""

    def __init__(
        self, committed: dict[TP, int | None], ends: dict[TP, int], positions: dict[TP, int] | None = None
    ) -> None:
        self._committed_offset = committed
        self.ends = ends
        self.positions = dict(ends) if positions is None else positions
        self.seeks: list[tuple[TP, int]] = []

    def assignment(self) -> set[TP]:
        return set(self.ends)

    async def highwaters(self, *tps: TP) -> dict[TP, int]:
        return {tp: self.ends[tp] for tp in tps}

    async def position(self, tp: TP) -> int:
        return self.positions[tp]

    async def seek(self, tp: TP, offset: int) -> None:
        self.seeks.append((tp, offset))


def app(consumer: FakeConsumer, **flags: Any) -> Any:
    return SimpleNamespace(
        consumer=consumer,
        rebalancing=flags.get("rebalancing", False),
        in_recovery=flags.get("recovery", False),
    )


def handlers(
    clock: FakeClock, consumer: FakeConsumer, delivered: dict[TP, float], in_message: bool = False
) -> Any:
    """Handlers whose last delivery per partition was ``delivered[tp]`` seconds ago; partitions
    not named had nothing delivered since their assignment ``STALL_SECONDS + 1`` ago. Committed
    offsets as the worker reads them (``committed_offsets``, from the consumer)."""
    deliveries = Deliveries(clock=clock)
    clock.now -= STALL_SECONDS + 1
    deliveries.forget()
    clock.now += STALL_SECONDS + 1
    for tp, ago in delivered.items():
        clock.now -= ago
        deliveries.observe(tp.topic, tp.partition, 0)
        clock.now += ago
    return SimpleNamespace(
        deliveries=deliveries,
        in_message=in_message,
        metrics=PlannerMetrics(CollectorRegistry()),
        committed=committed_offsets(app(consumer)),
    )


async def test_a_partition_quiet_with_records_left_is_read_again_from_its_committed_offset() -> None:
    clock = FakeClock()
    # lag 1 on users[0] (committed 1, end 2); users[1] caught up
    consumer = FakeConsumer({USERS0: 1, USERS1: 5}, {USERS0: 2, USERS1: 5})
    h = handlers(clock, consumer, {USERS0: STALL_SECONDS + 1, USERS1: STALL_SECONDS + 1})
    await reread_if_stalled(app(consumer), h, INPUTS)
    assert consumer.seeks == [(USERS0, 1)]
    assert h.metrics.retries.labels(reason="stalled")._value.get() == 1
    assert h.deliveries.quiet_for(USERS0.topic, USERS0.partition) == 0  # the next look waits


async def test_a_stall_is_found_while_other_partitions_keep_the_worker_busy() -> None:
    clock = FakeClock()
    # the control record at offset 0 never handled (Faust keeps the committed 0 as None);
    # users[1] handled a message a moment ago and has more to come
    consumer = FakeConsumer({CONTROL0: None, USERS1: 5}, {CONTROL0: 1, USERS1: 900})
    await reread_if_stalled(app(consumer), handlers(clock, consumer, {USERS1: 0.1}), INPUTS)
    assert consumer.seeks == [(CONTROL0, 0)]


async def test_no_seek_while_delivering_caught_up_handling_rebalancing_or_recovering() -> None:
    lagging = {USERS0: 1}, {USERS0: 2}
    stalled = {USERS0: STALL_SECONDS + 1}
    cases: list[tuple[FakeConsumer, dict[TP, float], dict[str, bool]]] = [
        (FakeConsumer(*lagging), {USERS0: 1}, {}),  # delivered a second ago
        (FakeConsumer({USERS0: 2}, {USERS0: 2}), stalled, {}),  # nothing left
        (FakeConsumer(*lagging), stalled, {"rebalancing": True}),
        (FakeConsumer(*lagging), stalled, {"recovery": True}),
        (FakeConsumer(*lagging), stalled, {"in_message": True}),  # a message in hand (retrying)
        # the table's changelog (assigned, paused, read by Faust's recovery): never the agent's
        (FakeConsumer({CHANGELOG0: None}, {CHANGELOG0: 15}), {}, {}),
    ]
    for consumer, delivered, flags in cases:
        clock = FakeClock()
        h = handlers(clock, consumer, delivered, in_message=flags.pop("in_message", False))
        await reread_if_stalled(app(consumer, **flags), h, INPUTS)
        assert consumer.seeks == [], (consumer.ends, delivered, flags)


def test_deliveries_name_the_offsets_skipped_and_accept_going_back() -> None:
    clock = FakeClock()
    d = Deliveries(clock=clock)
    assert d.observe("t", 0, 5) is None  # committed offset not known: the first sets the baseline
    assert d.observe("t", 0, 6) is None
    assert d.observe("t", 0, 9) == (7, 8)  # 7 and 8 never delivered
    assert d.observe("t", 0, 3) is None  # a seek back after a rebalance re-reads
    assert d.observe("t", 1, 40) is None  # partitions are independent
    clock.now += 12
    assert d.quiet_for("t", 0) == 12
    d.forget()  # partitions revoked: the next delivery is a new baseline
    assert d.observe("t", 0, 100) is None
    assert d.quiet_for("t", 2) == 0  # never delivered: quiet since the assignment


def test_the_first_delivery_after_an_assignment_is_expected_at_the_committed_offset() -> None:
    committed = {("t", 0): 10, ("t", 1): 4}
    d = Deliveries(lambda topic, partition: committed.get((topic, partition)))
    assert d.observe("t", 0, 10) is None
    assert d.observe("t", 1, 6) == (4, 5)  # 4 and 5 lost in the rebalance: read from 4 again


def test_after_a_seek_the_partition_is_expected_at_the_offset_sought() -> None:
    d = Deliveries()
    d.observe("t", 0, 10)
    d.restart("t", 0, 4)  # the stall watchdog seeks back to 4
    assert d.observe("t", 0, 4) is None
    assert d.observe("t", 0, 5) is None
    assert d.observe("t", 0, 9) == (6, 8)  # a hole after the seek is a hole like any other


def test_faust_s_committed_zero_is_zero_and_an_unknown_offset_none() -> None:
    consumer = FakeConsumer({CONTROL0: None, USERS0: 7}, {CONTROL0: 1, USERS0: 9})
    committed = committed_offsets(app(consumer))
    assert committed(CONTROL0.topic, CONTROL0.partition) == 0  # Faust's None for a committed 0
    assert committed(USERS0.topic, USERS0.partition) == 7
    assert committed(USERS1.topic, USERS1.partition) is None  # never assigned here
    # so a record lost at offset 0 is noticed at the next delivery
    d = Deliveries(committed)
    assert d.observe(CONTROL0.topic, CONTROL0.partition, 1) == (0, 0)


async def test_a_partition_with_nothing_delivered_since_its_assignment_is_read_again_sooner() -> None:
    """The record a rebalance loses is most often the only one left: no later delivery shows
    the hole, so the watchdog gives a partition that has had no delivery at all since its
    assignment FIRST_DELIVERY_SECONDS, not STALL_SECONDS."""
    clock = FakeClock()
    consumer = FakeConsumer({CONTROL0: None, USERS0: 1}, {CONTROL0: 1, USERS0: 2})
    deliveries = Deliveries(clock=clock)
    deliveries.forget()  # the assignment
    deliveries.observe(USERS0.topic, USERS0.partition, 0)  # users[0] had a delivery since
    h = SimpleNamespace(
        deliveries=deliveries,
        in_message=False,
        metrics=PlannerMetrics(CollectorRegistry()),
        committed=committed_offsets(app(consumer)),
    )
    clock.now += FIRST_DELIVERY_SECONDS - 0.5
    await reread_if_stalled(app(consumer), h, INPUTS)
    assert consumer.seeks == []  # Faust is given its moment to deliver
    clock.now += 1
    await reread_if_stalled(app(consumer), h, INPUTS)
    assert consumer.seeks == [(CONTROL0, 0)]  # users[0] lags too, but it had a delivery: 30 s
    clock.now += FIRST_DELIVERY_SECONDS + 1
    await reread_if_stalled(app(consumer), h, INPUTS)
    assert consumer.seeks == [(CONTROL0, 0)]  # sought once; now a partition like any other
    clock.now += STALL_SECONDS
    await reread_if_stalled(app(consumer), h, INPUTS)
    assert consumer.seeks[1:] == sorted([(CONTROL0, 0), (USERS0, 1)])  # both idle 30 s: both


async def test_the_first_delivery_is_waited_for_from_the_end_of_the_rebalance_and_recovery() -> None:
    """The survivor of the two-worker kill test recovered its table for seconds after the
    revocation; counted from the revocation, the first-delivery patience had run out when
    Faust resumed fetching, and the watchdog sought every partition while Faust's own first
    fetch was on its way. Counted from the end of the rebalance, Faust gets its moment."""
    clock = FakeClock()
    consumer = FakeConsumer({USERS0: None, CONTROL0: None}, {USERS0: 8, CONTROL0: 1})
    h = handlers(clock, consumer, {})  # revoked and assigned STALL_SECONDS + 1 ago
    for flags in ({"rebalancing": True}, {"rebalancing": True, "recovery": True}, {"rebalancing": True}):
        clock.now += FIRST_DELIVERY_SECONDS  # a slow recovery: far past the patience in all
        await reread_if_stalled(app(consumer, **flags), h, INPUTS)
    assert consumer.seeks == []
    clock.now += 1  # the first look after it: Faust fetches again, the wait starts here
    await reread_if_stalled(app(consumer), h, INPUTS)
    clock.now += FIRST_DELIVERY_SECONDS - 0.5  # not yet delivered
    await reread_if_stalled(app(consumer), h, INPUTS)
    assert consumer.seeks == []
    clock.now += 1  # still nothing delivered: now it is a lost delivery
    await reread_if_stalled(app(consumer), h, INPUTS)
    assert consumer.seeks == [(USERS0, 0), (CONTROL0, 0)]


async def test_a_partition_not_fetched_past_its_committed_offset_is_never_sought() -> None:
    """A lost delivery is a record Faust took from the fetcher (its position moved past it) and
    never handed over; at the committed offset nothing was taken, so nothing can be lost — the
    fetch is merely slow (five seconds seen under load) and a seek would race it."""
    clock = FakeClock()
    consumer = FakeConsumer({USERS0: 3, CONTROL0: None}, {USERS0: 8, CONTROL0: 1}, {USERS0: 3, CONTROL0: 0})
    h = handlers(clock, consumer, {})  # assigned STALL_SECONDS + 1 ago, nothing delivered
    await reread_if_stalled(app(consumer), h, INPUTS)
    assert consumer.seeks == []
    consumer.positions[CONTROL0] = 1  # Faust took the control record, the planner never got it
    await reread_if_stalled(app(consumer), h, INPUTS)
    assert consumer.seeks == [(CONTROL0, 0)]


async def test_a_rebalance_that_never_ends_is_reported_once_with_every_stack(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A survivor's table recovery once got no changelog record for minutes, and nothing in
    its log said where it waited: the watchdog logs every task's and thread's stack, once per
    rebalance, when one lasts STUCK_REBALANCE_SECONDS."""
    clock = FakeClock()
    consumer = FakeConsumer({USERS0: 1}, {USERS0: 2})
    h = handlers(clock, consumer, {})
    stuck = app(consumer, rebalancing=True, recovery=True)

    def reports() -> list[str]:
        messages = [r.getMessage() for r in caplog.records]
        return [m for m in messages if "where every task and thread waits" in m]

    with caplog.at_level(logging.WARNING, logger="processors.faust_compat"):
        await reread_if_stalled(stuck, h, INPUTS)
        clock.now += STUCK_REBALANCE_SECONDS - 1
        await reread_if_stalled(stuck, h, INPUTS)
        assert reports() == []
        clock.now += 1
        await reread_if_stalled(stuck, h, INPUTS)
        clock.now += STUCK_REBALANCE_SECONDS
        await reread_if_stalled(stuck, h, INPUTS)
        assert len(reports()) == 1
        assert "test_a_rebalance_that_never_ends" in reports()[0]  # this task's own stack
        assert "thread " in reports()[0]
        assert "consumer state:" in reports()[0]  # what the consumer holds, best effort on a fake
        await reread_if_stalled(app(consumer), h, INPUTS)  # it ended; the next one may be reported
        await reread_if_stalled(stuck, h, INPUTS)
        clock.now += STUCK_REBALANCE_SECONDS
        await reread_if_stalled(stuck, h, INPUTS)
        assert len(reports()) == 2
    assert consumer.seeks == []
