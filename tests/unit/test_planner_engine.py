"""The reconciler over a plain dict: parking and release, facts per partition, redelivery, the
accidental-delete gate, instance verdicts. Pure: the Faust shell only performs these effects."""

from __future__ import annotations

from collections import deque
from datetime import timedelta
from typing import Any

import pytest

from processors import deletions, gate
from processors.control import DeletionsDecided, GateTick
from processors.engine import Coords, Effects, Reconciler
from processors.model import Decision, PlannerSettings
from processors.parking import BUCKET
from schemas.directory import ApplicationType, CompanyAccess, EntityType, ServiceAccess
from schemas.events import DirectoryEvent, Op
from schemas.operations import AssignAccess, DeactivateUser, RegisterApplicationInstance, UpsertUser
from schemas.results import FactKind, OperationResult, PlannerFact, ResultOutcome
from tests.factories import (
    T0,
    access,
    connected_table,
    instance_event,
    op_result,
    user_event,
    user_state,
    user_upsert,
)

FP_A, FP_B = "hmac-sha256:" + "a" * 64, "hmac-sha256:" + "b" * 64
URI = "https://vb.fjord.local"


class Harness:
    """Performs effects like the Faust shell, and delivers facts and control messages back."""

    def __init__(
        self, partitions: int = 1, settings: PlannerSettings | None = None, *, connected: bool = True
    ) -> None:
        # an installation that ran `vudsync connect` unless ``connected=False``
        self.table: dict[str, Any] = connected_table(partitions) if connected else {}
        self.r = Reconciler(self.table, settings or PlannerSettings(), partitions, lambda: T0)
        self.partitions = partitions
        self.ops: list[Any] = []
        self.staged: list[Any] = []  # staging mode: what it would have sent, and what waits
        self.results: list[OperationResult] = []
        self.control: list[Any] = []  # every control message, as `vudsync deletes list` reads them
        self.offsets = 0

    def perform(self, fx: Effects, deliver: bool = True) -> Effects:
        queue: deque[Any] = deque()
        for s in fx.sends:
            if s.role == "operations":
                self.ops.append(s.value)
            elif s.role == "staged":
                self.staged.append(s.value)
            elif s.role == "results":
                self.results.append(s.value)  # type: ignore[arg-type]
            else:
                queue.append(s)
                if s.role == "control":
                    self.control.append(s.value)
        for key, value in fx.writes.items():
            if value is None:
                self.table.pop(key, None)
            else:
                self.table[key] = value
        while deliver and queue:
            s = queue.popleft()
            coords = Coords(s.role, s.partition or 0, self._offset())
            inner = (
                self.r.on_fact(s.value, coords) if s.role == "facts" else self.r.on_control(s.value, coords)
            )
            self.perform(inner, deliver=True)
        return fx

    def _offset(self) -> int:
        self.offsets += 1
        return self.offsets

    def event(
        self, ev: DirectoryEvent, partition: int = 0, offset: int | None = None, committed: int | None = None
    ) -> Effects:
        coords = Coords("users", partition, self._offset() if offset is None else offset)
        return self.perform(self.r.on_directory_event(ev, coords, committed))

    def fact(self, partition: int | None = None, **kw: Any) -> Effects:
        fact = PlannerFact(observed_at=kw.pop("observed_at", T0), source="connect", **kw)
        fx = Effects()
        for p in [partition] if partition is not None else range(self.partitions):
            fx.sends.extend(self.r.on_fact(fact, Coords("facts", p, self._offset())).sends)
            self.perform(self.r.on_fact(fact, Coords("facts", p, self._offset())))
        return fx

    def connect(self, catalogue: tuple[str, ...] = ("business:roles:Regnskap",)) -> None:
        """What `vudsync connect` says: no instance registered, these catalogue entries exist."""
        for app in ApplicationType:
            self.fact(kind=FactKind.REGISTRY, subject=app.value, present=False)
        for entry in catalogue:
            self.fact(kind=FactKind.CATALOGUE, subject=entry)
        self.fact(kind=FactKind.CONNECT, subject="installation")  # last, as connect sends it

    def tick(self, seconds: float | None = None) -> Effects:
        """The gate's clock reads ``seconds`` after T0 (default: the settling time)."""
        after = self.r.settings.deletes_settle_seconds if seconds is None else seconds
        return self.perform(self.r.on_control(GateTick(at=T0 + timedelta(seconds=after)), Coords("c", 0, 0)))

    def decide(self, approve: bool, up_to: int | None) -> Effects:
        msg = DeletionsDecided(approve=approve, operator="ops@fjord.no", decided_at=T0, up_to=up_to)
        return self.perform(self.r.on_control(msg, Coords("control", 0, self._offset())))

    def result(self, op: Any, cloud_id: str | None, partition: int = 0, **kw: Any) -> Effects:
        result = OperationResult.for_operation(
            op,
            ResultOutcome.APPLIED,
            T0 + timedelta(seconds=self._offset()),
            cloud_id=cloud_id,
            source_committed_at=T0,
            **kw,
        )
        return self.perform(self.r.on_result(result, Coords("results", partition, self._offset())))


def kinds(ops: list[Any]) -> list[str]:
    return [o.kind for o in ops]


# -- parking and release -----------------------------------------------------------------------


