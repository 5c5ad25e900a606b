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
from typing import Any

from vudsync.ops.journal import JournalEntry

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


def open_conflicts(entries: Iterable[JournalEntry]) -> list[Conflict]:
    """The conflicts no later applied upsert of the same entity settled, oldest first.

    ``entries``: the journal's conflict entries and the applied results of the same entities,
    in any order."""
    latest_conflict: dict[tuple[str, str], JournalEntry] = {}
    latest_applied: dict[tuple[str, str], float] = {}
    for e in entries:
        if not (e.entity_id and e.kind):
            continue
        key = (e.entity_id, e.kind)
        if e.outcome == "conflict":
            if key not in latest_conflict or latest_conflict[key].time <= e.time:
                latest_conflict[key] = e
        elif e.outcome in SETTLES:
            latest_applied[key] = max(latest_applied.get(key, e.time), e.time)
    out = [
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
        for key, e in latest_conflict.items()
        if latest_applied.get(key, float("-inf")) < e.time
    ]
    return sorted(out, key=lambda c: (c.time, c.entity_id))
