"""The planner's agent: one stream over every input, one message at a time.

Concurrency 1, deliberately: the agent writes the table, and Faust commits an offset once
every message before it is acknowledged — with ``concurrency > 1`` a finished message could be
committed past an unfinished one. One agent for all inputs also means a fact and the
directory event that needs it are never handled at the same time.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import faust

from processors.handlers import PlannerHandlers
from processors.topics import PlannerTopics

log = logging.getLogger(__name__)

AGENT_NAME = "plan"
METRICS_INTERVAL = 10.0
STALL_SECONDS = 30.0  # idle this long with records left on an assigned partition: re-read them


def declare_agents(app: faust.App, topics: PlannerTopics, handlers: PlannerHandlers) -> None:
    @app.agent(topics.inputs, name=AGENT_NAME, concurrency=1)
    async def plan(stream: faust.StreamT[Any]) -> None:
        async for event in stream.events():
            await handlers.on_message(event)

    @app.timer(interval=METRICS_INTERVAL)  # type: ignore[untyped-decorator]
    async def export_gauges() -> None:
        handlers.export_gauges()

    @app.timer(interval=STALL_SECONDS / 3)  # type: ignore[untyped-decorator]
    async def reread_stalled_partitions() -> None:
        await reread_if_stalled(app, handlers)


async def reread_if_stalled(app: faust.App, handlers: PlannerHandlers) -> None:
    """Seek every assigned partition to its committed offset when the worker has been idle for
    ``STALL_SECONDS`` while records lie beyond a committed offset.

    Why: faust-streaming 0.15.3 marks a record as read when its delivery to the stream was
    cancelled by a rebalance (``Consumer._drain_messages``) and counts on the seek after the
    rebalance to read it again; when that seek does not come (no further rebalance), the record
    is never delivered, its offset never committed, and the partition stalls with lag 1 for
    good (seen in the replay e2e test). Reading from the committed offset again is what Faust
    does after every rebalance; a record handled twice is re-planned with the same ids.
    """
    if app.rebalancing or app.in_recovery:
        return
    if time.monotonic() - handlers.last_message_at < STALL_SECONDS:
        return
    consumer = app.consumer
    try:
        # the committed offsets Faust's consumer keeps (what it seeks back to after a rebalance)
        committed_offsets = getattr(consumer, "_committed_offset", {})
        stalled = [
            tp
            for tp in consumer.assignment()
            if (committed := committed_offsets.get(tp)) is not None
            and (end := consumer.highwater(tp)) is not None
            and end > committed
        ]
        if stalled:
            log.warning(
                "planner: no progress for %.0fs with records left on %s: reading them again",
                STALL_SECONDS,
                sorted(f"{tp.topic}[{tp.partition}]" for tp in stalled),
            )
            await consumer.perform_seek()
            handlers.last_message_at = time.monotonic()
    except Exception:  # a watchdog must never take the worker down
        log.exception("planner: checking for stalled partitions failed")
