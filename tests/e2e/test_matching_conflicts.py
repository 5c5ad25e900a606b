"""Matching never takes over or deactivates a stranger (issue 15, item 2), each case written as
the mistake it prevents, on the real broker, store and cloud API:

* the e-mail of a linked user reused by a new on-premise user → a conflict, the linked cloud
  user untouched (not relinked, not updated);
* a cloud user that is a customer administrator, with the e-mail of a new on-premise user → a
  conflict, never linked;
* the deletion on premise of a user whose link was refused → nothing deactivated (a deactivation
  without a known link never deactivates whoever has that e-mail);
* the access of a new user whose link is refused, sent right behind its upsert (issue 14) → never
  assigned to the linked user with that e-mail: the sink answers it *unresolved*, the planner
  parks it again, and it is applied to the user's own cloud account once the conflict is resolved.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from devtools.processes import wait_until
from kernel.settings import Settings
from schemas.results import OperationResult, ResultOutcome
from schemas.topics import RESULTS
from tests.fixtures.cloud import CloudReader
from tests.kafka_read import read_all
from tests.pipeline import alive_or_fail, components, directory_writer, vudsync_cli


def _conflicts(settings: Settings, bootstrap: str, count: int) -> list[OperationResult]:
    records = read_all(
        bootstrap,
        settings.topic(RESULTS.name),
        timeout=120,
        until=lambda rs: sum(b'"conflict"' in r.value for r in rs) >= count,
    )
    results = [OperationResult.model_validate_json(r.value) for r in records]
    return [r for r in results if r.outcome is ResultOutcome.CONFLICT]


def _outcomes(records: list[Any], entity_id: str, kind: str) -> set[str]:
    results = (OperationResult.model_validate_json(r.value) for r in records)
    return {r.outcome.value for r in results if r.entity_id == entity_id and r.kind == kind}


def test_matching_by_e_mail_never_takes_over_or_deactivates_a_stranger(
    catalogued_settings: Settings, kafka_bootstrap: str, cloud: CloudReader
) -> None:
    settings = catalogued_settings
    # a customer administrator in the cloud, not linked to anyone on premise
    admin = cloud.client.post("/v1/users", json={"email": "sjef@fjord.no", "first_name": "Sjef"}).json()
    httpx.put(
        f"{cloud.server.url}/admin/users/{admin['id']}/customer-admin",
        headers=cloud.server.admin_headers(),
        json={"customer_admin": True},
    ).raise_for_status()
    writer = directory_writer(settings)
    writer.upsert_user(id="u1", username="kari", email="kari@fjord.no", first_name="Kari", last_name="Holm")
    writer.upsert_catalogue("roles", [("business", "Regnskap", "Regnskap")])
    writer.upsert_companies([{"id": "c1", "name": "Fjord AS", "organisation_number": "923609016"}])
    assert vudsync_cli(settings, kafka_bootstrap, "connect").returncode == 0

    settle = {"VUDSYNC_PLANNER_DELETES_SETTLE": "0.5"}  # the gate on, its settle short: less waiting
    with components(settings, kafka_bootstrap, "producer", "planner", "sink", **settle) as procs:
        wait_until(
            lambda: alive_or_fail(procs) and cloud.user("u1") is not None and cloud.company("c1") is not None,
            180,
            what="u1 linked, c1 created",
        )
        kari = cloud.user("u1")
        assert kari is not None

        # a new on-premise user with a linked user's e-mail — with access, in the same commit: its
        # assignment goes right behind its upsert — and one with the administrator's e-mail
        with writer.transaction():
            writer.upsert_user(
                id="u2", username="kari2", email="KARI@fjord.no", first_name="Karianne", last_name="Li"
            )
            writer.grant([("u2", "c1", "business", "role", "Regnskap")])
        writer.upsert_user(
            id="u3", username="sjef", email="sjef@fjord.no", first_name="Overtatt", last_name="Li"
        )
        conflicts = {r.entity_id: r for r in _conflicts(settings, kafka_bootstrap, 2)}
        assert conflicts["u2"].details == {
            "conflict": "linked_to_another",
            "cloud_id": kari["id"],
            "linked_to": "u1",
        }
        assert conflicts["u3"].details == {"conflict": "customer_administrator", "cloud_id": admin["id"]}
        assert conflicts["u2"].cloud_id is None and "kari" not in conflicts["u2"].model_dump_json().lower()

        # the linked user is untouched, the administrator stays unlinked and unchanged
        assert cloud.user("u1") == kari
        assert cloud.user("u2") is None and cloud.user("u3") is None
        # u2's assignment: not given to the linked user with its e-mail; waits again for u2's link
        read_all(
            kafka_bootstrap,
            settings.topic(RESULTS.name),
            timeout=120,
            until=lambda rs: {"unresolved", "parked"} <= _outcomes(rs, "u2", "access.assign"),
        )
        assert cloud.access(kari["id"]) == [], "nothing assigned to the linked user with u2's e-mail"
        stays = cloud.client.get(f"/v1/users/{admin['id']}").json()
        assert (stays["external_id"], stays["first_name"], stays["active"]) == (None, "Sjef", True)

        # the operator sees both, with what to do; resolves one by fixing its e-mail on premise
        listed = vudsync_cli(settings, kafka_bootstrap, "conflicts", "list", "--json")
        assert listed.returncode == 1, listed.stderr
        shown = {c["entity_id"]: c for c in json.loads(listed.stdout)["conflicts"]}
        assert shown.keys() == {"u2", "u3"} and shown["u2"]["linked_to"] == "u1"
        assert "customer administrator" in shown["u3"]["what_to_do"]
        status = vudsync_cli(settings, kafka_bootstrap, "status", "--json")
        assert status.returncode == 1 and json.loads(status.stdout)["open_conflicts"] == 2, status.stderr
        assert any("2 open matching conflict(s)" in p for p in json.loads(status.stdout)["problems"])
        writer.update_user("u2", email="karianne@fjord.no")
        resolved = vudsync_cli(
            settings, kafka_bootstrap, "conflicts", "resolve", "user", "u2", "--timeout", "2m"
        )
        assert resolved.returncode == 0, resolved.stdout + resolved.stderr
        assert cloud.user("u2") is not None and cloud.user("u2")["id"] != kari["id"]
        wait_until(
            lambda: alive_or_fail(procs) and cloud.business_roles("u2") == [["Regnskap"]],
            120,
            what="u2's parked assignment applied to its own cloud user once linked",
        )
        assert cloud.access(kari["id"]) == []
        still = vudsync_cli(
            settings, kafka_bootstrap, "conflicts", "resolve", "user", "u3", "--timeout", "1m"
        )
        assert still.returncode == 1 and "conflict" in still.stdout, still.stdout + still.stderr
        # said as soon as the planner planned nothing new, not after the time-out
        assert "conflict" in still.stdout.splitlines(), still.stdout
        after = vudsync_cli(settings, kafka_bootstrap, "conflicts", "list", "--json")
        assert [c["entity_id"] for c in json.loads(after.stdout)["conflicts"]] == ["u3"]
        counted = json.loads(vudsync_cli(settings, kafka_bootstrap, "status", "--json").stdout)
        assert counted["open_conflicts"] == 1, "status settles a conflict by the list's rule"

        # the user whose link was refused is deleted on premise: nothing is deactivated
        writer.delete_user("u3")
        read_all(
            kafka_bootstrap,
            settings.topic(RESULTS.name),
            timeout=120,
            until=lambda rs: sum(b'"user.deactivate"' in r.value for r in rs) >= 1,
        )
        assert cloud.user("u1") == kari
        assert cloud.client.get(f"/v1/users/{admin['id']}").json()["active"] is True
        alive_or_fail(procs)
    writer.close()
