"""Prometheus metrics of the change-capture producer (names as in ARCHITECTURE.md)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from kernel.metrics import dlq_counter
from schemas.topics import DIRECTORY_DLQ


class ProducerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.captured = Counter(
            "vudsync_source_changes_captured_total",
            "Directory changes emitted to Kafka (acknowledged by the broker)",
            ["entity"],
            registry=registry,
        )
        self.capture_lag = Gauge(
            "vudsync_source_capture_lag_seconds",
            "Age of the oldest change not yet captured (0 when caught up)",
            registry=registry,
        )
        self.snapshot_entities = Gauge(
            "vudsync_source_snapshot_entities",
            "Entities to read in the running snapshot",
            ["entity"],
            registry=registry,
        )
        self.snapshot_done = Gauge(
            "vudsync_source_snapshot_emitted",
            "Entities emitted so far in the running snapshot",
            ["entity"],
            registry=registry,
        )
        self.superseded = Counter(
            "vudsync_source_changes_superseded_total",
            "Change rows whose entity was deleted later (its delete event carries the change)",
            ["entity"],
            registry=registry,
        )
        self.dlq = dlq_counter(registry, DIRECTORY_DLQ.name)
        self.position = Gauge(
            "vudsync_source_checkpoint_seq",
            "Change-log position of the durable checkpoint",
            registry=registry,
        )
