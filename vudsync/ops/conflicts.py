"""Open conflicts: matches the sink refused to take over (pure, over journal entries).

A *conflict* is an upsert of a user (by e-mail) or company (by organisation number) whose match
in the cloud is linked to another on-premise id, or is a customer administrator: the sink wrote
nothing and answered ``conflict`` with both ids (``sinks.writes._refuse_match``). It stays open
until a later upsert of the same entity is applied — after the operator removed the cause (the
e-mail or organisation number changed on premise, or the cloud object unlinked in the portal) and
sent the entity again (``vudsync conflicts resolve`` / ``vudsync sync``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from vudsync.ops.journal import JournalEntry, JournalFilter

SETTLES = frozenset({"applied", "already_applied"})

WHAT_TO_DO = {
    "linked_to_another": "the cloud object is linked to another on-premise id: change the e-mail "
    "(organisation number) on premise, or unlink the other in the cloud; then resolve",
    "customer_administrator": "the cloud user is a customer administrator, never linked by e-mail: "
    "give the on-premise user another e-mail; then resolve",
}


@dataclass(frozen=True)
class Conflict:
    entity: str  # user | company
    entity_id: str
    kind: str  # user.upsert | company.upsert
    reason: str  # linked_to_another | customer_administrator
    cloud_id: str | None
    linked_to: str | None
    time: float
    operation_id: str | None

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "what_to_do": WHAT_TO_DO.get(self.reason, "")}


def settles(later: JournalEntry, conflict: JournalEntry) -> bool:
    """The one rule of when a conflict is settled (``vudsync conflicts list``, ``explain`` and
    ``status`` all ask it): by an applied (or already applied) upsert of the same entity and
    kind recorded after it, whatever its operation id — the operator changed the e-mail or
    organisation number, so the state and the id changed too. "After" is the order of the
    results partition when both are on the same one (a result is keyed by its entity: they are),
    else the time recorded."""
    if later.outcome not in SETTLES or (later.entity_id, later.kind) != (conflict.entity_id, conflict.kind):
        return False
    if (later.topic, later.partition) == (conflict.topic, conflict.partition):
        return later.offset > conflict.offset
    return later.time > conflict.time


def open_conflict_entries(entries: Iterable[JournalEntry]) -> list[JournalEntry]:
    """The newest conflict of each entity and kind that nothing settled (:func:`settles`),
    oldest first. ``entries``: the journal's conflict entries and the applied results of the
    same entities, in any order."""
    latest: dict[tuple[str, str], JournalEntry] = {}
    settling: list[JournalEntry] = []
    for e in entries:
        if not (e.entity_id and e.kind):
            continue
        if e.outcome == "conflict":
            key = (e.entity_id, e.kind)
            if key not in latest or (latest[key].time, latest[key].offset) <= (e.time, e.offset):
                latest[key] = e
        elif e.outcome in SETTLES:
            settling.append(e)
    found = [c for c in latest.values() if not any(settles(a, c) for a in settling)]
    return sorted(found, key=lambda c: (c.time, c.entity_id or ""))


def open_conflicts(entries: Iterable[JournalEntry]) -> list[Conflict]:
    """The open conflicts (:func:`open_conflict_entries`), as the operator sees them."""
    return [
        Conflict(
            entity=e.entity or "",
            entity_id=e.entity_id or "",
            kind=e.kind or "",
            reason=str(e.details.get("conflict") or ""),
            cloud_id=e.details.get("cloud_id"),
            linked_to=e.details.get("linked_to"),
            time=e.time,
            operation_id=e.operation_id,
        )
        for e in open_conflict_entries(entries)
    ]


class JournalQuery(Protocol):
    def query(self, flt: JournalFilter) -> list[tuple[int, JournalEntry]]: ...


def read_open_conflicts(index: JournalQuery, limit: int = 100_000) -> list[Conflict]:
    """The open conflicts the journal index holds (the conflicts and the applied results of
    their entities; the index is caught up by the caller)."""
    found = [e for _, e in index.query(JournalFilter(outcomes=("conflict",), limit=limit))]
    applied = [
        e
        for entity_id in sorted({e.entity_id for e in found if e.entity_id})
        for _, e in index.query(
            JournalFilter(entity_id=entity_id, outcomes=tuple(sorted(SETTLES)), limit=limit)
        )
    ]
    return open_conflicts([*found, *applied])
