"""Open conflicts from journal entries (pure): open until a later applied upsert of the entity,
whatever its operation id (the operator changed the e-mail, so the id changed too)."""

from __future__ import annotations

from vudsync.ops.conflicts import open_conflicts
from vudsync.ops.journal import JournalEntry


def _entry(outcome: str, entity_id: str, time: float, op: str, **details: str) -> JournalEntry:
    return JournalEntry(
        topic="vud.cloud.results", partition=0, offset=int(time), time=time, source="results",
        outcome=outcome, entity="user", entity_id=entity_id, operation_id=op, kind="user.upsert",
        details=details,
    )  # fmt: skip


def test_a_conflict_stays_open_until_a_later_upsert_of_the_entity_is_applied() -> None:
    entries = [
        _entry("conflict", "u2", 10, "op-a", conflict="linked_to_another", cloud_id="C1", linked_to="u1"),
        _entry("conflict", "u2", 20, "op-a", conflict="linked_to_another", cloud_id="C1", linked_to="u1"),
        _entry("conflict", "u3", 15, "op-b", conflict="customer_administrator", cloud_id="C9"),
        _entry("applied", "u3", 5, "op-old"),  # applied before the conflict: settles nothing
        _entry("applied", "u4", 30, "op-c"),
    ]
    found = open_conflicts(entries)
    assert [(c.entity_id, c.reason, c.cloud_id, c.linked_to, c.time) for c in found] == [
        ("u3", "customer_administrator", "C9", None, 15),
        ("u2", "linked_to_another", "C1", "u1", 20),
    ]
    assert "customer administrator" in found[0].as_dict()["what_to_do"]
    resolved = open_conflicts([*entries, _entry("applied", "u2", 25, "op-new")])
    assert [c.entity_id for c in resolved] == ["u3"]
