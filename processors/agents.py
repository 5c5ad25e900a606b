"""The planner's agents: each iterates its stream and hands every event to a handler."""

from __future__ import annotations

import faust

from processors.handlers import PlannerHandlers
from processors.topics import PlannerTopics


def declare_agents(app: faust.App, topics: PlannerTopics, handlers: PlannerHandlers) -> None:
    # concurrency 1: the agents write tables, and order per partition must hold
    @app.agent(topics.directory, name="plan-directory")
    async def plan_directory(stream: faust.StreamT) -> None:
        async for event in stream.events():
            await handlers.on_directory_event(event)

    @app.agent(topics.results, name="learn-identities")
    async def learn_identities(stream: faust.StreamT) -> None:
        async for event in stream.events():
            await handlers.on_result(event)

    @app.agent(topics.wakeups, name="release-parked")
    async def release_parked(stream: faust.StreamT) -> None:
        async for event in stream.events():
            await handlers.on_wakeup(event)

    @app.timer(interval=5.0)
    async def export_parked() -> None:
        handlers.metrics.parked.set(handlers.parked_count())
