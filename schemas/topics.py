"""The topic catalogue: every topic vudsync uses, its key and its retention.

Directory topics are compacted (latest state per entity) but keep days of history
(``min.compaction.lag.ms``) so that ``vudsync replay --since`` can rewind into them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from schemas.directory import EntityType

DAY_MS = 24 * 3600 * 1000
#: operations wait in Kafka through a week-long outage of the cloud or the sinks, with a week to
#: spare; the dead-letter topics and results keep 30 days. Work deleted unread anyway raises
#: VudsyncWorkLostToRetention (the lag exporter's vudsync_consumer_lost_messages).
OUTAGE_RETENTION_MS = 14 * DAY_MS


@dataclass(frozen=True)
class TopicSpec:
    name: str
    key: str
    compacted: bool
    retention_ms: int
    description: str
    config: dict[str, str] = field(default_factory=dict)
    partitions: int | None = None  # None: the installation's VUDSYNC_TOPIC_PARTITIONS

    def kafka_config(self, history_days: int = 7) -> dict[str, str]:
        history_ms = str(history_days * DAY_MS)
        if self.compacted:
            base = {
                "cleanup.policy": "compact",
                "min.compaction.lag.ms": history_ms,
                "delete.retention.ms": history_ms,
            }
        else:
            base = {"cleanup.policy": "delete", "retention.ms": str(self.retention_ms)}
        return {**base, **self.config}


DIRECTORY_TOPICS: dict[EntityType, TopicSpec] = {
    EntityType.COMPANY: TopicSpec(
        "vud.directory.companies", "company id", True, -1, "company state per company"
    ),
    EntityType.USER: TopicSpec(
        "vud.directory.users", "user id", True, -1, "user state incl. complete access list"
    ),
    EntityType.ROLE: TopicSpec("vud.directory.roles", "<application>:<name>", True, -1, "role catalogue"),
    EntityType.LAYOUT_GROUP: TopicSpec(
        "vud.directory.layout-groups", "<application>:<name>", True, -1, "layout groups"
    ),
    EntityType.MODULE: TopicSpec(
        "vud.directory.modules", "<application>:<code>", True, -1, "module catalogue"
    ),
    EntityType.APPLICATION_INSTANCE: TopicSpec(
        "vud.directory.application-instances",
        "application type",
        True,
        -1,
        "one instance per application type (license fingerprint only)",
    ),
}

DIRECTORY_DLQ = TopicSpec("vud.directory.dlq", "original key", False, 30 * DAY_MS, "invalid directory input")
OPERATIONS = TopicSpec(
    "vud.cloud.operations",
    "cloud aggregate (user:<id> | company:<id>)",
    False,
    OUTAGE_RETENTION_MS,
    "planned cloud operations",
)
OPERATIONS_DLQ = TopicSpec(
    "vud.cloud.operations.dlq", "cloud aggregate", False, 30 * DAY_MS, "failed operations"
)
RESULTS = TopicSpec(
    "vud.cloud.results",
    "entity id (co-partitioned with the directory topics)",
    False,
    30 * DAY_MS,
    "what became of each operation",
)

# writeback (issue 16): the cloud's changes on their way to the directory
CLOUD_CHANGES = TopicSpec(
    "vud.cloud.changes",
    "on-premise user id (co-partitioned with vud.directory.users)",
    False,
    OUTAGE_RETENTION_MS,
    "the cloud's access of a linked user in a linked company, as the change feed gave it "
    "(vudsync run cloud-capture)",
)
DIRECTORY_OPERATIONS = TopicSpec(
    "vud.directory.operations",
    "on-premise user id",
    False,
    OUTAGE_RETENTION_MS,
    "what the planner commands the directory sink to write in the store (cloud → directory)",
)

# planner: what every planner partition must know, and accidental-delete protection
PLANNER_FACTS = TopicSpec(
    "vud.planner.facts",
    "fact key (company:<id>, user:<id>, registry:<app>, instance:<app>, catalogue:<app>:<kind>:<name>)",
    True,
    -1,
    "cloud identities, the cloud's registry and catalogue, on-premise instances; "
    "every fact is written to every partition (vudsync connect, the planner)",
)
PLANNER_CONTROL = TopicSpec(
    "vud.planner.control",
    "deletion candidate (requests, decisions) or 'operator'",
    False,
    30 * DAY_MS,
    "accidental-delete protection: requests to the gate (partition 0), operator approvals, releases",
)

# staging mode (``vudsync run planner --staging``): the operations the planner would send,
# kept here until an operator promotes or discards them (``vudsync staging``). One partition:
# one order for every aggregate, so that a listing is bounded by one offset (``--up-to``).
OPERATIONS_STAGED = TopicSpec(
    "vud.cloud.operations.staged",
    "cloud aggregate (user:<id> | company:<id>)",
    False,
    30 * DAY_MS,
    "staging mode: the operations the planner would send (and those waiting for what they would "
    "create), kept until `vudsync staging promote` or `discard`",
    partitions=1,
)

ALL_TOPICS: tuple[TopicSpec, ...] = (
    *DIRECTORY_TOPICS.values(),
    DIRECTORY_DLQ,
    OPERATIONS,
    OPERATIONS_DLQ,
    RESULTS,
    CLOUD_CHANGES,
    DIRECTORY_OPERATIONS,
)

# The planner's own topics; `vudsync run planner`, `connect` and `deletes` create them.
# (To join ALL_TOPICS once schemas/export.py describes them.)
PLANNER_TOPICS: tuple[TopicSpec, ...] = (PLANNER_FACTS, PLANNER_CONTROL, OPERATIONS_STAGED)


def entity_for_topic(name: str, prefix: str = "") -> EntityType | None:
    for entity, spec in DIRECTORY_TOPICS.items():
        if prefix + spec.name == name:
            return entity
    return None
