"""``vudsync explain`` and ``parked list``: the planner's view from the journal, the cloud compared
by verify's rules, the verdict, the waiting list oldest first (index + pure formatting)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from schemas.directory import ApplicationType, CompanyAccess, EntityType, ServiceAccess
from tests.factories import T0, user_state
from vudsync.ops.drift import CloudState
from vudsync.ops.explain import DirectoryView, explain, render
from vudsync.ops.journal import JournalEntry, WaitingOperation, waiting_lines
from vudsync.ops.journal_index import SqliteJournalIndex
from vudsync.ops.sync_follow import Step, Verdict, from_result, from_waiting, planned, verdict

NOW = T0.timestamp()
GRANT = CompanyAccess(
    company_id="c1", services={ApplicationType.BUSINESS: ServiceAccess(roles=("Regnskap",))}
)


def _entry(offset: int, outcome: str, kind: str, op: str, at: float, **kw: Any) -> JournalEntry:
    return JournalEntry(
        "vud.cloud.results",
        0,
        offset,
        at,
        "results",
        outcome,
        entity=kw.pop("entity", "user"),
        entity_id=kw.pop("entity_id", "u1"),
        operation_id=op,
        kind=kind,
        source_version=kw.pop("version", 7),
        **kw,
    )


def _cloud(access: list[dict[str, Any]] | None = None) -> CloudState:
    user = {
        "id": "U1",
        "external_id": "u1",
        "username": "useru1",
        "email": "u1@firma.no",
        "first_name": "Kari",
        "last_name": "Nordmann",
        "language": "nb",
        "active": True,
    }
    company = {"id": "C1", "external_id": "c1", "name": "Fjord AS", "organisation_number": "923609016"}
    return CloudState([user], [company] if access else [], {"U1": access or []}, {}, {})


def _directory() -> DirectoryView:
    return DirectoryView("kari@fjord.no", "u1", user_state("u1", access=(GRANT,)), None, 42)


PARKED = WaitingOperation(
    NOW - 600,
    _entry(3, "parked", "access.assign", "op-a", NOW - 300, details={"waiting_for": ["company:c1"]}),
)
APPLIED_USER = _entry(2, "applied", "user.upsert", "op-u", NOW - 590, cloud_id="U1", effect="created")


def test_a_parked_assignment_is_why_the_user_waits_and_the_cloud_lacks_its_access() -> None:
    journal = [PARKED.entry, APPLIED_USER]  # newest first
    x = explain(EntityType.USER, _directory(), journal, [PARKED], _cloud(), NOW)
    assert x.planner.cloud_id == "U1" and x.planner.last_version == 7
    assert x.planner.parked == (PARKED,)
    (reason,) = x.reasons()
    assert reason == "access.assign parked for 10m 00s, waiting for company:c1"
    assert [(d.object_type, d.key, d.kind.value) for d in x.drift] == [("access", "u1/c1", "missing")]
    as_json = x.as_dict()
    assert as_json["waiting"] is True and as_json["cloud"]["in_sync"] is False
    assert as_json["planner"]["parked"][0]["waiting_for"] == ["company:c1"]
    assert as_json["planner"]["parked"][0]["age_seconds"] == 600.0
    text = "\n".join(render(x))
    assert "cloud id known        U1" in text and "waits for company:c1" in text
    assert "≠ access u1/c1 missing" in text


def test_once_applied_it_agrees_with_the_cloud_and_nothing_waits() -> None:
    assigned = _entry(4, "applied", "access.assign", "op-a", NOW - 10, cloud_id=None)
    journal = [assigned, PARKED.entry, APPLIED_USER]
    access = [{"company_id": "C1", "services": {"business": {"roles": ["Regnskap"]}}}]
    x = explain(EntityType.USER, _directory(), journal, [], _cloud(access), NOW)
    assert x.reasons() == [] and x.drift == ()
    assert render(x)[0] == "user u1: in sync with the cloud"

    # a role an administrator added in the cloud is neither drift nor the directory's
    entries = [
        {"service": "business", "kind": "roles", "name": "Regnskap", "origin": "directory"},
        {"service": "business", "kind": "roles", "name": "Lønn", "origin": "cloud"},
    ]
    both = [
        {"company_id": "C1", "services": {"business": {"roles": ["Lønn", "Regnskap"]}}, "entries": entries}
    ]
    y = explain(EntityType.USER, _directory(), journal, [], _cloud(both), NOW)
    assert y.reasons() == [] and y.cloud_origin == ("u1/c1: business/roles/Lønn",)
    assert "    + u1/c1: business/roles/Lønn (assigned in the cloud: kept, not the directory's)" in render(y)


def test_the_directory_side_says_when_capture_rejects_a_row_or_the_store_lacks_it() -> None:
    rejected = DirectoryView("c1", "c1", None, "country: at most 2 characters", 42)
    nothing = CloudState([], [], {}, {}, {})
    x = explain(EntityType.COMPANY, rejected, [], [], nothing, NOW, dependents=([PARKED], 3))
    assert x.reasons() == [
        "capture rejects it (see `vudsync dlq list`): country: at most 2 characters",
        "3 operation(s) of other entities wait for it (the oldest for 10m 00s)",
    ]
    assert "    access.assign    user:u1 for 10m 00s" in render(x)
    assert x.as_dict()["waiting_for_it"]["total"] == 3
    missing = DirectoryView("nobody@fjord.no", None, None, None, 42)
    y = explain(EntityType.USER, missing, [], [], CloudState([], [], {}, {}, {}), NOW)
    assert y.reasons() == ["the directory store holds no user 'nobody@fjord.no'"]


def test_blocked_dead_lettered_and_findings_are_told_apart() -> None:
    blocked = WaitingOperation(
        NOW - 60,
        _entry(
            7, "blocked", "access.assign", "op-b", NOW - 3, details={"waiting_for": ["application:business"]}
        ),
    )
    journal = [
        _entry(9, "dead_lettered", "user.upsert", "op-d", NOW - 1, reason="422 invalid e-mail"),
        _entry(8, "blocked", "journal.application_blocked", "journal:x", NOW - 2, reason="instance differs"),
        blocked.entry,
        _entry(6, "applied", "user.upsert", "op-s", NOW - 4),
        _entry(5, "dead_lettered", "user.upsert", "op-s", NOW - 5),  # dead-lettered, then applied
    ]
    x = explain(EntityType.USER, _directory(), journal, [blocked], _cloud(), NOW)
    assert x.planner.blocked == (blocked,) and x.planner.parked == ()
    assert [e.operation_id for e in x.planner.dead_lettered] == ["op-d"]
    assert [e.kind for e in x.planner.findings] == ["journal.application_blocked"]
    assert x.reasons() == [
        "access.assign blocked for 1m 00s, waiting for application:business",
        "user.upsert dead-lettered: 422 invalid e-mail (`vudsync dlq list`)",
    ]


def test_the_index_lists_what_waits_oldest_first_from_its_first_parked_entry(tmp_path: Path) -> None:
    index = SqliteJournalIndex(tmp_path / "journal.db")
    try:
        index.add(
            [
                _entry(1, "parked", "access.assign", "op-late", NOW - 100, entity_id="u2"),
                _entry(
                    2,
                    "parked",
                    "access.assign",
                    "op-early",
                    NOW - 900,
                    details={"waiting_for": ["company:c1"]},
                ),
                _entry(3, "parked", "access.assign", "op-done", NOW - 950),
                _entry(4, "applied", "access.assign", "op-done", NOW - 50),
                _entry(5, "held", "user.deactivate", "op-held", NOW - 500, entity_id="u3"),
                _entry(
                    7, "blocked", "journal.instance_mismatch", "journal:m", NOW - 990, entity_id="business"
                ),
                # re-parked after a redelivery: still waiting since its first entry
                _entry(
                    6,
                    "parked",
                    "access.assign",
                    "op-early",
                    NOW - 20,
                    details={"waiting_for": ["company:c1"]},
                ),
            ],
            {},
        )
        waiting, total = index.waiting()
        assert total == 3
        assert [(w.entry.operation_id, w.since) for w in waiting] == [
            ("op-early", NOW - 900),
            ("op-held", NOW - 500),
            ("op-late", NOW - 100),
        ]
        assert waiting[0].entry.offset == 6, "the newest entry says what it waits for now"
        parked_only, n = index.waiting(outcomes=("parked",), limit=1)
        assert n == 2 and [w.entry.operation_id for w in parked_only] == ["op-early"]
        mine, _ = index.waiting(entity_id="u2")
        assert [w.entry.operation_id for w in mine] == ["op-late"]
        on_c1, n_c1 = index.waiting(need="company:c1")
        assert n_c1 == 1 and [w.entry.operation_id for w in on_c1] == ["op-early"]
        assert index.waiting(need="company:c10") == ([], 0), "a need is matched whole"
    finally:
        index.close()
    lines = waiting_lines(waiting[:2], total, NOW)
    assert lines[1].split() == ["15m", "00s", "parked", "access.assign", "user:u1", "v7", "company:c1"]
    assert "an operator's decision" in lines[2]
    assert lines[-1] == "3 operation(s) waiting (the oldest 2 shown)"


# -- sync: the steps and when following is done ------------------------------------------------


def test_sync_steps_say_what_each_result_means() -> None:
    applied = from_result(APPLIED_USER)
    assert (applied.stage, applied.text) == ("applied", "user.upsert created, cloud id U1")
    assert applied.data["cloud_id"] == "U1"
    parked = from_result(PARKED.entry)
    assert (parked.stage, parked.text) == ("parked", "access.assign waits for company:c1")
    dead = from_result(_entry(9, "dead_lettered", "user.upsert", "op-d", NOW, reason="422 invalid e-mail"))
    assert dead.text == "user.upsert: 422 invalid e-mail"
    already = from_waiting(PARKED, NOW)
    assert already.text == "access.assign waits for company:c1 (for 10m 00s)"
    assert already.as_dict()["waiting_for"] == ["company:c1"]


def test_sync_is_done_when_it_agrees_with_the_cloud_and_says_how_otherwise() -> None:
    access = [{"company_id": "C1", "services": {"business": {"roles": ["Regnskap"]}}}]
    in_sync = explain(EntityType.USER, _directory(), [APPLIED_USER], [], _cloud(access), NOW)
    waiting = explain(EntityType.USER, _directory(), [PARKED.entry], [PARKED], _cloud(), NOW)
    captured_only = [Step("captured", "", NOW)]

    assert verdict(None, captured_only, timed_out=False) == Verdict("following", None)
    assert verdict(in_sync, captured_only, timed_out=False) == Verdict("in_sync", 0)
    assert verdict(in_sync, [*captured_only, from_result(APPLIED_USER)], timed_out=False).outcome == "applied"
    assert verdict(waiting, captured_only, timed_out=False).exit_status is None, "it may still be released"
    parked = verdict(waiting, captured_only, timed_out=True)
    assert (parked.outcome, parked.exit_status) == ("parked", 1)
    assert parked.reasons == ("access.assign parked for 10m 00s, waiting for company:c1",)
    dead = from_result(_entry(9, "dead_lettered", "access.assign", "op-a", NOW))
    assert verdict(waiting, [*captured_only, dead], timed_out=False).outcome == "dead_lettered"
    assert verdict(None, captured_only, timed_out=True).outcome == "timeout"


def test_a_conflict_is_a_reason_and_ends_a_sync_until_an_operator_resolves_it() -> None:
    details = {"conflict": "linked to another on-premise id", "cloud_id": "U7"}
    conflict = _entry(4, "conflict", "user.upsert", "op-u", NOW - 5, details=details)
    x = explain(EntityType.USER, _directory(), [conflict], [], CloudState([], [], {}, {}, {}), NOW)
    assert [e.operation_id for e in x.planner.conflicts] == ["op-u"]
    assert x.reasons()[0].startswith("user.upsert not applied, a conflict: linked to another on-premise id")
    step = from_result(conflict)
    assert step.text == "user.upsert: linked to another on-premise id (cloud object U7)"
    assert verdict(x, [step], timed_out=False) == Verdict("conflict", 1, tuple(x.reasons()))


def test_a_sync_that_planned_nothing_ends_at_once_on_an_open_conflict() -> None:
    """`conflicts resolve` before the cause is fixed: the state is unchanged, the planner plans
    nothing, no result will come; waiting for the time-out would change nothing."""
    details = {"conflict": "customer_administrator", "cloud_id": "U7"}
    conflict = _entry(4, "conflict", "user.upsert", "op-u", NOW - 5, details=details)
    x = explain(EntityType.USER, _directory(), [conflict], [], CloudState([], [], {}, {}, {}), NOW)
    reasons = tuple(x.reasons())
    captured_only = [Step("captured", "", NOW)]
    assert verdict(x, captured_only, timed_out=False) == Verdict("following", None, reasons)
    assert verdict(x, captured_only, timed_out=False, nothing_planned=True) == Verdict("conflict", 1, reasons)
    again = [*captured_only, planned("user.upsert", "op-v", NOW)]
    assert verdict(x, again, timed_out=False, nothing_planned=True).exit_status is None, "its result decides"
    waiting = explain(EntityType.USER, _directory(), [PARKED.entry], [PARKED], _cloud(), NOW)
    assert verdict(waiting, captured_only, timed_out=False, nothing_planned=True).exit_status is None, (
        "a parked operation may still be released by a fact"
    )


def test_a_superseded_operation_no_longer_waits(tmp_path: Path) -> None:
    index = SqliteJournalIndex(tmp_path / "journal.db")
    try:
        index.add(
            [
                _entry(1, "parked", "access.assign", "op-old", NOW - 100),
                _entry(2, "superseded", "access.assign", "op-old", NOW - 50),
                _entry(3, "parked", "access.assign", "op-new", NOW - 50),
            ],
            {},
        )
        assert [w.entry.operation_id for w in index.waiting()[0]] == ["op-new"]
    finally:
        index.close()
