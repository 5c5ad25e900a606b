"""Two rules end to end, on real parts (store → producer → Kafka → planner → sink → cloud API):
an application instance that does not match the cloud blocks its access until it is fixed, and
mass deletions — removals or ``active = false`` — are held as a whole until an operator approves
(exactly what was shown) or rejects them."""

from __future__ import annotations

import json
import socket
import subprocess
from typing import Any

import pytest

from devtools.broker.cluster import KafkaTarget
from devtools.processes import wait_until
from devtools.seed.writer import SqliteDirectoryWriter
from kernel.settings import Settings
from schemas.results import OperationResult, ResultOutcome
from schemas.topics import RESULTS
from tests.factories import store_users
from tests.fixtures.cloud import CloudReader, fingerprint
from tests.kafka_read import read_all
from tests.pipeline import alive_or_fail, components, directory_writer, gauge, vudsync_cli
from vudsync.topics import ensure_catalogue

URI = "https://vb.fjord.local"


def _vudsync(
    settings: Settings, bootstrap: str, *args: str, ok: tuple[int, ...] = (0,)
) -> subprocess.CompletedProcess[str]:
    done = vudsync_cli(settings, bootstrap, *args)
    assert done.returncode in ok, done.stderr
    return done


def _results(settings: Settings, bootstrap: str, until: Any, timeout: float = 120) -> list[OperationResult]:
    records = read_all(
        bootstrap,
        settings.topic(RESULTS.name),
        timeout=timeout,
        security=settings.kafka_security(),
        until=lambda rs: until([OperationResult.model_validate_json(r.value) for r in rs]),
    )
    return [OperationResult.model_validate_json(r.value) for r in records]


@pytest.mark.parametrize("kafka_target", ["plaintext", "secured"], indirect=True)
def test_a_mismatching_instance_blocks_its_access_until_it_is_fixed(
    pipeline_settings: Settings, kafka_target: KafkaTarget, cloud: CloudReader
) -> None:
    """On the single PLAINTEXT broker and on the secured three-node cluster (each component its
    own principal; ``connect`` and the test's reads as the ops principal)."""
    settings = pipeline_settings
    kafka_bootstrap = kafka_target.bootstrap
    ensure_catalogue(settings, kafka_bootstrap)
    cloud.register_instance("business", URI, fingerprint(settings, "VB-CLOUD-KEY"))
    writer = directory_writer(settings)
    writer.add_application_instance("business", URI, "VB-OTHER-KEY")
    writer.upsert_catalogue("roles", [("business", "Regnskap", "Regnskap")])
    writer.upsert_companies([{"id": "c1", "name": "Fjord AS", "organisation_number": "923609016"}])
    writer.upsert_user(id="u1", username="kari", email="kari@fjord.no", first_name="Kari", last_name="Holm")
    writer.grant([("u1", "c1", "business", "role", "Regnskap")])
    _vudsync(settings, kafka_bootstrap, "connect")

    with components(
        settings, kafka_bootstrap, "producer", "planner", "sink", security=kafka_target.security
    ) as procs:
        results = _results(
            settings,
            kafka_bootstrap,
            lambda rs: (
                any(r.kind == "journal.instance_mismatch" for r in rs)
                and any(r.kind == "access.assign" and r.outcome is ResultOutcome.BLOCKED for r in rs)
            ),
        )
        wait_until(
            lambda: alive_or_fail(procs) and cloud.user("u1") is not None and cloud.company("c1") is not None,
            180,
            what="u1 and c1 in the cloud (they are applied independently)",
        )
        (mismatch,) = {r.operation_id: r for r in results if r.kind == "journal.instance_mismatch"}.values()
        assert mismatch.outcome is ResultOutcome.BLOCKED and mismatch.entity_id == "business"
        assert "license key" in mismatch.details["message"] and "uri" not in mismatch.details["message"]
        everything = "".join(r.model_dump_json() for r in results)
        assert "VB-OTHER-KEY" not in everything and "VB-CLOUD-KEY" not in everything
        assert fingerprint(settings, "VB-OTHER-KEY") not in mismatch.model_dump_json()
        assert cloud.business_roles("u1") == [], "held while it differs"

        writer.set_application_instance("business", URI, "VB-CLOUD-KEY")  # the operator fixes the key
        wait_until(
            lambda: alive_or_fail(procs) and cloud.business_roles("u1") == [["Regnskap"]],
            120,
            what="the held assignment released once the instance matches",
        )
    writer.close()
    # one entry per fact: the mismatch said once (not once per partition of the one planner
    # worker), and nothing telling the operator to run the `vudsync connect` just run
    everything_after = read_all(
        kafka_bootstrap, settings.topic(RESULTS.name), timeout=60, security=settings.kafka_security()
    )
    journalled = [OperationResult.model_validate_json(r.value) for r in everything_after]
    said = [r.kind for r in journalled if r.kind.startswith("journal.instance")]
    assert said == ["journal.instance_mismatch"], said


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _held(port: int) -> float | None:
    return gauge(port, "vudsync_held_deletions")


