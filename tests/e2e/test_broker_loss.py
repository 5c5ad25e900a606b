"""A broker lost mid-stream, on the secured three-node cluster (topics with three replicas,
``min.insync.replicas=2``, every component its own principal).

While directory changes flow producer → planner → sink → cloud, the node that leads most of
the pipeline's partitions is SIGKILLed (no controlled shutdown: its partitions have no leader
until the controller elects another), more changes are written, the node is started again and
rejoins the in-sync replicas; then another node is SIGKILLed the same way. Afterwards:

* nothing lost — ``vudsync verify`` finds the cloud holding every user and assignment of the
  store;
* nothing applied twice — the cloud's own audit has one effect per idempotency key and one
  ``created`` per user;
* consumer lag back to 0 — ``vudsync status --json``, for the planner's and the sink's group.
"""

from __future__ import annotations

import collections
import json
import random
from collections.abc import Iterable
from typing import Any

import httpx
import pytest
from kafka.admin import ConfigResource, ConfigResourceType

from devtools.broker.cluster import KafkaTarget, LocalKafkaCluster
from devtools.broker.configure import free_port
from devtools.seed.data import organisation_number
from devtools.seed.writer import open_writer
from kernel.admin import admin_client
from kernel.settings import Settings
from processors.app import app_id
from tests.fixtures.cloud import CloudReader
from tests.pipeline import components, lag_by_group, vudsync_cli, wait_for
from vudsync.ops.kafka_admin import group_admin
from vudsync.topics import ensure_catalogue

URI = "https://vb.fjord.local"
COMPANIES = ("c1", "c2", "c3")
WAVE = 40  # users written per wave; three waves: before, during the first and the second loss


def _partitions(settings: Settings, bootstrap: str) -> list[dict[str, Any]]:
    """Every partition of the test's topics (the catalogue's and the planner's changelog)."""
    with admin_client(bootstrap, security=settings.kafka_security()) as client:
        names = [t for t in client.list_topics() if t.startswith(settings.topic_prefix)]
        described: list[dict[str, Any]] = client.describe_topics(names)
    return [p for topic in described for p in topic["partitions"]]


def _min_insync(settings: Settings, bootstrap: str, topic: str) -> str:
    with admin_client(bootstrap, security=settings.kafka_security()) as client:
        configs = client.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    return str(configs["topic"][topic]["min.insync.replicas"]["value"])


def _busiest(settings: Settings, bootstrap: str, among: Iterable[int]) -> int:
    """The node of ``among`` that leads most of the test's partitions."""
    leaders = collections.Counter(p["leader_id"] for p in _partitions(settings, bootstrap))
    return max(among, key=lambda node: (leaders[node], -node))


def _fully_replicated(settings: Settings, bootstrap: str) -> bool:
    """Every partition has a leader and all its replicas in sync."""
    return all(
        p["leader_id"] >= 0 and set(p["isr_nodes"]) == set(p["replica_nodes"])
        for p in _partitions(settings, bootstrap)
    )


def _users(wave: int) -> list[dict[str, Any]]:
    return [
        {
            "id": f"u{wave}-{i:03d}",
            "username": f"bruker{wave}-{i}",
            "email": f"bruker{wave}.{i}@fjord.no",
            "first_name": "Åse",
            "last_name": "Brækken",
        }
        for i in range(WAVE)
    ]


def _write_wave(writer: Any, wave: int) -> None:
    users = _users(wave)
    writer.upsert_users(users)
    companies = [COMPANIES[i % len(COMPANIES)] for i in range(len(users))]
    writer.grant(
        [(u["id"], c, "business", "role", "Regnskap") for u, c in zip(users, companies, strict=True)]
    )


def _created(cloud: CloudReader, wave: int) -> int:
    """Users of ``wave`` the cloud has created (by the admin's read of its directory)."""
    return sum(1 for u in _users(wave) if cloud.user(u["id"]) is not None)


