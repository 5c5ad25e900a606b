"""Re-snapshot on demand and disconnect / re-connect, end to end on real parts (store → producer
→ Kafka → planner → sink → cloud API), judged by the users topic and the cloud's own audit:

* ``vudsync snapshot --entity users --wait`` makes the running producer emit each user once
  more, and nothing reaches the cloud (unchanged state plans nothing); ``--where company=`` only
  that company's users;
* ``vudsync disconnect``: an on-premise change reaches nothing in the cloud, ``status`` says
  disconnected (exit 1) and ``parked list`` what waits; ``vudsync connect``: it converges, and
  no idempotency key has two effects.
"""

from __future__ import annotations

import collections
import json
import socket
from typing import Any

from kernel.settings import Settings
from schemas.directory import EntityType
from schemas.topics import DIRECTORY_TOPICS, PLANNER_FACTS
from tests.fixtures.cloud import CloudReader
from tests.kafka_read import committed, read_all
from tests.pipeline import business_directory, components, vudsync_cli, wait_for
from vudsync.ops.groups import Role, group_id

USERS = 12  # u00 … u11; u00-u03 have access in c1, the others in c2


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _seed_and_connect(settings: Settings, bootstrap: str) -> Any:
    """The directory (USERS users, two companies), and `vudsync connect`; the writer."""
    writer = business_directory(settings, bootstrap)
    writer.upsert_companies(
        [
            {"id": "c1", "name": "Fjord AS", "organisation_number": "923609016"},
            {"id": "c2", "name": "Vik AS", "organisation_number": "923609024"},
        ]
    )
    for i in range(USERS):
        writer.upsert_user(
            id=f"u{i:02}", username=f"user{i}", email=f"user{i}@fjord.no", first_name="Kari", last_name="Holm"
        )
        writer.grant([(f"u{i:02}", "c1" if i < 4 else "c2", "business", "role", "Regnskap")])
    connected = vudsync_cli(settings, bootstrap, "connect")
    assert connected.returncode == 0, connected.stdout + connected.stderr
    return writer


def _users_topic(settings: Settings, bootstrap: str) -> list[Any]:
    return read_all(bootstrap, settings.topic(DIRECTORY_TOPICS[EntityType.USER].name))


def _planner_read_all(settings: Settings, bootstrap: str, name: str) -> bool:
    """The planner's group has committed past every record of topic ``name``."""
    topic = settings.topic(name)
    end = len(read_all(bootstrap, topic))
    return committed(bootstrap, group_id(Role.PLANNER, settings), topic, settings.topic_partitions) >= end


def _planner_read_all_users(settings: Settings, bootstrap: str) -> bool:
    return _planner_read_all(settings, bootstrap, DIRECTORY_TOPICS[EntityType.USER].name)


def _synced(cloud: CloudReader) -> bool:
    return all(cloud.business_roles(f"u{i:02}") == [["Regnskap"]] for i in range(USERS))


def _no_effect_twice(cloud: CloudReader) -> None:
    assert cloud.applied_twice() == []


def test_a_resnapshot_emits_each_user_once_and_applies_nothing(
    pipeline_settings: Settings, kafka_bootstrap: str, cloud: CloudReader
) -> None:
    settings = pipeline_settings
    writer = _seed_and_connect(settings, kafka_bootstrap)

    # no producer: the request is not picked up, cancelled, and the command says how to start it
    down = vudsync_cli(settings, kafka_bootstrap, "snapshot", "--entity", "users", "--pickup-timeout", "2s")
    assert down.returncode == 1 and "vudsync run producer" in down.stdout, down.stdout + down.stderr

    with components(settings, kafka_bootstrap, "producer", "planner", "sink") as procs:
        wait_for(procs, lambda: _synced(cloud), 240, "every user and assignment in the cloud")
        wait_for(procs, lambda: _planner_read_all_users(settings, kafka_bootstrap), 120, "planner caught up")
        before = collections.Counter(r.key for r in _users_topic(settings, kafka_bootstrap))
        writes = len(cloud.audit())

        done = vudsync_cli(settings, kafka_bootstrap, "snapshot", "--entity", "users", "--wait", "--json")
        assert done.returncode == 0, done.stdout + done.stderr
        request = json.loads(done.stdout)["request"]
        assert (request["status"], request["emitted"], request["total"]) == ("done", USERS, USERS)
        after = collections.Counter(r.key for r in _users_topic(settings, kafka_bootstrap))
        assert after - before == collections.Counter(f"u{i:02}".encode() for i in range(USERS)), "each once"

        by_company = ("snapshot", "--entity", "users", "--where", "company=c1", "--wait", "--json")
        only_c1 = vudsync_cli(settings, kafka_bootstrap, *by_company)
        assert only_c1.returncode == 0, only_c1.stdout + only_c1.stderr
        third = collections.Counter(r.key for r in _users_topic(settings, kafka_bootstrap))
        assert third - after == collections.Counter(f"u{i:02}".encode() for i in range(4)), "c1's users only"

        wait_for(procs, lambda: _planner_read_all_users(settings, kafka_bootstrap), 120, "planner read them")
        assert len(cloud.audit()) == writes, "unchanged state planned nothing: the cloud saw no write"
    _no_effect_twice(cloud)
    writer.close()


