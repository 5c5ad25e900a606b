"""Metrics every component declares alike (names as in ARCHITECTURE.md; registry injected).

Each component keeps its own metrics module (``producers.metrics``, ``processors.metrics``,
``sinks.metrics``); what they share is declared here once, so its name, help and labels cannot
drift apart between the processes that export it.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter


def dlq_counter(registry: CollectorRegistry, topic: str) -> Counter:
    """``vudsync_dlq_messages_total{topic}``: messages sent to a dead-letter topic.

    The component's own dead-letter ``topic`` is exported at 0 from the start, so that
    ``increase()`` (the dead-letter alert) sees the first dead letter.
    """
    counter = Counter(
        "vudsync_dlq_messages_total",
        "Messages sent to a dead-letter topic",
        ["topic"],
        registry=registry,
    )
    counter.labels(topic=topic)
    return counter


def writeback_rejected_counter(registry: CollectorRegistry) -> Counter:
    """``vudsync_writeback_rejected_total{reason}``: what of the cloud's access changes the
    directory cannot hold. The planner counts the changes it cannot plan (``unknown_user``,
    ``unknown_company``, each also a journal entry); the directory sink the operations the store
    refuses (``unknown_role``, ``unknown_layout_group``, ``unknown_module``, ``unknown_user``,
    ``unknown_company``, each a result on ``vud.cloud.results``). One declaration, so that both
    processes export the same help."""
    return Counter(
        "vudsync_writeback_rejected_total",
        "Cloud access changes the directory cannot hold, by reason (planner: unknown_user, "
        "unknown_company; directory sink: also unknown_role, unknown_layout_group, unknown_module)",
        ["reason"],
        registry=registry,
    )