def _clean(settings: Settings, bootstrap: str) -> bool:
    done = vudsync_cli(settings, bootstrap, "verify", "--json")
    return done.returncode == 0 and bool(json.loads(done.stdout)["report"]["clean"])


def _ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.timeout(900)
@pytest.mark.parametrize("kafka_target", ["secured"], indirect=True)
def test_a_broker_lost_mid_stream_loses_nothing_and_applies_nothing_twice(
    pipeline_settings: Settings, kafka_target: KafkaTarget, cloud: CloudReader
) -> None:
    s, bootstrap = pipeline_settings, kafka_target.bootstrap
    cluster = kafka_target.cluster
    assert isinstance(cluster, LocalKafkaCluster) and cluster.brokers == 3
    ensure_catalogue(s, bootstrap)
    writer = open_writer(s.resolved_store_url())
    writer.upsert_catalogue("roles", [("business", "Regnskap", "Regnskap og lønn")])
    writer.upsert_companies(
        [
            {"id": c, "name": f"Fjord {c} AS", "organisation_number": organisation_number(random.Random(c))}
            for c in COMPANIES
        ]
    )
    writer.add_application_instance("business", URI, "VB-1")
    _write_wave(writer, 0)
    nodes = list(range(1, cluster.brokers + 1))

    with components(s, bootstrap, "planner", "sink", security=kafka_target.security) as procs:
        with group_admin(bootstrap, security=s.kafka_security()) as admin:
            wait_for(procs, lambda: bool(admin.members(app_id(s))), 180, "a planner in its group")
        connected = vudsync_cli(s, bootstrap, "connect")
        assert connected.returncode == 0, connected.stderr
        port = free_port()
        producing = components(
            s, bootstrap, "producer", metrics_ports={"producer": port}, security=kafka_target.security
        )
        with producing as producer:
            procs.update(producer)
            # past its start-up (topics, snapshot) before any broker is lost: the users connect's
            # snapshot sends reach the cloud without the producer
            wait_for(procs, lambda: _ready(port), 180, "the producer ready", interval=1)
            wait_for(procs, lambda: _created(cloud, 0) >= 5, 180, "the first users in the cloud", interval=1)

            # every partition of the pipeline — the planner's changelog included — has three
            # replicas, and a write needs two of them
            changelog = f"{app_id(s)}-state-changelog"
            partitions = _partitions(s, bootstrap)
            assert {len(p["replica_nodes"]) for p in partitions} == {3}
            assert _min_insync(s, bootstrap, changelog) == "2"

            # -- the first loss: the node leading most partitions, while wave 0 is applied
            first = _busiest(s, bootstrap, nodes)
            assert cluster.kill_node(first)
            _write_wave(writer, 1)
            wait_for(procs, lambda: _created(cloud, 1) >= 5, 240, f"progress without {first}", interval=1)
            cluster.start_node(first)
            wait_for(
                procs, lambda: _fully_replicated(s, bootstrap), 180, f"node {first} back in sync", interval=1
            )

            # -- the second loss: another node, the busiest of the others
            second = _busiest(s, bootstrap, [n for n in nodes if n != first])
            assert cluster.kill_node(second)
            _write_wave(writer, 2)
            wait_for(procs, lambda: _created(cloud, 2) >= 5, 240, f"progress without {second}", interval=1)
            cluster.start_node(second)

            # -- nothing lost, lag back to 0
            wait_for(procs, lambda: _clean(s, bootstrap), 300, "the cloud holding the store", interval=2)
            wait_for(
                procs,
                lambda: set(lag_by_group(s, bootstrap).values()) == {0},
                120,
                "the planner's and the sink's lag back to 0",
                interval=2,
            )
    writer.close()

    # -- nothing applied twice: the cloud's own audit
    assert cloud.applied_twice() == []
    users = [cloud.user(u["id"]) for wave in (0, 1, 2) for u in _users(wave)]
    assert all(u is not None and u["active"] for u in users)
    assert len({u["id"] for u in users if u}) == 3 * WAVE
