"""Writeback (issue 16): what an administrator grants or revokes in the cloud reaches the
directory store — once, as origin cloud — and nothing echoes back to the cloud. On the real
broker, store (SQLite and PostgreSQL) and cloud API, with the real producer, planner, sink and
directory sink.

The cloud's change feed is followed by the real ``vudsync run cloud-capture``."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from devtools.seed.writer import DirectoryWriter, open_writer
from kernel.settings import Settings
from tests.factories import store_users
from tests.fixtures.cloud import CloudReader, Portal
from tests.pipeline import SINK_FAILOVER, components, gauge, vudsync_cli, wait_for
from vudsync.topics import ensure_catalogue

ROLES = ("Regnskap", "Lønn", "Innkjøp", "Salg", "Revisor")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(request: pytest.FixtureRequest, pipeline_settings: Settings) -> Settings:
    if request.param == "sqlite":
        return pipeline_settings
    return pipeline_settings.model_copy(update={"store_url": request.getfixturevalue("postgres_url")})


def _integration_writes(cloud: CloudReader, after_seq: int) -> list[dict[str, Any]]:
    """What vudsync's own client wrote in the cloud after ``after_seq`` (its audit rows)."""
    return [a for a in cloud.audit() if a["seq"] > after_seq and a["client_id"] == cloud.server.client_id]


def _wait_held_as_cloud(procs: dict[str, Any], writer: DirectoryWriter, role: str, what: str) -> None:
    """Until the store holds ``role`` of u1 in c1 as the cloud's (written back)."""
    wait_for(procs, lambda: ("c1", "business", "role", role, "cloud") in writer.access_rows("u1"), 120, what)


@contextmanager
def _directory(settings: Settings, bootstrap: str) -> Iterator[DirectoryWriter]:
    ensure_catalogue(settings, bootstrap)
    writer = open_writer(settings.resolved_store_url())
    writer.upsert_catalogue("roles", [("business", r, r) for r in ROLES])
    writer.upsert_companies([{"id": "c1", "name": "Fjord AS", "organisation_number": "923609016"}])
    writer.upsert_user(id="u1", username="kari", email="kari@fjord.no", first_name="Kari", last_name="Holm")
    writer.grant([("u1", "c1", "business", "role", "Regnskap")])
    try:
        yield writer
    finally:
        writer.close()


