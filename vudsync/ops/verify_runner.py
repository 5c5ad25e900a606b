"""Carries verify out: read both sides, compare, and (``--repair``) ask the planner to repair.

Repair order: note where ``vud.cloud.results`` ends → re-emit each drifted entity's current
state with its :class:`~schemas.events.Repair` through the producer's own Kafka client
(:func:`producers.service.reemit_current_state`: the entity's partition, where the planner
keeps its state; removals for entities the store no longer holds) → ``flush`` (acknowledged)
→ optionally wait for the results of the operations the planner plans for them. The planner
plans them like any directory event (:mod:`processors.repair`): the accidental-delete gate,
the instance block, parking, the journal; the sink applies them like any operation.

The repairs are durable once acknowledged: in the directory topics, then in the planner's
table and at the gate — not in verify's memory. A planner that is not running plans them
when it starts.

Race, written down: a directory change captured *after* verify read the store is planned
with a higher version than the repair's; if the planner plans it first, the repair is stale
(a no-op) and the next verify reports what remains. If the repair is planned first, the
change's own operations follow it on the same aggregate and win.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import SecretStr

from kernel.kafka_security import PLAINTEXT, KafkaSecurity
from kernel.records import TopicPartition as TP
from kernel.settings import Settings
from processors.repair import repair_operation_id
from producers.service import reemit_current_state
from schemas.codec import DecodeError, decode_model
from schemas.directory import EntityType
from schemas.results import OperationResult
from schemas.topics import RESULTS
from vudsync.ops.cloud_reader import HttpCloudReader
from vudsync.ops.directory_reader import read_directory
from vudsync.ops.drift import CloudState, DirectoryState, DriftReport, compare
from vudsync.ops.kafka_admin import KafkaGroupAdmin
from vudsync.ops.kafka_reader import PartitionTail
from vudsync.ops.repair_plan import RepairPlan, RepairRequest, repair_requests

SETTLED = ("applied", "already_applied", "superseded", "dead_lettered", "rejected")
#: waiting for somebody: the gate's operator (held), the instance's (blocked); parked ones wait
#: for facts that come by themselves, so verify waits on for them
WAITING = ("held", "blocked")


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


def plan_repair(verification: Verification) -> RepairPlan:
    """What to ask the planner to re-assert for ``verification``'s drift."""
    return repair_requests(verification.report, verification.directory, verification.cloud)


@dataclass(frozen=True)
class Sent:
    """What :func:`send_repairs` published: where the results topic ended before (to wait
    from), the operation ids the planner plans for the repairs, and what capture refused."""

    marks: dict[TP, int]
    operation_ids: dict[str, RepairRequest]
    rejected: dict[str, str]
    not_sent: tuple[str, ...]  # gone from the store between the read and the re-emission


def send_repairs(settings: Settings, bootstrap: str, admin: KafkaGroupAdmin, plan: RepairPlan) -> Sent:
    """Re-emit each request's entity with its repair, by entity type; returns once acked."""
    marks = admin.end_offsets(admin.partitions([settings.topic(RESULTS.name)]))
    by_type: dict[EntityType, list[RepairRequest]] = {}
    for request in plan.requests:
        by_type.setdefault(request.entity, []).append(request)
    rejected: dict[str, str] = {}
    not_sent: list[str] = []
    ids: dict[str, RepairRequest] = {}
    for entity, requests in by_type.items():
        present = [r.entity_id for r in requests if r.removed is None]
        removed = {r.entity_id: dict(r.removed) for r in requests if r.removed is not None}
        sent = reemit_current_state(
            settings,
            bootstrap,
            entity,
            present,
            repairs={r.entity_id: r.repair for r in requests},
            removed=removed,
        )
        rejected.update(sent.rejected)
        not_sent += [f"{entity.value}:{i}" for i in sent.missing]
        for r in requests:
            if r.entity_id in sent.emitted:
                ids.update({op_id: r for op_id in expected_operation_ids(r)})
    return Sent(marks, ids, rejected, tuple(not_sent))


def expected_operation_ids(request: RepairRequest) -> list[str]:
    """The ids the planner gives the operations of ``request`` (:mod:`processors.repair`)."""
    out = []
    for slot, sends in zip(request.repair.slots, request.sends, strict=True):
        if slot == "user":
            kind = "user.deactivate" if request.removed is not None else "user.upsert"
        elif slot == "company":
            kind = "company.upsert"
        elif slot == "catalogue":
            kind = sends
        else:
            out.append(
                repair_operation_id(sends, request.entity_id, request.repair, slot.removeprefix("access:"))
            )
            continue
        out.append(repair_operation_id(kind, request.entity_id, request.repair))
    return out


def wait_for_results(
    bootstrap: str,
    start: dict[TP, int],
    operation_ids: set[str],
    *,
    timeout: float,
    on_result: Callable[[OperationResult], None] | None = None,
    security: KafkaSecurity = PLAINTEXT,
) -> dict[str, str]:
    """The outcome of each operation as the sink (or the planner: held, blocked) records it;
    stops when each has a settled or waiting one, or at ``timeout``."""
    outcomes: dict[str, str] = {}
    if not operation_ids or not start:
        return outcomes
    tail = PartitionTail(bootstrap, dict(start), client_id="vudsync-verify", security=security)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and _open(outcomes, operation_ids):
            for record in tail.poll(0.5):
                try:
                    result = decode_model(OperationResult, record.value)
                except DecodeError:
                    continue
                known = outcomes.get(result.operation_id)
                if result.operation_id in operation_ids and known not in SETTLED:
                    outcomes[result.operation_id] = result.outcome.value
                    if on_result:
                        on_result(result)
    finally:
        tail.close()
    return outcomes


def _open(outcomes: dict[str, str], operation_ids: set[str]) -> bool:
    return any(outcomes.get(i) not in (*SETTLED, *WAITING) for i in operation_ids)
