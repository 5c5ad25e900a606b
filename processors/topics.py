"""Topics of the planner: what its one agent reads, and where it writes.

In: the directory topics, ``vud.cloud.results``, ``vud.planner.facts``,
``vud.planner.control`` and ``vud.cloud.changes`` (writeback) — all with the same number of
partitions, so that Faust assigns partition *p* of every one of them (and of the table's
changelog) to the same worker. Out: operations, results (journal entries), facts, control
messages, dead letters and directory operations (writeback).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

import faust

from kernel.admin import TopicSpec as AdminTopicSpec
from kernel.admin import ensure_missing_topics
from kernel.replication import replication_config
from kernel.settings import Settings
from schemas.topics import (
    CLOUD_CHANGES,
    DIRECTORY_DLQ,
    DIRECTORY_OPERATIONS,
    DIRECTORY_TOPICS,
    OPERATIONS,
    OPERATIONS_STAGED,
    PLANNER_CONTROL,
    PLANNER_FACTS,
    PLANNER_TOPICS,
    RESULTS,
)

#: the planner's input topics (unprefixed), for lag monitoring and tools
PLANNER_INPUTS: tuple[str, ...] = (
    *(spec.name for spec in DIRECTORY_TOPICS.values()),
    RESULTS.name,
    PLANNER_FACTS.name,
    PLANNER_CONTROL.name,
    CLOUD_CHANGES.name,
)


class OutputTopic(Protocol):
    """Where the planner writes a record: a Faust topic, or the same topic's records handed
    straight to the Kafka producer (:class:`processors.faust_compat.DirectTopic`). ``send``
    returns once the producer holds the record; the awaitable it returns resolves with the
    broker's acknowledgement."""

    async def send(
        self,
        *,
        key: bytes | None = None,
        value: bytes | None = None,
        partition: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> Awaitable[Any]: ...


@dataclass(frozen=True)
class PlannerTopics:
    inputs: faust.TopicT
    operations: OutputTopic
    results: OutputTopic
    facts: OutputTopic
    control: OutputTopic
    dlq: OutputTopic
    directory_operations: OutputTopic
    staged: OutputTopic | None = None  # staging mode: vud.cloud.operations.staged

    def with_outputs(self, wrap: Callable[[Any], OutputTopic]) -> PlannerTopics:
        """The same topics, every output wrapped (the inputs stay the agent's Faust topic)."""
        return replace(
            self,
            operations=wrap(self.operations),
            results=wrap(self.results),
            facts=wrap(self.facts),
            control=wrap(self.control),
            dlq=wrap(self.dlq),
            directory_operations=wrap(self.directory_operations),
            staged=None if self.staged is None else wrap(self.staged),
        )

    def by_role(self, role: str) -> OutputTopic:
        if role == "staged":
            if self.staged is None:
                raise ValueError("a staged operation, but the planner was not built for staging mode")
            return self.staged
        return {
            "operations": self.operations,
            "results": self.results,
            "facts": self.facts,
            "control": self.control,
            "directory_operations": self.directory_operations,
        }[role]


def declare_topics(app: faust.App, settings: Settings) -> PlannerTopics:
    def raw(*names: str) -> faust.TopicT:
        return app.topic(*names, key_serializer="raw", value_serializer="raw")

    return PlannerTopics(
        inputs=raw(*(settings.topic(name) for name in PLANNER_INPUTS)),
        operations=raw(settings.topic(OPERATIONS.name)),
        results=raw(settings.topic(RESULTS.name)),
        facts=raw(settings.topic(PLANNER_FACTS.name)),
        control=raw(settings.topic(PLANNER_CONTROL.name)),
        dlq=raw(settings.topic(DIRECTORY_DLQ.name)),
        directory_operations=raw(settings.topic(DIRECTORY_OPERATIONS.name)),
        staged=raw(settings.topic(OPERATIONS_STAGED.name)) if settings.planner_staging else None,
    )


def ensure_planner_topics(settings: Settings, bootstrap: str) -> list[str]:
    """Create the planner's own topics (facts, control, staged operations) if missing;
    idempotent. Described first: where they exist, nothing else is asked of the cluster."""
    return ensure_missing_topics(
        bootstrap,
        lambda replication: [
            AdminTopicSpec(
                settings.topic(spec.name),
                spec.partitions or settings.topic_partitions,
                replication,
                {**replication_config(replication), **spec.kafka_config(settings.history_days)},
            )
            for spec in PLANNER_TOPICS
        ],
        settings.topic_replication,
        security=settings.kafka_security(),
    )
