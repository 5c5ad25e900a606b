"""Pure logic: journal entries from records, drift between directory and cloud, repairs, status."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from processors import gate
from processors.model import PlannerSettings
from schemas.codec import encode
from schemas.deadletter import error_headers
from schemas.directory import (
    ApplicationInstanceState,
    ApplicationType,
    CompanyAccess,
    CompanyState,
    ServiceAccess,
)
from schemas.events import Op
from schemas.operations import DeactivateUser
from schemas.results import ResultOutcome
from tests.factories import T0, op_result, user_event, user_state, user_upsert
from tests.unit.test_planner_engine import Harness
from vudsync.ops.drift import (
    CloudState,
    DirectoryState,
    DriftKind,
    compare,
)
from vudsync.ops.groups import GroupMember
from vudsync.ops.journal import (
    SOURCE_DIRECTORY_DLQ,
    SOURCE_OPERATIONS_DLQ,
    JournalFilter,
    entry_from_dead_letter,
    entry_from_result,
)
from vudsync.ops.journal_index import JournalStats
from vudsync.ops.metrics_scrape import Endpoint, Scrape, parse_endpoints
from vudsync.ops.repair_plan import repair_requests
from vudsync.ops.status import LagRow, assemble, render

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
FP = "hmac-sha256:" + "a" * 64

# -- journal ---------------------------------------------------------------------------------


def test_results_and_dead_letters_become_entries_once() -> None:
    result = op_result(ResultOutcome.DEAD_LETTERED, source_version=7, error="PUT /v1/users: 422", attempts=3)
    e = entry_from_result("r", 0, 5, encode(result), 0)
    assert (e.outcome, e.entity_id, e.operation_id, e.reason, e.time) == (
        "dead_lettered",
        "u1",
        "op-1",
        "PUT /v1/users: 422",
        T0.timestamp(),
    )
    assert entry_from_result("r", 0, 6, b"nope", 1000).outcome == "unreadable"
    # an operation's dead letter is already a result: not a second entry
    op = user_upsert("u1", 7, operation_id="op-1")
    headers = error_headers(reason="boom", stage="apply", topic="ops", partition=1, offset=2)
    assert (
        entry_from_dead_letter(SOURCE_OPERATIONS_DLQ, "d", 0, 1, b"user:u1", encode(op), headers, 0) is None
    )
    undecodable = entry_from_dead_letter(SOURCE_OPERATIONS_DLQ, "d", 0, 2, b"k", b"junk", headers, 2000)
    assert undecodable is not None and undecodable.reason == "boom" and undecodable.time == 2.0
    planner = entry_from_dead_letter(
        SOURCE_DIRECTORY_DLQ,
        "d",
        0,
        3,
        b"u9",
        b'{"entity": "user", "entity_id": "u9", "version": 4}',
        error_headers(reason="malformed e-mail", stage="capture"),
        3000,
    )
    assert planner is not None
    assert (planner.entity, planner.entity_id, planner.kind, planner.source_version) == (
        "user",
        "u9",
        "dlq.capture",
        4,
    )


def test_filter_where_clause() -> None:
    where, params = JournalFilter(entity_id="u1", outcomes=("applied", "failed"), since=10.0).where()
    assert where == "entity_id = ? AND +outcome IN (?, ?) AND +time >= ?"
    assert params == ["u1", "applied", "failed", 10.0]
    assert JournalFilter().where() == ("1 = 1", [])
    assert JournalFilter(outcomes=("held",), until=5.0).where()[0] == "outcome IN (?) AND time < ?"


# -- drift -----------------------------------------------------------------------------------


def _directory() -> DirectoryState:
    grant = CompanyAccess(
        company_id="c1", services={ApplicationType.BUSINESS: ServiceAccess(roles=("Regnskap",))}
    )
    return DirectoryState(
        version=50,
        users={
            "u1": user_state("u1", access=(grant,)),
            "u2": user_state("u2"),
            "u3": user_state("u3"),
        },
        companies={"c1": CompanyState(id="c1", name="Fjord AS", organisation_number="923 609 016")},
        catalogue={("business", "roles", "Regnskap"): "Regnskap"},
        instances={
            ApplicationType.BUSINESS: ApplicationInstanceState(
                id="business", application=ApplicationType.BUSINESS, uri="https://vb", license_fingerprint=FP
            )
        },
    )


def _cloud_user(uid: str, cid: str, **kw: object) -> dict[str, object]:
    base = {
        "id": cid,
        "external_id": uid,
        "username": f"user{uid}",
        "email": f"{uid}@firma.no",
        "first_name": "Kari",
        "last_name": "Nordmann",
        "language": "nb",
        "active": True,
    }
    return {**base, **kw}


def _cloud(**overrides: object) -> CloudState:
    base: dict[str, object] = dict(
        users=[
            _cloud_user("u1", "U1"),
            _cloud_user("u2", "U2", first_name="Kåre"),  # changed behind our back
            _cloud_user("gone", "U9"),  # removed on premise, still active
            {**_cloud_user("x", "U8"), "external_id": None},  # not ours
        ],
        companies=[
            {
                "id": "C1",
                "external_id": "c1",
                "name": "Fjord AS",
                "organisation_number": "923609016",
                "country": "NO",
                "status": "active",
            }
        ],
        access={
            "U1": [{"company_id": "C1", "services": {"business": {"roles": ["Regnskap"]}}}],
            "U2": [],
            "U9": [],
        },
        catalogue={("business", "roles", "Regnskap"): "Regnskap"},
        instances={"business": {"service": "business", "uri": "https://vb", "license_fingerprint": FP}},
    )
    base.update(overrides)
    return CloudState(**base)  # type: ignore[arg-type]


def test_in_sync_means_no_drift() -> None:
    directory = _directory()
    cloud = _cloud(users=[_cloud_user("u1", "U1"), _cloud_user("u2", "U2"), _cloud_user("u3", "U3")])
    report = compare(directory, cloud)
    assert report.clean, report.drifts
    assert report.checked["user"] == (3, 3)


def test_drift_by_object_type_and_its_repair() -> None:
    directory = _directory()
    cloud = _cloud(access={"U1": [], "U2": [], "U9": []})
    report = compare(directory, cloud)
    found = {(d.object_type, d.key, d.kind) for d in report.drifts}
    assert found == {
        ("user", "u2", DriftKind.DIFFERENT),
        ("user", "u3", DriftKind.MISSING),
        ("user", "gone", DriftKind.EXTRA),
        ("access", "u1/c1", DriftKind.MISSING),
    }
    diff = next(d for d in report.drifts if d.key == "u2")
    assert [(f.field, f.directory, f.cloud) for f in diff.fields] == [("first_name", "Kari", "Kåre")]
    assert report.counts()["user"] == {"missing": 1, "extra": 1, "different": 1}

    plan = repair_requests(report, directory, cloud)
    asked = sorted((r.entity_id, r.repair.slots, r.sends, r.removed is not None) for r in plan.requests)
    assert asked == [
        ("gone", ("user",), ("user.deactivate",), True),
        ("u1", ("access:c1",), ("access.assign",), False),
        ("u2", ("user",), ("user.upsert",), False),
        ("u3", ("user",), ("user.upsert",), False),
    ]
    by_id = {r.entity_id: r for r in plan.requests}
    assert by_id["u1"].repair.cloud_ids == {"company:c1": "C1", "user:u1": "U1"}
    assert by_id["gone"].repair.cloud_ids == {"user:gone": "U9"}, "the linked cloud user, never by e-mail"
    assert by_id["gone"].removed is not None and by_id["gone"].removed["email"] == "gone@firma.no"
    assert by_id["u3"].repair.cloud_ids == {} and plan.deletions == 1
    # the same drift is the same repair (one effect); a new drift is a new one
    again = repair_requests(compare(directory, cloud), directory, cloud)
    assert [r.repair for r in again.requests] == [r.repair for r in plan.requests]
    other = _cloud(
        access={"U1": [], "U2": [], "U9": []},
        users=[*cloud.users[:1], _cloud_user("u2", "U2", first_name="K")],
    )
    changed = {r.entity_id: r for r in repair_requests(compare(directory, other), directory, other).requests}
    assert changed["u2"].repair.run != by_id["u2"].repair.run
    # a repair applied moves the cloud object's version: the same-looking drift again is new
    bumped = _cloud(
        access={"U1": [], "U2": [], "U9": []},
        users=[cloud.users[0], {**cloud.users[1], "version": 7}, *cloud.users[2:]],
    )
    later = {r.entity_id: r for r in repair_requests(compare(directory, bumped), directory, bumped).requests}
    assert later["u2"].repair.run != by_id["u2"].repair.run and later["u3"].repair == by_id["u3"].repair


def test_company_catalogue_and_instance_drift() -> None:
    directory = _directory()
    cloud = _cloud(
        users=[_cloud_user("u1", "U1"), _cloud_user("u2", "U2"), _cloud_user("u3", "U3")],
        companies=[
            {
                "id": "C1",
                "external_id": "c1",
                "name": "Fjord ASA",
                "organisation_number": "923609016",
                "country": "NO",
                "status": "active",
            },
            {
                "id": "C2",
                "external_id": "c2",
                "name": "Gone AS",
                "organisation_number": "1",
                "country": "NO",
                "status": "active",
            },
        ],
        catalogue={("business", "roles", "Old"): None},
        instances={"business": {"service": "business", "uri": "https://other", "license_fingerprint": "x"}},
    )
    report = compare(directory, cloud)
    found = {(d.object_type, d.key, d.kind) for d in report.drifts}
    assert found == {
        ("company", "c1", DriftKind.DIFFERENT),
        ("company", "c2", DriftKind.EXTRA),
        ("catalogue", "business/roles/Regnskap", DriftKind.MISSING),
        ("catalogue", "business/roles/Old", DriftKind.EXTRA),
        ("application_instance", "business", DriftKind.DIFFERENT),
    }
    instance = next(d for d in report.drifts if d.object_type == "application_instance")
    assert "x" not in str(instance.as_dict()) and {f.field for f in instance.fields} == {"uri", "license key"}
    plan = repair_requests(report, directory, cloud)
    assert plan.counts() == {"catalogue.upsert": 1, "company.deactivate": 1, "company.upsert": 1}
    by_id = {r.entity_id: r for r in plan.requests}
    assert by_id["c2"].removed is not None and by_id["c2"].repair.cloud_ids == {"company:c2": "C2"}
    assert by_id["business:Regnskap"].entity.value == "role"
    assert sorted(d.object_type for d, _ in plan.skipped) == ["application_instance", "catalogue"]


# -- status ----------------------------------------------------------------------------------


def test_status_lists_problems_and_reads_metrics_when_scraped() -> None:
    assert parse_endpoints("producer=http://h:1/metrics, sink-2=http://h:2/metrics")[1].component == "sink"
    sink = Scrape(Endpoint("sink", "http://h/metrics"), {"vudsync_cloud_circuit_open": [({}, 1.0)]})
    planner = Scrape(Endpoint("planner", "http://h/metrics"), {"vudsync_parked_operations": [({}, 3.0)]})
    producer = Scrape(Endpoint("producer", "http://h/metrics"), error="ConnectError")
    report = assemble(
        now=NOW.timestamp(),
        members={
            "planner": ("g-planner", [GroupMember("faust-1", "/10.0.0.1", "m")]),
            "sink": ("g-sink", []),
        },
        lag=[LagRow("g-sink", "ops", 0, 5, 12, 7)],
        scrapes=[sink, planner, producer],
        dlq={"vud.cloud.operations.dlq": 2, "vud.directory.dlq": 0},
        journal=JournalStats(
            entries=10,
            last_applied=None,
            last_minute={"applied": 30},
            parked_open=9,
            held_open=1,
            held_deletions_open=1,
        ),
    )
    data = report.as_dict()
    assert (
        data["circuit"] == "open"
        and data["parked_operations"] == 3
        and data["parked_source"] == "planner metrics"
    )
    assert [(c["name"], c["state"]) for c in data["components"]] == [
        ("producer", "down"),
        ("planner", "up"),
        ("sink", "down"),
        ("cloud-capture", "unknown"),  # writeback: no endpoint configured, no group to ask
    ]
    assert data["lag"]["by_group"] == {"g-sink": 7}
    assert data["last_minute"]["applied_per_second"] == 0.5
    problems = " | ".join(data["problems"])
    for expected in ("producer is down", "sink is down", "2 unhandled dead letter", "circuit", "held"):
        assert expected in problems
    screen = "\n".join(render(report))
    assert "ops[0] committed 5 end 12 lag 7" in screen and "faust-1 on 10.0.0.1" in screen


def test_status_shows_cloud_capture_when_configured_and_a_feed_that_stalled() -> None:
    assert parse_endpoints("cloud-capture=http://h:5/metrics")[0].component == "cloud-capture"
    assert Endpoint("cloud-capture-2", "http://h/m").component == "cloud-capture"
    assert Endpoint("lag-exporter", "http://h/m").component == "lag-exporter"
    stamp = "vudsync_writeback_feed_last_advance_timestamp_seconds"

    def report(advanced_ago: float) -> dict[str, Any]:
        capture = Scrape(
            Endpoint("cloud-capture", "http://h/m"), {stamp: [({}, NOW.timestamp() - advanced_ago)]}
        )
        return assemble(
            now=NOW.timestamp(),
            members={},
            lag=[],
            scrapes=[capture],
            dlq={},
            journal=JournalStats(entries=0, last_applied=None, last_minute={}, parked_open=0, held_open=0),
        ).as_dict()

    fresh = report(2.0)
    assert fresh["components"][-1]["detail"] == "cloud-capture metrics: ok"  # no feed lag served yet
    assert [(c["name"], c["state"]) for c in fresh["components"]][-1] == ("cloud-capture", "up")
    assert not any("cloud-capture" in p for p in fresh["problems"])
    stalled = report(600.0)
    assert any("change feed has not advanced for 10m" in p for p in stalled["problems"]), stalled["problems"]


def test_a_row_capture_rejects_is_reported_rejected_never_extra_nor_repaired() -> None:
    """The mistake: u4 has an invalid e-mail on premise, capture rejects its row, so it is
    absent from the directory's states — and verify called its cloud user "extra" and
    ``--repair`` deactivated it (and revoked its access, and those at a rejected company)."""
    directory = replace(_directory(), rejected_users=frozenset({"u4"}), rejected_companies=frozenset({"c9"}))
    cloud = _cloud(
        users=[
            _cloud_user("u1", "U1"),
            _cloud_user("u2", "U2"),
            _cloud_user("u3", "U3"),
            _cloud_user("u4", "U4"),
        ],
        companies=[
            *_cloud().companies,
            {"id": "C9", "external_id": "c9", "name": "Ugyldig AS", "status": "active"},
        ],
        access={
            "U1": [
                {"company_id": "C1", "services": {"business": {"roles": ["Regnskap"]}}},
                {"company_id": "C9", "services": {"business": {"roles": ["Regnskap"]}}},
            ],
            "U4": [{"company_id": "C1", "services": {"business": {"roles": ["Regnskap"]}}}],
        },
    )
    report = compare(directory, cloud)
    assert report.clean, report.drifts
    assert report.rejected_in_cloud == ("company:c9", "user:u4")
    assert report.as_dict()["rejected_in_cloud"] == ["company:c9", "user:u4"]
    assert report.rejected == 2
    assert repair_requests(report, directory, cloud).requests == ()


def test_repair_of_more_deactivations_than_the_gate_allows_holds_them() -> None:
    """The mistake: a store that lost most of its users (a wrong database, a botched import).
    Every cloud user is "extra", and repair used to deactivate them all at once (then: judged
    in verify's memory, lost with it). Now each is a removal asked of the planner, whose gate
    holds the whole burst over the threshold — the repair events exactly as verify builds them,
    through the reconciler."""
    directory = _directory()
    gone = [_cloud_user(f"gone{i}", f"G{i}") for i in range(5)]
    cloud = _cloud(users=[_cloud_user("u1", "U1"), _cloud_user("u2", "U2"), _cloud_user("u3", "U3"), *gone])
    plan = repair_requests(compare(directory, cloud), directory, cloud)
    assert plan.deletions == 5 and all(r.removed is not None for r in plan.requests)

    h = Harness(partitions=2, settings=PlannerSettings(deletes_threshold=2))
    h.connect()
    for i, r in enumerate(plan.requests):
        assert r.removed is not None
        state = user_state(r.entity_id, email=r.removed["email"], active=False)
        ev = user_event(40, op=Op.DELETE, state=state).model_copy(update={"repair": r.repair})
        h.event(ev, partition=i % 2)
    h.tick(3600)
    assert h.ops == [] and h.r.held_deletions() == 5
    # the next scheduled pass asks again: the same repairs, held once
    for i, r in enumerate(repair_requests(compare(directory, cloud), directory, cloud).requests):
        ev = user_event(41, op=Op.DELETE, state=user_state(r.entity_id, active=False))
        h.event(ev.model_copy(update={"repair": r.repair}), partition=i % 2)
    h.tick(7200)
    assert h.ops == [] and h.r.held_deletions() == 5
    assert sorted(x.entity_id.split("@")[0] for x in gate.outstanding(h.control)) == [
        f"gone{i}" for i in range(5)
    ]
    h.decide(True, max(x.seq for x in gate.outstanding(h.control)))
    assert sorted(o.cloud_id for o in h.ops if isinstance(o, DeactivateUser)) == [f"G{i}" for i in range(5)]


def test_access_an_administrator_assigned_in_the_cloud_is_reported_apart_never_drift() -> None:
    """Two-way access: a cloud-origin entry is neither "extra" nor repaired; the directory's own
    entries are compared as before."""
    directory = _directory()
    users = [_cloud_user("u1", "U1"), _cloud_user("u2", "U2"), _cloud_user("u3", "U3")]
    entries = [
        {"service": "business", "kind": "roles", "name": "Regnskap", "origin": "directory"},
        {"service": "business", "kind": "roles", "name": "Lønn", "origin": "cloud"},
        {"service": "reporting", "kind": "roles", "name": "Leser", "origin": "cloud"},
    ]
    services = {"business": {"roles": ["Lønn", "Regnskap"]}, "reporting": {"roles": ["Leser"]}}
    access = {"U1": [{"company_id": "C1", "services": services, "entries": entries}], "U2": [], "U3": []}
    report = compare(directory, _cloud(users=users, access=access))
    assert report.clean, report.drifts
    assert report.cloud_origin == ("u1/c1: business/roles/Lønn", "u1/c1: reporting/roles/Leser")
    assert repair_requests(report, directory, _cloud(users=users, access=access)).requests == ()

    # the directory's own entry gone from the cloud is still drift
    entries_without_ours = [e for e in entries if e["origin"] == "cloud"]
    services_without_ours = {"business": {"roles": ["Lønn"]}, "reporting": {"roles": ["Leser"]}}
    access["U1"] = [{"company_id": "C1", "services": services_without_ours, "entries": entries_without_ours}]
    drifted = compare(directory, _cloud(users=users, access=access))
    assert {(d.key, d.kind) for d in drifted.drifts} == {("u1/c1", DriftKind.MISSING)}


def test_status_shows_the_writeback_components_the_directory_sink_by_its_group() -> None:
    assert Endpoint("directory-sink-2", "http://h/m").component == "directory-sink"
    capture = Scrape(
        Endpoint("cloud-capture", "http://h/m"), {"vudsync_writeback_feed_lag_seconds": [({}, 1.5)]}
    )
    sink = Scrape(Endpoint("directory-sink", "http://h/m"), {"vudsync_writeback_applied_total": [({}, 3.0)]})
    journal = JournalStats(entries=0, last_applied=None, last_minute={}, parked_open=0, held_open=0)

    def report(members: list[GroupMember]) -> Any:
        return assemble(
            now=NOW.timestamp(),
            members={"directory-sink": ("g-directory-sink", members)},
            lag=[LagRow("g-directory-sink", "vud.directory.operations", 0, 4, 6, 2)],
            scrapes=[capture, sink],
            dlq={},
            journal=journal,
        )

    up = report([GroupMember("vudsync-directory-sink-w1", "/10.0.0.2", "m")])
    states = {c.name: (c.state, c.detail) for c in up.components}
    assert states["directory-sink"] == (
        "up",
        "group g-directory-sink: 1 member(s) (vudsync-directory-sink-w1 on 10.0.0.2); "
        "directory-sink metrics: ok",
    )
    assert states["cloud-capture"] == ("up", "cloud-capture metrics: ok, feed lag 1.5s")
    assert up.lag_by_group() == {"g-directory-sink": 2} and not up.problems
    assert "directory-sink  up" in "\n".join(render(up))
    down = report([])
    assert any(
        p.startswith("directory-sink is down: group g-directory-sink: 0 member(s)") for p in down.problems
    )