@pytest.mark.timeout(900)
def test_cloud_grants_and_revokes_reach_the_store_once_and_never_echo(
    settings: Settings, kafka_bootstrap: str, cloud: CloudReader
) -> None:
    ports = {"planner": _free_port(), "directory-sink": _free_port()}
    with _directory(settings, kafka_bootstrap) as writer:
        assert vudsync_cli(settings, kafka_bootstrap, "connect").returncode == 0
        portal = Portal(cloud)
        names = ("producer", "planner", "sink", "cloud-capture", "directory-sink")
        with components(settings, kafka_bootstrap, *names, metrics_ports=ports) as procs:
            wait_for(procs, lambda: cloud.origins("u1") == {"Regnskap": "directory"}, 180, "u1 in the cloud")

            # an administrator grants Lønn in the cloud → the store holds it, as the cloud's
            before = writer.change_log_position()
            granted_at = portal.entry("PUT", "u1", "c1", "Lønn")
            _wait_held_as_cloud(procs, writer, "Lønn", "the cloud's grant in the store")
            assert writer.change_log_origins("u1", before) == ["cloud"]  # exactly one row, the writeback's

            # the next on-premise change of the same user in the same company keeps it; until it,
            # vudsync wrote nothing in the cloud (the writeback's user event planned no write)
            writer.grant([("u1", "c1", "business", "role", "Innkjøp")])
            wait_for(procs, lambda: "Innkjøp" in cloud.origins("u1"), 120, "Innkjøp")
            writes = _integration_writes(cloud, granted_at)
            assert [(w["method"], w["effect"]) for w in writes] == [("PUT", "assigned")], writes
            assert cloud.origins("u1") == {
                "Regnskap": "directory",
                "Innkjøp": "directory",
                "Lønn": "cloud",
            }
            assert ("c1", "business", "role", "Lønn", "cloud") in writer.access_rows("u1")

            # verify: the cloud's entry held on both sides is no drift either way
            verified = vudsync_cli(settings, kafka_bootstrap, "verify", "--json")
            assert verified.returncode == 0, verified.stdout + verified.stderr
            report = json.loads(verified.stdout)["report"]
            assert report["clean"] and report["cloud_origin_entries"] == ["u1/c1: business/roles/Lønn"]

            # revoking it in the cloud removes it on premise, with one change-log row, no echo
            before = writer.change_log_position()
            revoked_at = portal.entry("DELETE", "u1", "c1", "Lønn")
            wait_for(
                procs,
                lambda: all(r[3] != "Lønn" for r in writer.access_rows("u1")),
                120,
                "the cloud's revoke in the store",
            )
            assert writer.change_log_origins("u1", before) == ["cloud"]
            writer.update_user("u1", first_name="Kari Anne")  # a barrier: its write comes after any echo
            wait_for(procs, lambda: (cloud.user("u1") or {}).get("first_name") == "Kari Anne", 120, "barrier")
            writes = _integration_writes(cloud, revoked_at)
            assert [w["resource_type"] for w in writes] == ["user"], writes
            assert cloud.origins("u1") == {"Regnskap": "directory", "Innkjøp": "directory"}

            # granted again in the cloud, then removed on premise by an administrator: the directory
            # changed that entry, so it is revoked in the cloud — that entry alone
            portal.entry("PUT", "u1", "c1", "Lønn")
            _wait_held_as_cloud(procs, writer, "Lønn", "the second grant in the store")
            writer.revoke_entry("u1", "c1", "business", "role", "Lønn")
            wait_for(
                procs,
                lambda: "Lønn" not in cloud.origins("u1"),
                120,
                "Lønn revoked in the cloud",
            )
            assert cloud.origins("u1") == {"Regnskap": "directory", "Innkjøp": "directory"}
            assert all(r[3] != "Lønn" for r in writer.access_rows("u1"))

            # a role the directory does not know: journalled and counted, the store untouched
            cloud.client.put("/v1/services/business/roles/Ukjent", json={"description": "cloud only"})
            before = writer.change_log_position()
            portal.entry("PUT", "u1", "c1", "Ukjent")
            wait_for(
                procs,
                lambda: (gauge(ports["directory-sink"], "vudsync_writeback_rejected_total") or 0) >= 1,
                120,
                "the unknown role rejected",
            )
            assert writer.change_log_position() == before
            assert all(r[3] != "Ukjent" for r in writer.access_rows("u1"))
            journal = vudsync_cli(settings, kafka_bootstrap, "journal", "--json", "--outcome", "rejected")
            assert "unknown_role" in journal.stdout, journal.stdout + journal.stderr
            # the planner counted the echoes of its own writes it did not write back
            assert (gauge(ports["planner"], "vudsync_writeback_echo_suppressed_total") or 0) >= 1
        portal.close()


@pytest.mark.timeout(900)
def test_a_written_back_grant_removed_on_premise_before_capture_read_it_is_revoked_in_the_cloud(
    settings: Settings, kafka_bootstrap: str, cloud: CloudReader
) -> None:
    """What made ``grants_and_revokes`` flaky under load, made certain: the directory sink
    writes the cloud's grant and an administrator removes it on premise before capture reads
    the first change, so capture folds both into one event whose state is the one before. The
    removal's own time in the store (later than the cloud's grant) says the directory changed
    the entry: it is revoked in the cloud, and the two sides agree."""
    with _directory(settings, kafka_bootstrap) as writer:
        assert vudsync_cli(settings, kafka_bootstrap, "connect").returncode == 0
        portal = Portal(cloud)
        names = ("planner", "sink", "cloud-capture", "directory-sink")
        with components(settings, kafka_bootstrap, *names) as procs:
            with components(settings, kafka_bootstrap, "producer") as producer:
                wait_for(
                    {**procs, **producer},
                    lambda: cloud.origins("u1") == {"Regnskap": "directory"},
                    180,
                    "u1 in the cloud",
                )
            # capture stopped: the writeback's grant and the removal on premise wait for it together
            before = writer.change_log_position()
            portal.entry("PUT", "u1", "c1", "Lønn")
            _wait_held_as_cloud(procs, writer, "Lønn", "the cloud's grant in the store")
            writer.revoke_entry("u1", "c1", "business", "role", "Lønn")
            assert writer.change_log_origins("u1", before) == ["cloud", "cloud"]  # the grant, its removal
            with components(settings, kafka_bootstrap, "producer") as producer:
                wait_for(
                    {**procs, **producer},
                    lambda: "Lønn" not in cloud.origins("u1"),
                    120,
                    "Lønn revoked in the cloud",
                )
            assert cloud.origins("u1") == {"Regnskap": "directory"}
            assert all(r[3] != "Lønn" for r in writer.access_rows("u1"))
        portal.close()