def test_the_oldest_parked_operation_ages_from_its_source_commit_and_is_zero_once_released() -> None:
    now = [T0]
    h = Harness()
    h.r = Reconciler(h.table, PlannerSettings(), 1, lambda: now[0])
    assert h.r.oldest_parked_age() == 0.0, "nothing parked"
    h.connect()
    h.event(user_event(1))  # seen before: no upsert ahead of its access
    h.event(user_event(6, state=user_state("u2")))
    h.event(user_event(2, access=(access("c1"),)))  # committed at T0 + 2 s
    h.event(user_event(7, state=user_state("u2", access=(access("c1"),))))  # T0 + 7 s
    now[0] = T0 + timedelta(seconds=92)
    assert h.r.parked() == 2 and h.r.oldest_parked_age() == 90.0, "the oldest of the two"
    h.fact(kind=FactKind.COMPANY, subject="c1", cloud_id="cc-1")
    h.fact(kind=FactKind.USER, subject="u1", cloud_id="cu-1")
    assert h.r.parked() == 1 and h.r.oldest_parked_age() == 85.0, "u1's access went; u2's waits"
    h.fact(kind=FactKind.USER, subject="u2", cloud_id="cu-2")
    assert h.r.parked() == 0 and h.r.oldest_parked_age() == 0.0


def test_what_still_waits_after_a_release_is_reported_with_its_remaining_needs() -> None:
    h = Harness()
    h.event(user_event(2, access=(access("c1"),)))  # before connect: its application is unknown
    (blocked,) = [r for r in h.results if r.kind == "access.assign"]
    assert blocked.outcome is ResultOutcome.BLOCKED
    assert "application:business" in blocked.details["waiting_for"]
    h.connect()
    h.fact(kind=FactKind.USER, subject="u1", cloud_id="cu-1")
    waits = [(r.outcome, r.details["waiting_for"]) for r in h.results if r.kind == "access.assign"]
    assert waits[-1] == (ResultOutcome.PARKED, ["company:c1"]), "parked now, on the company alone"
    assert all(r.operation_id == blocked.operation_id for r in h.results if r.kind == "access.assign")
    h.fact(kind=FactKind.USER, subject="u1", cloud_id="cu-1")  # the same fact again: nothing new
    assert len([r for r in h.results if r.kind == "access.assign"]) == len(waits)


def test_a_newer_plan_for_a_parked_slot_supersedes_the_operation_that_waited_there() -> None:
    h = Harness()
    h.connect()
    h.event(user_event(2, access=(access("c1"),)))
    (first,) = [r for r in h.results if r.kind == "access.assign"]
    h.event(user_event(2, access=(access("c1"),)), offset=h.offsets)  # redelivered: the same id
    assert not [r for r in h.results if r.outcome is ResultOutcome.SUPERSEDED]
    h.event(user_event(3, access=(access("c1", roles=("Regnskap", "Lønn")),)))  # changed while parked
    superseded = [r for r in h.results if r.outcome is ResultOutcome.SUPERSEDED]
    assert [r.operation_id for r in superseded] == [first.operation_id]
    assert h.r.parked() == 1, "only the newest plan waits"


def test_access_is_parked_until_facts_confirm_user_and_company_then_released_with_acks_first() -> None:
    h = Harness(partitions=2)
    h.connect()
    h.event(user_event(1), partition=1)  # seen before: no upsert ahead of its access
    h.event(user_event(2, access=(access("c1"),)), partition=1)
    assert kinds(h.ops) == ["user.upsert"]
    assert [r.outcome for r in h.results] == [ResultOutcome.PARKED]
    assert h.results[0].details["waiting_for"] == ["user:u1", "company:c1"]
    h.fact(partition=1, kind=FactKind.COMPANY, subject="c1", cloud_id="cc-1")
    assert kinds(h.ops) == ["user.upsert"], "still waits for its user"
    assert h.table["p|user:u1"][0]["needs"] == ["user:u1"]

    release = h.r.on_fact(
        PlannerFact(kind=FactKind.USER, subject="u1", cloud_id="cu-1", observed_at=T0, source="results"),
        Coords("facts", 1, 99),
    )
    (assign,) = release.operations()
    assert isinstance(assign, AssignAccess) and (assign.cloud_user_id, assign.cloud_company_id) == (
        "cu-1",
        "cc-1",
    )
    assert release.acks_first, "released operations are acknowledged before the table forgets them"
    assert list(release.writes)[-1] == "k|1|user:u1", "the fact itself is written last"
    assert release.writes["p|user:u1"] is None
    h.perform(release)
    assert h.r.parked() == 0 and not any(k.startswith("n|") for k in h.table)
    # known now: the next change goes at once, with the same rules
    h.event(user_event(3, access=(access("c1", roles=()),)), partition=1)
    h.tick()  # a revocation passes the accidental-delete gate
    assert kinds(h.ops)[-1] == "access.revoke" and h.ops[-1].cloud_company_id == "cc-1"


def test_access_waiting_only_for_its_own_user_writes_no_need_index_and_is_released() -> None:
    h = Harness(partitions=2)
    h.connect()
    h.fact(partition=1, kind=FactKind.COMPANY, subject="c1", cloud_id="cc-1")
    h.event(user_event(1), partition=1)  # seen before: no upsert ahead of its access
    h.event(user_event(2, access=(access("c1"),)), partition=1)
    assert h.table["p|user:u1"][0]["needs"] == ["user:u1"]
    assert not any(k.startswith("n|") for k in h.table), "the user's own id is implied, not indexed"
    h.fact(partition=0, kind=FactKind.USER, subject="u1", cloud_id="cu-1")  # not its partition
    assert kinds(h.ops) == ["user.upsert"] and h.r.parked() == 1
    release = h.r.on_fact(
        PlannerFact(kind=FactKind.USER, subject="u1", cloud_id="cu-1", observed_at=T0, source="results"),
        Coords("facts", 1, 99),
    )
    (assign,) = release.operations()
    assert isinstance(assign, AssignAccess) and assign.cloud_user_id == "cu-1"
    assert not any(k.startswith("n|") for k in release.writes), "no index to delete: no tombstones"
    h.perform(release)
    assert h.r.parked() == 0


