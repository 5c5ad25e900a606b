"""The walking skeleton, end to end on real parts: SQLite → producer → Kafka → Faust planner →
Kafka → sink → cloud API over HTTP."""

from __future__ import annotations

import collections

import pytest

from devtools.broker.cluster import KafkaTarget
from devtools.processes import wait_until
from kernel.settings import Settings
from schemas.topics import OPERATIONS
from sinks.service import sink_group
from tests.factories import store_users
from tests.fixtures.cloud import CloudReader
from tests.kafka_read import committed
from tests.pipeline import SINK_FAILOVER, alive_or_fail, components, directory_writer, vudsync_cli
from vudsync.topics import ensure_catalogue


@pytest.mark.parametrize("kafka_target", ["plaintext", "secured"], indirect=True)
def test_insert_update_delete_reach_the_cloud(
    pipeline_settings: Settings, kafka_target: KafkaTarget, cloud: CloudReader
) -> None:
    """On the single PLAINTEXT broker and on the secured three-node cluster (SASL_SSL, each
    component its own principal and ACLs, topics with three replicas)."""
    bootstrap = kafka_target.bootstrap
    ensure_catalogue(pipeline_settings, bootstrap)
    writer = directory_writer(pipeline_settings)
    connected = vudsync_cli(pipeline_settings, bootstrap, "connect")  # nothing is sent before it
    assert connected.returncode == 0, connected.stderr
    with components(
        pipeline_settings,
        bootstrap,
        "producer",
        "planner",
        "sink",
        security=kafka_target.security,
        VUDSYNC_PLANNER_DELETES_SETTLE="0.5",  # the gate on, its settle short: the test waits less
    ) as procs:
        writer.upsert_user(
            id="u1", username="kari", email="Kari.Odegard@fjord.no", first_name="Kari", last_name="Ødegård"
        )

        def created() -> bool:
            alive_or_fail(procs)
            user = cloud.user("u1")
            return user is not None and user["last_name"] == "Ødegård"

        wait_until(created, 120, what="user u1 created in the cloud")
        writer.update_user("u1", first_name="Kari Anne")
        wait_until(
            lambda: alive_or_fail(procs) and cloud.user("u1")["first_name"] == "Kari Anne",
            60,
            what="user u1 updated in the cloud",
        )
        writer.delete_user("u1")
        wait_until(
            lambda: alive_or_fail(procs) and cloud.user("u1")["active"] is False,
            60,
            what="user u1 deactivated in the cloud",
        )
    effects = [e["effect"] for e in cloud.audit() if e["resource_id"] == cloud.user("u1")["id"]]
    assert effects == ["created", "updated", "deactivated"]
    writer.close()


def _writes_made(cloud: CloudReader) -> int:
    """Writes the cloud made and answered 2xx, alone or inside batches (lookups not counted)."""
    stats = cloud.stats()
    return sum(
        n
        for counts in (stats["requests"], stats["batch_items"])
        for route, statuses in counts.items()
        if not route.startswith("GET ") and " /v1/" in route and route != "POST /v1/batch"
        for status, n in statuses.items()
        if status.startswith("2")
    )


def test_sink_killed_after_apply_before_commit_has_no_second_effect(
    pipeline_settings: Settings, kafka_bootstrap: str, cloud: CloudReader
) -> None:
    """SIGKILL the sink while a polled batch is applied but not yet committed; restart it; the
    cloud's own audit shows one effect per write and every user present once."""
    ensure_catalogue(pipeline_settings, kafka_bootstrap)
    connected = vudsync_cli(pipeline_settings, kafka_bootstrap, "connect")  # nothing is sent before it
    assert connected.returncode == 0, connected.stderr
    # the cloud makes every write at once and answers it 3 s later: a write it counted cannot
    # have been committed by the sink yet, so the kill lands between apply and commit by
    # construction — not by racing a slow cloud (a batch of 500 took all 200 users at once and
    # was committed before the test could look)
    cloud.faults(latency_ms=[3000, 3000], latency_after_effect=True)
    writer = directory_writer(pipeline_settings)
    n = 200
    writer.upsert_users(store_users(*range(n), digits=4))
    ops_topic = pipeline_settings.topic(OPERATIONS.name)
    group = sink_group(pipeline_settings)
    with components(
        pipeline_settings, kafka_bootstrap, "producer", "planner", "sink", **SINK_FAILOVER
    ) as procs:
        # (on the admin's counters: the audit is read through /v1, slow now)
        wait_until(
            lambda: alive_or_fail(procs) and _writes_made(cloud) >= 5,
            120,
            what="the sink applying its first operations",
        )
        procs["sink"].kill()
        committed_at_kill = committed(kafka_bootstrap, group, ops_topic, pipeline_settings.topic_partitions)
        cloud.faults()
        applied_at_kill = len(cloud.audit())  # what the sink sent before it died
        assert committed_at_kill < applied_at_kill, "the kill must land between apply and commit"
    with components(pipeline_settings, kafka_bootstrap, "sink", **SINK_FAILOVER) as procs:
        wait_until(
            lambda: (
                alive_or_fail(procs)
                and committed(kafka_bootstrap, group, ops_topic, pipeline_settings.topic_partitions) >= n
            ),
            120,
            what="every operation committed",
        )
    audit = cloud.audit()
    per_key = collections.Counter(e["idempotency_key"] for e in audit)
    assert max(per_key.values()) == 1, [k for k, c in per_key.items() if c > 1]
    created = collections.Counter(e["resource_id"] for e in audit if e["effect"] == "created")
    assert len(created) == n and max(created.values()) == 1
    assert all(cloud.user(f"u{i:04d}") is not None for i in range(0, n, 17))
    writer.close()
