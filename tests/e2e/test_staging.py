"""Staging mode end to end, on real parts (store → producer → Kafka → planner --staging →
staged topic; vudsync staging diff | promote | discard → sink → cloud API).

- a directory of 1,000 users staged: the diff against the real cloud shows 1,000 user
  creations and 1,000 assignments (each waiting for its user's creation); the cloud's audit
  shows no write, and vud.cloud.operations holds nothing, before the promotion;
- promote --up-to <what the diff showed> applies the creations, then the assignments once the
  planner has the cloud ids: ``vudsync verify`` finds no drift, and nothing is left staged;
- deletions: gated when planned (held, approved, then staged), and a promotion over the
  threshold is refused — nothing applied — until --approve-deletions names their number;
- discard leaves the cloud untouched (its audit), with a sink running all along.
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from devtools.seed.data import organisation_number
from devtools.seed.writer import SqliteDirectoryWriter
from kernel.settings import Settings
from schemas.topics import OPERATIONS
from tests.factories import store_users
from tests.fixtures.cloud import CloudReader
from tests.pipeline import business_directory, components, vudsync_cli, wait_for
from vudsync.ops.kafka_admin import group_admin

COMPANIES = ("c1", "c2", "c3")
STAGING = {"VUDSYNC_PLANNER_STAGING": "true"}


def _connected_directory(settings: Settings, bootstrap: str, users: int) -> SqliteDirectoryWriter:
    """This test's directory: three companies and ``users`` users with a role in one of them,
    after `vudsync connect`."""
    writer = business_directory(settings, bootstrap)
    writer.upsert_companies(
        [
            {"id": c, "name": f"Fjord {c} AS", "organisation_number": organisation_number(random.Random(c))}
            for c in COMPANIES
        ]
    )
    writer.upsert_users(store_users(*range(users), digits=4))
    writer.grant((f"u{i:04d}", COMPANIES[i % 3], "business", "role", "Regnskap") for i in range(users))
    connected = vudsync_cli(settings, bootstrap, "connect")
    assert connected.returncode == 0, connected.stderr
    return writer


def _diff(settings: Settings, bootstrap: str) -> tuple[int, dict[str, Any]]:
    done = vudsync_cli(settings, bootstrap, "staging", "diff", "--json")
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(done.stdout)


def _kinds(doc: dict[str, Any], change: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for e in doc["groups"].get(change, ()):
        out[e["kind"]] = out.get(e["kind"], 0) + 1
    return out


def _operations_sent(settings: Settings, bootstrap: str) -> int:
    """Records ever written to vud.cloud.operations (what the sink would apply)."""
    topic = settings.topic(OPERATIONS.name)
    with group_admin(bootstrap, security=settings.kafka_security()) as admin:
        return sum(admin.end_offsets(admin.partitions([topic])).values())


def _all_staged(
    procs: dict[str, Any], settings: Settings, bootstrap: str, users: int, timeout: float
) -> dict[str, Any]:
    """The diff once every user's assignment is staged."""
    seen: dict[str, Any] = {}

    def all_staged() -> bool:
        _, seen["doc"] = _diff(settings, bootstrap)
        return _kinds(seen["doc"], "assignments").get("access.assign", 0) == users

    wait_for(procs, all_staged, timeout, "every user's assignment staged", interval=2.0)
    return seen["doc"]


@pytest.mark.timeout(900)
def test_a_thousand_users_staged_are_diffed_against_the_cloud_then_promoted_with_no_drift(
    pipeline_settings: Settings, kafka_bootstrap: str, cloud: CloudReader
) -> None:
    settings, users = pipeline_settings, 1000
    _connected_directory(settings, kafka_bootstrap, users)
    audit_before = len(cloud.audit())

    with components(settings, kafka_bootstrap, "producer", "planner", "sink", **STAGING) as procs:
        _all_staged(procs, settings, kafka_bootstrap, users, 600)
        code, doc = _diff(settings, kafka_bootstrap)
        assert code == 1, "something is staged: exit status 1"
        assert _kinds(doc, "creations") == {"user.upsert": users, "company.upsert": len(COMPANIES)}
        assert _kinds(doc, "assignments") == {"access.assign": users}
        assert _kinds(doc, "catalogue") == {"catalogue.upsert": 1}
        assert doc["waiting"] == users, "each assignment waits for its user's creation"
        assert all("(would be created)" in e["detail"] for e in doc["groups"]["assignments"])
        text = vudsync_cli(settings, kafka_bootstrap, "staging", "diff", "--first", "2")
        assert f"staging promote --up-to {doc['up_to']}" in text.stdout

        # nothing reached the cloud, nor the sink's topic, before the promotion
        assert len(cloud.audit()) == audit_before
        assert _operations_sent(settings, kafka_bootstrap) == 0
        assert cloud.user("u0000") is None

        promote = ("staging", "promote", "--up-to", str(doc["up_to"]), "--yes", "--json")
        promoted = vudsync_cli(settings, kafka_bootstrap, *promote, timeout=900)
        assert promoted.returncode == 0, promoted.stdout + promoted.stderr
        report = json.loads(promoted.stdout)
        assert report["published"] == users + len(COMPANIES) + 1
        assert report["released"] == users and report["still_waiting"] == {}

        def clean() -> bool:
            done = vudsync_cli(settings, kafka_bootstrap, "verify", "--json")
            return done.returncode == 0 and bool(json.loads(done.stdout)["report"]["clean"])

        wait_for(procs, clean, 600, "verify: no drift after the promotion", interval=2.0)
        code, after = _diff(settings, kafka_bootstrap)
        assert (code, after["changes"]) == (0, 0), after["counts"]
        assert sorted(cloud.business_roles("u0001")) == [["Regnskap"]]


