"""``vudsync verify --repair`` through the planner (processors/repair.py), each test written as
the attack or mistake it prevents. Pure: the reconciler over a dict, as the Faust shell runs it."""

from __future__ import annotations

from typing import Any

from processors import gate
from processors.model import PlannerSettings
from processors.repair import candidate_of, repair_operation_id
from schemas.directory import ApplicationType
from schemas.events import Op, Repair, UserChanged
from schemas.operations import AssignAccess, DeactivateUser, RevokeAccess, UpsertUser
from schemas.results import FactKind, ResultOutcome
from tests.factories import access, instance_event, user_event, user_state
from tests.unit.test_planner_engine import FP_A, FP_B, URI, Harness, _business_and_reporting


def repaired(ev: UserChanged, run: str = "r1", *slots: str, **kw: Any) -> UserChanged:
    return ev.model_copy(update={"repair": Repair(run=run, slots=slots or ("user",), **kw)})


def _known_user(h: Harness, uid: str = "u1", version: int = 2, **state: Any) -> None:
    h.fact(kind=FactKind.USER, subject=uid, cloud_id=f"cu-{uid}")
    h.event(user_event(version, state=user_state(uid, **state)))
    h.tick()
    h.ops.clear()


def test_a_cloud_changed_behind_our_back_is_repaired_though_the_planner_saw_the_state() -> None:
    """The mistake a plain re-emission makes: the state is not newer, so it plans nothing, and
    an administrator's edit in the cloud stays. The repair re-asserts it (and keeps the
    planner's own view of the entity as it was)."""
    h = Harness()
    h.connect()
    _known_user(h)
    before = dict(h.table["e|user:u1"])
    h.event(user_event(9))
    assert h.ops == [], "the same state re-emitted plans nothing"
    h.table["e|user:u1"] = before
    h.event(repaired(user_event(9)))
    (upsert,) = h.ops
    assert isinstance(upsert, UpsertUser) and upsert.cloud_id == "cu-u1" and upsert.first_name == "Kari"
    assert upsert.operation_id == repair_operation_id("user.upsert", "u1", Repair(run="r1", slots=("user",)))
    assert h.table["e|user:u1"] == before, "a repair is not a directory change"


def test_the_same_drift_repaired_twice_plans_the_same_ids_and_asks_the_gate_once() -> None:
    """``--every`` repairs again while the first repair waits (or after the store moved on): the
    ids come from the drift, not the store position, so the sink's ledger applies it once and
    the gate holds one request, not one per pass. A new drift is a new repair."""
    h = Harness(settings=PlannerSettings(deletes_threshold=0))
    h.connect()
    _known_user(h)
    h.event(repaired(user_event(9, active=False)))
    h.event(repaired(user_event(14, active=False)))  # the store moved on, the drift is the same
    h.tick(3600)
    assert h.ops == [] and h.r.held_deletions() == 1
    (held,) = gate.outstanding(h.control)
    assert held.entity_id == "u1@repair-r1"
    h.results.clear()
    h.event(repaired(user_event(15, active=False)))  # a pass while it is held: told "held" again
    assert [r.outcome for r in h.results if r.outcome is not ResultOutcome.PARKED] == [ResultOutcome.HELD]
    assert h.r.held_deletions() == 1 and len(gate.outstanding(h.control)) == 1
    h.decide(True, held.seq)
    (once,) = h.ops
    assert isinstance(once, UpsertUser) and not once.active
    h.event(repaired(user_event(20, active=False), "r2"))  # re-activated in the cloud since: new drift
    h.tick(3600)
    assert h.r.held_deletions() == 1 and len(h.ops) == 1, "a new drift asks the gate again"


def test_a_repair_deactivating_more_than_the_gate_allows_is_held_whole_and_durably() -> None:
    """The attack: verify against a wrong or truncated view decides that every user must go.
    Through the planner the gate holds the whole burst: nothing sent, each held in the table
    (not in verify's memory), listed for the operator, released by an approval."""
    h = Harness(partitions=2, settings=PlannerSettings(deletes_threshold=3))
    h.connect()
    users = [f"u{i}" for i in range(5)]
    for u in users:
        _known_user(h, u)
    for i, u in enumerate(users):  # removed on premise long ago; active again in the cloud
        ev = user_event(30, op=Op.DELETE, state=user_state(u))
        h.event(repaired(ev, f"r{u}", cloud_ids={f"user:{u}": f"cu-{u}"}), partition=i % 2)
    h.tick(3600)
    assert h.ops == [], "no repair deactivates anybody"
    assert h.r.held_deletions() == 5 and h.r.waiting().held == 5
    shown = gate.outstanding(h.control)
    assert [x.entity_id.split("@")[0] for x in shown] == users
    h.decide(True, shown[-1].seq)
    assert sorted(o.cloud_id for o in h.ops if isinstance(o, DeactivateUser)) == [f"cu-{u}" for u in users]
    assert h.r.parked() == 0