def test_disconnect_sends_nothing_and_connect_converges_without_duplicates(
    pipeline_settings: Settings, kafka_bootstrap: str, cloud: CloudReader
) -> None:
    settings = pipeline_settings
    writer = _seed_and_connect(settings, kafka_bootstrap)
    port = _free_port()
    scraped = f"planner=http://127.0.0.1:{port}/metrics"
    with components(
        settings, kafka_bootstrap, "producer", "planner", "sink", metrics_ports={"planner": port}
    ) as procs:
        wait_for(procs, lambda: _synced(cloud), 240, "every user and assignment in the cloud")

        gone = vudsync_cli(settings, kafka_bootstrap, "disconnect", "--yes", "--json")
        assert gone.returncode == 0, gone.stdout + gone.stderr
        assert "nothing is deleted" in json.loads(gone.stdout)["leaves"]
        wait_for(
            procs,
            lambda: _planner_read_all(settings, kafka_bootstrap, PLANNER_FACTS.name),
            120,
            "every planner partition took the disconnect",
        )
        writes = len(cloud.audit())

        writer.update_user("u00", first_name="Kari Anne")
        writer.upsert_user(
            id="u99", username="late", email="late@fjord.no", first_name="Ola", last_name="Lie"
        )
        writer.grant([("u99", "c1", "business", "role", "Regnskap")])
        wait_for(procs, lambda: _planner_read_all_users(settings, kafka_bootstrap), 120, "planner read them")

        def parked() -> list[dict[str, Any]]:
            done = vudsync_cli(settings, kafka_bootstrap, "parked", "list", "--json")
            return list(json.loads(done.stdout)["operations"]) if done.returncode == 0 else []

        wait_for(procs, lambda: len(parked()) >= 2, 120, "the changes wait in the planner")
        assert {p["entity_id"] for p in parked()} == {"u00", "u99"}
        assert ["connect:installation"] in [p["waiting_for"] for p in parked()]
        status = vudsync_cli(settings, kafka_bootstrap, "status", "--json", VUDSYNC_STATUS_METRICS=scraped)
        assert status.returncode == 1
        report = json.loads(status.stdout)
        assert report["connected"] is False
        assert any("disconnected" in p and "vudsync connect" in p for p in report["problems"])
        assert len(cloud.audit()) == writes, "nothing reached the cloud while disconnected"
        assert cloud.user("u99") is None

        again = vudsync_cli(settings, kafka_bootstrap, "connect")
        assert again.returncode == 0, again.stdout + again.stderr
        wait_for(
            procs,
            lambda: (
                (cloud.user("u00") or {}).get("first_name") == "Kari Anne"
                and cloud.business_roles("u99") == [["Regnskap"]]
            ),
            180,
            "the changes made while disconnected reach the cloud",
        )
        wait_for(procs, lambda: parked() == [], 120, "nothing waits any more")
        status = vudsync_cli(settings, kafka_bootstrap, "status", "--json", VUDSYNC_STATUS_METRICS=scraped)
        assert json.loads(status.stdout)["connected"] is True
    _no_effect_twice(cloud)
    writer.close()
