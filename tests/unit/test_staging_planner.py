"""Staging mode in the planner: planned exactly as ever (same ids, gate, parking), nothing sent;
what waits for a staged creation is staged with its needs, and staged again, ready and with
its cloud ids, once results of the promoted creations arrive."""

from __future__ import annotations

from processors import staging
from processors.engine import Coords, Input
from processors.model import PlannerSettings
from schemas.operations import AssignAccess, StagedOperation
from schemas.results import FactKind
from tests.factories import access, company_event, user_event
from tests.unit.test_planner_engine import Harness


def _pair() -> tuple[Harness, Harness]:
    normal, staged = Harness(), Harness(settings=PlannerSettings(staging=True))
    for h in (normal, staged):
        h.connect()
    return normal, staged


def test_staging_plans_the_same_operations_and_parks_the_same_but_sends_none() -> None:
    normal, staged = _pair()
    for h in (normal, staged):
        h.event(company_event(1, cid="c1"))
        # seen before: a new user's access goes behind its upsert when not staging (nothing is
        # sent when staging: it waits for the user), test_planner.py
        h.event(user_event(2))
        h.event(user_event(3, access=(access("c1"),)))
    assert staged.ops == [], "nothing reaches vud.cloud.operations in staging mode"
    ready = [s.operation for s in staged.staged if not s.waiting_for]
    assert [o.operation_id for o in ready] == [o.operation_id for o in normal.ops]
    assert {k: v for k, v in staged.table.items()} == normal.table, "the same table: same parking"
    assert [(r.operation_id, r.outcome) for r in staged.results] == [
        (r.operation_id, r.outcome) for r in normal.results
    ], "the same journal (parked results)"


def test_an_assignment_waiting_for_a_creation_is_staged_with_its_needs_then_ready_after_promotion() -> None:
    _, h = _pair()
    h.event(company_event(1, cid="c1"))
    h.event(user_event(2, access=(access("c1"),)))
    waiting = [s for s in h.staged if s.waiting_for]
    assert len(waiting) == 1 and isinstance(waiting[0], StagedOperation)
    assign = waiting[0].operation
    assert isinstance(assign, AssignAccess) and assign.cloud_user_id is None
    assert set(waiting[0].waiting_for) == {"user:u1", "company:c1"}
    assert h.r.parked() == 1, "really parked: no cloud id is invented"

    # a promotion applied the creations: their results come back and teach the cloud ids
    upsert_user = next(s.operation for s in h.staged if s.operation.kind == "user.upsert")
    upsert_company = next(s.operation for s in h.staged if s.operation.kind == "company.upsert")
    before = len(h.staged)
    h.result(upsert_company, "cc-1")
    h.result(upsert_user, "cu-1")
    again = [s for s in h.staged[before:] if s.operation.kind == "access.assign"]
    assert len(again) == 1 and again[0].waiting_for == ()
    released = again[0].operation
    assert isinstance(released, AssignAccess)
    assert released.operation_id == assign.operation_id, "the same operation, now with its cloud ids"
    assert (released.cloud_user_id, released.cloud_company_id) == ("cu-1", "cc-1")
    assert h.ops == [] and h.r.parked() == 0


def test_what_is_blocked_is_staged_with_its_needs_once_it_waits_only_for_creations() -> None:
    h = Harness(settings=PlannerSettings(staging=True))  # no connect yet: the registry is unknown
    h.event(user_event(2, access=(access("c1"),)))
    assert [s.operation.kind for s in h.staged] == ["user.upsert"], "the assignment is blocked"
    assert h.r.waiting().blocked == 1
    h.connect(catalogue=())  # the registry is known now: it waits for creations only
    (assign,) = [s for s in h.staged if s.operation.kind == "access.assign"]
    assert set(assign.waiting_for) == {"user:u1", "company:c1", "catalogue:business:roles:Regnskap"}
    h.fact(kind=FactKind.CATALOGUE, subject="business:roles:Regnskap")
    assert len([s for s in h.staged if s.operation.kind == "access.assign"]) == 1, "staged once"


def test_a_batch_in_staging_mode_sends_no_operation() -> None:
    _, h = _pair()
    fx = h.r.on_batch(
        [
            Input("directory", company_event(1, cid="c1"), Coords("companies", 0, 1)),
            Input("directory", user_event(2, access=(access("c1"),)), Coords("users", 0, 1)),
        ]
    )
    assert "operations" not in {s.role for s in fx.sends}
    assert sorted(s.value.operation.kind for s in fx.sends if s.role == staging.STAGED) == [
        "access.assign",
        "company.upsert",
        "user.upsert",
    ]