def test_an_index_entry_written_before_the_implied_one_is_still_released() -> None:
    h = Harness()
    h.connect()
    h.fact(kind=FactKind.COMPANY, subject="c1", cloud_id="cc-1")
    h.event(user_event(2, access=(access("c1"),)))
    h.table["n|0|user:u1"] = 1  # as the planner indexed a user's own id before
    h.table["n|0|user:u1|0"] = ["user:u1"]
    h.fact(kind=FactKind.USER, subject="u1", cloud_id="cu-1")
    assert kinds(h.ops) == ["user.upsert", "access.assign"]
    assert h.r.parked() == 0 and not any(k.startswith("n|") for k in h.table)


def test_each_partition_keeps_its_own_copy_of_shared_facts() -> None:
    h = Harness(partitions=3)
    h.result(_op_of("company.upsert", "c1"), "cc-1", partition=2)
    for p in range(3):
        assert h.r.identities(p).companies["c1"] == "cc-1"
    # users too: which partition holds a user depends on the directory producer's partitioner
    h.result(_op_of("user.upsert", "u1"), "cu-1", partition=1)
    assert all(h.r.identities(p).users["u1"] == "cu-1" for p in range(3))


def _op_of(kind: str, entity_id: str) -> Any:
    class Op_:
        operation_id = f"op-{kind}-{entity_id}"
        aggregate = f"x:{entity_id}"
        entity = "company" if kind.startswith("company") else "user"
        source_version = 1
        source_committed_at = T0

    op = Op_()
    op.kind = kind  # type: ignore[attr-defined]
    op.entity_id = entity_id  # type: ignore[attr-defined]
    return op


def test_many_users_waiting_for_one_company_are_all_released() -> None:
    h = Harness()
    h.connect()
    n = BUCKET * 2 + 5
    for i in range(n):
        ev = user_event(2, state=user_state(f"u{i}", access=(access("c1"),)))
        h.event(ev)
        h.fact(kind=FactKind.USER, subject=f"u{i}", cloud_id=f"cu-{i}")
    assert h.table["n|0|company:c1"] == 3
    h.fact(kind=FactKind.COMPANY, subject="c1", cloud_id="cc-1")
    assigned = [o for o in h.ops if isinstance(o, AssignAccess)]
    assert len(assigned) == n and h.r.parked() == 0


def test_a_newer_plan_supersedes_what_waited_in_the_same_slot() -> None:
    h = Harness()
    h.connect(catalogue=("business:roles:Regnskap", "business:roles:Lønn"))
    h.event(user_event(2, access=(access("c1"),)))
    h.event(user_event(3, access=(access("c1", roles=("Lønn",)),)))
    (item,) = h.table["p|user:u1"]
    assert item["op"]["services"]["business"]["roles"] == ["Lønn"]
    h.fact(kind=FactKind.USER, subject="u1", cloud_id="cu-1")
    h.fact(kind=FactKind.COMPANY, subject="c1", cloud_id="cc-1")
    (assign,) = [o for o in h.ops if isinstance(o, AssignAccess)]
    assert assign.services[ApplicationType.BUSINESS].roles == ("Lønn",) and assign.source_version == 3


# -- results ------------------------------------------------------------------------------------


def test_results_become_facts_and_a_linked_company_with_other_details_asks_for_review() -> None:
    h = Harness(partitions=2)
    fx = h.r.on_result(
        op_result(
            ResultOutcome.APPLIED,
            "c1",
            entity=EntityType.COMPANY,
            cloud_id="cc-1",
            effect="linked",
            details={"review": ["name"]},
        ),
        Coords("results", 1, 5),
    )
    facts = [s for s in fx.sends if s.role == "facts"]
    for p in (0, 1):  # each partition learns that c1 waits for review before it learns c1's cloud id
        assert [s.value.kind for s in facts if s.partition == p] == [FactKind.REVIEW, FactKind.COMPANY]
    (journal,) = [s.value for s in fx.sends if s.role == "results"]
    assert journal.outcome is ResultOutcome.REVIEW and journal.kind == "journal.company_review"
    assert "wait for review: `vudsync review accept c1`" in journal.details["message"]
    assert "name" in journal.details["message"] and "cc-1" in journal.details["message"]


def test_failed_results_teach_nothing() -> None:
    h = Harness()
    fx = h.r.on_result(
        op_result(ResultOutcome.DEAD_LETTERED),
        Coords("results", 0, 1),
    )
    assert fx.sends == [] and fx.writes == {}


# -- redelivery ---------------------------------------------------------------------------------


