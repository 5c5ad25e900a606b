"""Two-way access (issue 16): what an administrator assigns in the cloud is kept. The defect it
prevents: an access operation replaced the user's whole set in the company, so the next
on-premise change of the same user in the same company wiped every role granted in the cloud,
and a revoke on premise removed them too."""

from __future__ import annotations

import json

from devtools.processes import wait_until
from kernel.settings import Settings
from tests.fixtures.cloud import CloudReader, Portal
from tests.pipeline import alive_or_fail, business_directory, components, vudsync_cli


def test_a_role_granted_in_the_cloud_survives_changes_and_revokes_on_premise(
    pipeline_settings: Settings, kafka_bootstrap: str, cloud: CloudReader
) -> None:
    settings = pipeline_settings
    roles = ("Regnskap", "Lønn", "Innkjøp")
    writer = business_directory(settings, kafka_bootstrap, roles)
    writer.upsert_companies([{"id": "c1", "name": "Fjord AS", "organisation_number": "923609016"}])
    writer.upsert_user(id="u1", username="kari", email="kari@fjord.no", first_name="Kari", last_name="Holm")
    writer.grant([("u1", "c1", "business", "role", "Regnskap")])
    assert vudsync_cli(settings, kafka_bootstrap, "connect").returncode == 0

    with components(settings, kafka_bootstrap, "producer", "planner", "sink") as procs:
        wait_until(
            lambda: alive_or_fail(procs) and cloud.origins("u1") == {"Regnskap": "directory"},
            180,
            what="u1's on-premise role in the cloud",
        )
        # an administrator grants a role in the portal (another OAuth client than the integration)
        admin = Portal(cloud)
        admin.entry("PUT", "u1", "c1", "Lønn")
        admin.close()

        # an unrelated role of the same user in the same company changes on premise
        writer.grant([("u1", "c1", "business", "role", "Innkjøp")])
        wait_until(
            lambda: alive_or_fail(procs) and "Innkjøp" in cloud.origins("u1"),
            120,
            what="the on-premise grant applied",
        )
        assert cloud.origins("u1") == {"Regnskap": "directory", "Innkjøp": "directory", "Lønn": "cloud"}

        # every on-premise access of the user in the company is revoked: the cloud's grant stays
        writer.revoke("u1", "c1")
        wait_until(
            lambda: alive_or_fail(procs) and cloud.origins("u1") == {"Lønn": "cloud"},
            120,
            what="the directory's roles revoked, the cloud's kept",
        )
        # verify: the cloud's entry is reported apart, never drift (so --repair never revokes it)
        verified = vudsync_cli(settings, kafka_bootstrap, "verify", "--json")
        assert verified.returncode == 0, verified.stdout + verified.stderr
        report = json.loads(verified.stdout)["report"]
        assert report["clean"] and report["cloud_origin_entries"] == ["u1/c1: business/roles/Lønn"]
    writer.close()
