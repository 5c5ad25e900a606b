"""The planner's agent: one stream over every input, one message at a time.

Concurrency 1, deliberately: the agent writes the table, and Faust commits an offset once
every message before it is acknowledged — with ``concurrency > 1`` a finished message could be
committed past an unfinished one. One agent for all inputs also means a fact and the
directory event that needs it are never handled at the same time.
"""

from __future__ import annotations

import logging
from typing import Any

import faust

from processors.handlers import PlannerHandlers
from processors.topics import PlannerTopics

log = logging.getLogger(__name__)

AGENT_NAME = "plan"
METRICS_INTERVAL = 10.0
STALL_SECONDS = 30.0  # idle this long with records left on an assigned partition: re-read them
# ... or this long, for a partition that has had no delivery at all since its assignment: the
# record lost in a rebalance is most often the only one left (a quiet control partition's)
FIRST_DELIVERY_SECONDS = 5.0


def declare_agents(app: faust.App, topics: PlannerTopics, handlers: PlannerHandlers) -> None:
    @app.agent(topics.inputs, name=AGENT_NAME, concurrency=1)
    async def plan(stream: faust.StreamT[Any]) -> None:
        async for event in stream.events():
            await handlers.on_message(event)

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]  # mode types receivers narrowly
    async def forget_deliveries(sender: Any, *args: Any, signal: Any, **kwargs: Any) -> None:
        handlers.deliveries.forget()

    @app.timer(interval=METRICS_INTERVAL)  # type: ignore[untyped-decorator]
    async def export_gauges() -> None:
        handlers.export_gauges()

    @app.timer(interval=FIRST_DELIVERY_SECONDS / 2)  # type: ignore[untyped-decorator]
    async def reread_stalled_partitions() -> None:
        await reread_if_stalled(app, handlers, frozenset(topics.inputs.topics))


async def reread_if_stalled(app: faust.App, handlers: PlannerHandlers, inputs: frozenset[str]) -> None:
    """Read a partition of the agent's ``inputs`` again from its committed offset when it has
    records left but nothing of it reached the planner for ``STALL_SECONDS`` — or for
    ``FIRST_DELIVERY_SECONDS`` when nothing at all did since its assignment (not while
    rebalancing or recovering, nor while a message is being handled).

    Why: faust-streaming 0.15.3 marks a record as read when its delivery to the stream was
    cancelled by a rebalance (``Consumer._drain_messages``) and counts on the seek after the
    rebalance to read it again; when that seek does not come, the record is never delivered,
    its offset never committed, and the partition stalls behind its end for good (seen in the
    replay and two-worker e2e tests: one control record never handled). Judged per partition,
    so a stall is found while other partitions keep the worker busy. Reading from the committed
    offset is what Faust does after every rebalance; a record handled twice is re-planned with
    the same ids.
    """
    if app.rebalancing or app.in_recovery or handlers.in_message:
        return
    consumer = app.consumer
    try:
        quiet = [
            tp
            for tp in consumer.assignment()
            if tp.topic in inputs  # not the table's changelog: Faust reads it itself, for recovery
            and handlers.deliveries.quiet_for(tp.topic, tp.partition) >= _patience(handlers, tp)
        ]
        if not quiet:
            return
        ends = await consumer.highwaters(*quiet)
        # Faust keeps a committed 0 as None (every input partition has a committed offset:
        # prime_committed_offsets)
        committed = {tp: handlers.committed(tp.topic, tp.partition) or 0 for tp in quiet}
        stalled = {tp: offset for tp, offset in committed.items() if (ends.get(tp) or 0) > offset}
        for tp, offset in sorted(stalled.items()):
            log.warning(
                "planner: nothing of %s[%d] handled for %.0fs, committed %d of %d "
                "(fetching: %s, paused: %s): reading it again from %d",
                tp.topic,
                tp.partition,
                handlers.deliveries.quiet_for(tp.topic, tp.partition),
                offset,
                ends[tp],
                tp in (getattr(consumer, "_active_partitions", None) or ()),
                tp in getattr(consumer, "_paused_partitions", ()),
                offset,
            )
            await consumer.seek(tp, offset)
            handlers.deliveries.restart(tp.topic, tp.partition, offset)
            handlers.metrics.child(handlers.metrics.retries, "stalled").inc()
    except Exception:  # a watchdog must never take the worker down
        log.exception("planner: checking for stalled partitions failed")


def _patience(handlers: PlannerHandlers, tp: Any) -> float:
    return STALL_SECONDS if handlers.deliveries.delivered(tp.topic, tp.partition) else FIRST_DELIVERY_SECONDS