@pytest.mark.timeout(900)
def test_sigkill_of_the_directory_sink_mid_stream_loses_nothing_and_applies_nothing_twice(
    settings: Settings, kafka_bootstrap: str, cloud: CloudReader
) -> None:
    users = [f"u{i}" for i in range(1, 31)]
    with _directory(settings, kafka_bootstrap) as writer:
        with writer.transaction():
            writer.upsert_users(store_users(*range(2, len(users) + 1)))
            writer.grant([(uid, "c1", "business", "role", "Regnskap") for uid in users[1:]])
        assert vudsync_cli(settings, kafka_bootstrap, "connect").returncode == 0
        portal = Portal(cloud)
        with components(settings, kafka_bootstrap, "producer", "planner", "sink", "cloud-capture") as procs:
            wait_for(procs, lambda: all(cloud.origins(u) for u in users), 240, "every user in the cloud")
            before = writer.change_log_position()
            first_grant = int(cloud.audit()[-1]["seq"])
            granted = ("Lønn", "Innkjøp", "Salg", "Revisor")  # 120 operations: a long batch
            for uid in users:
                for role in granted:
                    portal.entry("PUT", uid, "c1", role)
            applied = "SELECT COUNT(*) FROM directory_operations_applied"

            with components(settings, kafka_bootstrap, "directory-sink", **SINK_FAILOVER) as sinks:
                wait_for(
                    {**procs, **sinks},
                    lambda: writer.conn.execute(applied).fetchone()[0] > 0,
                    120,
                    "a writeback",
                )
                sinks["directory-sink"].kill()  # SIGKILL mid-stream: no goodbye, no offset commit
                at_kill = writer.conn.execute(applied).fetchone()[0]
                print(f"directory sink killed with {at_kill} of {len(users) * len(granted)} applied")
            with components(settings, kafka_bootstrap, "directory-sink", **SINK_FAILOVER) as sinks:
                wait_for(
                    {**procs, **sinks},
                    lambda: writer.conn.execute(applied).fetchone()[0] >= len(users) * len(granted),
                    180,
                    "every grant in the store",
                )
                assert writer.conn.execute(applied).fetchone()[0] == len(users) * len(granted)
                for uid in users:  # once each: one row, one change-log row of the writeback's
                    assert writer.change_log_origins(uid, before) == ["cloud"] * len(granted), uid
                    cloud_rows = sorted(r for r in writer.access_rows(uid) if r[4] == "cloud")
                    assert cloud_rows == sorted(("c1", "business", "role", r, "cloud") for r in granted), uid
                # a barrier through the whole directory path; then no write of vudsync's on any access
                writer.update_user("u1", first_name="Barrier")
                wait_for(
                    procs, lambda: (cloud.user("u1") or {}).get("first_name") == "Barrier", 120, "barrier"
                )
                writes = _integration_writes(cloud, first_grant)
                assert [w["resource_type"] for w in writes] == ["user"], writes
        portal.close()


MassRevoke = tuple[dict[str, Any], DirectoryWriter, Portal, dict[str, Any], Callable[[], dict[str, Any]]]


