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