def test_uncommitted_versions_redelivered_are_planned_again_against_their_own_past() -> None:
    h = Harness()
    h.connect()
    first = h.event(user_event(2, first_name="A"), offset=10).operations()
    second = h.event(user_event(3, first_name="B", access=(access("c1"),)), offset=11).operations()
    # a worker died before committing either: both come again, in order
    again_first = h.r.on_directory_event(user_event(2, first_name="A"), Coords("users", 0, 10), None)
    again_second = h.r.on_directory_event(
        user_event(3, first_name="B", access=(access("c1"),)), Coords("users", 0, 11), None
    )
    assert again_first.outcome == again_second.outcome == "redelivered"
    # v2's upsert is superseded by v3's, whose own redelivery sends it again: never old after new
    assert again_first.operations() == [] and [o.kind for o in first] == ["user.upsert"]
    assert [o.operation_id for o in again_second.operations()] == [o.operation_id for o in second]
    # only v2 uncommitted (v3 never planned): v2's operations go again, the same ids
    lone = Harness()
    lone.connect()
    sent = lone.event(user_event(2, first_name="A"), offset=10).operations()
    again = lone.r.on_directory_event(user_event(2, first_name="A"), Coords("users", 0, 10), None)
    assert [o.operation_id for o in again.operations()] == [o.operation_id for o in sent]
    assert "e|user:u1" not in again_first.writes, "a redelivery never rewinds the table"
    # once committed, the history goes and an old version is merely stale
    h.event(user_event(4, first_name="C"), offset=12, committed=12)
    assert [item[0] for item in h.table["e|user:u1"]["h"]] == [12]
    stale = h.r.on_directory_event(user_event(3, first_name="B"), Coords("users", 0, 11), 12)
    assert stale.outcome == "stale" and stale.sends == [] and stale.writes == {}


# -- application instances ----------------------------------------------------------------------


def test_instance_mismatch_blocks_its_access_with_a_journal_entry_until_fixed() -> None:
    h = Harness(partitions=2)
    h.fact(kind=FactKind.REGISTRY, subject="business", present=True, uri=URI, license_fingerprint=FP_A)
    for app in ("document_center", "reporting"):
        h.fact(kind=FactKind.REGISTRY, subject=app, present=False)
    h.fact(kind=FactKind.CATALOGUE, subject="business:roles:Regnskap")
    h.event(instance_event(1, fingerprint=FP_B), partition=0)
    blocked = [r for r in h.results if r.kind == "journal.instance_mismatch"]
    assert blocked and blocked[0].outcome is ResultOutcome.BLOCKED
    assert "license key" in blocked[0].details["message"] and FP_B not in blocked[0].model_dump_json()
    assert h.r.identities(1).verdict(ApplicationType.BUSINESS).blocked

    h.fact(kind=FactKind.USER, subject="u1", cloud_id="cu-1")
    h.fact(kind=FactKind.COMPANY, subject="c1", cloud_id="cc-1")
    h.event(user_event(2, access=(access("c1"),)), partition=1)
    assert h.results[-1].outcome is ResultOutcome.BLOCKED
    assert not [o for o in h.ops if isinstance(o, AssignAccess)]

    h.event(instance_event(2, fingerprint=FP_A), partition=0)  # the operator fixed the license key
    (assign,) = [o for o in h.ops if isinstance(o, AssignAccess)]
    assert assign.cloud_company_id == "cc-1"
    assert any(r.kind == "journal.instance_mismatch" for r in h.results)


def _business_and_reporting(roles: tuple[str, str]) -> CompanyAccess:
    business, reporting = (ServiceAccess(roles=(r,)) for r in roles)
    return CompanyAccess(
        company_id="c1", services={ApplicationType.BUSINESS: business, ApplicationType.REPORTING: reporting}
    )


def test_a_mismatched_application_holds_only_its_own_access_not_the_others() -> None:
    """Reporting's license key differs from the cloud's: the user's Business role in the same
    company goes at once, keeping Reporting's cloud assignment as it is; Reporting's waits,
    and fixing the key sends the whole assignment."""
    h = Harness(partitions=2)
    for app in (ApplicationType.BUSINESS, ApplicationType.REPORTING):
        h.fact(kind=FactKind.REGISTRY, subject=app.value, present=True, uri=URI, license_fingerprint=FP_A)
    h.fact(kind=FactKind.REGISTRY, subject="document_center", present=False)
    for entry in ("business:roles:Regnskap", "reporting:roles:Analyse", "reporting:roles:Budsjett"):
        h.fact(kind=FactKind.CATALOGUE, subject=entry)
    h.fact(kind=FactKind.USER, subject="u1", cloud_id="cu-1")
    h.fact(kind=FactKind.COMPANY, subject="c1", cloud_id="cc-1")
    h.event(instance_event(1, app=ApplicationType.BUSINESS, fingerprint=FP_A), partition=0)
    h.event(instance_event(1, app=ApplicationType.REPORTING, fingerprint=FP_B), partition=0)

    h.event(user_event(2, access=(_business_and_reporting(("Regnskap", "Analyse")),)), partition=1)
    (partial,) = [o for o in h.ops if isinstance(o, AssignAccess)]
    assert set(partial.services) == {ApplicationType.BUSINESS}
    assert partial.keep == (ApplicationType.REPORTING,)
    assert (partial.cloud_user_id, partial.cloud_company_id) == ("cu-1", "cc-1")
    (held,) = [r for r in h.results if r.kind == "access.assign"]
    assert held.outcome is ResultOutcome.BLOCKED and held.details["waiting_for"] == ["application:reporting"]

    # a change of Reporting's access alone sends nothing more: only Reporting's part changed
    h.event(user_event(3, access=(_business_and_reporting(("Regnskap", "Budsjett")),)), partition=1)
    assert len([o for o in h.ops if isinstance(o, AssignAccess)]) == 1
    (waiting,) = h.table["p|user:u1"]  # the newer plan replaced the one that waited
    assert waiting["op"]["source_version"] == 3

    h.event(instance_event(2, app=ApplicationType.REPORTING, fingerprint=FP_A), partition=0)  # fixed
    whole = [o for o in h.ops if isinstance(o, AssignAccess)][-1]
    assert whole is not partial and whole.keep == ()
    assert whole.services[ApplicationType.REPORTING].roles == ("Budsjett",)
    assert whole.services[ApplicationType.BUSINESS].roles == ("Regnskap",)
    assert whole.source_version == 3 and partial.source_version == 2


