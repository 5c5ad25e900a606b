"""``vudsync sync user|company``: the steps of one entity's way to the cloud, and when to stop. Pure.

The command re-emits the entity's current state through the producer's client
(:func:`producers.service.reemit_current_state`) and follows what the running pipeline does
with it: *captured* (the broker acked the event) → *handled* (the planner's group committed
past it) → *planned* (an operation on ``vud.cloud.operations`` for its aggregate) → *parked*,
*held*, *blocked* (the planner's results) → *applied* or *dead-lettered* (the sink's). It stops
when the entity agrees with the cloud and nothing of it waits (:mod:`vudsync.ops.explain`), when
something was dead-lettered or rejected (waiting changes nothing), or at the time-out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from schemas.directory import EntityType
from vudsync.ops.explain import Explanation
from vudsync.ops.journal import JournalEntry, WaitingOperation
from vudsync.ops.timespec import format_age

# a result after which waiting changes nothing (a conflict waits for an operator)
FINAL = frozenset({"dead_lettered", "rejected", "conflict"})


@dataclass(frozen=True)
class Step:
    stage: str  # captured, handled, planned, parked, held, blocked, applied, …
    text: str
    at: float  # Unix seconds
    data: Mapping[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        when = datetime.fromtimestamp(self.at).astimezone().strftime("%H:%M:%S")
        return f"{when}  {self.stage:<14} {self.text}"

    def as_dict(self) -> dict[str, Any]:
        when = datetime.fromtimestamp(self.at).astimezone().isoformat(timespec="seconds")
        return {"stage": self.stage, "text": self.text, "time": when, **self.data}


def aggregate(entity: EntityType, entity_id: str) -> str:
    """The key of the entity's operations on ``vud.cloud.operations``."""
    return f"{entity.value}:{entity_id}"


def captured(entity: EntityType, entity_id: str, topic: str, version: int, at: float) -> Step:
    return Step(
        "captured",
        f"{entity.value} {entity_id} v{version} → {topic} (acknowledged by the broker)",
        at,
        {"version": version, "topic": topic},
    )


def handled(at: float) -> Step:
    return Step("handled", "the planner has read it (its group committed past the event)", at)


def planned(kind: str, operation_id: str, at: float) -> Step:
    return Step(
        "planned", f"{kind} {operation_id[:12]} → vud.cloud.operations", at, {"operation_id": operation_id}
    )


def from_result(entry: JournalEntry) -> Step:
    """A journal entry of the entity (a result the planner or the sink published) as a step."""
    data: dict[str, Any] = {"operation_id": entry.operation_id, "kind": entry.kind}
    text = f"{entry.kind}"
    if entry.outcome in ("applied", "already_applied"):
        text += f" {entry.effect or entry.outcome}"
        if entry.cloud_id:
            text += f", cloud id {entry.cloud_id}"
            data["cloud_id"] = entry.cloud_id
    elif entry.outcome in ("parked", "blocked") and entry.details.get("waiting_for"):
        needs = [str(n) for n in entry.details["waiting_for"]]
        text += f" waits for {', '.join(needs)}"
        data["waiting_for"] = needs
    elif entry.outcome == "conflict":
        why = entry.details.get("conflict") or entry.reason or "?"
        text += f": {why} (cloud object {entry.details.get('cloud_id')})"
    elif entry.reason:
        text += f": {entry.reason}"
    return Step(entry.outcome, text, entry.time, data)


def from_waiting(w: WaitingOperation, now: float) -> Step:
    """An operation that already waited before this sync (its parked result is older)."""
    text = f"{w.entry.kind} waits for {', '.join(w.waiting_for)} (for {format_age(w.age(now))})"
    return Step(
        w.entry.outcome, text, now, {"operation_id": w.entry.operation_id, "waiting_for": list(w.waiting_for)}
    )


@dataclass(frozen=True)
class Verdict:
    outcome: str  # applied, in_sync, parked, held, blocked, dead_lettered, conflict, rejected, timeout, …
    exit_status: int | None  # None: not done, go on following
    reasons: tuple[str, ...] = ()


def verdict(
    now_view: Explanation | None, seen: Sequence[Step], *, timed_out: bool, nothing_planned: bool = False
) -> Verdict:
    """Whether following is done, and how it ended.

    ``now_view`` is the entity's explanation now (None before the planner has read the event);
    ``seen`` the steps shown so far; ``nothing_planned``: the planner had read the event before
    the operations topic was last read, and no operation of the entity was on it (its state
    was unchanged). Then an open conflict ends the sync at once: no operation is on its way
    that could settle it, only an operator can (waiting for the time-out changed nothing).
    """
    stages = {s.stage for s in seen}
    reasons = tuple(now_view.reasons()) if now_view is not None else ()
    for final in sorted(FINAL & stages):
        return Verdict(final, 1, reasons)
    if nothing_planned and "planned" not in stages and now_view is not None and now_view.planner.conflicts:
        return Verdict("conflict", 1, reasons)
    if now_view is not None and not reasons:
        applied = bool(stages & {"applied", "already_applied"})
        return Verdict("applied" if applied else "in_sync", 0)
    if not timed_out:
        return Verdict("following", None, reasons)
    if now_view is None:
        return Verdict("timeout", 1, ("the planner did not read the event in time: `vudsync status`",))
    p = now_view.planner
    outcome = "held" if p.held else "parked" if p.parked else "blocked" if p.blocked else "timeout"
    return Verdict(outcome, 1, reasons)