def _services(cloud: CloudReader, uid: str) -> dict[str, list[str]]:
    """The user's roles per application in its (one) company: {} while it has no access."""
    user = cloud.user(uid)
    access = cloud.access(user["id"]) if user is not None else []
    return {app: svc.get("roles", []) for a in access for app, svc in a["services"].items()}


def test_a_mismatched_application_holds_its_own_access_only(
    catalogued_settings: Settings, kafka_bootstrap: str, cloud: CloudReader
) -> None:
    """Reporting's license key differs from the cloud's registry: the same user's Business role
    in the same company reaches the cloud anyway; Reporting's waits until the key is fixed."""
    settings = catalogued_settings
    for app, cloud_key in (("business", "VB-KEY"), ("reporting", "REPORTING-CLOUD-KEY")):
        cloud.register_instance(app, URI, fingerprint(settings, cloud_key))
    writer = directory_writer(settings)
    writer.add_application_instance("business", URI, "VB-KEY")
    writer.add_application_instance("reporting", URI, "REPORTING-OTHER-KEY")
    writer.upsert_catalogue(
        "roles", [("business", "Regnskap", "Regnskap"), ("reporting", "Analyse", "Analyse")]
    )
    writer.upsert_companies([{"id": "c1", "name": "Fjord AS", "organisation_number": "923609016"}])
    writer.upsert_user(id="u1", username="kari", email="kari@fjord.no", first_name="Kari", last_name="Holm")
    writer.grant([("u1", "c1", "business", "role", "Regnskap"), ("u1", "c1", "reporting", "role", "Analyse")])
    _vudsync(settings, kafka_bootstrap, "connect")

    with components(settings, kafka_bootstrap, "producer", "planner", "sink") as procs:
        wait_until(
            lambda: alive_or_fail(procs) and _services(cloud, "u1") == {"business": ["Regnskap"]},
            180,
            what="the Business role in the cloud while Reporting is held",
        )
        results = _results(
            settings,
            kafka_bootstrap,
            lambda rs: any(r.kind == "access.assign" and r.outcome is ResultOutcome.BLOCKED for r in rs),
        )
        held = [r for r in results if r.kind == "access.assign" and r.outcome is ResultOutcome.BLOCKED]
        assert any("application:reporting" in r.details["waiting_for"] for r in held)
        assert _services(cloud, "u1") == {"business": ["Regnskap"]}, "Reporting's part still waits"

        writer.set_application_instance("reporting", URI, "REPORTING-CLOUD-KEY")  # the key fixed
        wait_until(
            lambda: (
                alive_or_fail(procs)
                and _services(cloud, "u1") == {"business": ["Regnskap"], "reporting": ["Analyse"]}
            ),
            120,
            what="Reporting's access released once its instance matches",
        )
    writer.close()


def _listed(settings: Settings, bootstrap: str) -> dict[str, Any]:
    """`vudsync deletes list --json` (exit status 1 while something is held)."""
    return dict(json.loads(_vudsync(settings, bootstrap, "deletes", "list", "--json", ok=(0, 1)).stdout))


def _connected_users(
    settings: Settings, bootstrap: str, n: int, *, digits: int
) -> tuple[SqliteDirectoryWriter, list[str]]:
    """This test's store with ``n`` users ``u<i>``, after `vudsync connect`: the writer and the
    users' ids."""
    writer = directory_writer(settings)
    rows = store_users(*range(n), digits=digits)
    writer.upsert_users(rows)
    _vudsync(settings, bootstrap, "connect")
    return writer, [row["id"] for row in rows]


def _effects(cloud: CloudReader, effect: str) -> set[str]:
    """The cloud users that had ``effect`` (audit: created, deactivated …), by cloud id."""
    return {e["resource_id"] for e in cloud.audit() if e["resource_type"] == "user" and e["effect"] == effect}