def test_access_planned_before_the_registry_releases_the_matching_applications_part() -> None:
    """Planned while no registry was known (every application waits), then `connect`'s
    registry arrives: Business matches, Reporting does not. Business's part goes then."""
    h = Harness(partitions=2)
    for entry in ("business:roles:Regnskap", "reporting:roles:Analyse"):
        h.fact(kind=FactKind.CATALOGUE, subject=entry)
    h.event(instance_event(1, app=ApplicationType.BUSINESS, fingerprint=FP_A), partition=0)
    h.event(instance_event(1, app=ApplicationType.REPORTING, fingerprint=FP_B), partition=0)
    h.event(user_event(2, access=(_business_and_reporting(("Regnskap", "Analyse")),)), partition=1)
    h.fact(kind=FactKind.USER, subject="u1", cloud_id="cu-1")
    h.fact(kind=FactKind.COMPANY, subject="c1", cloud_id="cc-1")
    assert not [o for o in h.ops if isinstance(o, AssignAccess)]

    for app in (ApplicationType.BUSINESS, ApplicationType.REPORTING):
        h.fact(kind=FactKind.REGISTRY, subject=app.value, present=True, uri=URI, license_fingerprint=FP_A)
    (partial,) = [o for o in h.ops if isinstance(o, AssignAccess)]
    assert set(partial.services) == {ApplicationType.BUSINESS} and partial.keep == (
        ApplicationType.REPORTING,
    )
    assert (partial.cloud_user_id, partial.cloud_company_id) == ("cu-1", "cc-1")
    (waiting,) = h.table["p|user:u1"]
    assert waiting["needs"] == ["application:reporting"]


def test_an_instance_the_cloud_lacks_is_registered_and_its_result_verifies_it() -> None:
    h = Harness()
    h.connect()
    h.event(instance_event(1))
    (register,) = [o for o in h.ops if isinstance(o, RegisterApplicationInstance)]
    assert h.r.identities(0).verdict(ApplicationType.BUSINESS).blocked is False
    h.result(register, None, details={"uri": URI, "license_fingerprint": FP_A})
    assert h.table["k|0|registry:business"]["present"] is True


def test_before_connect_the_instance_waits_and_its_operations_say_what_for() -> None:
    h = Harness()
    h.fact(kind=FactKind.CATALOGUE, subject="business:roles:Regnskap")
    h.fact(kind=FactKind.USER, subject="u1", cloud_id="cu-1")
    h.fact(kind=FactKind.COMPANY, subject="c1", cloud_id="cc-1")
    fx = h.event(instance_event(1))
    assert fx.journal == ["instance_unverified"]  # counted, not journalled as advice
    h.event(user_event(2, access=(access("c1"),)))
    assert h.results[-1].outcome is ResultOutcome.BLOCKED
    assert h.results[-1].details["waiting_for"] == ["application:business"]
    h.connect()
    assert not h.r.identities(0).verdict(ApplicationType.BUSINESS).blocked
    assert sorted(kinds(h.ops)) == ["access.assign", "application_instance.register", "user.upsert"]
    assert not [r for r in h.results if "vudsync connect" in (r.error or "")]


def test_right_after_connect_the_journal_gives_no_false_advice() -> None:
    """`vudsync connect` publishes the registry, then snapshots: the snapshot's instance events
    may reach the planner before the registry facts (another topic). Nothing in the journal may
    then tell the operator to run `vudsync connect` — the one just run."""
    h = Harness(partitions=6)
    for app, partition in zip(ApplicationType, (0, 3, 5), strict=False):
        h.event(instance_event(7, app=app, fingerprint=FP_A), partition=partition)
    for app in ApplicationType:
        h.fact(kind=FactKind.REGISTRY, subject=app.value, present=True, uri=URI, license_fingerprint=FP_A)
    said = [r for r in h.results if r.kind.startswith("journal.instance")]
    assert said == [], [r.details["message"] for r in said]
    assert not any(h.r.identities(p).verdict(app).blocked for p in range(6) for app in ApplicationType)


def test_one_instance_mismatch_is_journalled_once_by_a_worker_owning_every_partition() -> None:
    """One worker, six partitions, one store: each partition once found the instance's entity
    there and journalled the same mismatch (six entries for one fact)."""
    h = Harness(partitions=6)
    h.event(instance_event(1, fingerprint=FP_B), partition=4)  # its home: partition 4
    for app in ApplicationType:
        h.fact(kind=FactKind.REGISTRY, subject=app.value, present=True, uri=URI, license_fingerprint=FP_A)
    (mismatch,) = [r for r in h.results if r.kind == "journal.instance_mismatch"]
    assert mismatch.outcome is ResultOutcome.BLOCKED and "license key" in mismatch.details["message"]
    assert all(h.r.identities(p).verdict(ApplicationType.BUSINESS).blocked for p in range(6))
    # the registry told again (connect run again): said again once, for the new registry
    h.fact(
        kind=FactKind.REGISTRY,
        subject="business",
        present=True,
        uri=URI,
        license_fingerprint=FP_A,
        observed_at=T0 + timedelta(minutes=1),
    )
    assert len([r for r in h.results if r.kind == "journal.instance_mismatch"]) == 2
    # an unknown instance is registered once, not once per partition
    h.event(instance_event(1, app=ApplicationType.REPORTING), partition=2)
    h.fact(kind=FactKind.REGISTRY, subject="reporting", present=False, observed_at=T0 + timedelta(minutes=2))
    assert len([o for o in h.ops if isinstance(o, RegisterApplicationInstance)]) == 1