@contextmanager
def _mass_revoke_held(settings: Settings, bootstrap: str, cloud: CloudReader) -> Iterator[MassRevoke]:
    """u1…u3 hold Lønn, granted in the cloud and written back; a portal script revokes it of
    all three at once: the writeback's revokes pass the accidental-delete gate (threshold 1
    here; a settling time longer than the revokes take to arrive, so they are one burst) and
    are held whole. Yields the processes, the store's writer, the portal, what `deletes list
    --json` showed, and a function that shows it again."""
    users = ["u1", "u2", "u3"]
    gate = {"VUDSYNC_PLANNER_DELETES_THRESHOLD": "1", "VUDSYNC_PLANNER_DELETES_SETTLE": "120"}
    with _directory(settings, bootstrap) as writer:
        writer.upsert_users(store_users(2, 3))
        writer.grant([(uid, "c1", "business", "role", "Regnskap") for uid in users[1:]])
        assert vudsync_cli(settings, bootstrap, "connect").returncode == 0
        portal = Portal(cloud)
        names = ("producer", "planner", "sink", "cloud-capture", "directory-sink")
        with components(settings, bootstrap, *names, **gate) as procs:
            wait_for(procs, lambda: all(cloud.origins(u) for u in users), 180, "every user in the cloud")
            for uid in users:
                portal.entry("PUT", uid, "c1", "Lønn")
            lonn = [(uid, ("c1", "business", "role", "Lønn", "cloud")) for uid in users]
            wait_for(procs, lambda: all(row in writer.access_rows(u) for u, row in lonn), 120, "the grants")

            for uid in users:
                portal.entry("DELETE", uid, "c1", "Lønn")

            def listed() -> dict[str, Any]:
                shown = vudsync_cli(settings, bootstrap, "deletes", "list", "--json")
                assert shown.returncode in (0, 1), shown.stdout + shown.stderr
                return dict(json.loads(shown.stdout))

            wait_for(procs, lambda: listed()["held"] == len(users), 180, "the three revokes held")
            held = listed()
            assert {e["deletes_from"] for e in held["entries"]} == {"directory"}
            assert all(row in writer.access_rows(u) for u, row in lonn), "held: the store keeps them all"
            yield procs, writer, portal, held, listed
        portal.close()


@pytest.mark.timeout(900)
def test_a_mass_revoke_in_the_cloud_waits_for_an_operator_before_it_reaches_the_store(
    settings: Settings, kafka_bootstrap: str, cloud: CloudReader
) -> None:
    """A portal script revokes the cloud's role of several users at once: held whole — the store
    keeps every assignment, `deletes list` shows them deleting from the directory — and the
    revokes reach the store once approved."""
    users = ["u1", "u2", "u3"]
    with _mass_revoke_held(settings, kafka_bootstrap, cloud) as (procs, writer, _portal, held, listed):
        approved = vudsync_cli(
            settings, kafka_bootstrap, "deletes", "approve", "--up-to", str(held["up_to"]), "--yes"
        )
        assert approved.returncode == 0, approved.stdout + approved.stderr
        wait_for(
            procs,
            lambda: all(r[3] != "Lønn" for u in users for r in writer.access_rows(u)),
            180,
            "the approved revokes in the store",
        )
        assert listed()["held"] == 0


@pytest.mark.timeout(900)
def test_a_rejected_mass_revoke_keeps_the_store_and_brings_the_cloud_back_to_it(
    pipeline_settings: Settings, kafka_bootstrap: str, cloud: CloudReader
) -> None:
    """The operator rejects the held burst: nothing is removed on premise, the entries become
    the directory's, and the cloud holds them again — granted by vudsync, never revoking."""
    settings, users = pipeline_settings, ["u1", "u2", "u3"]
    with _mass_revoke_held(settings, kafka_bootstrap, cloud) as (procs, writer, _portal, held, listed):
        before = writer.change_log_position()
        rejected_at = int(cloud.audit()[-1]["seq"])
        rejected = vudsync_cli(
            settings, kafka_bootstrap, "deletes", "reject", "--up-to", str(held["up_to"]), "--yes"
        )
        assert rejected.returncode == 0, rejected.stdout + rejected.stderr
        wait_for(
            procs,
            lambda: all(cloud.origins(u).get("Lønn") == "directory" for u in users),
            180,
            "the kept entries in the cloud again",
        )
        for uid in users:
            assert ("c1", "business", "role", "Lønn", "directory") in writer.access_rows(uid)
            assert writer.change_log_origins(uid, before) == ["directory"]  # the adoption, once
        writes = _integration_writes(cloud, rejected_at)
        assert sorted((w["method"], w["effect"]) for w in writes) == [("PUT", "assigned")] * len(users), (
            writes
        )
        assert listed()["held"] == 0
