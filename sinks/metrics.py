"""Prometheus metrics of the sink workers (names as in ARCHITECTURE.md)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class SinkMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.operations = Counter(
            "vudsync_sink_operations_total",
            "Operations handled by the sink, by kind and outcome",
            ["kind", "outcome"],
            registry=registry,
        )
        self.apply_seconds = Histogram(
            "vudsync_sink_apply_seconds",
            "Time to apply one operation to the cloud (with retries)",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.end_to_end = Histogram(
            "vudsync_end_to_end_seconds",
            "Change committed in the store → applied in the cloud",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.retries = Counter(
            "vudsync_sink_retries_total",
            "Retried cloud calls, by reason",
            ["reason"],
            registry=registry,
        )
        self.circuit_open = Gauge(
            "vudsync_cloud_circuit_open",
            "1 while the circuit to the cloud is open",
            registry=registry,
        )
        self.dlq = Counter(
            "vudsync_dlq_messages_total",
            "Messages sent to a dead-letter topic",
            ["topic"],
            registry=registry,
        )