# -- the accidental-delete gate -----------------------------------------------------------------


def _deletes(h: Harness, n: int, first: int = 0, **change: Any) -> None:
    """``n`` users appear, then are deleted (or changed by ``change``) on premise."""
    users = [f"u{i}" for i in range(first, first + n)]
    for i, u in enumerate(users):
        h.event(user_event(2, state=user_state(u)), partition=i % h.partitions)
    for i, u in enumerate(users):
        if change:
            h.event(user_event(3, state=user_state(u, **change)), partition=i % h.partitions)
        else:
            h.event(user_event(3, op=Op.DELETE, state=user_state(u)), partition=i % h.partitions)


def _deactivated(h: Harness) -> list[str]:
    return [
        o.entity_id
        for o in h.ops
        if isinstance(o, DeactivateUser) or (isinstance(o, UpsertUser) and not o.active)
    ]


def test_a_burst_over_the_threshold_is_held_whole_not_cut_at_the_threshold() -> None:
    """The mistake: 600 users deleted at once, threshold 500: 499 were deactivated before the
    gate held the other 101. Now a burst over the threshold sends none."""
    h = Harness(partitions=2, settings=PlannerSettings(deletes_threshold=3))
    h.connect()
    _deletes(h, 5)
    h.tick(3600)
    assert _deactivated(h) == [], "no deletion of the burst reaches the cloud"
    held = [r for r in h.results if r.outcome is ResultOutcome.HELD]
    assert {r.entity_id for r in held} == {f"u{i}" for i in range(5)}
    assert all(r.kind == "user.deactivate" for r in held)
    assert "vudsync deletes approve --up-to" in held[0].details["reason"]
    assert h.r.held_deletions() == 5 == len(gate.outstanding(h.control))


def test_a_burst_under_the_threshold_waits_for_its_window_to_settle_then_goes() -> None:
    h = Harness(partitions=2, settings=PlannerSettings(deletes_threshold=3, deletes_settle_seconds=5))
    h.connect()
    _deletes(h, 3)
    assert _deactivated(h) == [] and h.r.gate_tick() is not None, "settling: the gate wants ticks"
    h.tick(4.9)
    assert _deactivated(h) == []
    h.tick(5)
    assert sorted(_deactivated(h)) == ["u0", "u1", "u2"] and h.r.parked() == 0
    assert h.r.gate_tick() is None and h.r.held_deletions() == 0
    # a granted window still counts (within the count window): one more passes the threshold
    _deletes(h, 1, first=3)
    h.tick(3600)
    assert sorted(_deactivated(h)) == ["u0", "u1", "u2"] and h.r.held_deletions() == 1


def test_mass_deactivation_by_active_false_is_held_like_deletions() -> None:
    """The mistake: a bad import sets ``active = false`` on every user; the gate saw only
    removals, so every user was deactivated in the cloud."""
    h = Harness(partitions=2, settings=PlannerSettings(deletes_threshold=3))
    h.connect()
    _deletes(h, 4, active=False)
    h.tick(3600)
    assert _deactivated(h) == [] and h.r.held_deletions() == 4


def test_mass_revocation_is_held_like_deletions() -> None:
    h = Harness(settings=PlannerSettings(deletes_threshold=2))
    h.connect()
    h.fact(kind=FactKind.COMPANY, subject="c1", cloud_id="cc-1")
    users = [f"u{i}" for i in range(3)]
    for u in users:
        h.fact(kind=FactKind.USER, subject=u, cloud_id=f"cu-{u}")
        h.event(user_event(2, state=user_state(u, access=(access("c1"),))))
    h.tick()
    assert len([o for o in h.ops if isinstance(o, AssignAccess)]) == 3
    for u in users:
        h.event(user_event(3, state=user_state(u, access=())))
    h.tick(3600)
    assert kinds(h.ops).count("access.revoke") == 0 and h.r.held_deletions() == 3


def test_approve_settles_exactly_what_was_shown_and_later_deletions_stay_held() -> None:
    """The mistake: an operator lists 5 held deletions and approves; meanwhile 2 more were held,
    and "approve" let all 7 go. The decision names the highest number the operator saw."""
    h = Harness(partitions=2, settings=PlannerSettings(deletes_threshold=3))
    h.connect()
    _deletes(h, 5)
    shown = gate.outstanding(h.control)
    assert [x.seq for x in shown] == [0, 1, 2, 3, 4] and shown[0].entity_id == "u0"
    _deletes(h, 2, first=5)  # held after the operator looked
    h.decide(True, None)
    assert _deactivated(h) == [], "an approval without a bound approves nothing"
    h.decide(True, shown[-1].seq)
    assert sorted(_deactivated(h)) == [f"u{i}" for i in range(5)]
    assert h.r.held_deletions() == 2
    assert [x.entity_id for x in gate.outstanding(h.control)] == ["u5", "u6"]
    _deletes(h, 1, first=7)
    assert h.r.held_deletions() == 3, "the gate still holds: a new deletion waits too"
    h.decide(True, 7)
    assert len(_deactivated(h)) == 8 and h.r.held_deletions() == 0 and h.r.parked() == 0
    assert gate.outstanding(h.control) == []
    # the approved operations carry the ids the held results named: the journal closes them
    held = [r for r in h.results if r.outcome is ResultOutcome.HELD]
    assert {r.operation_id for r in held} <= {o.operation_id for o in h.ops}
    # open again: a new window starts its count afresh
    _deletes(h, 1, first=8)
    h.tick(3600)
    assert len(_deactivated(h)) == 9


