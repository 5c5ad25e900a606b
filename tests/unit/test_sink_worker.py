"""A real :class:`SinkWorker` on fakes of its ports: applied, retried, dead-lettered, given up,
already applied, undecodable — then flushed and committed. No broker, no cloud, no sleeps:
the clock stands still and the backoff is zero, so every retry is due at once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from prometheus_client import CollectorRegistry

from schemas.codec import decode_model, encode
from schemas.deadletter import (
    HEADER_ATTEMPTS,
    HEADER_HTTP_STATUS,
    HEADER_OFFSET,
    HEADER_PARTITION,
    HEADER_REASON,
    HEADER_STAGE,
    HEADER_TOPIC,
    headers_dict,
)
from schemas.operations import CloudOperation, version_slot
from schemas.results import OperationResult, ResultOutcome, kind_and_outcome
from schemas.topics import OPERATIONS, OPERATIONS_DLQ, RESULTS
from sinks.errors import CloudRejected, CloudUnavailable
from sinks.metrics import SinkMetrics
from sinks.ports import Applied
from sinks.resilience import Backoff
from sinks.worker import SinkConfig, SinkFatal, SinkWorker
from tests.factories import access_op, user_upsert
from tests.fakes import (
    FakeClock,
    FakeCloudDirectory,
    FakeLedger,
    FakeOperationsConsumer,
    FakeRecordPublisher,
)

TOPIC = OPERATIONS.name
APPLIED = Applied("updated", "cloud-id")


class Sink:
    """A worker on fakes, and what it did."""

    def __init__(self, cloud: FakeCloudDirectory, ledger: FakeLedger | None = None) -> None:
        self.clock = FakeClock()
        self.consumer = FakeOperationsConsumer(TOPIC)
        self.publisher = FakeRecordPublisher()
        self.cloud = cloud
        self.ledger = ledger or FakeLedger()
        self.registry = CollectorRegistry()
        config = SinkConfig(
            concurrency=4,
            max_attempts=3,
            retry_timeout=0.0,  # give up after three attempts, however quick
            poll_timeout_ms=10,
            commit_interval=0.0,  # commit at every turn of the loop (the clock stands still)
        )
        self.worker = SinkWorker(
            self.consumer,
            TOPIC,
            self.publisher,
            self.cloud,
            self.ledger,
            SinkMetrics(self.registry),
            config,
            self.clock.utc,
            backoff=Backoff(base=0.0, cap=0.0),
            monotonic=self.clock,
        )

    def feed(self, partition: int, op: CloudOperation) -> None:
        self.consumer.feed(partition, op.aggregate.encode(), encode(op))

    async def run_until(self, done: Callable[[], bool], timeout: float = 10.0) -> None:
        """Run the worker until ``done()`` (or until it stops by itself), then stop it
        gracefully and wait for it; its exception, if any, is raised."""
        run = asyncio.create_task(self.worker.run())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            while not done() and not run.done():
                assert loop.time() < deadline, "the sink did not get there in time"
                await asyncio.sleep(0.005)
        finally:
            self.worker.request_stop()
            await asyncio.wait_for(run, timeout)

    def all_committed(self) -> bool:
        return self.consumer.committed == self.consumer.end_offsets()

    def results(self) -> dict[str, OperationResult]:
        decoded = [decode_model(OperationResult, v) for _, v, _ in self.publisher.on(RESULTS.name)]
        return {r.operation_id: r for r in decoded}

    def outcomes(self) -> dict[str, ResultOutcome]:
        """Each result's outcome, by operation id."""
        return {oid: r.outcome for oid, r in self.results().items()}

    def counted(self, outcome: str, kind: str = "user.upsert") -> float:
        value = self.registry.get_sample_value(
            "vudsync_sink_operations_total", {"kind": kind, "outcome": outcome}
        )
        return value or 0.0


