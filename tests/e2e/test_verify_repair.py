"""``vudsync verify --repair`` through the planner, end to end on real parts (store → Kafka →
planner → sink → cloud API): each test the attack it prevents, the cloud's audit the witness."""

from __future__ import annotations

import collections
import json
import subprocess
from typing import Any

import httpx

from devtools.processes import wait_until
from kernel.settings import Settings
from schemas.fingerprint import license_fingerprint
from schemas.results import OperationResult
from schemas.topics import RESULTS
from tests.factories import store_users
from tests.fixtures.cloud import CloudReader
from tests.kafka_read import read_all
from tests.pipeline import alive_or_fail, business_directory, components, directory_writer, vudsync_cli


def _vudsync(
    settings: Settings, bootstrap: str, *args: str, ok: tuple[int, ...] = (0,)
) -> subprocess.CompletedProcess[str]:
    done = vudsync_cli(settings, bootstrap, *args)
    assert done.returncode in ok, f"{done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


#: verify's wait for the repairs' results stays within the CLI's time limit here (180 s)
REPAIR = ("verify", "--repair", "--yes", "--json", "--timeout", "120s")


def _deactivated(cloud: CloudReader) -> collections.Counter[str]:
    """How often each cloud user was deactivated (audit), by cloud id."""
    return collections.Counter(
        e["resource_id"]
        for e in cloud.audit()
        if e["resource_type"] == "user" and e["effect"] == "deactivated"
    )


def _listed(settings: Settings, bootstrap: str) -> dict[str, Any]:
    return dict(json.loads(_vudsync(settings, bootstrap, "deletes", "list", "--json", ok=(0, 1)).stdout))


def test_a_repair_deactivating_more_than_the_gate_allows_is_held_durably_and_applied_once(
    catalogued_settings: Settings, kafka_bootstrap: str, cloud: CloudReader
) -> None:
    """The attack: verify run against a cloud holding linked users the directory does not have
    (another installation's import; or a store that lost its users) — ``--repair`` used to
    deactivate them itself, judged by a gate in its own memory. Now: four deactivations over a
    threshold of three are held whole by the planner's gate (none in the cloud's audit), listed
    by ``deletes list`` like any held deletion, held once though repaired twice, and released by
    ``deletes approve --up-to``; each cloud user is deactivated exactly once. A harmless repair
    (a field changed in the cloud) goes at once."""
    settings = catalogued_settings
    writer = directory_writer(settings)
    writer.upsert_users(store_users(1, 2))
    _vudsync(settings, kafka_bootstrap, "connect")
    env = {"VUDSYNC_PLANNER_DELETES_THRESHOLD": "3", "VUDSYNC_PLANNER_SESSION_TIMEOUT": "10"}
    api = httpx.Client(base_url=cloud.server.url, headers=cloud.server.auth_headers(), timeout=10)
    with components(settings, kafka_bootstrap, "producer", "planner", "sink", **env) as procs:
        wait_until(
            lambda: alive_or_fail(procs) and all(cloud.user(u) for u in ("u1", "u2")),
            180,
            what="users synced",
        )
        ghosts = {
            g: api.post("/v1/users", json={"external_id": g, "email": f"{g}@annen.no"}).json()["id"]
            for g in ("g1", "g2", "g3", "g4")
        }
        u1 = cloud.user("u1")
        assert u1 is not None
        api.patch(f"/v1/users/{u1['id']}", json={"first_name": "Kåre"}).raise_for_status()

        dry = _vudsync(settings, kafka_bootstrap, "verify", "--repair", "--dry-run", "--json", ok=(1,))
        plan = json.loads(dry.stdout)["repair"]["plan"]
        assert plan["by_kind"] == {"user.deactivate": 4, "user.upsert": 1} and plan["deletions"] == 4
        refused = _vudsync(settings, kafka_bootstrap, "verify", "--repair", ok=(2,))
        assert "--yes" in refused.stderr, "no terminal to confirm on: refused, saying what to pass"

        first = _vudsync(settings, kafka_bootstrap, *REPAIR, ok=(1,))
        outcomes = json.loads(first.stdout)["repair"]["outcomes"]
        assert sorted(outcomes.values()) == ["applied", "held", "held", "held", "held"], (
            f"{outcomes}\n{first.stdout}\n{procs['planner'].tail(60)}"
        )
        assert (cloud.user("u1") or {})["first_name"] == "Åse", "the harmless repair went at once"
        assert _deactivated(cloud) == {}, "no repair of the burst reached the cloud"
        listed = _listed(settings, kafka_bootstrap)
        assert listed["held"] == 4
        assert sorted(e["entity_id"].split("@")[0] for e in listed["entries"]) == sorted(ghosts)

        # --every's next pass, the same drift: the same repairs, held once (not eight)
        again = _vudsync(settings, kafka_bootstrap, *REPAIR, ok=(1,))
        assert sorted(json.loads(again.stdout)["repair"]["outcomes"].values()) == ["held"] * 4
        assert _listed(settings, kafka_bootstrap)["held"] == 4 and _deactivated(cloud) == {}
        # as an operator reads it (no --json): what is held and what to run
        text = _vudsync(settings, kafka_bootstrap, *(a for a in REPAIR if a != "--json"), ok=(1,))
        assert "repair: 4 held" in text.stdout and "vudsync deletes approve --up-to" in text.stdout
        assert "held" in text.stderr, "the results shown as they come"

        _vudsync(settings, kafka_bootstrap, "deletes", "approve", "--up-to", str(listed["up_to"]), "--yes")
        wait_until(
            lambda: alive_or_fail(procs) and set(_deactivated(cloud)) == set(ghosts.values()),
            120,
            what="the four approved repairs applied",
        )
        clean = _vudsync(settings, kafka_bootstrap, *REPAIR)
        assert json.loads(clean.stdout)["report"]["clean"]
    assert max(_deactivated(cloud).values()) == 1, "each deactivated exactly once"
    assert cloud.applied_twice(creations=False) == []
    api.close()
    writer.close()


