"""The event journal: what the planner tells the VUD dashboard, as results. Pure.

Every operation the planner does not send now still gets a result on ``vud.sink.results``:
*parked* (waiting for facts), *blocked* (waiting for its application to match the cloud),
*held* (a deletion the accidental-delete gate holds), *rejected* (a deletion an operator
rejected). The planner's own :class:`~processors.model.JournalEntry` findings become results
too when they are warnings or errors (``blocked``) or ask for a *review* (a company linked to
an existing cloud company that differs); info entries are only counted (``Effects.journal``,
for the metric).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from processors.effects import Effects
from processors.model import JournalEntry, Planned
from schemas.results import OperationResult, ResultOutcome


def record(fx: Effects, entry: JournalEntry, now: datetime, outcome: ResultOutcome | None = None) -> None:
    """Warnings and errors become results (the event journal); info entries are only counted."""
    fx.journal.append(entry.code)
    if entry.level == "info" and outcome is None:
        return
    suffix = f":{entry.ref}" if entry.ref else ""
    result = OperationResult(
        operation_id=f"journal:{entry.code}:{entry.entity.value}:{entry.entity_id}:{entry.version}{suffix}",
        kind=f"journal.{entry.code}",
        aggregate=f"{entry.entity.value}:{entry.entity_id}",
        entity=entry.entity,
        entity_id=entry.entity_id,
        source_version=entry.version,
        outcome=outcome or ResultOutcome.BLOCKED,
        error=entry.message if entry.level != "info" else None,
        details={"code": entry.code, "message": entry.message, "level": entry.level},
        source_committed_at=entry.committed_at or now,
        recorded_at=now,
    )
    fx.send("results", entry.entity_id, result)


def operation_result(op: Planned, outcome: ResultOutcome, now: datetime, **details: Any) -> OperationResult:
    """The result saying what became of ``op`` in the planner (parked, blocked, held, rejected)."""
    return OperationResult.for_operation(op, outcome, now, details=details)
