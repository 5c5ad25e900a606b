"""The topic catalogue of ``schemas.topics`` made real on a broker."""

from __future__ import annotations

from collections.abc import Iterable

from kernel.admin import TopicSpec as AdminTopicSpec
from kernel.admin import ensure_missing_topics
from kernel.replication import replication_config
from kernel.settings import Settings
from schemas import topics as t
from schemas.topics import ALL_TOPICS, TopicSpec

#: the catalogue topics each component reads or writes — what its start makes sure exist, and
#: no more: its ACLs let it describe those (``devtools.broker.acls``), so a start where they
#: exist asks the brokers nothing they refuse. (The planner's own topics — facts, control,
#: staged operations — it creates itself: ``processors.topics.ensure_planner_topics``.)
COMPONENT_TOPICS: dict[str, tuple[TopicSpec, ...]] = {
    "producer": (*t.DIRECTORY_TOPICS.values(), t.DIRECTORY_DLQ),
    "planner": (
        *t.DIRECTORY_TOPICS.values(),
        t.RESULTS,
        t.CLOUD_CHANGES,
        t.OPERATIONS,
        t.DIRECTORY_OPERATIONS,
        t.DIRECTORY_DLQ,
    ),
    "sink": (t.OPERATIONS, t.RESULTS, t.OPERATIONS_DLQ),
    "cloud-capture": (t.CLOUD_CHANGES, t.RESULTS),
    "directory-sink": (t.DIRECTORY_OPERATIONS, t.RESULTS, t.DIRECTORY_DLQ),
}


def catalogue_specs(
    settings: Settings, replication: int | None = None, topics: Iterable[TopicSpec] = ALL_TOPICS
) -> list[AdminTopicSpec]:
    """Every catalogue topic (or those of ``topics``) with this installation's prefix,
    partitions and history, with ``replication`` replicas (default:
    ``settings.topic_replication``, 0 = from the cluster)."""
    return [_admin_spec(spec, settings, replication) for spec in topics]


def _admin_spec(spec: TopicSpec, settings: Settings, replication: int | None) -> AdminTopicSpec:
    replicas = settings.topic_replication if replication is None else replication
    return AdminTopicSpec(
        settings.topic(spec.name),
        settings.topic_partitions,
        replicas,
        {**replication_config(replicas), **spec.kafka_config(settings.history_days)},
    )


def ensure_catalogue(
    settings: Settings,
    bootstrap: str,
    *,
    denied_ok: bool = False,
    topics: Iterable[TopicSpec] = ALL_TOPICS,
) -> list[str]:
    """Create the missing catalogue topics — or the missing ones of ``topics`` — (idempotent);
    returns the names created now. The topics are described first; only a missing one makes
    it ask the cluster for its size and to create it (:func:`kernel.admin.ensure_missing_topics`).
    ``denied_ok``: topics this principal may not create are left to the ops principal."""
    chosen = tuple(topics)
    return ensure_missing_topics(
        bootstrap,
        lambda replication: catalogue_specs(settings, replication, chosen),
        settings.topic_replication,
        security=settings.kafka_security(),
        denied_ok=denied_ok,
    )


def ensure_component_topics(settings: Settings, bootstrap: str, component: str) -> list[str]:
    """A component's start: the catalogue topics it uses (:data:`COMPONENT_TOPICS`) exist, or
    are created when its principal may; those it may not create are left to the ops principal
    (``vudsync topics ensure``) and logged."""
    return ensure_catalogue(settings, bootstrap, denied_ok=True, topics=COMPONENT_TOPICS[component])
