"""The planner's agent: one stream over every input, in batches.

Concurrency 1, deliberately: the agent writes the table, and Faust commits an offset once
every message before it is acknowledged — with ``concurrency > 1`` a finished message could be
committed past an unfinished one. One agent for all inputs also means a fact and the
directory event that needs it are never handled at the same time.

Batches (``take_events``): up to :data:`BATCH_MAX` messages, or what arrived within
:data:`BATCH_WITHIN` seconds, planned together (:meth:`processors.engine.Reconciler.on_batch`)
— one send of every record, one wait for the broker's acknowledgements, one write per table
key. ``take_events`` acknowledges a batch's events after the agent handled it — and, upstream,
also when the agent is cancelled mid-batch; :func:`processors.faust_compat.ack_only_when_handled`
keeps those unacknowledged, so no offset is committed before its message is done.
"""

from __future__ import annotations

import logging
from typing import Any

import faust

from processors.faust_compat import FIRST_DELIVERY_SECONDS, ack_only_when_handled, reread_if_stalled
from processors.handlers import PlannerHandlers
from processors.topics import PlannerTopics

log = logging.getLogger(__name__)

AGENT_NAME = "plan"
METRICS_INTERVAL = 5.0  # seconds between gauge refreshes: what `vudsync status` reads
GATE_TICK_INTERVAL = 1.0  # the gate's clock while deletions settle (a few seconds by default)
#: messages per batch at most; a full batch is handed over at once
BATCH_MAX = 500
#: seconds a batch waits for more messages before it is handled anyway (a quiet moment's latency)
BATCH_WITHIN = 0.05


def declare_agents(app: faust.App, topics: PlannerTopics, handlers: PlannerHandlers) -> None:
    @app.agent(topics.inputs, name=AGENT_NAME, concurrency=1)
    async def plan(stream: faust.StreamT[Any]) -> None:
        # StreamT does not declare take_events (faust-streaming 0.15.3's Stream has it)
        async for events in stream.take_events(BATCH_MAX, within=BATCH_WITHIN):  # type: ignore[attr-defined]
            with ack_only_when_handled(events):
                await handlers.on_batch(events)

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]  # mode types receivers narrowly
    async def forget_deliveries(sender: Any, *args: Any, signal: Any, **kwargs: Any) -> None:
        handlers.deliveries.forget()
        handlers.table_changed()
        # the gauges drop what the revoked partitions hold now, not at the next tick
        revoked = args[0] if args else kwargs.get("revoked", ())
        handlers.export_gauges(frozenset(tp.partition for tp in revoked))

    @app.timer(interval=METRICS_INTERVAL)  # type: ignore[untyped-decorator]
    async def export_gauges() -> None:
        handlers.export_gauges()

    @app.timer(interval=GATE_TICK_INTERVAL)  # type: ignore[untyped-decorator]
    async def tick_gate() -> None:
        if app.rebalancing:
            return
        try:
            await handlers.tick_gate(app.consumer.assignment())
        except Exception as exc:  # the broker is away: the next tick tries again
            log.warning("planner: gate tick not sent: %s", exc)

    @app.timer(interval=FIRST_DELIVERY_SECONDS / 2)  # type: ignore[untyped-decorator]
    async def reread_stalled_partitions() -> None:
        await reread_if_stalled(app, handlers, frozenset(topics.inputs.topics))
