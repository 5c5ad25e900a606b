"""Tricky directory data (issue 15, item 7): access written a few seconds before its company
(two commits, which the store allows: it has no foreign keys). It was dead-lettered at capture
as "access to unknown company", and when the company arrived nothing brought it back. Now it is
parked like any grant whose company is not known yet, and applied once the company exists —
without the operator rewriting the row."""

from __future__ import annotations

from devtools.processes import wait_until
from kernel.settings import Settings
from schemas.topics import DIRECTORY_DLQ
from tests.fixtures.cloud import CloudReader
from tests.kafka_read import read_all
from tests.pipeline import alive_or_fail, business_directory, components, vudsync_cli


def test_access_written_before_its_company_is_applied_once_the_company_exists(
    pipeline_settings: Settings, kafka_bootstrap: str, cloud: CloudReader
) -> None:
    settings = pipeline_settings
    writer = business_directory(settings, kafka_bootstrap)
    writer.upsert_user(id="u0", username="ola", email="ola@fjord.no", first_name="Ola", last_name="Nordmann")
    assert vudsync_cli(settings, kafka_bootstrap, "connect").returncode == 0

    with components(settings, kafka_bootstrap, "producer", "planner", "sink") as procs:
        wait_until(lambda: alive_or_fail(procs) and cloud.user("u0") is not None, 180, what="u0 in the cloud")
        # the user and its grant commit first, the company a moment later
        writer.upsert_user(
            id="u1", username="kari", email="kari@fjord.no", first_name="Kari", last_name="Holm"
        )
        writer.grant([("u1", "c1", "business", "role", "Regnskap")])
        wait_until(lambda: alive_or_fail(procs) and cloud.user("u1") is not None, 120, what="u1 in the cloud")
        assert cloud.business_roles("u1") == [], "no company in the cloud yet: the grant waits"

        writer.upsert_companies([{"id": "c1", "name": "Fjord AS", "organisation_number": "923609016"}])
        wait_until(
            lambda: alive_or_fail(procs) and cloud.business_roles("u1") == [["Regnskap"]],
            120,
            what="the grant applied once its company exists",
        )
    dead = read_all(kafka_bootstrap, settings.topic(DIRECTORY_DLQ.name), timeout=5)
    assert dead == [], "nothing dead-lettered at capture"
    writer.close()
