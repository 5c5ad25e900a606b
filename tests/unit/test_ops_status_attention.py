"""What `vudsync status` must not stay quiet about (exit 1): an installation never connected
(the planner sends nothing), companies waiting for review, an application blocked by a license
change, open matching conflicts. And one rule for "when is a conflict settled", whoever asks."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from schemas.directory import EntityType
from schemas.results import FactKind, PlannerFact
from tests.factories import T0
from vudsync.ops.conflicts import open_conflict_entries, open_conflicts
from vudsync.ops.explain import planner_view
from vudsync.ops.journal import JournalEntry
from vudsync.ops.journal_index import JournalStats
from vudsync.ops.planner_facts import fold
from vudsync.ops.status import assemble, render

FP_CLOUD, FP_NEW = "hmac-sha256:" + "a" * 64, "hmac-sha256:" + "b" * 64


def _fact(kind: FactKind, subject: str, minutes: int = 0, **kw: Any) -> PlannerFact:
    source = kw.pop("source", "connect")
    return PlannerFact(
        kind=kind, subject=subject, observed_at=T0 + timedelta(minutes=minutes), source=source, **kw
    )


def _status(**kw: Any) -> Any:
    return assemble(
        now=T0.timestamp(),
        members={},
        lag=[],
        scrapes=[],
        dlq={},
        journal=JournalStats(entries=0, last_applied=None, last_minute={}, parked_open=0, held_open=0),
        **kw,
    )


def test_the_facts_topic_says_connected_blocked_applications_and_reviews_as_the_planner_folds_them() -> None:
    records = list(
        enumerate(
            [
                _fact(FactKind.REGISTRY, "business", uri="https://vb", license_fingerprint=FP_CLOUD),
                _fact(FactKind.REGISTRY, "reporting", present=False),
                _fact(
                    FactKind.INSTANCE, "business", uri="https://vb", license_fingerprint=FP_CLOUD, version=3
                ),
                _fact(FactKind.CONNECT, "installation", 1),
                # a license change on premise: a newer instance with another key
                _fact(
                    FactKind.INSTANCE, "business", 2, uri="https://vb", license_fingerprint=FP_NEW, version=9
                ),
                _fact(
                    FactKind.INSTANCE,
                    "business",
                    3,
                    uri="https://vb",
                    license_fingerprint=FP_CLOUD,
                    version=4,
                ),
                _fact(FactKind.REVIEW, "c1", 4, cloud_id="cc-9", source="results"),
            ]
        )
    )
    told = fold(records)
    assert told.connected
    assert told.mismatched == {"business": ("license key",)}, (
        "the higher instance version wins, as in the planner"
    )
    assert [(w.company_id, w.cloud_id) for w in told.reviews] == [("c1", "cc-9")]
    later = fold([*records, (9, _fact(FactKind.CONNECT, "installation", 5, present=False))])
    assert not later.connected, "a later disconnect"
    assert fold([]).connected is False, "never connected"


def test_status_says_what_waits_for_an_operator_and_exits_1() -> None:
    records = [
        (0, _fact(FactKind.REGISTRY, "business", uri="https://vb", license_fingerprint=FP_CLOUD)),
        (1, _fact(FactKind.INSTANCE, "business", uri="https://vb", license_fingerprint=FP_NEW, version=2)),
        (2, _fact(FactKind.REVIEW, "c1", cloud_id="cc-9", source="results")),
        (3, _fact(FactKind.REVIEW, "c2", cloud_id="cc-8", source="results")),
    ]
    report = _status(told=fold(records), conflicts=2)
    problems = " | ".join(report.problems)
    assert "`vudsync connect` has not succeeded" in problems and "sends nothing" in problems
    assert "application business is blocked" in problems and "license key" in problems
    assert "`vudsync instances register business`" in problems
    assert "2 companies linked to existing cloud companies wait for review" in problems
    assert "2 open matching conflict(s)" in problems and "`vudsync conflicts list`" in problems
    data = report.as_dict()
    assert data["ok"] is False and data["connected"] is False
    assert data["companies_waiting_for_review"] == 2 and data["open_conflicts"] == 2
    assert data["blocked_applications"] == {"business": ["license key"]}
    screen = "\n".join(render(report))
    assert "blocked application business" in screen and "waiting for review  2 companies" in screen
    assert "connected           no: run `vudsync connect`" in screen

    quiet = _status(told=fold([(0, _fact(FactKind.CONNECT, "installation"))]), conflicts=0)
    assert quiet.problems == () and quiet.as_dict()["ok"] is True


def _entry(offset: int, outcome: str, time: float, op: str, partition: int = 0) -> JournalEntry:
    details = {"conflict": "linked_to_another", "cloud_id": "C1"} if outcome == "conflict" else {}
    return JournalEntry(
        topic="vud.cloud.results", partition=partition, offset=offset, time=time, source="results",
        outcome=outcome, entity="user", entity_id="u2", operation_id=op, kind="user.upsert",
        details=details,
    )  # fmt: skip


def test_explain_conflicts_list_and_status_settle_a_conflict_by_the_same_rule() -> None:
    """The mistake: `explain` and `conflicts list` each decided it, differently — explain listed
    every conflicting operation id, the list only the newest; an applied result recorded in the
    same second as the conflict (after it in the entity's results partition) settled it for
    one and not the other."""
    cases = {
        "applied later, same second": [
            _entry(5, "conflict", 10.0, "op-a"),
            _entry(6, "applied", 10.0, "op-b"),
        ],
        "applied before, same second": [
            _entry(6, "conflict", 10.0, "op-a"),
            _entry(5, "applied", 10.0, "op-b"),
        ],
        "two conflicts, one applied between": [
            _entry(1, "conflict", 5.0, "op-a"),
            _entry(2, "applied", 6.0, "op-b"),
            _entry(3, "conflict", 7.0, "op-c"),
        ],
        "two conflicts": [_entry(1, "conflict", 5.0, "op-a"), _entry(3, "conflict", 7.0, "op-c")],
    }
    expected = {
        "applied later, same second": [],
        "applied before, same second": ["op-a"],
        "two conflicts, one applied between": ["op-c"],
        "two conflicts": ["op-c"],
    }
    for name, entries in cases.items():
        listed = [c.operation_id for c in open_conflicts(entries)]
        explained = planner_view(EntityType.USER, sorted(entries, key=lambda e: -e.offset), [])
        assert listed == [e.operation_id for e in explained.conflicts] == expected[name], name
        assert [e.operation_id for e in open_conflict_entries(entries)] == listed, name
