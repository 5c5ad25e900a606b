"""The planner's stall watchdog (pure decision, fake Faust objects: no broker)."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

from faust.types import TP

from processors.agents import STALL_SECONDS, reread_if_stalled

USERS0 = TP("vud.directory.users", 0)
USERS1 = TP("vud.directory.users", 1)


class FakeConsumer:
    def __init__(self, committed: dict[TP, int], ends: dict[TP, int]) -> None:
        self._committed_offset = committed
        self.ends = ends
        self.seeks = 0

    def assignment(self) -> set[TP]:
        return set(self.ends)

    def highwater(self, tp: TP) -> int:
        return self.ends[tp]

    async def perform_seek(self) -> None:
        self.seeks += 1


def app(consumer: FakeConsumer, **flags: Any) -> Any:
    return SimpleNamespace(
        consumer=consumer,
        rebalancing=flags.get("rebalancing", False),
        in_recovery=flags.get("recovery", False),
    )


def idle(seconds: float) -> Any:
    return SimpleNamespace(last_message_at=time.monotonic() - seconds)


async def test_an_idle_worker_with_records_left_reads_them_again() -> None:
    consumer = FakeConsumer({USERS0: 1, USERS1: 5}, {USERS0: 2, USERS1: 5})  # lag 1 on users[0]
    handlers = idle(STALL_SECONDS + 1)
    await reread_if_stalled(app(consumer), handlers)
    assert consumer.seeks == 1
    assert time.monotonic() - handlers.last_message_at < 1  # the next look waits a full period


async def test_no_seek_while_busy_caught_up_rebalancing_or_recovering() -> None:
    lagging = {USERS0: 1}, {USERS0: 2}
    cases = [
        (FakeConsumer(*lagging), idle(1), {}),  # handled a message a second ago
        (FakeConsumer({USERS0: 2}, {USERS0: 2}), idle(STALL_SECONDS + 1), {}),  # nothing left
        (FakeConsumer(*lagging), idle(STALL_SECONDS + 1), {"rebalancing": True}),
        (FakeConsumer(*lagging), idle(STALL_SECONDS + 1), {"recovery": True}),
        (FakeConsumer({}, {USERS0: 2}), idle(STALL_SECONDS + 1), {}),  # never committed: not ours
    ]
    for consumer, handlers, flags in cases:
        await reread_if_stalled(app(consumer, **flags), handlers)
        assert consumer.seeks == 0, (consumer.ends, flags)
