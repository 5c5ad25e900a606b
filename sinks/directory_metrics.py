"""Metrics of the directory sink (``vudsync run directory-sink``), on an injected registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from kernel.metrics import dlq_counter, writeback_rejected_counter
from schemas.topics import DIRECTORY_DLQ

#: cloud commit → store commit; the issue's budget is 2 s at p99
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)


class DirectorySinkMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.applied = Counter(
            "vudsync_writeback_applied_total",
            "Directory operations applied to the store (effect: granted, revoked, held_already, "
            "not_held, adopted) or found applied already (effect: already_applied)",
            ["effect"],
            registry=registry,
        )
        self.rejected = writeback_rejected_counter(registry)
        self.latency = Histogram(
            "vudsync_writeback_latency_seconds",
            "Seconds from the cloud's commit of a change to the store's commit of its writeback",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.retries = Counter(
            "vudsync_directory_sink_retries_total",
            "Operations applied again after the store or the broker failed (reason: exception class)",
            ["reason"],
            registry=registry,
        )
        self.last_applied = Gauge(
            "vudsync_directory_sink_last_applied_timestamp_seconds",
            "When the directory sink last committed an operation to the store (unix seconds)",
            registry=registry,
        )
        self.dlq = dlq_counter(registry, DIRECTORY_DLQ.name)
