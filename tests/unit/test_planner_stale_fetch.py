"""A fetch that outlives a rebalance: what it takes, and ``put_back_stale_fetches``.

The survivor of the two-worker kill test once in about ten runs never finished recovering its
table: a fetch Faust's drain loop started before the rebalance waited it out in the consumer
thread, then drained the changelog records recovery had just positioned for, with Faust's
(by then empty) set of active partitions — and Faust dropped them, the flow being stopped.

Reproduced here deterministically with the upstream code itself — Faust's
``AIOKafkaConsumerThread.getmany``/``_fetch_records`` and aiokafka's
``Fetcher.fetched_records`` and partition states — run on fakes of their owners, in one event
loop (``call_thread`` calls the function directly). A change of either library's behaviour
fails the first test; the others pin the fix.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Iterator
from types import MethodType, SimpleNamespace
from typing import Any

from aiokafka.consumer.fetcher import Fetcher, FetchResult
from aiokafka.consumer.subscription_state import SubscriptionState
from aiokafka.structs import TopicPartition
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

from processors.faust_compat import _guard_consumer_thread

STREAM = TopicPartition("vud.planner.facts", 1)
CHANGELOG = TopicPartition("vudsync-planner-state-changelog", 1)


class Batch:
    """aiokafka's ``PartitionRecords`` as ``FetchResult`` uses it: records in offset order and
    the offset after the last one handed out."""

    def __init__(self, tp: TopicPartition, offsets: range) -> None:
        self._records: Iterator[Any] = iter(
            SimpleNamespace(topic=tp.topic, partition=tp.partition, offset=o) for o in offsets
        )
        self.next_fetch_offset = offsets.start

    def __iter__(self) -> Batch:
        return self

    def __next__(self) -> Any:
        record = next(self._records)
        self.next_fetch_offset = record.offset + 1
        return record


class World:
    """One consumer thread, its aiokafka consumer and fetcher, and Faust's consumer."""

    def __init__(self, positions: dict[TopicPartition, int]) -> None:
        self.subscriptions = SubscriptionState()
        self.subscriptions.subscribe({tp.topic for tp in positions})
        self.subscriptions.assign_from_subscribed(set(positions))
        for tp, offset in positions.items():
            self.subscriptions.seek(tp, offset)
        fetcher: Any = SimpleNamespace(
            _subscriptions=self.subscriptions,
            _records=collections.OrderedDict(),
            _fetch_waiters=set(),
            _loop=asyncio.get_running_loop(),
            _closed=False,
            _wait_consume_future=None,
        )
        fetcher._notify = MethodType(Fetcher._notify, fetcher)
        fetcher._create_fetch_waiter = MethodType(Fetcher._create_fetch_waiter, fetcher)
        fetcher.fetched_records = MethodType(Fetcher.fetched_records, fetcher)
        self.fetcher = fetcher
        self.kafka: Any = SimpleNamespace(_fetcher=fetcher, _closed=False, _max_poll_records=None)
        self.kafka.seek = self.subscriptions.seek
        # Faust's consumer: the flow, and the live set its drain loop fetches with
        self.faust: Any = SimpleNamespace(
            flow_active=True, _active_partitions={STREAM}, _buffered_partitions=set()
        )
        thread: Any = SimpleNamespace(consumer=self.faust, _ensure_consumer=lambda: self.kafka)

        async def call_thread(fun: Any, *args: Any, **kwargs: Any) -> Any:
            return await fun(*args, **kwargs)

        thread.call_thread = call_thread
        thread.getmany = MethodType(AIOKafkaConsumerThread.getmany, thread)
        thread._fetch_records = MethodType(AIOKafkaConsumerThread._fetch_records, thread)
        self.thread = thread

    def position(self, tp: TopicPartition) -> int:
        return int(self.subscriptions.subscription.assignment.state_value(tp).position)

    def arrive(self, tp: TopicPartition, offsets: range) -> None:
        """A fetch response: records buffered, waiting fetches woken."""
        self.fetcher._records[tp] = FetchResult(
            tp,
            partition_records=Batch(tp, offsets),
            assignment=self.subscriptions.subscription.assignment,
            backoff=0.1,
        )
        for waiter in list(self.fetcher._fetch_waiters):
            self.fetcher._notify(waiter)

    async def fetch_outliving_a_rebalance(self) -> dict[Any, list[Any]]:
        """The drain loop fetches with the flow on and the stream partition active; while the
        fetch waits, a rebalance stops the flow and pauses every partition (Faust's set is
        emptied), recovery positions the changelog at 0 and its records come in."""
        fetch = asyncio.create_task(self.thread.getmany(self.faust._active_partitions, 5.0))
        for _ in range(3):
            await asyncio.sleep(0)
        assert not fetch.done() and self.fetcher._fetch_waiters, "the fetch waits for data"
        self.faust.flow_active = False  # Consumer.stop_flow (on_partitions_revoked)
        self.faust._active_partitions.clear()  # pause_partitions(assigned)
        self.arrive(CHANGELOG, range(0, 3))
        self.arrive(STREAM, range(7, 9))
        result: dict[Any, list[Any]] = await asyncio.wait_for(fetch, 5.0)
        return result