def test_settings_given_to_the_reconciler_later_govern_every_path() -> None:
    """The property tests tighten the gate on a reconciler already built: every path obeys."""
    h = Harness(settings=PlannerSettings(deletes_threshold=10_000))
    h.r.settings = PlannerSettings(deletes_threshold=1)
    assert h.r.settings.deletes_threshold == 1
    h.connect()
    _deletes(h, 2)
    h.tick()
    assert _deactivated(h) == [] and h.r.held_deletions() == 2


def test_rejected_deletions_are_never_applied_and_say_so() -> None:
    h = Harness(settings=PlannerSettings(deletes_threshold=1))
    h.connect()
    _deletes(h, 3)
    h.decide(False, None)  # rejecting everything held is always safe
    h.tick(3600)
    assert _deactivated(h) == []
    rejected = [r for r in h.results if r.outcome is ResultOutcome.REJECTED]
    assert {r.entity_id for r in rejected} == {"u0", "u1", "u2"} and h.r.parked() == 0
    assert h.r.held_deletions() == 0


def test_an_update_after_a_held_deletion_does_not_overtake_it() -> None:
    """Order per aggregate: the deactivation waits at the gate; the user's next change (still
    inactive) must wait behind it, not deactivate at once."""
    h = Harness(settings=PlannerSettings(deletes_threshold=5))
    h.connect()
    h.event(user_event(2))
    h.event(user_event(3, active=False))
    h.event(user_event(4, active=False, last_name="Berg"))
    assert _deactivated(h) == []
    h.tick()
    (op,) = [o for o in h.ops if isinstance(o, UpsertUser) and not o.active]
    assert op.source_version == 4 and op.last_name == "Berg", "the newest plan of the slot goes"
    assert h.r.parked() == 0


def test_a_request_asked_again_gets_the_same_answer() -> None:
    h = Harness(settings=PlannerSettings(deletes_threshold=5))
    h.connect()
    h.event(user_event(2))
    fx = h.event(user_event(3, op=Op.DELETE))
    (request,) = [s.value for s in fx.sends if s.role == "control"]
    pending = h.r.on_control(request, Coords("control", 0, 49))
    assert pending.sends == [] and pending.writes == {}, "pending: asked again, nothing changes"
    h.tick()
    again = h.r.on_control(request, Coords("control", 0, 50))
    (decision,) = [s.value for s in again.sends]
    assert decision.decision is Decision.GRANTED and again.writes == {}


def test_gate_counts_within_the_window_and_by_percentage() -> None:
    s = PlannerSettings(deletes_threshold=2, deletes_window_seconds=60)
    state = deletions.GateState()
    answers = []
    for t in (0, 10, 100, 110, 115):
        state, decision = deletions.on_request(state, committed_at=t, partition=0, live=1000, settings=s)
        answers.append(decision)
    assert answers == [Decision.GRANTED, Decision.GRANTED, Decision.GRANTED, Decision.GRANTED, None]
    assert state.holding and state.held == 1
    state, decision = deletions.on_request(state, committed_at=10_000, partition=0, live=1000, settings=s)
    assert decision is None and state.held == 2, "holding: everything waits for the operator"
    state = deletions.on_operator(state, settled=1)
    assert state.holding and state.held == 1, "one of two settled: the gate still holds"
    state = deletions.on_operator(state, settled=1)
    assert not state.holding and state.window == () and state.held == 0

    pct = PlannerSettings(deletes_threshold=500, deletes_threshold_percent=10.0)
    state = deletions.GateState()
    for partition in (0, 1):
        state, _ = deletions.on_request(state, committed_at=0, partition=partition, live=10, settings=pct)
    state, decision = deletions.on_request(state, committed_at=1, partition=0, live=10, settings=pct)
    assert decision is None, "3 of 20 live entities is more than 10 %"
    assert deletions.GateState.from_json(state.to_json()) == state


def test_upserts_are_unaffected_by_the_gate() -> None:
    h = Harness(settings=PlannerSettings(deletes_threshold=0))
    h.connect()
    h.event(user_event(2))
    assert kinds(h.ops) == ["user.upsert"] and isinstance(h.ops[0], UpsertUser)


# -- where a user's cloud id goes ----------------------------------------------------------------


