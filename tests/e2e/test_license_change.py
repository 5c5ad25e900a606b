"""A license change on premise, as an operator meets it: the planner holds the application's
assignments (its instance no longer matches the cloud's registration), `vudsync instances`
says which field differs — never a key — and exits 1, and `vudsync instances register` (a
Customer administrator's step) puts the new instance in the cloud and releases what was held."""

from __future__ import annotations

import json
from typing import Any

import httpx

from devtools.processes import wait_until
from kernel.settings import Settings
from schemas.results import OperationResult, ResultOutcome
from schemas.topics import RESULTS
from tests.fixtures.cloud import CloudReader, fingerprint
from tests.kafka_read import read_all
from tests.pipeline import alive_or_fail, components, directory_writer, vudsync_cli

URI = "https://vb.fjord.local"


def test_a_license_change_holds_business_access_until_the_new_instance_is_registered(
    catalogued_settings: Settings, kafka_bootstrap: str, cloud: CloudReader
) -> None:
    settings = catalogued_settings
    cloud.register_instance("business", URI, fingerprint(settings, "VB-KEY-1"))
    writer = directory_writer(settings)
    writer.add_application_instance("business", URI, "VB-KEY-1")
    writer.upsert_catalogue("roles", [("business", "Regnskap", "Regnskap"), ("business", "Lønn", "Lønn")])
    writer.upsert_companies([{"id": "c1", "name": "Fjord AS", "organisation_number": "923609016"}])
    writer.upsert_user(id="u1", username="kari", email="kari@fjord.no", first_name="Kari", last_name="Holm")
    writer.grant([("u1", "c1", "business", "role", "Regnskap")])
    assert vudsync_cli(settings, kafka_bootstrap, "connect").returncode == 0

    matching = vudsync_cli(settings, kafka_bootstrap, "instances", "--json")
    assert matching.returncode == 0, matching.stderr
    verdicts = {row["application"]: row for row in json.loads(matching.stdout)}
    assert verdicts["business"]["verdict"] == "ok" and verdicts["business"]["cloud_uri"] == URI

    with components(settings, kafka_bootstrap, "producer", "planner", "sink") as procs:
        wait_until(
            lambda: alive_or_fail(procs) and cloud.business_roles("u1") == [["Regnskap"]],
            180,
            what="u1's role in the cloud while the instance matches",
        )
        # the license changes on premise; once the planner has seen it, a role is granted (a
        # grant committed before the planner reads the instance's change is planned under the
        # verdict it had: the two are on different topics, with no order between them)
        writer.set_application_instance("business", URI, "VB-KEY-2")
        read_all(
            kafka_bootstrap,
            settings.topic(RESULTS.name),
            timeout=120,
            until=lambda rs: any(b"journal.instance_mismatch" in r.value for r in rs),
        )
        writer.grant([("u1", "c1", "business", "role", "Lønn")])

        def blocked_assignment(records: list[Any]) -> bool:
            results = [OperationResult.model_validate_json(r.value) for r in records]
            return any(r.kind == "access.assign" and r.outcome is ResultOutcome.BLOCKED for r in results)

        read_all(kafka_bootstrap, settings.topic(RESULTS.name), timeout=120, until=blocked_assignment)

        def says_mismatch() -> bool:
            shown = vudsync_cli(settings, kafka_bootstrap, "instances")
            return shown.returncode == 1 and "license key differ" in shown.stdout

        wait_until(says_mismatch, 60, what="instances reports the mismatch (exit 1)")
        shown = vudsync_cli(settings, kafka_bootstrap, "instances")
        assert "vudsync instances register" in shown.stdout
        for secret in ("VB-KEY-1", "VB-KEY-2", fingerprint(settings, "VB-KEY-2")):
            assert secret not in shown.stdout + shown.stderr

        # a client that is not a Customer administrator may not register
        cloud.add_client("helpdesk", "helpdesk-secret-1", customer_admin=False)
        refused = vudsync_cli(
            settings,
            kafka_bootstrap,
            "instances",
            "register",
            "business",
            "--yes",
            VUDSYNC_CLOUD_CLIENT_ID="helpdesk",
            VUDSYNC_CLOUD_CLIENT_SECRET="helpdesk-secret-1",
        )
        assert refused.returncode == 2 and "not a Customer administrator" in refused.stderr
        assert cloud.business_roles("u1") == [["Regnskap"]], "held while the instance differs"

        # `vudsync status` names the blocked application (only the count of operations did)
        status = vudsync_cli(settings, kafka_bootstrap, "status", "--json")
        assert status.returncode == 1, status.stderr
        report = json.loads(status.stdout)
        assert report["blocked_applications"] == {"business": ["license key"]}
        assert any(
            "application business is blocked" in p and "`vudsync instances register business`" in p
            for p in report["problems"]
        )
        assert "VB-KEY-2" not in status.stdout and fingerprint(settings, "VB-KEY-2") not in status.stdout

        registered = vudsync_cli(
            settings, kafka_bootstrap, "instances", "register", "business", "--yes", "--json"
        )
        assert registered.returncode == 0, registered.stderr
        assert json.loads(registered.stdout)["changed"] is True
        wait_until(
            lambda: alive_or_fail(procs) and cloud.business_roles("u1") == [["Lønn", "Regnskap"]],
            120,
            what="the held role released once the new instance is registered",
        )
        unblocked = json.loads(vudsync_cli(settings, kafka_bootstrap, "status", "--json").stdout)
        assert unblocked["blocked_applications"] == {}
    (instance,) = httpx.get(
        f"{cloud.server.url}/v1/application-instances", headers=cloud.server.auth_headers()
    ).json()["items"]
    assert instance["license_fingerprint"] == fingerprint(settings, "VB-KEY-2")
    again = vudsync_cli(settings, kafka_bootstrap, "instances", "register", "business", "--yes")
    assert again.returncode == 0 and "already registered" in again.stdout
    writer.close()