def test_a_burst_of_600_deletions_over_500_is_held_whole_and_approved_only_as_shown(
    catalogued_settings: Settings, kafka_bootstrap: str, cloud: CloudReader
) -> None:
    """The mistakes: 600 users deleted at once with the threshold at 500 — 499 were deactivated
    before the gate held the other 101; and ``approve`` let go deletions held after the operator
    looked. Now none of the burst reaches the cloud (its audit says so) until approved, and the
    approval names the highest number ``deletes list`` showed."""
    settings = catalogued_settings
    writer, users = _connected_users(settings, kafka_bootstrap, 603, digits=3)
    burst, later = users[:600], users[600:]
    port = _free_port()
    env = {"VUDSYNC_PLANNER_DELETES_THRESHOLD": "500", "VUDSYNC_PLANNER_SESSION_TIMEOUT": "10"}
    with components(
        settings, kafka_bootstrap, "producer", "planner", "sink", metrics_ports={"planner": port}, **env
    ) as procs:
        wait_until(
            lambda: alive_or_fail(procs) and len(_effects(cloud, "created")) == len(users),
            300,
            interval=2,
            what="603 users created in the cloud",
        )
        with writer.transaction():  # a wrong import: 600 users gone in one commit
            for u in burst:
                writer.delete_user(u)
        wait_until(
            lambda: alive_or_fail(procs) and _held(port) == 600, 300, interval=1, what="600 deletions held"
        )
        assert _effects(cloud, "deactivated") == set(), "no deletion of the burst reached the cloud"
        shown = _listed(settings, kafka_bootstrap)
        assert shown["held"] == 600 and len(shown["entries"]) == 600
        assert {e["entity_id"] for e in shown["entries"]} == set(burst)

        for u in later:  # more deletions, after the operator looked: they must stay held
            writer.delete_user(u)
        wait_until(lambda: alive_or_fail(procs) and _held(port) == 603, 120, what="the later three held")
        refused = _vudsync(settings, kafka_bootstrap, "deletes", "approve", "--yes", ok=(2,))
        assert "--up-to" in refused.stderr, "an approval without a bound is refused and says what to run"

        up_to = str(shown["up_to"])
        _vudsync(
            settings, kafka_bootstrap, "deletes", "approve", "--up-to", up_to, "--yes", "--operator", "ops"
        )
        wait_until(
            lambda: alive_or_fail(procs) and len(_effects(cloud, "deactivated")) == 600 and _held(port) == 3,
            300,
            interval=2,
            what="the 600 shown deactivated, the later three still held",
        )
        assert all(bool((cloud.user(u) or {}).get("active")) for u in later)
        listed = _listed(settings, kafka_bootstrap)
        assert listed["held"] == 3 and {e["entity_id"] for e in listed["entries"]} == set(later)

        _vudsync(settings, kafka_bootstrap, "deletes", "reject", "--yes", "--operator", "ops")
        wait_until(lambda: alive_or_fail(procs) and _held(port) == 0, 120, what="the gate open again")
    assert all(bool((cloud.user(u) or {}).get("active")) for u in later), "rejected: the cloud keeps them"
    assert len(_effects(cloud, "deactivated")) == 600
    writer.close()


def test_mass_deactivation_by_active_false_is_held_until_approved(
    catalogued_settings: Settings, kafka_bootstrap: str, cloud: CloudReader
) -> None:
    """The mistake: a bad import sets ``active = false`` on every user; the gate counted only
    removals, so each went straight to the cloud."""
    settings = catalogued_settings
    writer, users = _connected_users(settings, kafka_bootstrap, 5, digits=2)
    port = _free_port()
    env = {"VUDSYNC_PLANNER_DELETES_THRESHOLD": "3", "VUDSYNC_PLANNER_SESSION_TIMEOUT": "10"}

    def active(u: str) -> bool:
        user = cloud.user(u)
        return user is not None and bool(user["active"])

    with components(
        settings, kafka_bootstrap, "producer", "planner", "sink", metrics_ports={"planner": port}, **env
    ) as procs:
        wait_until(lambda: alive_or_fail(procs) and all(active(u) for u in users), 120, what="users synced")
        with writer.transaction():
            for u in users:
                writer.update_user(u, active=False)
        wait_until(lambda: alive_or_fail(procs) and _held(port) == 5, 120, what="five deactivations held")
        assert all(active(u) for u in users) and _effects(cloud, "deactivated") == set()
        listed = _listed(settings, kafka_bootstrap)
        assert listed["held"] == 5
        # one number per thing, with its unit: the gauges, `status` and `deletes list` agree (five
        # deletions, one deactivation each: these users have no access), and held is not parked
        figures = {
            name: gauge(port, f"vudsync_{name}")
            for name in ("held_deletions", "held_operations", "parked_operations", "blocked_operations")
        }
        assert figures == {
            "held_deletions": 5,
            "held_operations": 5,
            "parked_operations": 0,
            "blocked_operations": 0,
        }, figures
        status = vudsync_cli(
            settings,
            kafka_bootstrap,
            "status",
            "--json",
            VUDSYNC_STATUS_METRICS=f"planner=http://127.0.0.1:{port}/metrics",
        )
        said = json.loads(status.stdout)
        assert status.returncode == 1, status.stderr  # held deletions need an operator
        assert (said["held_deletions"], said["held_operations"], said["parked_operations"]) == (5, 5, 0), said
        assert any(p.startswith("5 deletion(s) held") and "(5 operation(s)" in p for p in said["problems"])
        _vudsync(
            settings,
            kafka_bootstrap,
            "deletes",
            "approve",
            "--up-to",
            str(listed["up_to"]),
            "--yes",
            "--json",
        )
        wait_until(
            lambda: alive_or_fail(procs) and not any(active(u) for u in users) and _held(port) == 0,
            120,
            what="every held deactivation applied after approval",
        )
        wait_until(
            lambda: _listed(settings, kafka_bootstrap)["held"] == 0,
            60,
            interval=1,
            what="`deletes list` empty",
        )
    writer.close()
