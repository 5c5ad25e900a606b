"""Nothing reaches the cloud before `vudsync connect`, and a company linked to a cloud company
that existed before gets no services until an operator reviewed it. Each test is the mistake
it prevents; the reconciler over a plain dict, as in test_planner_engine."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from processors import reviews
from processors.control import ConnectAwaited
from processors.engine import Coords
from processors.model import Identities, PlannerSettings
from processors.needs import Need
from processors.planner import needs_of
from schemas.directory import ApplicationType
from schemas.events import Op
from schemas.operations import AssignAccess, RevokeAccess
from schemas.results import FactKind, PlannerFact, ResultOutcome
from tests.factories import T0, access, access_op, company_event, instance_event, user_event, user_state
from tests.unit.test_planner_engine import Harness, kinds


def _before_connect(h: Harness) -> None:
    """What a connect that stopped before its last fact left: registry and catalogue, no connect."""
    for app in ApplicationType:
        h.fact(kind=FactKind.REGISTRY, subject=app.value, present=False)
    h.fact(kind=FactKind.CATALOGUE, subject="business:roles:Regnskap")


def _deliver(h: Harness, fact: PlannerFact) -> None:
    for p in range(h.partitions):
        h.perform(h.r.on_fact(fact, Coords("facts", p, h._offset())))


# -- connect ------------------------------------------------------------------------------------


def test_a_planner_started_before_connect_sends_nothing_says_so_once_and_converges_after_it() -> None:
    h = Harness(partitions=2, connected=False)
    _before_connect(h)
    h.event(user_event(2, access=(access("c1"),)), partition=0)
    h.event(user_event(3, state=user_state("u2")), partition=1)
    h.event(company_event(4), partition=1)
    h.event(instance_event(5), partition=0)  # the cloud has none registered: it would register it
    assert h.ops == [], "nothing is sent to the cloud before connect succeeded"
    parked = [r for r in h.results if r.outcome is ResultOutcome.PARKED]
    assert {r.kind for r in parked} >= {"user.upsert", "company.upsert", "application_instance.register"}
    assert all(r.details["waiting_for"][0] == "connect:installation" for r in parked)
    assert [m.partition for m in h.control if isinstance(m, ConnectAwaited)] == [0, 1], "once per partition"
    said = [r for r in h.results if r.kind == "journal.waiting_for_connect"]
    assert len(said) == 1, "journalled once for the installation, not once per partition or event"
    assert "run `vudsync connect`" in said[0].details["message"] and said[0].entity_id == "u1"

    h.fact(kind=FactKind.CONNECT, subject="installation", observed_at=T0 + timedelta(minutes=1))
    assert sorted(kinds(h.ops)) == [
        "application_instance.register",
        "company.upsert",
        "user.upsert",
        "user.upsert",
    ], "everything that waited goes (the access still waits for the cloud ids)"
    h.ops.clear()
    h.event(user_event(6, state=user_state("u3")), partition=1)
    assert kinds(h.ops) == ["user.upsert"], "connected: at once"
    assert len([r for r in h.results if r.kind == "journal.waiting_for_connect"]) == 1


def test_after_a_disconnect_new_operations_wait_again_and_it_is_said_again_once() -> None:
    h = Harness(partitions=2)  # connected at T0
    h.fact(kind=FactKind.CONNECT, subject="installation", present=False, observed_at=T0 + timedelta(hours=1))
    h.event(user_event(2), partition=1)
    h.event(user_event(3, state=user_state("u2")), partition=0)
    assert h.ops == []
    assert len([r for r in h.results if r.kind == "journal.waiting_for_connect"]) == 1
    h.fact(kind=FactKind.CONNECT, subject="installation", observed_at=T0)  # older: changes nothing
    assert h.ops == []
    h.fact(kind=FactKind.CONNECT, subject="installation", observed_at=T0 + timedelta(hours=2))
    assert kinds(h.ops) == ["user.upsert", "user.upsert"]


def test_a_user_created_and_removed_before_connect_leaves_nothing_waiting_for_ever() -> None:
    h = Harness(connected=False, settings=PlannerSettings(deletes_settle_seconds=0))
    _before_connect(h)
    h.event(user_event(2, op=Op.CREATE, access=(access("c1"),)))
    h.event(user_event(3, op=Op.DELETE, access=(access("c1"),)))
    h.fact(kind=FactKind.CONNECT, subject="installation")
    (deactivate,) = h.ops
    assert deactivate.kind == "user.deactivate" and deactivate.cloud_id is None
    assert h.r.parked() == 1, "its revoke waits for the user's cloud id"
    # the sink: no cloud user is linked to this user (its upsert never went): nothing learned
    h.result(deactivate, None, effect="noop", details={"reason": "no cloud user is linked to this user"})
    assert h.r.parked() == 0, "the revoke has nothing to revoke: settled, not left waiting"
    (moot,) = [r for r in h.results if "nothing to revoke" in r.details.get("reason", "")]
    assert moot.kind == "access.revoke" and moot.outcome is ResultOutcome.SUPERSEDED
    assert [o.kind for o in h.ops] == ["user.deactivate"], "and nothing else was sent"


# -- review -------------------------------------------------------------------------------------


def _linked(h: Harness, effect: str) -> tuple[AssignAccess, PlannerFact | None]:
    """u1 (access to c1) and c1 planned and sent; c1's upsert answered with ``effect``."""
    h.connect()
    h.event(user_event(2, access=(access("c1"),)), partition=0)
    (user_up,) = h.ops
    h.result(user_up, "cu-1")
    h.event(company_event(3), partition=1)
    company_up = h.ops[-1]
    assert company_up.kind == "company.upsert"
    h.ops.clear()
    details = {"review": ["name"]} if effect == "linked" else {}
    fx = h.result(company_up, "cc-pre", partition=1, effect=effect, details=details)
    waiting = [s.value for s in fx.sends if s.role == "facts" and s.value.kind is FactKind.REVIEW]
    return company_up, (waiting[0] if waiting else None)