def test_a_repaired_assignment_for_a_mismatched_instance_is_blocked_like_a_directory_event(
    pipeline_settings: Settings, kafka_bootstrap: str, cloud: CloudReader
) -> None:
    """The attack: repair around the instance block. The license key changed on premise (the
    instance no longer matches the cloud's registry) and an administrator removed the user's
    access in the cloud: the repair of that access is blocked, as the directory's own change
    would be — the cloud keeps no role until the instances match."""
    settings = pipeline_settings
    key = settings.require_secret("fingerprint_key").encode()
    uri = "https://vb.fjord.local"
    cloud.register_instance("business", uri, license_fingerprint("VB-KEY", key))
    writer = business_directory(settings, kafka_bootstrap)  # topics, the role Regnskap
    writer.add_application_instance("business", uri, "VB-KEY")
    kari = {
        "id": "u1",
        "username": "kari",
        "email": "kari@fjord.no",
        "first_name": "Kari",
        "last_name": "Holm",
    }
    with writer.transaction():
        writer.upsert_companies([{"id": "c1", "name": "Fjord AS", "organisation_number": "923609016"}])
        writer.upsert_users([kari])
        writer.grant([("u1", "c1", "business", "role", "Regnskap")])
    _vudsync(settings, kafka_bootstrap, "connect")
    api = httpx.Client(base_url=cloud.server.url, headers=cloud.server.auth_headers(), timeout=10)
    with components(settings, kafka_bootstrap, "producer", "planner", "sink") as procs:
        wait_until(
            lambda: alive_or_fail(procs) and cloud.business_roles("u1") == [["Regnskap"]], 180, what="synced"
        )
        writer.set_application_instance("business", uri, "VB-NEW-KEY")  # a license change on premise
        read_all(
            kafka_bootstrap,
            settings.topic(RESULTS.name),
            timeout=120,
            security=settings.kafka_security(),
            until=lambda rs: any(
                OperationResult.model_validate_json(r.value).kind == "journal.instance_mismatch" for r in rs
            ),
        )
        user, company = cloud.user("u1"), cloud.company("c1")
        assert user is not None and company is not None
        api.delete(f"/v1/users/{user['id']}/access/{company['id']}").raise_for_status()

        done = _vudsync(settings, kafka_bootstrap, *REPAIR, ok=(1,))
        repair = json.loads(done.stdout)["repair"]
        assert repair["plan"]["by_kind"] == {"access.assign": 1}, repair["plan"]
        assert list(repair["outcomes"].values()) == ["blocked"], repair
        assert cloud.business_roles("u1") == [], "the repair did not go around the instance block"
    api.close()
    writer.close()
