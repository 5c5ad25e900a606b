"""The directory sink's loop over fakes: effects first, then offsets; applied once; nothing
escapes the loop (undecodable records dead-lettered, transient failures retried)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry

from kernel.errors import RetryableError
from kernel.retry import Backoff
from schemas.codec import decode_model, encode
from schemas.directory_operations import DirectoryOperation
from schemas.results import OperationResult, ResultOutcome
from sinks.directory_metrics import DirectorySinkMetrics
from sinks.directory_sink import DirectorySink
from sinks.directory_store import DirectoryApplied
from tests.factories import directory_op
from tests.fakes import FakeOperationsConsumer, FakePublisher

NOW = datetime(2026, 12, 5, 20, 0, tzinfo=UTC)
TOPIC = "vud.directory.operations"


class FakeDirectoryStore:
    """Applied ids and rows in memory; ``fail``: that many applies raise a transient error first."""

    def __init__(self, events: list[str], fail: int = 0) -> None:
        self.rows: set[tuple[str, str, str]] = set()
        self.applied: dict[str, str] = {}
        self.events = events
        self.fail = fail

    def apply(self, op: DirectoryOperation) -> DirectoryApplied:
        if self.fail:
            self.fail -= 1
            raise RetryableError("database is locked")
        if op.operation_id in self.applied:
            return DirectoryApplied("already_applied", self.applied[op.operation_id])
        self.rows.add((op.user_id, op.company_id, op.entry))
        self.applied[op.operation_id] = "granted"
        self.events.append(f"applied {op.name}")
        return DirectoryApplied("applied", "granted")

    def ping(self) -> None:
        pass

    def close(self) -> None:
        pass


class Consumer(FakeOperationsConsumer):
    def __init__(self, events: list[str]) -> None:
        super().__init__(TOPIC)
        self.events = events

    def commit(self, offsets: dict[Any, int]) -> None:
        self.events.append(f"commit {sorted(offsets.values())}")
        super().commit(offsets)


def grant(name: str) -> DirectoryOperation:
    return directory_op(name, at=NOW)


class FlakyPublisher(FakePublisher):
    """Its first ``fail`` flushes raise, as a broker that did not acknowledge; a failed flush
    forgets what it had queued, as librdkafka's failed deliveries are gone."""

    def __init__(self, events: list[str], fail: int) -> None:
        super().__init__("results", events)
        self.fail = fail

    def flush(self, timeout: float = 60.0) -> int:
        if self.fail:
            self.fail -= 1
            self.queued = []
            raise RetryableError("broker did not acknowledge 1 record(s): test")
        return super().flush(timeout)


def build(fail_store: int = 0, fail_flush: int = 0) -> tuple[DirectorySink, list[str], Any]:
    events: list[str] = []
    consumer = Consumer(events)
    sink = DirectorySink(
        consumer,
        TOPIC,
        FlakyPublisher(events, fail_flush),
        FakeDirectoryStore(events, fail_store),
        DirectorySinkMetrics(CollectorRegistry()),
        lambda: NOW,
        results_topic="vud.cloud.results",
        dlq_topic="vud.directory.dlq",
        backoff=Backoff(base=0.0, cap=0.0),
    )
    return sink, events, consumer


def run_once(sink: DirectorySink, consumer: FakeOperationsConsumer) -> None:
    consumer.subscribe(TOPIC, lambda tps: None, lambda tps: None)
    sink.handle_batch(consumer.poll(0, 100))


def test_effects_first_then_offsets_and_undecodable_records_are_dead_lettered() -> None:
    sink, events, consumer = build()
    consumer.feed(0, b"u1", encode(grant("Lønn")))
    consumer.feed(0, b"u1", b"{not json")
    consumer.feed(0, b"u1", encode(grant("Innkjøp")))
    run_once(sink, consumer)
    assert events == ["applied Lønn", "applied Innkjøp", "results flushed 3", "commit [3]"]
    publisher: FakePublisher = sink.publisher  # type: ignore[assignment]
    topics = [t for t, _, _ in publisher.batches[0]]
    assert topics == ["vud.cloud.results", "vud.directory.dlq", "vud.cloud.results"]
    result = decode_model(OperationResult, publisher.batches[0][0][2])
    assert (result.outcome, result.effect, result.entity_id) == (ResultOutcome.APPLIED, "granted", "u1")
    assert result.details == {"company_id": "c1", "entry": "business/role/Lønn", "feed_seq": 1}


def test_a_redelivered_operation_is_applied_once_and_answered_already_applied() -> None:
    sink, _, consumer = build()
    consumer.feed(0, b"u1", encode(grant("Lønn")))
    consumer.feed(0, b"u1", encode(grant("Lønn")))  # as after a crash before the offset commit
    run_once(sink, consumer)
    store: FakeDirectoryStore = sink.store  # type: ignore[assignment]
    assert store.rows == {("u1", "c1", "business/role/Lønn")}
    publisher: FakePublisher = sink.publisher  # type: ignore[assignment]
    outcomes = [decode_model(OperationResult, v).outcome for _, _, v in publisher.batches[0]]
    assert outcomes == [ResultOutcome.APPLIED, ResultOutcome.ALREADY_APPLIED]


def test_transient_store_and_broker_failures_are_retried_and_nothing_is_committed_before_the_results() -> (
    None
):
    sink, events, consumer = build(fail_store=2, fail_flush=1)
    consumer.feed(0, b"u1", encode(grant("Lønn")))
    run_once(sink, consumer)
    # the failed flush lost the result: the batch's results are published again, then committed
    assert events == ["applied Lønn", "results flushed 1", "commit [1]"]
    registry_retries = sink.metrics.retries.labels(reason="RetryableError")._value.get()
    assert registry_retries == 3


def test_a_stop_requested_while_retrying_leaves_the_operation_uncommitted() -> None:
    sink, _, consumer = build(fail_store=10**6)
    consumer.feed(0, b"u1", encode(grant("Lønn")))
    sink.request_stop()
    run_once(sink, consumer)
    assert consumer.committed == {}
    assert sink.store.rows == set()  # type: ignore[attr-defined]