def test_a_company_matched_to_an_existing_cloud_company_gets_no_services_until_accepted() -> None:
    h = Harness(partitions=2)
    company_up, waiting = _linked(h, "linked")
    assert waiting is not None and waiting.cloud_id == "cc-pre"
    assert h.ops == [], "no assignment of access to a company waiting for review"
    held = [r for r in h.results if r.kind == "access.assign" and r.outcome is ResultOutcome.PARKED]
    assert held and held[-1].details["waiting_for"] == ["review:c1"]
    (journal,) = [r for r in h.results if r.kind == "journal.company_review"]
    assert journal.outcome is ResultOutcome.REVIEW and "cc-pre" in journal.details["message"]
    assert all(h.r.identities(p).reviews.get("c1") for p in (0, 1))

    _deliver(h, reviews.accepted_fact(waiting))
    (assign,) = h.ops
    assert isinstance(assign, AssignAccess) and assign.cloud_company_id == "cc-pre"
    # the same link answered again (a redelivery, a replay: the ledger repeats "linked")
    again = h.result(company_up, "cc-pre", partition=1, effect="linked")
    assert not any(h.r.identities(p).reviews.get("c1") for p in (0, 1)), "accepted stays accepted"
    assert not [s for s in again.sends if s.role == "facts" and s.value.kind is FactKind.REVIEW], (
        "not said again: the facts topic's last word on c1 stays the acceptance (compaction keeps it)"
    )


def test_an_acceptance_that_overtakes_the_link_on_a_partition_is_not_undone_by_it() -> None:
    h = Harness(partitions=1)
    link = PlannerFact(
        kind=FactKind.REVIEW, subject="c1", present=True, cloud_id="cc-pre", observed_at=T0, source="results"
    )
    _deliver(h, reviews.accepted_fact(link))
    _deliver(h, link)
    assert h.r.identities(0).reviews.get("c1") is False
    _deliver(h, link.model_copy(update={"observed_at": T0 + timedelta(days=1)}))  # linked again later
    assert h.r.identities(0).reviews.get("c1") is True


def test_a_company_vudsync_created_needs_no_review() -> None:
    h = Harness(partitions=2)
    _, waiting = _linked(h, "created")
    assert waiting is None
    assert kinds(h.ops) == ["access.assign"]


def test_only_assignments_of_access_wait_for_a_review() -> None:
    known: dict[str, Any] = {
        "users": {"u1": "cu-1"},
        "companies": {"c1": "cc-1"},
        "catalogue": {"business:roles:Regnskap": True},
    }
    ids = Identities(**known, reviews={"c1": True})
    assign, revoke = access_op(2), access_op(3, None)
    assert isinstance(assign, AssignAccess) and isinstance(revoke, RevokeAccess)
    assert needs_of(assign, ids) == (Need.review("c1"),)
    assert needs_of(revoke, ids) == (), "taking access away activates nothing"
    keep_only = assign.model_copy(update={"services": {}, "keep": (ApplicationType.REPORTING,)})
    assert needs_of(keep_only, ids) == ()
    assert needs_of(assign, Identities(**known)) == ()


def test_before_connect_every_operation_waits_for_it_first() -> None:
    ids = Identities(
        users={"u1": "cu-1"},
        companies={"c1": "cc-1"},
        catalogue={"business:roles:Regnskap": True},
        connected=False,
    )
    assert needs_of(access_op(2), ids) == (Need.connect(),)
    assert needs_of(access_op(3, None), ids) == (Need.connect(),)
    assert Need.connect().encode() == "connect:installation"


def test_review_list_is_the_planners_rule_oldest_first_numbered_by_offset() -> None:
    def fact(cid: str, waiting: bool, minutes: int) -> PlannerFact:
        return PlannerFact(
            kind=FactKind.REVIEW,
            subject=cid,
            present=waiting,
            cloud_id=f"cloud-{cid}",
            observed_at=T0 + timedelta(minutes=minutes),
            source="results" if waiting else "operator",
        )

    records = [
        (5, fact("c1", True, 1)),
        (6, fact("c2", True, 2)),
        (7, PlannerFact(kind=FactKind.COMPANY, subject="c2", cloud_id="x", observed_at=T0, source="results")),
        (8, fact("c1", False, 1)),  # accepted
        (9, fact("c1", True, 1)),  # the same link again: stays accepted
    ]
    assert [(w.number, w.company_id) for w in reviews.waiting_companies(records)] == [(6, "c2")]
    records.append((10, fact("c1", True, 5)))  # linked again, later
    assert [(w.number, w.company_id, w.cloud_id) for w in reviews.waiting_companies(records)] == [
        (6, "c2", "cloud-c2"),
        (10, "c1", "cloud-c1"),
    ]