@pytest.mark.parametrize("batching", [True, False], ids=["batch", "one-by-one"])
async def test_every_path_of_an_operation_ends_in_a_result_and_a_commit(batching: bool) -> None:
    applied, retried, rejected, hopeless, known = (user_upsert(u) for u in ("a", "b", "c", "d", "e"))
    first, second = user_upsert("f", 1), user_upsert("f", 2)  # one aggregate: in order
    rejection = CloudRejected("422 validation_error", status=422, excerpt='{"error":"validation_error"}')
    cloud = FakeCloudDirectory(
        {
            retried.operation_id: [CloudUnavailable("503"), APPLIED],
            rejected.operation_id: [rejection],
            hopeless.operation_id: [CloudUnavailable("503")],
            first.operation_id: [CloudUnavailable("timed out", reason="timeout"), APPLIED],
        },
        batching=batching,
    )
    sink = Sink(cloud, FakeLedger({known.operation_id: {"cloud_id": "cloud-e", "effect": "updated"}}))
    for op in (applied, retried, rejected, first):
        sink.feed(0, op)
    sink.consumer.feed(0, b"user:x", b"not an operation")
    for op in (hopeless, known, second):
        sink.feed(1, op)

    await sink.run_until(sink.all_committed)

    results = sink.results()
    outcomes = {oid: (r.outcome, r.attempts) for oid, r in results.items()}
    assert outcomes == {
        applied.operation_id: (ResultOutcome.APPLIED, 1),
        retried.operation_id: (ResultOutcome.APPLIED, 2),
        rejected.operation_id: (ResultOutcome.DEAD_LETTERED, 1),
        hopeless.operation_id: (ResultOutcome.FAILED, 3),
        known.operation_id: (ResultOutcome.ALREADY_APPLIED, 0),
        first.operation_id: (ResultOutcome.APPLIED, 2),
        second.operation_id: (ResultOutcome.APPLIED, 1),
    }
    assert results[known.operation_id].cloud_id == "cloud-e"
    assert known.operation_id not in cloud.attempts  # the ledger answered, no cloud call
    # each result says its kind and outcome in headers too: the planner skips by them unread
    for _, value, headers in sink.publisher.on(RESULTS.name):
        result = decode_model(OperationResult, value)
        assert kind_and_outcome(headers) == (result.kind, result.outcome.value)
    # per aggregate, in order: the second operation went out only after the first was applied
    calls_with = [i for i, ids in enumerate(cloud.calls) if first.operation_id in ids]
    assert min(i for i, ids in enumerate(cloud.calls) if second.operation_id in ids) > max(calls_with)

    dead = sink.publisher.on(OPERATIONS_DLQ.name)
    by_stage = {headers_dict(h)[HEADER_STAGE] + ":" + k: headers_dict(h) for k, _, h in dead}
    assert sorted(by_stage) == ["apply:user:c", "apply:user:d", "decode:user:x"]
    assert by_stage["apply:user:c"][HEADER_HTTP_STATUS] == "422"
    assert by_stage["apply:user:c"][HEADER_ATTEMPTS] == "1"
    assert by_stage["apply:user:d"][HEADER_REASON].startswith("gave up after 3 attempts")
    assert by_stage["decode:user:x"][HEADER_TOPIC] == TOPIC
    assert (by_stage["decode:user:x"][HEADER_PARTITION], by_stage["decode:user:x"][HEADER_OFFSET]) == (
        "0",
        "4",
    )
    assert [v for k, v, _ in dead if k == "user:c"] == [encode(rejected)]  # the original record

    # the ledger holds what was applied (and only that), written off the event loop
    assert set(sink.ledger.entries) == {op.operation_id for op in (applied, retried, known, first, second)}
    assert sink.ledger.threads and all(t.startswith("sink-ledger") for t in sink.ledger.threads)
    assert sink.publisher.acked == len(sink.publisher.records)  # flushed before the last commit
    assert sink.consumer.committed == {(TOPIC, 0): 5, (TOPIC, 1): 3}
    assert (sink.counted("applied"), sink.counted("already_applied")) == (4, 1)
    assert (sink.counted("dead_lettered"), sink.counted("failed")) == (1, 1)
    assert sink.counted("dead_lettered", kind="unknown") == 1
    retries = sink.registry.get_sample_value("vudsync_sink_retries_total", {"reason": "server_error"})
    assert retries == 3  # b once, d twice (its third failure gives up)


