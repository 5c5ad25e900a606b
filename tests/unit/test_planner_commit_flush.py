"""The flush before a commit waits for every record of Faust's producer buffer.

faust-streaming 0.15.3's ``ProducerBuffer.flush`` returns as soon as no record has left the
buffer for 0.1 s; the commit that follows then passes records (the table's changelog writes)
still in it. These tests run Faust's own buffer on an event loop, with the step that hands a
record to the Kafka producer slowed down (what a CPU-starved loop or a slow broker does).
"""

from __future__ import annotations

import asyncio
from typing import Any

import faust

from processors.faust_compat import drain_buffer_before_commit

STEP = 0.25  # seconds to hand one record on: more than Faust's 0.1 s patience


def _app() -> faust.App:
    return faust.App("commit-flush-test", broker="kafka://127.0.0.1:9", web_enabled=False, autodiscover=False)


def _slow(buffer: Any, handed: list[str]) -> None:
    async def hand_on(fut: Any) -> None:
        await asyncio.sleep(STEP)
        handed.append(fut)

    buffer._send_pending = hand_on


async def _flush_with(records: list[str], drain: bool) -> tuple[list[str], int]:
    app = _app()
    buffer: Any = app.producer.buffer
    handed: list[str] = []
    _slow(buffer, handed)
    if drain:
        drain_buffer_before_commit(app)
    await buffer.start()
    try:
        for record in records:
            buffer.put(record)
        await buffer.flush()
        return list(handed), buffer.size
    finally:
        while not buffer.pending.empty():  # Faust's stop refuses to leave records behind
            buffer.pending.get_nowait()
        await buffer.stop()


def test_fausts_own_flush_gives_up_with_records_left() -> None:
    """Pins the defect the planner works around: when this fails, Faust waits for all itself."""
    handed, left = asyncio.run(_flush_with(["r1", "r2", "r3"], drain=False))
    assert len(handed) < 3 and left > 0


def test_the_planners_flush_waits_for_every_record() -> None:
    handed, left = asyncio.run(_flush_with(["r1", "r2", "r3"], drain=True))
    assert handed == ["r1", "r2", "r3"] and left == 0


def test_an_empty_buffer_flushes_at_once() -> None:
    handed, left = asyncio.run(_flush_with([], drain=True))
    assert (handed, left) == ([], 0)
