"""Nothing older overwrites something newer, whatever path it takes: a real broker, the cloud
API in a subprocess, ``vudsync run sink`` as a child, and ``vudsync dlq retry`` as the
operator runs it. The dead letters are the operations of an earlier version; meanwhile a newer
version of each was applied. Re-driven, they are answered ``superseded`` and the cloud keeps
the newer state."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from kafka import KafkaProducer

from kernel.settings import Settings
from schemas.codec import decode_model, encode
from schemas.deadletter import error_headers
from schemas.operations import UpsertUser, operation_id_for
from schemas.results import OperationResult, ResultOutcome
from schemas.topics import OPERATIONS, OPERATIONS_DLQ, RESULTS
from tests.factories import access_op, user_upsert
from tests.fixtures.cloud import CloudReader
from tests.kafka_read import read_all
from tests.pipeline import alive_or_fail, components, run_cli

NOW = datetime.now(UTC)


def _update(version: int, cloud_user: str, first_name: str) -> UpsertUser:
    return user_upsert(
        "u1",
        version,
        operation_id=operation_id_for("user.upsert", "u1", version),
        cloud_id=cloud_user,
        username="kari",
        email="kari@fjord.no",
        first_name=first_name,
        source_committed_at=NOW,
    )


def test_dlq_retry_of_stale_operations_is_superseded_and_the_cloud_keeps_the_newer(
    catalogued_settings: Settings, kafka_bootstrap: str, cloud: CloudReader
) -> None:
    settings = catalogued_settings
    user, company = cloud.user_and_company()

    # v10 of the user and of its access in c1 failed earlier and wait in the dead-letter queue
    stale_update = _update(10, user, "Kari v10")
    at = {"cloud_user": user, "cloud_company": company, "committed_at": NOW}
    stale_assign = access_op(10, "Regnskap", **at)  # type: ignore[arg-type]
    # meanwhile v11 assigned, v12 revoked the access and renamed the user
    assign, revoke, update = (
        access_op(11, "Regnskap", **at),  # type: ignore[arg-type]
        access_op(12, None, **at),  # type: ignore[arg-type]
        _update(12, user, "Kari v12"),
    )
    ops_topic, dlq_topic = settings.topic(OPERATIONS.name), settings.topic(OPERATIONS_DLQ.name)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    try:
        for offset, stale in enumerate((stale_update, stale_assign)):
            headers = error_headers(
                reason="503 gave up", stage="apply", topic=ops_topic, partition=0, offset=offset
            )
            producer.send(dlq_topic, key=b"user:u1", value=encode(stale), headers=headers)
        for op in (assign, revoke, update):
            producer.send(ops_topic, key=b"user:u1", value=encode(op))
        producer.flush()
    finally:
        producer.close()

    outcomes: dict[str, OperationResult] = {}

    def collect(records: list) -> dict[str, OperationResult]:  # type: ignore[type-arg]
        for r in records:
            result = decode_model(OperationResult, r.value)
            outcomes[result.operation_id] = result
        return outcomes

    results_topic = settings.topic(RESULTS.name)
    with components(settings, kafka_bootstrap, "sink") as procs:
        newer = {op.operation_id for op in (assign, revoke, update)}
        read_all(
            kafka_bootstrap,
            results_topic,
            until=lambda rs: alive_or_fail(procs) and newer <= set(collect(rs)),
            timeout=120,
        )
        assert {outcomes[oid].outcome for oid in newer} == {ResultOutcome.APPLIED}
        assert cloud.access(user) == [] and cloud.user("u1")["first_name"] == "Kari v12"  # type: ignore[index]

        retried = run_cli(settings, kafka_bootstrap, "dlq", "retry", "--all", "--queue", "operations")
        assert retried.exit_code == 0 and "2 re-driven" in retried.stdout, retried.output

        stale = {stale_update.operation_id, stale_assign.operation_id}
        read_all(
            kafka_bootstrap,
            results_topic,
            until=lambda rs: alive_or_fail(procs) and stale <= set(collect(rs)),
            timeout=120,
        )
    for oid in stale:
        assert outcomes[oid].outcome is ResultOutcome.SUPERSEDED, outcomes[oid]
        assert outcomes[oid].details["applied_version"] == 12
    # the cloud keeps v12: the user's name, and the access stays revoked
    assert cloud.user("u1")["first_name"] == "Kari v12"  # type: ignore[index]
    assert cloud.access(user) == []
    # nothing of v10 reached the cloud: no effect under either operation's idempotency key
    keys = {e.get("idempotency_key") or "" for e in cloud.audit()}
    assert not {k for k in keys if k.split(":")[0] in stale}

    # the journal lists them as superseded
    journal = run_cli(settings, kafka_bootstrap, "journal", "--json", "--outcome", "superseded")
    listed = [json.loads(line) for line in journal.stdout.splitlines() if line.strip()]
    assert {e["operation_id"] for e in listed} == stale, journal.output

    # a replay of the operations topic (the sink's group rewound to the start) applies nothing
    # older: every operation is met again, in order — the applied ones are already applied,
    # the stale ones superseded again — and the cloud has not moved
    audited = len(cloud.audit())
    replayed = run_cli(settings, kafka_bootstrap, "replay", "--since", "1h", "--group", "sink", "--no-wait")
    assert replayed.exit_code == 0, replayed.output
    seen: list[OperationResult] = []

    def again(records: list) -> bool:  # type: ignore[type-arg]
        seen[:] = [decode_model(OperationResult, r.value) for r in records]
        superseded = [r.operation_id for r in seen if r.outcome is ResultOutcome.SUPERSEDED]
        already = {r.operation_id for r in seen if r.outcome is ResultOutcome.ALREADY_APPLIED}
        return all(superseded.count(oid) >= 2 for oid in stale) and newer <= already

    with components(settings, kafka_bootstrap, "sink") as procs:
        read_all(
            kafka_bootstrap, results_topic, until=lambda rs: alive_or_fail(procs) and again(rs), timeout=120
        )
    assert not [r for r in seen if r.operation_id in stale and r.outcome is not ResultOutcome.SUPERSEDED]
    assert cloud.user("u1")["first_name"] == "Kari v12" and cloud.access(user) == []  # type: ignore[index]
    assert len(cloud.audit()) == audited  # no write at all
