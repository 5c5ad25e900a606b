"""The operations commands against the real broker: journal index, dead letters, replay's
refusal and rewind, status. Called as a user calls them (click's CliRunner, environment only)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, KafkaProducer

from devtools.processes import wait_until
from kernel.settings import Settings
from schemas.codec import encode
from schemas.deadletter import error_headers
from schemas.operations import UpsertUser
from schemas.results import OperationResult, ResultOutcome
from schemas.topics import DIRECTORY_DLQ, OPERATIONS, OPERATIONS_DLQ, RESULTS
from sinks.service import sink_group
from tests.factories import T0, user_upsert
from tests.kafka_read import read_all
from tests.pipeline import run_cli
from vudsync.ops.deadletters import HEADER_RETRY_OF
from vudsync.ops.kafka_admin import group_admin
from vudsync.topics import ensure_catalogue

run = run_cli


def _result(
    op: UpsertUser, outcome: ResultOutcome, at: datetime, error: str | None = None
) -> OperationResult:
    return OperationResult.for_operation(op, outcome, at, error=error, source_committed_at=T0)


def _send(bootstrap: str, records: list[tuple[str, bytes, bytes | None, list[tuple[str, bytes]]]]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        for topic, key, value, headers in records:
            producer.send(topic, key=key, value=value, headers=headers or None)
        producer.flush()
    finally:
        producer.close()


def test_journal_indexes_results_and_dead_letters_incrementally(
    kafka_settings: Settings, kafka_bootstrap: str
) -> None:
    s = kafka_settings
    ensure_catalogue(s, kafka_bootstrap)
    now = datetime.now(UTC)
    a, b = user_upsert("u1", 3), user_upsert("u2", 4)
    _send(
        kafka_bootstrap,
        [
            (
                s.topic(RESULTS.name),
                b"u1",
                encode(_result(a, ResultOutcome.APPLIED, now - timedelta(hours=3))),
                [],
            ),
            (
                s.topic(RESULTS.name),
                b"u2",
                encode(_result(b, ResultOutcome.DEAD_LETTERED, now, error="POST /v1/users: 422")),
                [],
            ),
            (
                s.topic(DIRECTORY_DLQ.name),
                b"u9",
                b'{"entity": "user", "entity_id": "u9", "version": 7, "reason": "malformed e-mail"}',
                error_headers(reason="invalid email: malformed e-mail address", stage="capture"),
            ),
            # the sink's dead letter of b: its result above is the journal entry
            (
                s.topic(OPERATIONS_DLQ.name),
                b"user:u2",
                encode(b),
                error_headers(
                    reason="422", stage="apply", topic=s.topic(OPERATIONS.name), partition=0, offset=0
                ),
            ),
        ],
    )
    first = run(s, kafka_bootstrap, "journal", "--json")
    assert first.exit_code == 0, first.output
    entries = [json.loads(line) for line in first.stdout.splitlines()]
    assert sorted((e["outcome"], e["entity_id"]) for e in entries) == [
        ("applied", "u1"),
        ("dead_lettered", "u2"),
        ("dead_lettered", "u9"),
    ]
    assert Path(s.home / "journal.db").exists()

    filtered = run(s, kafka_bootstrap, "journal", "--json", "--outcome", "dead_lettered", "--since", "1h")
    assert [json.loads(x)["entity_id"] for x in filtered.stdout.splitlines()] == ["u2", "u9"] or [
        json.loads(x)["entity_id"] for x in filtered.stdout.splitlines()
    ] == ["u9", "u2"]
    by_entity = run(s, kafka_bootstrap, "journal", "--entity", "u9")
    assert "invalid email" in by_entity.stdout and "dlq.capture" in by_entity.stdout

    # incremental: only what arrived since is read, positions move in the same transaction
    c = user_upsert("u3", 5)
    _send(
        kafka_bootstrap, [(s.topic(RESULTS.name), b"u3", encode(_result(c, ResultOutcome.PARKED, now)), [])]
    )
    count = run(s, kafka_bootstrap, "journal", "--count")
    assert count.stdout.strip() == "4"
    offline = run(s, kafka_bootstrap, "journal", "--no-sync", "--count", "--outcome", "parked")
    assert offline.stdout.strip() == "1"


def test_dead_letters_list_show_retry_and_purge(kafka_settings: Settings, kafka_bootstrap: str) -> None:
    s = kafka_settings
    ensure_catalogue(s, kafka_bootstrap)
    ops_topic, ops_dlq = s.topic(OPERATIONS.name), s.topic(OPERATIONS_DLQ.name)
    records = [
        (
            ops_dlq,
            f"user:u{i}".encode(),
            encode(user_upsert(f"u{i}", i)),
            error_headers(
                reason=f"cloud said no #{i}", stage="apply", topic=ops_topic, partition=0, offset=i
            ),
        )
        for i in range(4)
    ]
    records.append(
        (
            s.topic(DIRECTORY_DLQ.name),
            b"u9",
            b'{"entity": "user", "entity_id": "u9", "version": 7}',
            error_headers(reason="malformed e-mail", stage="capture"),
        )
    )
    _send(kafka_bootstrap, records)

    out = run(s, kafka_bootstrap, "dlq", "list", "--json")
    assert out.exit_code == 0, out.output
    listed = json.loads(out.stdout)
    assert listed["depths"] == {
        "directory": {"unhandled": 1, "retained": 1},
        "operations": {"unhandled": 4, "retained": 4},
    }
    refs = [d["ref"] for d in listed["dead_letters"] if d["ref"].startswith("operations")]
    assert {d["reason"] for d in listed["dead_letters"]} >= {"cloud said no #0", "malformed e-mail"}

    shown = run(s, kafka_bootstrap, "dlq", "show", refs[0])
    assert "vudsync.error.reason: cloud said no" in shown.stdout and '"kind": "user.upsert"' in shown.stdout

    # retry two by ref: back onto the operations topic, with where they came from
    retried = run(s, kafka_bootstrap, "dlq", "retry", refs[0], refs[2])
    assert retried.exit_code == 0 and "2 re-driven" in retried.stdout
    redriven = read_all(kafka_bootstrap, ops_topic, until=lambda rs: len(rs) >= 2, timeout=30)
    assert {dict(r.headers)[HEADER_RETRY_OF].decode().rsplit(":", 1)[1] for r in redriven} == {
        refs[0].rsplit(":", 1)[1],
        refs[2].rsplit(":", 1)[1],
    }
    # a capture rejection cannot be re-driven: it says why
    capture = run(s, kafka_bootstrap, "dlq", "retry", "--all", "--queue", "directory")
    assert capture.exit_code == 1 and "fix the row" in capture.stdout
    after = json.loads(run(s, kafka_bootstrap, "dlq", "list", "--json", "--queue", "operations").stdout)
    assert after["depths"]["operations"]["unhandled"] == 2
    everything = json.loads(
        run(s, kafka_bootstrap, "dlq", "list", "--json", "--all", "--queue", "operations").stdout
    )
    assert sum(d["handled"] for d in everything["dead_letters"]) == 2

    # purge asks first; --yes for scripts; handled records leave the topic for good
    declined = run(s, kafka_bootstrap, "dlq", "purge", "--all", "--queue", "operations", input="n\n")
    assert declined.exit_code == 1
    purged = run(s, kafka_bootstrap, "dlq", "purge", "--all", "--queue", "operations", "--yes")
    assert "Purged 2" in purged.stdout
    final = json.loads(
        run(s, kafka_bootstrap, "dlq", "list", "--json", "--all", "--queue", "operations").stdout
    )
    assert final["depths"]["operations"] == {"unhandled": 0, "retained": 0}


def test_replay_refuses_while_a_consumer_is_alive_then_rewinds(
    kafka_settings: Settings, kafka_bootstrap: str
) -> None:
    s = kafka_settings
    ensure_catalogue(s, kafka_bootstrap)
    ops_topic = s.topic(OPERATIONS.name)
    _send(
        kafka_bootstrap,
        [(ops_topic, f"user:u{i}".encode(), encode(user_upsert(f"u{i}", i)), []) for i in range(6)],
    )
    group = sink_group(s)
    consumer = KafkaConsumer(
        ops_topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=group,
        client_id="vudsync-sink-test-worker",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    seen: list[Any] = []
    try:
        wait_until(
            lambda: seen.extend(r for rs in consumer.poll(500).values() for r in rs) or len(seen) >= 6, 60
        )
        consumer.commit()
        refused = run(s, kafka_bootstrap, "replay", "--since", "1h", "--group", "sink")
        assert refused.exit_code == 2
        assert "vudsync-sink-test-worker on" in refused.output and "live member" in refused.output
        # a dry run still says what it would do, and that it would refuse
        dry = run(s, kafka_bootstrap, "replay", "--since", "1h", "--group", "sink", "--dry-run", "--json")
        assert dry.exit_code == 0, dry.output
        report = json.loads(dry.stdout)
        assert report["messages"] == 6 and report["operations"]["count"] == 6
        assert report["live_members"]["sink"][0].startswith("vudsync-sink-test-worker on")
    finally:
        consumer.close()
    with group_admin(kafka_bootstrap) as admin:
        wait_until(lambda: not admin.members(group), 60, what="the group empty")
        before = admin.committed(group)
    assert sum(before.values()) == 6
    done = run(s, kafka_bootstrap, "replay", "--since", "1h", "--group", "sink", "--no-wait")
    assert done.exit_code == 0, done.output
    assert "drains only when the workers run again" in done.output
    with group_admin(kafka_bootstrap) as admin:
        assert sum(admin.committed(group).values()) == 0
    # explicit offsets, never forward of where the group is
    again = run(
        s, kafka_bootstrap, "replay", "--from-offsets", "operations:0=3", "--group", "sink", "--no-wait"
    )
    assert again.exit_code == 0 and "Nothing to rewind" in again.output


def test_status_on_a_quiet_pipeline(kafka_settings: Settings, kafka_bootstrap: str) -> None:
    s = kafka_settings
    ensure_catalogue(s, kafka_bootstrap)
    _send(
        kafka_bootstrap,
        [
            (s.topic(OPERATIONS.name), b"user:u1", encode(user_upsert("u1", 1)), []),
            (
                s.topic(OPERATIONS_DLQ.name),
                b"user:u2",
                encode(user_upsert("u2", 2)),
                error_headers(
                    reason="no", stage="apply", topic=s.topic(OPERATIONS.name), partition=0, offset=0
                ),
            ),
            (
                s.topic(RESULTS.name),
                b"u1",
                encode(_result(user_upsert("u0", 1), ResultOutcome.APPLIED, datetime.now(UTC))),
                [],
            ),
        ],
    )
    result = run(s, kafka_bootstrap, "status", "--json")
    assert result.exit_code == 1  # something needs attention
    data = json.loads(result.stdout)
    assert data["lag"]["by_group"][sink_group(s)] == 1
    assert data["dlq"][s.topic(OPERATIONS_DLQ.name)] == 1
    assert {c["name"]: c["state"] for c in data["components"]} == {
        "producer": "unknown",
        "planner": "down",
        "sink": "down",
        "directory-sink": "down",
        "cloud-capture": "unknown",
    }
    assert data["last_applied"]["entity"] == "user:u0" and data["last_minute"]["by_outcome"] == {"applied": 1}
    assert data["circuit"] == "unknown"
    screen = run(s, kafka_bootstrap, "status")
    assert "consumer lag" in screen.stdout and "dead letters" in screen.stdout
