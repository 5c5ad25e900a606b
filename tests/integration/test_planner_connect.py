"""`vudsync connect` against the real cloud API and broker: who may connect, and what it tells
the planner."""

from __future__ import annotations

from collections import Counter

import httpx

from kernel.settings import Settings
from schemas.directory import EntityType
from schemas.results import PlannerFact
from schemas.topics import DIRECTORY_TOPICS, PLANNER_FACTS
from tests.fixtures.cloud import CloudReader, fingerprint
from tests.kafka_read import read_all
from tests.pipeline import directory_writer, vudsync_cli
from vudsync.commands.connect import read_cloud
from vudsync.ops import cloud_reader


def test_connect_refuses_credentials_that_are_not_a_customer_administrators(
    pipeline_settings: Settings, kafka_bootstrap: str, cloud: CloudReader
) -> None:
    cloud.add_client("helpdesk", "helpdesk-secret-1", customer_admin=False)
    refused = vudsync_cli(
        pipeline_settings,
        kafka_bootstrap,
        "connect",
        VUDSYNC_CLOUD_CLIENT_ID="helpdesk",
        VUDSYNC_CLOUD_CLIENT_SECRET="helpdesk-secret-1",
    )
    assert refused.returncode == 2, refused.stderr
    assert "not a Customer administrator" in refused.stderr and "hint:" in refused.stderr
    assert "helpdesk-secret-1" not in refused.stderr + refused.stdout
    wrong = vudsync_cli(
        pipeline_settings, kafka_bootstrap, "connect", VUDSYNC_CLOUD_CLIENT_SECRET="not-the-secret"
    )
    assert wrong.returncode == 2 and "does not accept the credentials" in wrong.stderr
    assert "Traceback" not in refused.stderr + wrong.stderr


def test_connect_publishes_what_the_planner_must_know_and_snapshots_the_store(
    pipeline_settings: Settings, kafka_bootstrap: str, cloud: CloudReader
) -> None:
    settings = pipeline_settings
    cloud.register_instance("business", "https://vb.fjord.local", fingerprint(settings, "VB-KEY-1"))
    api = cloud.client
    api.put("/v1/services/business/roles/Regnskap", json={"description": "Regnskap"}).raise_for_status()
    linked = api.post(
        "/v1/companies", json={"external_id": "c1", "name": "Fjord AS", "organisation_number": "923609016"}
    ).json()
    writer = directory_writer(settings)
    writer.add_application_instance("business", "https://vb.fjord.local", "VB-KEY-1")
    writer.upsert_companies([{"id": "c1", "name": "Fjord AS", "organisation_number": "923 609 016"}])
    writer.close()

    done = vudsync_cli(settings, kafka_bootstrap, "connect")
    assert done.returncode == 0, done.stderr
    assert "Customer administrator" in done.stdout and "taken at change-log position" in done.stdout
    assert "VB-KEY-1" not in done.stdout + done.stderr

    partitions = settings.topic_partitions
    records = read_all(
        kafka_bootstrap,
        settings.topic(PLANNER_FACTS.name),
        timeout=60,
        # 3 registries, 1 catalogue entry, 1 company, 1 instance, and connected
        until=lambda rs: len(rs) >= partitions * 7,
    )
    facts = [(r.partition, PlannerFact.model_validate_json(r.value)) for r in records]
    per_key = Counter(f.key for _, f in facts)
    assert {
        k: per_key[k] for k in ("registry:business", "registry:reporting", "company:c1")
    } == dict.fromkeys(("registry:business", "registry:reporting", "company:c1"), partitions), (
        "shared facts reach every partition"
    )
    by_key = {f.key: f for _, f in facts}
    assert by_key["registry:business"].present and not by_key["registry:reporting"].present
    assert by_key["company:c1"].cloud_id == linked["id"]
    assert by_key["catalogue:business:roles:Regnskap"].present
    instance = by_key["instance:business"]
    assert instance.license_fingerprint == fingerprint(settings, "VB-KEY-1")
    assert b"VB-KEY-1" not in b"".join(r.value for r in records)
    for p in range(partitions):  # said last, on every partition: the planner sends nothing before
        mine = [f for q, f in facts if q == p]
        assert mine[-1].key == "connect:installation" and mine[-1].present
        assert [f.key for f in mine].count("connect:installation") == 1

    # never snapshotted before: connect took the snapshot
    events = read_all(
        kafka_bootstrap, settings.topic(DIRECTORY_TOPICS[EntityType.COMPANY].name), timeout=30, until=bool
    )
    assert events[0].key == b"c1"
    again = vudsync_cli(settings, kafka_bootstrap, "connect", "--json")
    assert again.returncode == 0 and "snapshotted before" in again.stdout


def test_connect_learns_every_linked_user_and_company_past_the_first_page(
    pipeline_settings: Settings, cloud: CloudReader
) -> None:
    """The mistake it prevents: connect read one page (10,000) and left the rest to be learned
    from results, so the planner created users that were linked already."""
    api = httpx.Client(base_url=cloud.server.url, headers=cloud.server.auth_headers(), timeout=60)
    count = cloud_reader.PAGE + 5
    for start in range(0, count, 500):
        batch = [
            {
                "method": "POST",
                "path": "/v1/users",
                "body": {"external_id": f"u{i}", "email": f"u{i}@fjord.no"},
            }
            for i in range(start, min(start + 500, count))
        ]
        api.post("/v1/batch", json={"requests": batch}).raise_for_status()
    api.post("/v1/users", json={"email": "portal-only@fjord.no"}).raise_for_status()  # not linked
    orgs = ("923609016", "914778271", "982463718")
    companies = {
        f"c{i}": api.post(
            "/v1/companies", json={"external_id": f"c{i}", "name": f"Fjord {i}", "organisation_number": org}
        ).json()["id"]
        for i, org in enumerate(orgs)
    }
    api.close()

    readout = read_cloud(pipeline_settings)

    assert set(readout.users) == {f"u{i}" for i in range(count)}
    assert readout.companies == companies
