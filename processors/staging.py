"""Staging mode: operations planned exactly as ever, kept instead of sent. Pure.

In staging mode (``VUDSYNC_PLANNER_STAGING``, ``vudsync run planner --staging``) the planner
plans every message as it always does — the same operation ids, the same gate, the same
parking — but what it would send to ``vud.cloud.operations`` goes to
``vud.cloud.operations.staged`` instead, as a :class:`~schemas.operations.StagedOperation`
(:func:`stage_sends`). Nothing reaches the sink, so the cloud is not written to.

What it learns from results: nothing comes back while nothing is applied, so an operation that
waits for a cloud id (an assignment waiting for its user's creation, for its company, for a
catalogue entry) stays parked, really parked, in the table. It is *also* staged, with the
needs it waits for (:func:`stage_waiting`) — when it is parked, or when a release leaves it
waiting only for those (it was blocked until the registry was known) — so that ``vudsync
staging diff`` shows it (an assignment for a user that would be created). The planner does not
pretend the prerequisite is met: a cloud id invented for staging would have to be forgotten
again, and an operation carrying one could never be applied. When a promotion applies the
creations, their results teach the planner the cloud ids as always, the parking releases the
assignments, and — the planner still staging — they are staged again, ready, with their cloud
ids and the same operation ids: ``vudsync staging promote`` applies those as the second step
of the same promotion (create before assign). Operations held by the delete gate or blocked on
their application are staged only once the gate or the application lets them go: what
``vudsync deletes list`` and ``vudsync parked list`` show.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from processors.effects import Effects, Send
from processors.model import DIRECTORY_OPERATIONS, Parked
from processors.needs import Need, NeedKind
from schemas.operations import CloudOperation, StagedOperation

STAGED = "staged"  # the role of a staged record (processors.topics.PlannerTopics.by_role)

#: needs a promotion meets by itself: what staged operations create in the cloud
_CREATED_BY_PROMOTION = frozenset({NeedKind.USER, NeedKind.COMPANY, NeedKind.CATALOGUE})


def staged(op: CloudOperation, now: datetime, waiting_for: Iterable[str] = ()) -> StagedOperation:
    return StagedOperation(operation=op, waiting_for=tuple(waiting_for), staged_at=now)


def stage_sends(sends: list[Send], now: datetime) -> list[Send]:
    """``sends`` with every operation to send replaced by its staged record (same key)."""
    if not any(s.role == "operations" for s in sends):
        return sends
    return [
        Send(STAGED, s.key, staged(s.value, now), s.partition) if s.role == "operations" else s  # type: ignore[arg-type]
        for s in sends
    ]


def waits_for_promotion(parked: Parked) -> bool:
    """A parked operation that a promotion releases: it waits only for what staged operations
    would create (not for the delete gate, nor for its application's registry)."""
    return bool(parked.needs) and all(n.kind in _CREATED_BY_PROMOTION for n in parked.needs)


def stage_waiting(
    fx: Effects, waiting: Iterable[tuple[Parked, tuple[Need, ...] | None]], now: datetime
) -> None:
    """Stage, with what they wait for, the operations that now wait only for what a promotion
    creates: parked so by a plan, or left so by a release (an assignment blocked until the
    registry was known, which then waits for its user only). Each once: not again while it
    waited so already."""
    for parked, before in waiting:
        if waits_for_promotion(parked) and (
            before is None or not waits_for_promotion(Parked(parked.operation, before))
        ):
            op = parked.operation
            if isinstance(op, DIRECTORY_OPERATIONS):  # the writeback's: never the cloud's to stage
                continue
            fx.send(STAGED, op.aggregate, staged(op, now, (n.encode() for n in parked.needs)))