def test_a_linked_stranger_is_deactivated_by_the_cloud_id_verify_found_never_by_e_mail() -> None:
    """A cloud user linked to an id the planner never planned (another installation's import):
    deactivated through the gate by the cloud id linked to it, never "whoever has that e-mail"."""
    h = Harness(settings=PlannerSettings(deletes_threshold=10))
    h.connect()
    ev = user_event(30, op=Op.DELETE, state=user_state("x9", email="shared@firma.no"))
    h.event(repaired(ev, cloud_ids={"user:x9": "cu-linked"}))
    assert h.ops == [] and h.r.gate_tick() is not None, "it settles at the gate first"
    h.tick()
    (deactivate,) = h.ops
    assert isinstance(deactivate, DeactivateUser) and deactivate.cloud_id == "cu-linked"
    assert "e|user:x9" not in h.table


def test_a_repaired_assignment_for_a_mismatched_application_is_blocked_like_an_event() -> None:
    """The attack: repair around the instance block. Reporting's license key differs from the
    cloud's registry: the repair sends Business's part (keeping Reporting's as it is) and holds
    Reporting's, as a directory event would."""
    h = Harness()
    for app in (ApplicationType.BUSINESS, ApplicationType.REPORTING):
        h.fact(kind=FactKind.REGISTRY, subject=app.value, present=True, uri=URI, license_fingerprint=FP_A)
    h.fact(kind=FactKind.REGISTRY, subject="document_center", present=False)
    for entry in ("business:roles:Regnskap", "reporting:roles:Analyse"):
        h.fact(kind=FactKind.CATALOGUE, subject=entry)
    h.fact(kind=FactKind.COMPANY, subject="c1", cloud_id="cc-1")
    h.event(instance_event(1, app=ApplicationType.BUSINESS, fingerprint=FP_A))
    h.event(instance_event(1, app=ApplicationType.REPORTING, fingerprint=FP_B))
    _known_user(h, access=(_business_and_reporting(("Regnskap", "Analyse")),))
    h.results.clear()

    h.event(
        repaired(user_event(9, access=(_business_and_reporting(("Regnskap", "Analyse")),)), "r1", "access:c1")
    )
    (partial,) = h.ops
    assert isinstance(partial, AssignAccess) and set(partial.services) == {ApplicationType.BUSINESS}
    assert partial.keep == (ApplicationType.REPORTING,)
    outcomes = {r.outcome for r in h.results if r.kind == "access.assign"}
    assert outcomes == {ResultOutcome.BLOCKED, ResultOutcome.SUPERSEDED}, "it replaced the waiting plan"
    (blocked,) = [r for r in h.results if r.outcome is ResultOutcome.BLOCKED]
    assert blocked.details["waiting_for"] == ["application:reporting"]
    assert blocked.operation_id == repair_operation_id(
        "access.assign", "u1", Repair(run="r1", slots=("x",)), "c1"
    )


def test_a_revoke_of_a_blocked_applications_access_waits_for_its_instance() -> None:
    """Access the cloud holds for an application whose instance mismatches: verify names the
    application (``apps``), so the revoke waits for the instance like any access of it."""
    h = Harness(settings=PlannerSettings(deletes_threshold=10))
    h.fact(kind=FactKind.REGISTRY, subject="reporting", present=True, uri=URI, license_fingerprint=FP_A)
    h.fact(kind=FactKind.COMPANY, subject="c1", cloud_id="cc-1")
    h.event(instance_event(1, app=ApplicationType.REPORTING, fingerprint=FP_B))
    _known_user(h)
    h.event(repaired(user_event(9), "r1", "access:c1", apps={"access:c1": ("reporting",)}))
    h.tick(3600)
    assert not [o for o in h.ops if isinstance(o, RevokeAccess)]
    (waiting,) = h.table["p|user:u1"]
    assert "application:reporting" in waiting["needs"]


def test_a_repair_older_than_what_the_planner_planned_is_stale() -> None:
    h = Harness()
    h.connect()
    _known_user(h, version=10)
    fx = h.event(repaired(user_event(9, first_name="Old")))
    assert fx.outcome == "stale" and h.ops == []


def test_the_gate_candidate_of_a_repair_reads_as_one_in_deletes_list() -> None:
    ev = repaired(user_event(9), "abc")
    assert ev.repair is not None
    held = gate.HeldDeletion(0, candidate_of(ev, ev.repair), 0, "held")
    assert (held.entity, held.entity_id, held.version) == ("user", "u1@repair-abc", 0)


def test_access_repair_plans_the_directory_grant() -> None:
    h = Harness()
    h.connect()
    h.fact(kind=FactKind.COMPANY, subject="c1", cloud_id="cc-1")
    _known_user(h, access=(access("c1"),))
    h.event(repaired(user_event(9, access=(access("c1"),)), "r1", "access:c1"))
    (assign,) = h.ops
    assert isinstance(assign, AssignAccess) and assign.cloud_company_id == "cc-1"