@pytest.mark.timeout(600)
def test_discard_leaves_the_cloud_untouched(
    pipeline_settings: Settings, kafka_bootstrap: str, cloud: CloudReader
) -> None:
    settings, users = pipeline_settings, 30
    _connected_directory(settings, kafka_bootstrap, users)
    audit_before = cloud.audit()

    with components(settings, kafka_bootstrap, "producer", "planner", "sink", **STAGING) as procs:
        seen = {"doc": _all_staged(procs, settings, kafka_bootstrap, users, 300)}
        up_to = seen["doc"]["up_to"]
        refused = vudsync_cli(settings, kafka_bootstrap, "staging", "discard", "--yes")
        assert refused.returncode == 2 and f"--up-to {up_to}" in refused.stderr, "it names what it drops"
        dropped = vudsync_cli(
            settings, kafka_bootstrap, "staging", "discard", "--up-to", str(up_to), "--yes", "--json"
        )
        assert dropped.returncode == 0, dropped.stderr
        assert json.loads(dropped.stdout)["discarded"] >= users * 2
        code, after = _diff(settings, kafka_bootstrap)
        assert (code, after["operations"]) == (0, 0), "nothing staged any more"
        again = vudsync_cli(settings, kafka_bootstrap, "staging", "promote", "--up-to", str(up_to), "--yes")
        assert again.returncode == 0 and "nothing to promote" in again.stdout
        assert _operations_sent(settings, kafka_bootstrap) == 0, "nothing was handed to the sink"
        assert cloud.audit() == audit_before, "the cloud is untouched"


@pytest.mark.timeout(900)
def test_deletions_are_gated_when_planned_and_judged_again_as_one_burst_when_promoted(
    pipeline_settings: Settings, kafka_bootstrap: str, cloud: CloudReader
) -> None:
    settings, users = pipeline_settings, 30
    writer = _connected_directory(settings, kafka_bootstrap, users)
    gate = {"VUDSYNC_PLANNER_DELETES_THRESHOLD": "20", "VUDSYNC_PLANNER_DELETES_SETTLE": "1"}

    def clean() -> bool:
        done = vudsync_cli(settings, kafka_bootstrap, "verify", "--json")
        return done.returncode == 0 and bool(json.loads(done.stdout)["report"]["clean"])

    with components(settings, kafka_bootstrap, "producer", "planner", "sink", **STAGING, **gate) as procs:
        seen = {"doc": _all_staged(procs, settings, kafka_bootstrap, users, 300)}
        first = vudsync_cli(
            settings, kafka_bootstrap, "staging", "promote", "--up-to", str(seen["doc"]["up_to"]), "--yes"
        )
        assert first.returncode == 0, first.stdout + first.stderr
        wait_for(procs, clean, 300, "verify: no drift after the promotion", interval=2.0)

        # all users but one removed on premise (verify refuses an empty store): the gate holds
        # the burst when planned; approved, it is staged; promoted, it is judged again as one
        # burst and needs its number
        gone = users - 1
        for i in range(gone):
            writer.delete_user(f"u{i:04d}")

        def held() -> int:
            done = vudsync_cli(settings, kafka_bootstrap, "deletes", "list", "--json")
            return int(json.loads(done.stdout)["held"])

        wait_for(procs, lambda: held() == gone, 300, "the gate holds every deletion", interval=2.0)
        listed = json.loads(vudsync_cli(settings, kafka_bootstrap, "deletes", "list", "--json").stdout)
        approved = vudsync_cli(
            settings, kafka_bootstrap, "deletes", "approve", "--up-to", str(listed["up_to"]), "--yes"
        )
        assert approved.returncode == 0, approved.stderr

        def deletions_staged() -> bool:
            _, seen["doc"] = _diff(settings, kafka_bootstrap)
            counts = seen["doc"]["counts"]
            return (counts.get("deactivations"), counts.get("revokes")) == (gone, gone)

        wait_for(procs, deletions_staged, 300, "the approved deletions staged", interval=2.0)
        doc = seen["doc"]
        assert doc["deletions"] == 2 * gone
        audit_now = len(cloud.audit())
        promote = ("staging", "promote", "--up-to", str(doc["up_to"]), "--yes")
        refused = vudsync_cli(settings, kafka_bootstrap, *promote, **gate)
        assert refused.returncode == 1 and f"--approve-deletions {2 * gone}" in refused.stderr
        assert len(cloud.audit()) == audit_now, "refused: nothing applied"
        approve = ("--approve-deletions", str(2 * gone))
        promoted = vudsync_cli(settings, kafka_bootstrap, *promote, *approve, timeout=900, **gate)
        assert promoted.returncode == 0, promoted.stdout + promoted.stderr
        wait_for(procs, clean, 300, "verify: no drift after the deletions", interval=2.0)
        removed = cloud.user("u0001")
        assert removed is not None and not removed["active"], "deactivated, never deleted"
