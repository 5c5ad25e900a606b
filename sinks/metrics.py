"""Prometheus metrics of the sink workers (names as in ARCHITECTURE.md; registry injected).

Label values are bounded: operation kinds, outcomes, retry reasons, partitions — never ids,
e-mails or names.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from kernel.metrics import dlq_counter
from schemas.topics import OPERATIONS_DLQ

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
_BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 200, 300, 500)


class SinkMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.operations = Counter(
            "vudsync_sink_operations_total",
            "Operations finished by the sink, by kind and outcome "
            "(applied, already_applied, superseded, dead_lettered, failed)",
            ["kind", "outcome"],
            registry=registry,
        )
        self.apply_seconds = Histogram(
            "vudsync_sink_apply_seconds",
            "First attempt → outcome of one operation applied through the cloud (retries included)",
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
            "Operations scheduled for another attempt, by reason "
            "(server_error, timeout, connection, rate_limited, unauthorized, unexpected)",
            ["reason"],
            registry=registry,
        )
        self.circuit_open = Gauge(
            "vudsync_cloud_circuit_open",
            "1 while the circuit to the cloud is open (no requests but one probe)",
            registry=registry,
        )
        self.dlq = dlq_counter(registry, OPERATIONS_DLQ.name)
        self.batch_size = Histogram(
            "vudsync_sink_batch_operations",
            "Operations per POST /v1/batch call",
            buckets=_BATCH_BUCKETS,
            registry=registry,
        )
        self.calls = Counter(
            "vudsync_sink_cloud_calls_total",
            "Calls to the cloud (a batch counts once), by endpoint and result",
            ["endpoint", "result"],
            registry=registry,
        )
        self.outstanding = Gauge(
            "vudsync_sink_outstanding_operations",
            "Operations taken from the topic and not finished yet (queued, in flight, waiting to retry)",
            registry=registry,
        )
        self.paused = Gauge(
            "vudsync_sink_paused",
            "1 while the sink's partitions are paused: too many operations outstanding for too long",
            registry=registry,
        )
        self.in_flight = Gauge(
            "vudsync_sink_in_flight_operations",
            "Operations inside a cloud call right now",
            registry=registry,
        )
