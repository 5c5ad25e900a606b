"""The topic catalogue of ``schemas.topics`` made real on a broker."""

from __future__ import annotations

from kernel.admin import TopicSpec as AdminTopicSpec
from kernel.admin import ensure_topics
from kernel.settings import Settings
from schemas.topics import ALL_TOPICS, TopicSpec


def catalogue_specs(settings: Settings) -> list[AdminTopicSpec]:
    """Every catalogue topic with this installation's prefix, partitions and history."""
    return [_admin_spec(spec, settings) for spec in ALL_TOPICS]


def _admin_spec(spec: TopicSpec, settings: Settings) -> AdminTopicSpec:
    return AdminTopicSpec(
        settings.topic(spec.name),
        settings.topic_partitions,
        settings.topic_replication,
        spec.kafka_config(settings.history_days),
    )


def ensure_catalogue(settings: Settings, bootstrap: str) -> list[str]:
    """Create the missing catalogue topics (idempotent); returns the names created now."""
    return ensure_topics(bootstrap, catalogue_specs(settings))
