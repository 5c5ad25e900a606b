"""Two operator steps the planner waits for, on the real broker, store and cloud API — each
written as the mistake it prevents (issue 15, items 5 and 6):

* a planner started before `vudsync connect` sent everything to a cloud whose credentials and
  registrations nobody had checked: now it sends nothing (the cloud's audit has no write), says
  so in the journal and in `vudsync status` (exit 1), and converges once connect succeeded;
* an on-premise company whose organisation number matches a company that already existed in the
  cloud was linked and got its users' services at once: now its assignments wait, `vudsync
  review list` shows it (exit 1) and `status` counts it, the cloud's audit has nothing for its
  access — until `vudsync review accept`, after which they are applied. A company vudsync
  created needs no review;
* the same, with the sink SIGKILLed after the cloud applied the link but before its ledger and
  result said so: the restarted sink's look-up found the company by external id and reported
  "noop", so no review was raised and the company got its services unchecked. Now the link's
  write-ahead intent in the ledger makes the retry report the link: the review is raised.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from typing import Any

from devtools.processes import wait_until
from kernel.settings import Settings
from schemas.results import OperationResult, ResultOutcome
from schemas.topics import RESULTS
from tests.fixtures.cloud import CloudReader
from tests.kafka_read import read_all
from tests.pipeline import SINK_FAILOVER, alive_or_fail, business_directory, components, vudsync_cli


def _results(settings: Settings, bootstrap: str, until: Any) -> list[OperationResult]:
    records = read_all(
        bootstrap,
        settings.topic(RESULTS.name),
        timeout=180,
        until=lambda rs: until([OperationResult.model_validate_json(r.value) for r in rs]),
    )
    return [OperationResult.model_validate_json(r.value) for r in records]


def _writes(cloud: CloudReader) -> list[dict[str, Any]]:
    return [e for e in cloud.audit() if e["effect"] != "noop"]


def test_a_planner_started_before_connect_sends_nothing_and_says_so_then_connect_converges(
    pipeline_settings: Settings, kafka_bootstrap: str, cloud: CloudReader
) -> None:
    settings = pipeline_settings
    writer = business_directory(settings, kafka_bootstrap)
    writer.upsert_companies([{"id": "c1", "name": "Fjord AS", "organisation_number": "923609016"}])
    writer.upsert_user(id="u1", username="kari", email="kari@fjord.no", first_name="Kari", last_name="Holm")
    writer.grant([("u1", "c1", "business", "role", "Regnskap")])

    with components(settings, kafka_bootstrap, "producer", "planner", "sink") as procs:

        def waiting(results: list[OperationResult]) -> bool:
            alive_or_fail(procs)
            parked = {
                r.kind
                for r in results
                if r.outcome in (ResultOutcome.PARKED, ResultOutcome.BLOCKED)  # (no registry known either)
                and "connect:installation" in r.details.get("waiting_for", ())
            }
            said = any(r.kind == "journal.waiting_for_connect" for r in results)
            return said and {"user.upsert", "company.upsert", "access.assign"} <= parked

        results = _results(settings, kafka_bootstrap, waiting)
        said = [r for r in results if r.kind == "journal.waiting_for_connect"]
        assert len(said) == 1, "once for the installation, not once per partition"
        assert "run `vudsync connect`" in said[0].details["message"]
        assert _writes(cloud) == [], "nothing written in the cloud before connect"

        status = vudsync_cli(settings, kafka_bootstrap, "status", "--json")
        assert status.returncode == 1, status.stderr
        report = json.loads(status.stdout)
        assert report["connected"] is False
        assert any("`vudsync connect` has not succeeded" in p for p in report["problems"])

        connected = vudsync_cli(settings, kafka_bootstrap, "connect")
        assert connected.returncode == 0, connected.stderr
        wait_until(
            lambda: alive_or_fail(procs) and cloud.business_roles("u1") == [["Regnskap"]],
            180,
            what="u1 with its role in c1, once connected",
        )
        assert cloud.company("c1") is not None
        after = json.loads(vudsync_cli(settings, kafka_bootstrap, "status", "--json").stdout)
        assert after["connected"] is True
        assert not any("vudsync connect" in p for p in after["problems"])
    writer.close()


def test_a_company_matched_to_an_existing_cloud_company_gets_no_services_until_reviewed(
    pipeline_settings: Settings, kafka_bootstrap: str, cloud: CloudReader
) -> None:
    settings = pipeline_settings
    # in the cloud before vudsync: a company with c1's organisation number, under another name
    existing = cloud.company_before_vudsync()
    writer = business_directory(settings, kafka_bootstrap)
    writer.upsert_companies(
        [
            {"id": "c1", "name": "Fjord AS", "organisation_number": "923 609 016"},
            {"id": "c2", "name": "Nord AS", "organisation_number": "914778271"},  # vudsync creates it
        ]
    )
    writer.upsert_user(id="u1", username="kari", email="kari@fjord.no", first_name="Kari", last_name="Holm")
    writer.grant([("u1", "c1", "business", "role", "Regnskap"), ("u1", "c2", "business", "role", "Regnskap")])
    assert vudsync_cli(settings, kafka_bootstrap, "connect").returncode == 0

    with components(settings, kafka_bootstrap, "producer", "planner", "sink") as procs:

        def held_for_review(results: list[OperationResult]) -> bool:
            alive_or_fail(procs)
            return any(
                r.kind == "access.assign" and "review:c1" in r.details.get("waiting_for", ()) for r in results
            )

        results = _results(settings, kafka_bootstrap, held_for_review)
        (review,) = [r for r in results if r.kind == "journal.company_review"]
        assert review.outcome is ResultOutcome.REVIEW and existing["id"] in review.details["message"]
        wait_until(
            lambda: alive_or_fail(procs) and cloud.business_roles("u1") == [["Regnskap"]],
            180,
            what="u1's role in c2, which vudsync created (no review)",
        )
        c1, c2 = cloud.company("c1"), cloud.company("c2")
        assert c1 is not None and c1["id"] == existing["id"], "linked, not a second company"
        assert c1["name"] == "Fjord Regnskap AS", "the link changed nothing of the existing company"
        assert c2 is not None
        user = cloud.user("u1")
        assert user is not None
        access_to_c1 = f"{user['id']}/{existing['id']}"
        assert not [e for e in cloud.audit() if e["resource_id"] == access_to_c1], "no access to c1"

        listed = vudsync_cli(settings, kafka_bootstrap, "review", "list", "--json")
        assert listed.returncode == 1, listed.stderr
        shown = json.loads(listed.stdout)
        assert [(c["company_id"], c["cloud_company_id"]) for c in shown["companies"]] == [
            ("c1", existing["id"])
        ]
        on_premise = shown["companies"][0]
        assert on_premise["organisation_number"] and on_premise["name"], "what to compare in the portal"
        assert "kari" not in listed.stdout.lower(), "ids only: no personal data of users"
        status = json.loads(vudsync_cli(settings, kafka_bootstrap, "status", "--json").stdout)
        assert status["companies_waiting_for_review"] == 1
        assert any("wait for review" in p and "`vudsync review list`" in p for p in status["problems"])

        # accept exactly what was listed
        accepted = vudsync_cli(
            settings,
            kafka_bootstrap,
            "review",
            "accept",
            "--all-up-to",
            str(shown["up_to"]),
            "--yes",
            "--json",
        )
        assert accepted.returncode == 0, accepted.stderr
        assert json.loads(accepted.stdout)["companies"] == ["c1"]
        wait_until(
            lambda: alive_or_fail(procs) and cloud.business_roles("u1") == [["Regnskap"], ["Regnskap"]],
            180,
            what="u1's role in c1 once reviewed",
        )
        written = [e for e in cloud.audit() if e["resource_id"] == access_to_c1 and e["effect"] != "noop"]
        assert written, "applied once reviewed"
        after = vudsync_cli(settings, kafka_bootstrap, "review", "list", "--json")
        assert after.returncode == 0 and json.loads(after.stdout)["waiting"] == 0
    writer.close()


def test_a_sink_killed_between_a_company_link_and_its_ledger_still_holds_the_company_for_review(
    pipeline_settings: Settings, kafka_bootstrap: str, cloud: CloudReader
) -> None:
    settings = pipeline_settings
    existing = cloud.company_before_vudsync()
    writer = business_directory(settings, kafka_bootstrap)
    writer.upsert_companies([{"id": "c1", "name": "Fjord AS", "organisation_number": "923609016"}])
    writer.upsert_user(id="u1", username="kari", email="kari@fjord.no", first_name="Kari", last_name="Holm")
    writer.grant([("u1", "c1", "business", "role", "Regnskap")])
    assert vudsync_cli(settings, kafka_bootstrap, "connect").returncode == 0
    # every answer of the cloud leaves 6 s after its effect: the window in which the sink is
    # killed, once the cloud's own store shows the link (the sink waits, it does not time out)
    cloud.faults(latency_ms=[6000, 6000], latency_after_effect=True)
    slow = {"VUDSYNC_SINK_HTTP_TIMEOUT": "60", **SINK_FAILOVER}
    ledger_path = settings.home / "sink" / f"{settings.topic_prefix}ledger.db"

    def linked_in_the_cloud() -> bool:
        with closing(sqlite3.connect(cloud.server.db_path)) as db:
            row = db.execute("SELECT external_id FROM companies WHERE id = ?", (existing["id"],)).fetchone()
        return row is not None and row[0] == "c1"

    with components(settings, kafka_bootstrap, "producer", "planner") as procs:
        with components(settings, kafka_bootstrap, "sink", **slow) as first:
            wait_until(
                lambda: alive_or_fail({**procs, **first}) and linked_in_the_cloud(),
                180,
                interval=0.05,
                what="the cloud applying the link of c1",
            )
            first["sink"].kill()
        with closing(sqlite3.connect(ledger_path)) as ledger:
            linked_in_ledger = ledger.execute(
                "SELECT COUNT(*) FROM applied WHERE result LIKE '%\"linked\"%'"
            ).fetchone()[0]
            intents = ledger.execute("SELECT intent FROM intents").fetchall()
        assert linked_in_ledger == 0, "the kill must land before the link's ledger entry"
        assert [json.loads(i)["cloud_id"] for (i,) in intents] == [existing["id"]]

        cloud.faults()
        with components(settings, kafka_bootstrap, "sink", **SINK_FAILOVER) as second:
            running = {**procs, **second}

            def held_for_review(results: list[OperationResult]) -> bool:
                alive_or_fail(running)
                return any(
                    r.kind == "access.assign" and "review:c1" in r.details.get("waiting_for", ())
                    for r in results
                )

            results = _results(settings, kafka_bootstrap, held_for_review)
            (linked,) = [r for r in results if r.kind == "company.upsert" and r.effect == "linked"]
            assert linked.outcome is ResultOutcome.ALREADY_APPLIED and linked.cloud_id == existing["id"]
            assert "name" in linked.details["review"], "the differences the first attempt found"
            (review,) = [r for r in results if r.kind == "journal.company_review"]
            assert existing["id"] in review.details["message"]
            user = cloud.user("u1")
            assert user is not None
            access_to_c1 = f"{user['id']}/{existing['id']}"
            assert not [e for e in cloud.audit() if e["resource_id"] == access_to_c1], "nothing for c1"
            listed = vudsync_cli(settings, kafka_bootstrap, "review", "list", "--json")
            assert listed.returncode == 1, listed.stderr
            assert [c["company_id"] for c in json.loads(listed.stdout)["companies"]] == ["c1"]

            accepted = vudsync_cli(settings, kafka_bootstrap, "review", "accept", "c1", "--yes")
            assert accepted.returncode == 0, accepted.stderr
            wait_until(
                lambda: alive_or_fail(running) and cloud.business_roles("u1") == [["Regnskap"]],
                180,
                what="u1's role in c1 once reviewed",
            )
        with closing(sqlite3.connect(ledger_path)) as ledger:
            assert ledger.execute("SELECT COUNT(*) FROM intents").fetchone()[0] == 0, "ended by the outcome"
    writer.close()
