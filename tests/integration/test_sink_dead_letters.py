"""Non-retryable failures go to ``vud.cloud.operations.dlq`` with their error context, and the
sink moves on: a real broker, the cloud API in a subprocess, ``vudsync run sink`` as a child."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from kafka import KafkaProducer

from devtools.processes import wait_until
from kernel.settings import Settings
from schemas.codec import decode_model, encode
from schemas.deadletter import (
    HEADER_ATTEMPTS,
    HEADER_EXCEPTION,
    HEADER_HTTP_STATUS,
    HEADER_OFFSET,
    HEADER_PARTITION,
    HEADER_REASON,
    HEADER_RESPONSE,
    HEADER_STAGE,
    HEADER_TOPIC,
    headers_dict,
)
from schemas.operations import AssignAccess
from schemas.results import OperationResult, ResultOutcome
from schemas.topics import OPERATIONS, OPERATIONS_DLQ, RESULTS
from tests.factories import access_op
from tests.fixtures.cloud import CloudReader
from tests.kafka_read import read_all
from tests.pipeline import alive_or_fail, components

NOW = datetime.now(UTC)


def _assign(version: int, role: str, cloud_user: str, cloud_company: str) -> AssignAccess:
    op = access_op(version, role, cloud_user=cloud_user, cloud_company=cloud_company, committed_at=NOW)
    assert isinstance(op, AssignAccess)
    return op


def test_a_validation_failure_is_dead_lettered_with_context_and_the_next_operation_applies(
    catalogued_settings: Settings, kafka_bootstrap: str, cloud: CloudReader
) -> None:
    settings = catalogued_settings
    user, company = cloud.user_and_company()
    unknown_role = _assign(1, "Finnes ikke", user, company)  # not in the catalogue: 422
    good = _assign(2, "Regnskap", user, company)  # the same aggregate, next in line
    ops_topic = settings.topic(OPERATIONS.name)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    try:
        sent = producer.send(ops_topic, key=b"user:u1", value=encode(unknown_role)).get(timeout=30)
        producer.send(ops_topic, key=b"user:u1", value=encode(good)).get(timeout=30)
        garbage = producer.send(ops_topic, key=b"user:x", value=b"not an operation").get(timeout=30)
    finally:
        producer.close()

    with components(settings, kafka_bootstrap, "sink") as procs:
        dead = read_all(
            kafka_bootstrap,
            settings.topic(OPERATIONS_DLQ.name),
            until=lambda records: alive_or_fail(procs) and len(records) >= 2,
            timeout=120,
        )
        wait_until(
            lambda: alive_or_fail(procs) and bool(cloud.access(user)),
            60,
            what="the next operation of the aggregate applied",
        )
    by_stage = {headers_dict(r.headers)[HEADER_STAGE]: r for r in dead}
    assert set(by_stage) == {"apply", "decode"}

    rejected = by_stage["apply"]
    headers = headers_dict(rejected.headers)
    assert rejected.value == encode(unknown_role) and rejected.key == b"user:u1"
    assert headers[HEADER_HTTP_STATUS] == "422"
    assert "unknown_catalogue_entry" in headers[HEADER_RESPONSE]
    assert "422" in headers[HEADER_REASON]
    assert headers[HEADER_EXCEPTION] == "CloudRejected"
    assert headers[HEADER_ATTEMPTS] == "1"  # a 4xx is not retried
    assert (headers[HEADER_TOPIC], headers[HEADER_PARTITION], headers[HEADER_OFFSET]) == (
        ops_topic,
        str(sent.partition),
        str(sent.offset),
    )
    undecodable = headers_dict(by_stage["decode"].headers)
    assert undecodable[HEADER_OFFSET] == str(garbage.offset) and "not JSON" in undecodable[HEADER_REASON]
    assert by_stage["decode"].value == b"not an operation"

    access = cloud.access(user)
    assert [a["services"]["business"]["roles"] for a in access] == [["Regnskap"]]

    outcomes: dict[str, Any] = {}

    def both(records: list[Any]) -> bool:
        for r in records:
            result = decode_model(OperationResult, r.value)
            outcomes[result.operation_id] = result
        return {unknown_role.operation_id, good.operation_id} <= set(outcomes)

    read_all(kafka_bootstrap, settings.topic(RESULTS.name), until=both, timeout=60)
    assert outcomes[unknown_role.operation_id].outcome is ResultOutcome.DEAD_LETTERED
    assert "422" in (outcomes[unknown_role.operation_id].error or "")
    assert outcomes[good.operation_id].outcome is ResultOutcome.APPLIED
    assert outcomes[good.operation_id].cloud_id == user