def offsets(taken: dict[Any, list[Any]]) -> dict[Any, list[int]]:
    return {tp: [r.offset for r in rs] for tp, rs in taken.items()}


def guarded(positions: dict[TopicPartition, int]) -> World:
    world = World(positions)
    _guard_consumer_thread(world.thread)
    return world


async def test_upstream_a_fetch_outliving_a_rebalance_takes_every_partition_while_the_flow_is_stopped() -> (
    None
):
    """The loss itself (faust-streaming 0.15.3, aiokafka 0.14.0): the fetch drains the
    changelog it was never asked for and moves its position past the records, which Faust's
    ``getmany`` then drops (flow stopped) and ``perform_seek`` never rewinds (no committed
    offset). If this fails, the upstream behaviour changed: re-check ``put_back_stale_fetches``."""
    world = World({STREAM: 7, CHANGELOG: 0})
    taken = await world.fetch_outliving_a_rebalance()
    assert offsets(taken) == {CHANGELOG: [0, 1, 2], STREAM: [7, 8]}
    assert world.faust.flow_active is False  # what Faust's getmany drops
    assert (world.position(CHANGELOG), world.position(STREAM)) == (3, 9)


async def test_a_fetch_outliving_a_rebalance_takes_only_what_it_was_asked_for_and_puts_it_back() -> None:
    world = guarded({STREAM: 7, CHANGELOG: 0})
    assert await world.fetch_outliving_a_rebalance() == {}
    assert world.position(CHANGELOG) == 0, "the changelog is left for recovery to read"
    assert world.position(STREAM) == 7, "the stream partition's records are put back"
    # recovery resumes the changelog and the flow: its records come, from the start
    world.faust._active_partitions.add(CHANGELOG)
    world.faust.flow_active = True
    assert offsets(await world.thread.getmany(world.faust._active_partitions, 1.0)) == {CHANGELOG: [0, 1, 2]}
    assert world.position(CHANGELOG) == 3


async def test_records_of_a_partition_faust_stopped_reading_meanwhile_are_put_back() -> None:
    """Flow on, but the partition left Faust's active set while the fetch waited (a table
    recovery pausing the stream partitions): the fetch, asked with a copy of the set, takes
    its records — Faust's ``getmany`` would drop them silently; they are put back."""
    world = guarded({STREAM: 7, CHANGELOG: 0})
    world.faust._active_partitions.add(CHANGELOG)
    fetch = asyncio.create_task(world.thread.getmany(world.faust._active_partitions, 5.0))
    for _ in range(3):
        await asyncio.sleep(0)
    world.faust._active_partitions.discard(STREAM)
    world.arrive(STREAM, range(7, 9))
    world.arrive(CHANGELOG, range(0, 2))
    assert offsets(await asyncio.wait_for(fetch, 5.0)) == {CHANGELOG: [0, 1]}
    assert (world.position(STREAM), world.position(CHANGELOG)) == (7, 2)


async def test_a_fetch_with_the_flow_on_hands_everything_over() -> None:
    world = guarded({STREAM: 7, CHANGELOG: 0})
    world.arrive(STREAM, range(7, 10))
    assert offsets(await world.thread.getmany(world.faust._active_partitions, 1.0)) == {STREAM: [7, 8, 9]}
    assert world.position(STREAM) == 10


async def test_nothing_is_fetched_for_an_empty_set_of_partitions() -> None:
    """aiokafka takes an empty set for every partition; Faust never asks with one, and the
    copy taken when the fetch is asked for cannot become one."""
    world = guarded({STREAM: 7, CHANGELOG: 0})
    world.arrive(CHANGELOG, range(0, 3))
    assert await world.thread.getmany(set(), 1.0) == {}
    assert world.position(CHANGELOG) == 0
