"""Topics of the planner: the directory topics in, operations out, results back, dead letters."""

from __future__ import annotations

from dataclasses import dataclass

import faust

from schemas.topics import DIRECTORY_DLQ, DIRECTORY_TOPICS, OPERATIONS, RESULTS
from vudsync.settings import Settings

WAKEUPS = "vud.planner.wakeups"


@dataclass(frozen=True)
class PlannerTopics:
    directory: faust.TopicT
    results: faust.TopicT
    operations: faust.TopicT
    dlq: faust.TopicT
    wakeups: faust.TopicT


def declare_topics(app: faust.App, settings: Settings) -> PlannerTopics:
    def raw(*names: str, **kw: object) -> faust.TopicT:
        return app.topic(*names, key_serializer="raw", value_serializer="raw", **kw)  # type: ignore[arg-type]

    return PlannerTopics(
        directory=raw(*(settings.topic(spec.name) for spec in DIRECTORY_TOPICS.values())),
        results=raw(settings.topic(RESULTS.name)),
        operations=raw(settings.topic(OPERATIONS.name)),
        dlq=raw(settings.topic(DIRECTORY_DLQ.name)),
        wakeups=raw(settings.topic(WAKEUPS), partitions=settings.topic_partitions, internal=True),
    )
