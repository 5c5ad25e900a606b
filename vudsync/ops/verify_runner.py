"""Carries verify out: read both sides, compare, and (``--repair``) publish the repairs.

Repair order: note where ``vud.cloud.results`` ends → publish the repair operations onto
``vud.cloud.operations`` (keyed by aggregate, like the planner's) → ``flush`` (acknowledged)
→ optionally wait for their results. The sink applies them like any operation: ledger,
idempotency key, results (from which the planner learns cloud ids), dead letters on failure.

Race, written down: a directory change captured *between* reading the store and publishing
a repair is planned by the planner onto the same aggregate key; if its operation reaches the
topic before the repair, the repair (older state) is applied after it. The next verify
reports that as drift again. The window is the time between the read and the publish.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import SecretStr

from kernel.kafka_security import PLAINTEXT, KafkaSecurity
from kernel.publishing.kafka_python import KafkaRecordPublisher
from kernel.records import TopicPartition as TP
from kernel.settings import Settings
from processors.deletions import GateState
from processors.service import planner_settings
from schemas.codec import DecodeError, decode_model, encode
from schemas.operations import CloudOperation
from schemas.results import OperationResult
from schemas.topics import OPERATIONS, RESULTS
from vudsync.ops.cloud_reader import HttpCloudReader
from vudsync.ops.directory_reader import read_directory
from vudsync.ops.drift import (
    CloudState,
    DirectoryState,
    DriftReport,
    RepairPlan,
    compare,
    gate_deletions,
    repair_operations,
)
from vudsync.ops.kafka_admin import KafkaGroupAdmin
from vudsync.ops.kafka_reader import PartitionTail

SETTLED = ("applied", "already_applied", "superseded", "dead_lettered", "rejected")


@dataclass(frozen=True)
class Verification:
    report: DriftReport
    directory: DirectoryState
    cloud: CloudState


def verify_once(settings: Settings) -> Verification:
    fingerprint_key = settings.require_secret("fingerprint_key").encode()
    client_secret = settings.require_secret("cloud_client_secret")
    directory = read_directory(
        settings.resolved_store_url(),
        fingerprint_key,
        settings.capture_batch_size,
    )
    reader = HttpCloudReader(settings.cloud_url, settings.cloud_client_id, SecretStr(client_secret))
    try:
        cloud = reader.read()
    finally:
        reader.close()
    return Verification(compare(directory, cloud), directory, cloud)


def plan_repair(
    settings: Settings, verification: Verification, gate: GateState
) -> tuple[RepairPlan, GateState]:
    """The repairs of ``verification``, their deletions passed through the planner's
    accidental-delete gate rule (``gate``: the window so far, carried over scheduled passes)."""
    now = datetime.now(UTC)
    plan = repair_operations(verification.report, verification.directory, verification.cloud, now)
    live = len(verification.directory.users) + len(verification.directory.companies)
    return gate_deletions(plan, gate, planner_settings(settings), live=live, at=now.timestamp())


def publish_repair(
    settings: Settings, bootstrap: str, admin: KafkaGroupAdmin, operations: Iterable[CloudOperation]
) -> dict[TP, int]:
    """Publish the repairs; returns where the results topic ended before (to wait from)."""
    results_topic = settings.topic(RESULTS.name)
    marks = admin.end_offsets(admin.partitions([results_topic]))
    publisher = KafkaRecordPublisher(
        bootstrap, client_id="vudsync-verify", security=settings.kafka_security()
    )
    try:
        for op in operations:
            publisher.publish(settings.topic(OPERATIONS.name), op.aggregate, encode(op))
        publisher.flush()
    finally:
        publisher.close()
    return marks


def wait_for_results(
    bootstrap: str,
    start: dict[TP, int],
    operation_ids: set[str],
    *,
    timeout: float,
    on_result: Callable[[OperationResult], None] | None = None,
    security: KafkaSecurity = PLAINTEXT,
) -> dict[str, str]:
    """The settled outcome of each operation as the sink records it; stops at ``timeout``."""
    outcomes: dict[str, str] = {}
    if not operation_ids or not start:
        return outcomes
    tail = PartitionTail(bootstrap, dict(start), client_id="vudsync-verify", security=security)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and len(outcomes) < len(operation_ids):
            for record in tail.poll(0.5):
                try:
                    result = decode_model(OperationResult, record.value)
                except DecodeError:
                    continue
                if result.operation_id in operation_ids and result.outcome.value in SETTLED:
                    outcomes[result.operation_id] = result.outcome.value
                    if on_result:
                        on_result(result)
    finally:
        tail.close()
    return outcomes
