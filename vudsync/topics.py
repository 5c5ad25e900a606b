"""The topic catalogue of ``schemas.topics`` made real on a broker."""

from __future__ import annotations

from kernel.admin import TopicSpec as AdminTopicSpec
from kernel.admin import ensure_topics, replication_factor
from kernel.replication import replication_config
from kernel.settings import Settings
from schemas.topics import ALL_TOPICS, TopicSpec


def catalogue_specs(settings: Settings, replication: int | None = None) -> list[AdminTopicSpec]:
    """Every catalogue topic with this installation's prefix, partitions and history, with
    ``replication`` replicas (default: ``settings.topic_replication``, 0 = from the cluster)."""
    return [_admin_spec(spec, settings, replication) for spec in ALL_TOPICS]


def _admin_spec(spec: TopicSpec, settings: Settings, replication: int | None) -> AdminTopicSpec:
    replicas = settings.topic_replication if replication is None else replication
    return AdminTopicSpec(
        settings.topic(spec.name),
        settings.topic_partitions,
        replicas,
        {**replication_config(replicas), **spec.kafka_config(settings.history_days)},
    )


def ensure_catalogue(settings: Settings, bootstrap: str, *, denied_ok: bool = False) -> list[str]:
    """Create the missing catalogue topics (idempotent); returns the names created now.
    ``denied_ok``: topics this principal may not create are left to the ops principal."""
    security = settings.kafka_security()
    replication = replication_factor(bootstrap, settings.topic_replication, security=security)
    return ensure_topics(
        bootstrap, catalogue_specs(settings, replication), security=security, denied_ok=denied_ok
    )