@pytest.mark.parametrize("home_result", [False, True], ids=["result-elsewhere", "result-at-home"])
def test_a_users_cloud_id_goes_to_the_partition_its_events_arrive_on_only(home_result: bool) -> None:
    """Only the user's own operations wait for its cloud id, and they are planned on the
    partition its events arrive on (whichever partitioner put them there): one fact, not one
    per partition; its parked assignment is released there. When the result comes to that
    partition itself (the sink and the directory producer hash keys alike, as with librdkafka
    on both), the id is learned and the parked assignment released in the same step: no fact
    record to read back — and the table ends as with the fact."""
    h = Harness(partitions=6)
    h.connect()
    h.fact(kind=FactKind.COMPANY, subject="c1", cloud_id="cc-1")
    h.event(user_event(2), partition=4)  # seen before: no upsert ahead of its access
    h.event(user_event(3, access=(access("c1"),)), partition=4)
    (upsert,) = [op for op in h.ops if isinstance(op, UpsertUser)]
    assert h.r.parked() == 1
    fx = h.r.on_result(
        OperationResult.for_operation(upsert, ResultOutcome.APPLIED, T0, cloud_id="cu-1"),
        Coords("results", 4 if home_result else 1, 99),
    )
    if home_result:
        assert [s.role for s in fx.sends] == ["operations"] and fx.acks_first
        assert fx.writes["k|4|user:u1"] == "cu-1" and list(fx.writes)[-1] == "k|4|user:u1"
    else:
        assert [(s.role, s.partition) for s in fx.sends] == [("facts", 4)]
    h.perform(fx)
    assert h.r.parked() == 0 and h.table.get("k|4|user:u1") == "cu-1"
    (assign,) = [op for op in h.ops if isinstance(op, AssignAccess)]
    assert assign.cloud_user_id == "cu-1"
    # the same result again (a redelivery) changes nothing and sends nothing new
    again = h.r.on_result(
        OperationResult.for_operation(upsert, ResultOutcome.APPLIED, T0, cloud_id="cu-1"),
        Coords("results", 4, 99),
    )
    assert again.sends == [] and again.writes == {}


def test_a_users_cloud_id_goes_to_every_partition_when_its_home_is_not_known_here() -> None:
    """A result for a user whose events this worker never planned (another worker owns the
    partition, or the table value predates the field): every partition, as before."""
    h = Harness(partitions=6)
    fx = h.r.on_result(
        OperationResult.for_operation(user_upsert("u7"), ResultOutcome.APPLIED, T0, cloud_id="cu-7"),
        Coords("results", 1, 99),
    )
    assert sorted(s.partition for s in fx.sends if s.role == "facts") == list(range(6))


# -- assignments behind their user's upsert --------------------------------------------------------


def _unresolved(op: AssignAccess) -> OperationResult:
    """What the sink answers for an assignment behind its user's upsert that found no cloud user
    linked to its user (sinks.outcomes)."""
    return OperationResult.for_operation(
        op,
        ResultOutcome.UNRESOLVED,
        T0,
        effect="unresolved",
        details={"reason": "no cloud user is linked to this user", "operation": op.model_dump(mode="json")},
    )


def test_a_new_users_assignment_goes_behind_its_upsert_and_parks_nothing() -> None:
    h = Harness(partitions=2)
    h.connect()
    h.fact(kind=FactKind.COMPANY, subject="c1", cloud_id="cc-1")
    h.event(user_event(2, access=(access("c1"),)), partition=1)
    upsert, assign = h.ops
    assert isinstance(upsert, UpsertUser) and isinstance(assign, AssignAccess)
    assert assign.aggregate == upsert.aggregate
    assert (assign.cloud_user_id, assign.cloud_company_id) == (None, "cc-1")
    assert h.r.parked() == 0 and h.results == [] and not any(k.startswith(("p|", "n|")) for k in h.table)
    h.result(upsert, "cu-1", partition=1)  # the user's result: learned, nothing to release
    assert len(h.ops) == 2 and h.table["k|1|user:u1"] == "cu-1"


def test_an_unresolved_assignment_waits_again_for_its_users_cloud_id() -> None:
    """The user's upsert linked no cloud user (a conflict): the sink answers its assignment
    *unresolved*, and the planner parks it where that result came, until the user is known."""
    for result_partition in (1, 0):  # the user's home partition, or another one
        h = Harness(partitions=2)
        h.connect()
        h.fact(kind=FactKind.COMPANY, subject="c1", cloud_id="cc-1")
        h.event(user_event(2, access=(access("c1"),)), partition=1)
        upsert, assign = h.ops
        fx = h.perform(h.r.on_result(_unresolved(assign), Coords("results", result_partition, 50)))
        assert fx.sends and not [s for s in fx.sends if s.role == "operations"]
        (parked,) = [r for r in h.results if r.outcome is ResultOutcome.PARKED]
        assert parked.operation_id == assign.operation_id and parked.details["waiting_for"] == ["user:u1"]
        assert h.r.parked() == 1
        # redelivered: nothing new
        again = h.r.on_result(_unresolved(assign), Coords("results", result_partition, 50))
        assert not [s for s in again.sends if s.role == "operations"]
        # resolved (`vudsync conflicts resolve`): the user's result, on the same partition as before
        h.result(upsert, "cu-1", partition=result_partition)
        assert h.r.parked() == 0
        released = h.ops[2:]
        assert [(o.operation_id, o.cloud_user_id, o.cloud_company_id) for o in released] == [
            (assign.operation_id, "cu-1", "cc-1")
        ]


def test_an_unresolved_assignment_yields_to_a_newer_plan_for_its_slot() -> None:
    h = Harness()
    h.connect()
    h.event(user_event(2, access=(access("c1"),)))
    assert [o.kind for o in h.ops] == ["user.upsert"]
    (waiting,) = h.table["p|user:u1"]
    old = AssignAccess.model_validate(waiting["op"])
    h.event(user_event(3, access=(access("c1", roles=("Regnskap", "Lønn")),)))
    newer = h.table["p|user:u1"]
    h.perform(h.r.on_result(_unresolved(old), Coords("results", 0, 50)))
    assert h.table["p|user:u1"] == newer, "the newer plan waits; the older one is not parked over it"
