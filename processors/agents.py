"""The planner's agent: one stream over every input, one message at a time.

Concurrency 1, deliberately: the agent writes the table, and Faust commits an offset once
every message before it is acknowledged — with ``concurrency > 1`` a finished message could be
committed past an unfinished one. One agent for all inputs also means a fact and the
directory event that needs it are never handled at the same time.
"""

from __future__ import annotations

from typing import Any

import faust

from processors.handlers import PlannerHandlers
from processors.topics import PlannerTopics

AGENT_NAME = "plan"
METRICS_INTERVAL = 10.0


def declare_agents(app: faust.App, topics: PlannerTopics, handlers: PlannerHandlers) -> None:
    @app.agent(topics.inputs, name=AGENT_NAME, concurrency=1)
    async def plan(stream: faust.StreamT[Any]) -> None:
        async for event in stream.events():
            await handlers.on_message(event)

    @app.timer(interval=METRICS_INTERVAL)  # type: ignore[untyped-decorator]
    async def export_gauges() -> None:
        handlers.export_gauges()