async def test_a_ledger_that_fails_stops_the_worker_without_a_commit() -> None:
    sink = Sink(FakeCloudDirectory())
    sink.ledger.fail_with = RuntimeError("disk full")
    sink.feed(0, user_upsert("a"))

    with pytest.raises(SinkFatal, match="disk full"):
        await sink.run_until(lambda: False)

    assert sink.consumer.committed == {}  # re-delivered to a healthy worker
    assert sink.publisher.on(RESULTS.name) == []  # no result announces what the ledger lacks


def test_a_users_fields_and_each_companys_access_are_separate_version_slots() -> None:
    assert version_slot(user_upsert("u1", 3)) == "user:u1"
    assert version_slot(access_op(3)) == "user:u1|access:c1"
    assert version_slot(access_op(4, None)) == "user:u1|access:c1"
    assert version_slot(access_op(3, company="c2")) == "user:u1|access:c2"


@pytest.mark.parametrize("batching", [True, False], ids=["batch", "one-by-one"])
async def test_a_retried_stale_update_is_superseded_and_the_cloud_keeps_the_newer(batching: bool) -> None:
    """The attack: v10 dead-lettered, v12 applied, then ``dlq retry`` of v10. The ledger says
    v12 is applied to ``user:u1``: v10 is answered ``superseded``, never sent, counted."""
    cloud = FakeCloudDirectory(batching=batching)
    ledger = FakeLedger({"op-u1-12": {"cloud_id": "cloud-u1", "effect": "updated"}})
    ledger.versions["user:u1"] = 12
    sink = Sink(cloud, ledger)
    stale, other = user_upsert("u1", 10), user_upsert("u2", 10)
    sink.feed(0, stale)
    sink.feed(0, other)

    await sink.run_until(sink.all_committed)

    results = sink.results()
    assert results[stale.operation_id].outcome is ResultOutcome.SUPERSEDED
    assert results[stale.operation_id].details == {"slot": "user:u1", "applied_version": 12}
    assert results[other.operation_id].outcome is ResultOutcome.APPLIED  # its own slot: goes
    assert stale.operation_id not in cloud.attempts
    assert stale.operation_id not in ledger.entries  # judged again if it comes back
    assert ledger.versions == {"user:u1": 12, "user:u2": 10}
    assert sink.counted("superseded") == 1 and sink.counted("applied") == 1


async def test_an_older_operation_queued_behind_a_newer_one_is_superseded_once_that_applied() -> None:
    """v12 and a retried v10 of one aggregate in one poll: v12 goes first (order per
    aggregate), and v10, checked when its turn comes, finds v12 applied."""
    cloud = FakeCloudDirectory()
    sink = Sink(cloud)
    newer, stale = user_upsert("u1", 12), user_upsert("u1", 10)
    sink.feed(0, newer)
    sink.feed(0, stale)

    await sink.run_until(sink.all_committed)

    assert sink.outcomes() == {
        newer.operation_id: ResultOutcome.APPLIED,
        stale.operation_id: ResultOutcome.SUPERSEDED,
    }
    assert [oid for call in cloud.calls for oid in call] == [newer.operation_id]


async def test_an_old_assignment_retried_after_its_revoke_stays_revoked() -> None:
    cloud = FakeCloudDirectory()
    sink = Sink(cloud)
    revoke, old_assign = access_op(12, None), access_op(10)
    elsewhere = access_op(10, company="c2")  # the same user in another company: its own slot
    fields = user_upsert("u1", 11)  # the user's fields: their own slot too
    for op in (revoke, old_assign, elsewhere, fields):
        sink.feed(0, op)

    await sink.run_until(sink.all_committed)

    assert sink.outcomes() == {
        revoke.operation_id: ResultOutcome.APPLIED,
        old_assign.operation_id: ResultOutcome.SUPERSEDED,
        elsewhere.operation_id: ResultOutcome.APPLIED,
        fields.operation_id: ResultOutcome.APPLIED,
    }
    assert old_assign.operation_id not in cloud.attempts
    assert sink.counted("superseded", kind="access.assign") == 1
