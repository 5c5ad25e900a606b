"""Writeback (issue 16): which of the cloud's access changes reach the directory. Pure: the
rule (:mod:`processors.writeback`) alone, and the reconciler over a dict."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processors import gate
from processors.control import DeletionsDecided, GateTick
from processors.effects import Send
from processors.engine import Coords, Effects, Reconciler
from processors.model import PlannerSettings
from processors.writeback import Change, PairState, plan_writeback, winner
from schemas.cloud_changes import CloudAccessChanged, CloudAccessEntry
from schemas.directory import ApplicationType, CompanyAccess, EntityType, ServiceAccess
from schemas.directory_operations import GrantDirectoryAccess, RevokeDirectoryAccess
from schemas.events import Op, access_entry_key
from schemas.operations import AssignAccess
from schemas.results import FactKind, OperationResult, PlannerFact, ResultOutcome
from tests.factories import T0, connected_table, user_event, user_state
from tests.fakes import apply_writes

BUSINESS = ApplicationType.BUSINESS


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def entry(name: str, origin: str = "cloud", modified: float = 0.0) -> CloudAccessEntry:
    return CloudAccessEntry(
        application=BUSINESS,
        kind="role",
        name=name,
        origin=origin,  # type: ignore[arg-type]
        modified_at=at(modified),
    )


def change(
    seq: int, *entries: CloudAccessEntry, changed: float | None = None, user: str = "u1", **kw: Any
) -> CloudAccessChanged:
    return CloudAccessChanged(
        event_id=CloudAccessChanged.make_event_id(seq, user, "c1"),
        feed_seq=seq,
        user_id=user,
        company_id="c1",
        cloud_user_id=f"cu-{user.removeprefix('u')}",
        cloud_company_id="cc-1",
        entries=tuple(entries),
        changed_at=at(seq if changed is None else changed),
        **kw,
    )


def decide(
    previous: PairState | None, ch: CloudAccessChanged, held: dict[str, str] | None = None, **kw: Any
) -> Any:
    return plan_writeback(
        previous, ch, {} if held is None else held, company_known=kw.pop("known", True), now=T0
    )


# -- the rule alone ---------------------------------------------------------------------------


def test_a_cloud_grant_becomes_one_grant_with_a_deterministic_id() -> None:
    first = decide(None, change(7, entry("Lønn", modified=7)))
    again = decide(None, change(7, entry("Lønn", modified=7)))
    assert first.outcome == "planned"
    (op,) = first.operations
    assert isinstance(op, GrantDirectoryAccess)
    assert (op.user_id, op.company_id, op.entry, op.feed_seq) == ("u1", "c1", "business/role/Lønn", 7)
    assert op.operation_id == again.operations[0].operation_id
    assert first.state is not None and first.state.seq == 7


def test_a_replayed_or_older_change_is_ignored_and_a_full_read_of_the_same_state_plans_nothing() -> None:
    state = decide(None, change(7, entry("Lønn", modified=7))).state
    assert decide(state, change(7, entry("Lønn", modified=7))).outcome == "stale"
    assert decide(state, change(5)).outcome == "stale"
    # a full read after 410: a new position, the same entries as before — the store holds it now
    full = decide(
        state, change(12, entry("Lønn", modified=7), full_read=True), {"business/role/Lønn": "cloud"}
    )
    assert full.outcome == "no_change" and not full.operations


def test_the_directory_s_own_entries_are_echoes_never_written_back() -> None:
    decided = decide(None, change(3, entry("Regnskap", origin="directory", modified=3)))
    assert decided.outcome == "no_change" and not decided.operations
    assert [j.code for j in decided.journal] == ["writeback_echo_suppressed"]


def test_an_entry_held_already_is_not_written_again_whatever_its_origin() -> None:
    held = {"business/role/Lønn": "directory"}
    assert not decide(None, change(3, entry("Lønn", modified=3)), held).operations


def test_a_revoke_in_the_cloud_is_written_back_the_directory_s_own_entries_by_the_rule_too() -> None:
    first = decide(
        None,
        change(3, entry("Lønn", modified=3), entry("Innkjøp", origin="directory", modified=3)),
        {"business/role/Innkjøp": "directory"},
    )
    assert [op.name for op in first.operations] == ["Lønn"]
    held = {"business/role/Lønn": "cloud", "business/role/Innkjøp": "directory"}
    decided = decide(first.state, change(4), held)  # the cloud holds neither now
    revokes = {op.name: op for op in decided.operations}
    assert set(revokes) == {"Lønn", "Innkjøp"}
    assert all(isinstance(op, RevokeDirectoryAccess) for op in revokes.values())
    # the directory's own entry: removed whatever its origin (the cloud's change is the later)
    assert not revokes["Lønn"].any_origin and revokes["Innkjøp"].any_origin  # type: ignore[union-attr]
    assert [j.code for j in decided.journal] == ["writeback_directory_entry_removed_in_cloud"]


def test_a_revoke_in_the_cloud_older_than_the_directory_s_grant_leaves_the_entry() -> None:
    granted_on_premise = PairState(
        3,
        {"business/role/Innkjøp": Change(True, at(1), "directory")},
        {"business/role/Innkjøp": Change(True, at(10), version=7)},
    )
    decided = decide(granted_on_premise, change(4, changed=5), {"business/role/Innkjøp": "directory"})
    assert not decided.operations
    (note,) = decided.journal
    assert note.code == "writeback_conflict" and "the directory wins" in note.message


def test_a_change_before_its_user_or_company_is_known_waits_and_keeps_the_position() -> None:
    """The user's directory state and the company's link come on other topics, in no order with
    ``vud.cloud.changes``: a change that comes first waits for them, the pair's position not
    advanced (a rejection would advance it past a grant that must reach the store)."""
    unknown_user = plan_writeback(None, change(3, entry("Lønn")), None, company_known=True, now=T0)
    unknown_company = decide(None, change(4, entry("Lønn")), known=False)
    both = plan_writeback(None, change(5, entry("Lønn")), None, company_known=False, now=T0)
    assert unknown_user.outcome == unknown_company.outcome == both.outcome == "waiting"
    assert unknown_user.state is unknown_company.state is None
    assert not unknown_user.operations and not unknown_company.operations
    assert str(unknown_user.waits_for) == str(both.waits_for) == "on_premise:u1"  # the user first
    assert str(unknown_company.waits_for) == "company:c1"
    assert [j.code for j in unknown_user.journal] == ["writeback_waiting_for_user"]
    assert [j.code for j in unknown_company.journal] == ["writeback_waiting_for_company"]


def test_a_user_removed_on_premise_is_rejected_with_a_reason_and_its_position_kept() -> None:
    removed = plan_writeback(
        None, change(3, entry("Lønn")), None, company_known=True, now=T0, user_removed=True
    )
    assert removed.outcome == "rejected" and not removed.operations
    assert [j.code for j in removed.journal] == ["writeback_rejected_unknown_user"]
    # the position is kept: a replay of it stays ignored
    assert removed.state is not None and removed.state.seq == 3


def test_conflict_the_later_change_wins_and_a_tie_goes_to_the_directory() -> None:
    removed_on_premise = PairState(2, {}, {"business/role/Lønn": Change(False, at(10))})
    later = decide(removed_on_premise, change(3, entry("Lønn", modified=11)))
    tie = decide(removed_on_premise, change(3, entry("Lønn", modified=10)))
    earlier = decide(removed_on_premise, change(3, entry("Lønn", modified=9)))
    assert [type(op) for op in later.operations] == [GrantDirectoryAccess]
    assert not tie.operations and not earlier.operations
    for decided, side in ((later, "cloud"), (tie, "directory"), (earlier, "directory")):
        (note,) = decided.journal
        assert note.code == "writeback_conflict" and note.level == "warning"
        assert "the directory removed it" in note.message and "the cloud granted it" in note.message
        assert f"the {side} wins" in note.message


@settings(max_examples=300, deadline=None)
@given(
    st.floats(-100, 100, allow_nan=False), st.floats(-100, 100, allow_nan=False), st.booleans(), st.booleans()
)
def test_the_rule_is_the_later_change_ties_to_the_directory(d: float, c: float, dp: bool, cp: bool) -> None:
    side = winner(Change(dp, at(d)), Change(cp, at(c)))
    assert side == ("cloud" if at(c) > at(d) else "directory")
    assert winner(None, Change(cp, at(c))) == "cloud"


# -- the reconciler ---------------------------------------------------------------------------


class Planner:
    """One partition's reconciler over a dict; performs each message's writes."""

    def __init__(self, settings: PlannerSettings | None = None) -> None:
        self.table: dict[str, Any] = connected_table()  # after `vudsync connect`
        self.r = Reconciler(self.table, settings or PlannerSettings(), 1, lambda: T0)
        self.control: list[Any] = []  # every control message, as `vudsync deletes list` reads them
        self.offset = 0

    def perform(self, fx: Effects) -> Effects:
        apply_writes(self.table, fx.writes)
        return fx

    def coords(self, topic: str) -> Coords:
        self.offset += 1
        return Coords(topic, 0, self.offset)

    def fact(self, kind: FactKind, subject: str, cloud_id: str | None = None, present: bool = True) -> None:
        fact = PlannerFact(
            kind=kind, subject=subject, cloud_id=cloud_id, present=present, observed_at=T0, source="connect"
        )
        self.perform(self.r.on_fact(fact, self.coords("facts")))

    def user(self, version: int, *companies: CompanyAccess, uid: str = "u1") -> Effects:
        ev = user_event(version, state=user_state(uid, access=companies))
        return self.perform(self.r.on_directory_event(ev, self.coords("users"), None))

    def cloud(self, ch: CloudAccessChanged) -> Effects:
        return self.perform(self.r.on_cloud_change(ch, self.coords("cloud")))

    def gate(self, *fxs: Effects, settled: float | None = None) -> list[Send]:
        """Deliver the requests of ``fxs`` to the accidental-delete gate (this one partition is
        the gate's), and its answers back, then tick the gate's clock ``settled`` seconds after
        T0 (default: the settling time); returns every record sent on the way."""
        sent: list[Send] = []
        queue = [s.value for fx in fxs for s in fx.sends if s.role == "control"]
        after = self.r.settings.deletes_settle_seconds if settled is None else settled
        queue.append(GateTick(at=T0 + timedelta(seconds=after)))
        while queue:
            msg = queue.pop(0)
            self.control.append(msg)
            inner = self.perform(self.r.on_control(msg, self.coords("control")))
            sent += inner.sends
            queue += [s.value for s in inner.sends if s.role == "control"]
        return sent

    def approve(self, up_to: int, approve: bool = True) -> list[Send]:
        """``vudsync deletes approve --up-to <up_to>`` (``reject`` with ``approve=False``)."""
        decided = DeletionsDecided(approve=approve, operator="ops@fjord.no", decided_at=T0, up_to=up_to)
        return self.gate(Effects(sends=[Send("control", "operator", decided, 0)]))


def _linked(settings: PlannerSettings | None = None) -> Planner:
    p = Planner(settings)
    p.fact(FactKind.COMPANY, "c1", "cc-1")
    p.fact(FactKind.USER, "u1", "cu-1")
    p.fact(FactKind.REGISTRY, "business", present=False)  # no instance on premise either: not blocked
    for role in ("Regnskap", "Innkjøp", "Lønn"):
        p.fact(FactKind.CATALOGUE, f"business:roles:{role}")
    return p


def test_planner_a_cloud_grant_is_sent_to_the_directory_sink_and_its_write_back_causes_no_cloud_write() -> (
    None
):
    p = _linked()
    first = p.user(1, CompanyAccess(company_id="c1", services={BUSINESS: ServiceAccess(roles=("Regnskap",))}))
    assert [op.kind for op in first.operations()] == ["user.upsert", "access.assign"]
    fx = p.cloud(change(5, entry("Regnskap", origin="directory", modified=1), entry("Lønn", modified=5)))
    sent = [s for s in fx.sends if s.role == "directory_operations"]
    assert [(s.key, type(s.value)) for s in sent] == [("u1", GrantDirectoryAccess)]
    # the directory sink wrote it (origin cloud): the next user event plans no cloud operation
    echo = p.user(
        2,
        CompanyAccess(
            company_id="c1",
            services={BUSINESS: ServiceAccess(roles=("Regnskap",))},
            cloud_origin={BUSINESS: ServiceAccess(roles=("Lønn",))},
        ),
    )
    assert echo.operations() == []
    # an unrelated on-premise change of the same user in the same company: the directory's set only
    later = p.user(
        3,
        CompanyAccess(
            company_id="c1",
            services={BUSINESS: ServiceAccess(roles=("Innkjøp", "Regnskap"))},
            cloud_origin={BUSINESS: ServiceAccess(roles=("Lønn",))},
        ),
    )
    (assign,) = later.operations()
    assert assign.services == {BUSINESS: ServiceAccess(roles=("Innkjøp", "Regnskap"))}  # type: ignore[union-attr]


def test_planner_a_company_holding_only_cloud_entries_is_no_access_of_the_directory_s() -> None:
    p = _linked()
    p.user(1)
    fx = p.user(2, CompanyAccess(company_id="c1", cloud_origin={BUSINESS: ServiceAccess(roles=("Lønn",))}))
    assert fx.operations() == []


def test_planner_a_change_before_its_user_is_known_is_parked_and_decided_when_its_directory_state_comes() -> (
    None
):
    p = _linked()  # the company linked, the user's directory state not here yet
    fx = p.cloud(change(5, entry("Lønn", modified=5)))
    results = [s.value for s in fx.sends if isinstance(s.value, OperationResult)]
    assert [(r.kind, r.outcome) for r in results] == [
        ("journal.writeback_waiting_for_user", ResultOutcome.PARKED)
    ]
    assert fx.journal == ["writeback_waiting_for_user"]
    assert not [s for s in fx.sends if s.role == "directory_operations"]
    assert "w|u1|c1" not in p.table  # the pair's position did not move
    assert p.r.waiting().parked == 1
    assert p.cloud(change(5, entry("Lønn", modified=5))).sends == []  # redelivered: waits once
    # the user's directory state arrives: the change is decided in the same step
    fx = p.user(1, CompanyAccess(company_id="c1", services={BUSINESS: ServiceAccess(roles=("Regnskap",))}))
    (grant,) = [s.value for s in fx.sends if s.role == "directory_operations"]
    assert isinstance(grant, GrantDirectoryAccess) and grant.name == "Lønn" and grant.feed_seq == 5
    assert fx.acks_first  # sent before the table forgets it
    assert p.r.waiting().total == 0 and p.table["w|u1|c1"]["seq"] == 5
    # and only once: the same change again is a replay
    assert not [
        s for s in p.cloud(change(5, entry("Lønn", modified=5))).sends if s.role == "directory_operations"
    ]


def test_planner_a_user_removed_on_premise_is_rejected_as_a_result() -> None:
    p = _linked()
    p.user(1)
    p.perform(p.r.on_directory_event(user_event(2, op=Op.DELETE), p.coords("users"), None))
    fx = p.cloud(change(5, entry("Lønn", modified=5)))
    results = [s.value for s in fx.sends if isinstance(s.value, OperationResult)]
    assert [(r.kind, r.outcome) for r in results] == [
        ("journal.writeback_rejected_unknown_user", ResultOutcome.REJECTED)
    ]
    assert not [s for s in fx.sends if s.role == "directory_operations"]


# -- the company's link and the cloud change race (they come on different topics) ------------


class Partitions:
    """A two-partition reconciler over a dict: the user's events and cloud changes on
    partition 1, the company's result on partition 0; facts delivered to the partition given."""

    def __init__(self) -> None:
        self.table: dict[str, Any] = connected_table(2)
        self.r = Reconciler(self.table, PlannerSettings(), 2, lambda: T0)
        self.offset = 0
        self.facts: list[tuple[int, PlannerFact]] = []  # sent, not yet delivered

    def perform(self, fx: Effects) -> Effects:
        apply_writes(self.table, fx.writes)
        self.facts += [(s.partition or 0, s.value) for s in fx.sends if s.role == "facts"]  # type: ignore[misc]
        return fx

    def at(self, topic: str, partition: int) -> Coords:
        self.offset += 1
        return Coords(topic, partition, self.offset)

    def company_linked(self) -> None:
        """The sink linked c1 to cc-1: its result, on partition 0, becomes a fact per partition."""
        result = OperationResult(
            operation_id="op-c1",
            kind="company.upsert",
            aggregate="company:c1",
            entity=EntityType.COMPANY,
            entity_id="c1",
            source_version=1,
            outcome=ResultOutcome.APPLIED,
            cloud_id="cc-1",
            source_committed_at=T0,
            recorded_at=T0,
        )
        self.perform(self.r.on_result(result, self.at("results", 0)))

    def deliver_facts(self, partition: int) -> list[Send]:
        sent: list[Send] = []
        for p, fact in [f for f in self.facts if f[0] == partition]:
            self.facts.remove((p, fact))
            sent += self.perform(self.r.on_fact(fact, self.at("facts", p))).sends
        return sent

    def user(self, version: int) -> None:
        access = CompanyAccess(company_id="c1", services={BUSINESS: ServiceAccess(roles=("Regnskap",))})
        ev = user_event(version, state=user_state("u1", access=(access,)))
        self.perform(self.r.on_directory_event(ev, self.at("users", 1), None))

    def cloud(self, ch: CloudAccessChanged) -> list[Send]:
        return self.perform(self.r.on_cloud_change(ch, self.at("cloud", 1))).sends


def _waiting_changes(table: dict[str, Any]) -> int:
    """Cloud changes waiting in the table (the user's own operations may wait beside them)."""
    parked = [i for k, v in table.items() if k.startswith("p|") for i in v]
    return sum(1 for i in parked if i["slot"].startswith("writeback:"))


def _grants(sends: list[Send]) -> list[tuple[str, int]]:
    return [(s.value.name, s.value.feed_seq) for s in sends if isinstance(s.value, GrantDirectoryAccess)]


def test_race_the_company_s_link_after_the_cloud_change_releases_it_on_the_user_s_partition() -> None:
    w = Partitions()
    w.user(1)
    # cloud-capture re-read the late-linked company's access: it reaches the planner first
    sent = w.cloud(change(7, entry("Lønn", modified=6)))
    assert _grants(sent) == [] and "w|u1|c1" not in w.table
    assert [s.value.kind for s in sent if isinstance(s.value, OperationResult)] == [
        "journal.writeback_waiting_for_company"
    ]
    w.company_linked()
    assert w.deliver_facts(0) == []  # partition 0 has nothing waiting
    assert _grants(w.deliver_facts(1)) == [("Lønn", 7)]
    assert w.table["w|u1|c1"]["seq"] == 7 and _waiting_changes(w.table) == 0
    assert not any(k.startswith("n|1|company:c1") for k in w.table)  # the index is gone with it
    assert _grants(w.cloud(change(7, entry("Lønn", modified=6)))) == []  # a replay: nothing again


def test_race_the_company_s_link_before_the_cloud_change_plans_it_at_once() -> None:
    w = Partitions()
    w.user(1)
    w.company_linked()
    w.deliver_facts(0)
    w.deliver_facts(1)
    assert _grants(w.cloud(change(7, entry("Lønn", modified=6)))) == [("Lønn", 7)]


def test_race_a_newer_change_waiting_for_the_company_replaces_the_older_and_the_user_comes_last() -> None:
    w = Partitions()
    w.cloud(change(7, entry("Lønn", modified=6)))  # neither the user nor the company known yet
    w.cloud(change(9, entry("Lønn", modified=6), entry("Innkjøp", modified=8)))
    w.cloud(change(7, entry("Lønn", modified=6)))  # an older one redelivered: the newer waits on
    assert _waiting_changes(w.table) == 1
    w.user(1)  # the user's directory state: the change now waits for the company
    assert _waiting_changes(w.table) == 1 and "w|u1|c1" not in w.table
    w.company_linked()
    w.deliver_facts(0)
    assert sorted(_grants(w.deliver_facts(1))) == [("Innkjøp", 9), ("Lønn", 9)]
    assert _waiting_changes(w.table) == 0


# -- an entry of origin cloud removed on premise ---------------------------------------------


def _written_back(p: Planner, modified: float) -> None:
    """u1 holds Regnskap (the directory's) and Lønn (the cloud's, written back at ``modified``)."""
    p.user(1, CompanyAccess(company_id="c1", services={BUSINESS: ServiceAccess(roles=("Regnskap",))}))
    p.cloud(change(5, entry("Regnskap", origin="directory", modified=1), entry("Lønn", modified=modified)))
    p.user(
        2,
        CompanyAccess(
            company_id="c1",
            services={BUSINESS: ServiceAccess(roles=("Regnskap",))},
            cloud_origin={BUSINESS: ServiceAccess(roles=("Lønn",))},
        ),
    )


def _parked_kinds(p: Planner) -> list[str]:
    return [item["op"]["kind"] for item in p.table.get("p|user:u1") or ()]


def test_planner_an_entry_of_the_cloud_s_removed_on_premise_is_revoked_in_the_cloud_entry_alone() -> None:
    p = _linked()
    _written_back(p, modified=1.5)
    removed = p.user(
        3, CompanyAccess(company_id="c1", services={BUSINESS: ServiceAccess(roles=("Regnskap",))})
    )
    # the revoke waits for the accidental-delete gate, as every revoke does; the set is untouched
    assert removed.operations() == []
    assert _parked_kinds(p) == ["access.revoke_entry"]
    (revoke,) = [item["op"] for item in p.table["p|user:u1"]]
    assert (revoke["application"], revoke["catalogue"], revoke["name"]) == ("business", "roles", "Lønn")
    assert (revoke["cloud_user_id"], revoke["cloud_company_id"]) == ("cu-1", "cc-1")


def test_planner_the_writeback_s_own_removal_is_no_change_of_the_directory_s() -> None:
    p = _linked()
    _written_back(p, modified=1.5)
    revoked = p.cloud(change(6, entry("Regnskap", origin="directory", modified=1)))  # the cloud revoked Lønn
    went = [s.value for s in p.gate(revoked) if s.role == "directory_operations"]  # the gate granted it
    assert [(type(op), op.name) for op in went] == [(RevokeDirectoryAccess, "Lønn")]
    removed = p.user(
        3, CompanyAccess(company_id="c1", services={BUSINESS: ServiceAccess(roles=("Regnskap",))})
    )
    assert removed.operations() == [] and _parked_kinds(p) == []


def test_planner_a_cloud_change_later_than_the_removal_on_premise_wins_and_is_written_back_again() -> None:
    p = _linked()
    _written_back(p, modified=1.5)
    # granted again in the cloud (revoked and granted in one feed item) later than the removal
    # on premise below (the user events commit at T0 + version seconds); the store holds it still
    p.cloud(change(6, entry("Regnskap", origin="directory", modified=1), entry("Lønn", modified=100)))
    removed = p.user(
        3, CompanyAccess(company_id="c1", services={BUSINESS: ServiceAccess(roles=("Regnskap",))})
    )
    assert _parked_kinds(p) == []
    restores = [s.value for s in removed.sends if s.role == "directory_operations"]
    assert [(type(r), r.name) for r in restores] == [(GrantDirectoryAccess, "Lønn")]
    conflicts = [s.value for s in removed.sends if isinstance(s.value, OperationResult)]
    assert [(r.kind, r.outcome) for r in conflicts] == [("journal.writeback_conflict", ResultOutcome.REVIEW)]
    assert "the cloud wins" in conflicts[0].details["message"]


# -- properties ---------------------------------------------------------------------------------

ROLE_NAMES = ("Lønn", "Innkjøp", "Regnskap")
cloud_states = st.lists(st.sets(st.sampled_from(ROLE_NAMES)), min_size=1, max_size=6)


def _cloud_changes(states: list[set[str]], directory: dict[str, str]) -> list[CloudAccessChanged]:
    """The feed's items: the cloud's whole access after each change, at positions 1, 2, …; an
    entry keeps its modification time while it is held, and is the directory's (origin
    directory) when the directory holds it, else the cloud's."""
    out: list[CloudAccessChanged] = []
    since: dict[str, int] = {}
    for seq, held in enumerate(states, start=1):
        since = {name: since.get(name, seq) for name in held}
        entries = (entry(n, "directory" if n in directory else "cloud", since[n]) for n in sorted(held))
        out.append(change(seq, *entries))
    return out


def _apply(store: dict[str, str], ops: tuple[Any, ...]) -> None:
    """The directory sink's effect on the store's entries (entry → origin)."""
    for op in ops:
        if isinstance(op, GrantDirectoryAccess):
            store.setdefault(op.entry, "cloud")
        elif store.get(op.entry) == "cloud":
            del store[op.entry]


@settings(max_examples=300, deadline=None)
@given(
    cloud_states,
    st.randoms(use_true_random=False),
    st.dictionaries(st.sampled_from(ROLE_NAMES), st.just("directory")),
)
def test_any_order_of_delivery_with_replays_ends_as_the_latest_cloud_state_and_decides_the_same_again(
    states: list[set[str]], rnd: Any, directory: dict[str, str]
) -> None:
    """Deliveries out of order and again (a replay, a full read) change nothing: the store ends
    holding, as the cloud's, exactly the latest cloud-origin entries it does not hold as the
    directory's; the directory's own entries are never touched; and a fresh planner given the
    same deliveries decides the same operations, with the same ids."""
    changes = _cloud_changes(states, directory)
    deliveries = changes + [rnd.choice(changes) for _ in range(len(changes))]
    rnd.shuffle(deliveries)
    deliveries.append(changes[-1])  # the latest arrives at last (the feed is read in order)

    def run() -> tuple[dict[str, str], list[tuple[str, ...]]]:
        store = {f"business/role/{n}": o for n, o in directory.items()}
        state, decided = None, []
        for ch in deliveries:
            out = plan_writeback(state, ch, dict(store), company_known=True, now=T0)
            if out.state is not None:
                state = out.state
            _apply(store, out.operations)
            decided.append(tuple(op.operation_id for op in out.operations))
        return store, decided

    store, decided = run()
    assert run() == (store, decided)  # a replay from scratch decides the same
    latest = {f"business/role/{n}" for n in states[-1]}
    mine = {f"business/role/{n}" for n in directory}
    assert {k for k, o in store.items() if o == "cloud"} == latest - mine
    assert {k for k, o in store.items() if o == "directory"} == mine


@settings(max_examples=200, deadline=None)
@given(st.integers(3, 40), st.integers(3, 40), st.booleans())
def test_conflict_one_entry_removed_on_premise_and_granted_again_in_the_cloud_settles_by_the_rule(
    removed_at: int, granted_at: int, cloud_first: bool
) -> None:
    """An entry of the cloud's, written back; then, before either side saw the other's change,
    an administrator removes it on premise (at ``removed_at``) and one in the cloud grants it
    again (at ``granted_at``). Whichever the planner hears of first, the outcome is the rule's:
    the later change wins, a tie goes to the directory — the entry is written back again, or
    revoked in the cloud (one entry, through the gate) — and the conflict is journalled."""
    p = _linked()
    _written_back(p, modified=1.5)
    regrant = change(7, entry("Regnskap", origin="directory", modified=1), entry("Lønn", modified=granted_at))
    removal = user_event(
        removed_at,  # the version: the user events of the helpers commit at T0 + version seconds
        state=user_state(
            access=(CompanyAccess(company_id="c1", services={BUSINESS: ServiceAccess(roles=("Regnskap",))}),)
        ),
    )
    sends = []
    for step in ("cloud", "user") if cloud_first else ("user", "cloud"):
        if step == "cloud":
            fx = p.cloud(regrant)
        else:
            fx = p.perform(p.r.on_directory_event(removal, p.coords("users"), None))
        sends += fx.sends
    cloud_wins = at(granted_at) > at(removed_at)
    written_back = [s.value for s in sends if s.role == "directory_operations"]
    revoked_in_cloud = [k for k in _parked_kinds(p) if k == "access.revoke_entry"]  # waits at the gate
    conflicts = [s.value for s in sends if getattr(s.value, "kind", "") == "journal.writeback_conflict"]
    assert bool(written_back) == cloud_wins
    assert bool(revoked_in_cloud) == (not cloud_wins)
    assert (
        len(conflicts) == 1
        and ("the cloud wins" if cloud_wins else "the directory wins") in conflicts[0].details["message"]
    )


# -- every revoke passes the accidental-delete gate (docs/domain.md rules 6 and 12) ------------

REGNSKAP, INNKJOP = ServiceAccess(roles=("Regnskap",)), ServiceAccess(roles=("Innkjøp", "Regnskap"))


def _holding_a_written_back_role(p: Planner, n: int) -> list[str]:
    """``n`` users, each holding Regnskap (the directory's) and Lønn (the cloud's, written back)."""
    users = [f"u{i}" for i in range(1, n + 1)]
    for u in users:
        p.fact(FactKind.USER, u, f"cu-{u[1:]}")
        p.user(1, CompanyAccess(company_id="c1", services={BUSINESS: REGNSKAP}), uid=u)
        p.cloud(
            change(5, entry("Regnskap", origin="directory", modified=1), entry("Lønn", modified=1.5), user=u)
        )
        lonn = {BUSINESS: ServiceAccess(roles=("Lønn",))}
        p.user(2, CompanyAccess(company_id="c1", services={BUSINESS: REGNSKAP}, cloud_origin=lonn), uid=u)
    return users


def _sent(sends: list[Send], role: str) -> list[Any]:
    return [s.value for s in sends if s.role == role]


def test_a_mass_revoke_in_the_cloud_is_held_whole_before_it_reaches_the_store_and_goes_once_approved() -> (
    None
):
    """An administrator (or a portal script gone wrong) revokes a role of many users in the
    cloud: no on-premise assignment goes until an operator approved the burst."""
    p = _linked(PlannerSettings(deletes_threshold=2))
    users = _holding_a_written_back_role(p, 3)
    revoked = [p.cloud(change(6, entry("Regnskap", origin="directory", modified=1), user=u)) for u in users]
    assert not [op for fx in revoked for op in _sent(fx.sends, "directory_operations")], (
        "all wait for the gate"
    )
    sent = p.gate(*revoked, settled=3600)
    assert _sent(sent, "directory_operations") == [], "over the threshold: held whole, none applied"
    results = [r for fx in revoked for r in _sent(fx.sends, "results")] + _sent(sent, "results")
    held = [r for r in results if r.outcome is ResultOutcome.HELD]
    assert {r.entity_id for r in held} == set(users)
    assert {r.kind for r in held} == {"directory.access.revoke"}
    listed = gate.outstanding(p.control)
    assert [(h.entity, h.deletes_from) for h in listed] == [("user", "directory")] * 3
    assert p.r.held_deletions() == 3 and p.r.waiting().held == 3
    assert p.r.oldest_parked_age() == 0.0, "the gauges read a held directory operation too"
    went = _sent(p.approve(listed[-1].seq), "directory_operations")
    assert sorted((op.user_id, type(op), op.name) for op in went) == [
        (u, RevokeDirectoryAccess, "Lønn") for u in users
    ]
    assert p.r.held_deletions() == 0 and p.r.parked() == 0 and gate.outstanding(p.control) == []


def test_a_rejected_revoke_in_the_store_keeps_the_directory_s_entry_and_brings_the_cloud_back_to_it() -> None:
    """An operator rejected the held burst: nothing is removed on premise, the directory's entry
    stands — and the cloud gets it back, never by a revoke: the cloud's entry (Lønn) is adopted
    as the directory's in the store (then its next event assigns it), the directory's own
    (Regnskap, revoked in the cloud later than it was granted) is assigned again at once."""
    p = _linked(PlannerSettings(deletes_threshold=2))
    users = _holding_a_written_back_role(p, 3)
    revoked = [p.cloud(change(6, changed=6, user=u)) for u in users]  # the whole access, in the cloud
    p.gate(*revoked, settled=3600)
    listed = gate.outstanding(p.control)
    assert len(listed) == 3
    sent = p.approve(listed[-1].seq, approve=False)
    to_store = _sent(sent, "directory_operations")
    assert not [op for op in to_store if isinstance(op, RevokeDirectoryAccess)], "rejected: none removed"
    assert sorted((op.user_id, op.name, op.adopt) for op in to_store) == [(u, "Lønn", True) for u in users]
    assigned = [op for op in _sent(sent, "operations") if isinstance(op, AssignAccess)]
    assert sorted((op.user_id, op.services) for op in assigned) == [(u, {BUSINESS: REGNSKAP}) for u in users]
    assert not [op for op in _sent(sent, "operations") if "revoke" in op.kind], "never a revoke"
    journal = [r for r in _sent(sent, "results") if r.kind == "journal.writeback_revoke_rejected"]
    assert sorted(r.entity_id for r in journal) == sorted(users * 2)  # one per entry
    assert p.r.waiting().total == 0
    for u in users:  # the pair no longer counts a revoke on its way
        assert p.table[f"w|{u}|c1"]["w"] == {}
    # the directory sink adopted Lønn: the user's next event assigns it in the cloud with Regnskap
    adopted = p.user(
        3, CompanyAccess(company_id="c1", services={BUSINESS: ServiceAccess(roles=("Lønn", "Regnskap"))})
    )
    (assign,) = adopted.operations()
    assert isinstance(assign, AssignAccess)
    assert assign.services == {BUSINESS: ServiceAccess(roles=("Lønn", "Regnskap"))}
    # a rejection seen again (a redelivered decision) plans the same ids: applied once
    again = p.approve(listed[-1].seq, approve=False)
    assert {op.operation_id for op in _sent(again, "directory_operations")} <= {
        op.operation_id for op in to_store
    }


def test_a_rejected_revoke_in_the_store_of_an_entry_granted_again_in_the_cloud_needs_nothing() -> None:
    p = _linked(PlannerSettings(deletes_threshold=2))
    users = _holding_a_written_back_role(p, 3)
    revoked = [p.cloud(change(6, entry("Regnskap", origin="directory", modified=1), user=u)) for u in users]
    p.gate(*revoked, settled=3600)
    # an administrator grants Lønn again to u1 before the operator decides: the grant supersedes
    # u1's held revoke; the others are rejected
    p.cloud(change(7, entry("Regnskap", origin="directory", modified=1), entry("Lønn", modified=7)))
    sent = p.approve(gate.outstanding(p.control)[-1].seq, approve=False)
    adopted = sorted(op.user_id for op in _sent(sent, "directory_operations") if op.adopt)
    assert adopted == ["u2", "u3"]
    assert not [op for op in _sent(sent, "operations") if op.user_id == "u1"]


def test_revokes_in_the_cloud_under_the_threshold_settle_then_reach_the_store() -> None:
    p = _linked(PlannerSettings(deletes_threshold=2))
    users = _holding_a_written_back_role(p, 2)
    revoked = [p.cloud(change(6, entry("Regnskap", origin="directory", modified=1), user=u)) for u in users]
    assert _sent(p.gate(*revoked, settled=4.9), "directory_operations") == [], "settling: nothing goes yet"
    assert p.r.waiting().held == 2
    went = _sent(p.gate(settled=5), "directory_operations")
    assert sorted((op.user_id, op.name) for op in went) == [(u, "Lønn") for u in users]
    assert p.r.parked() == 0 and p.r.held_deletions() == 0


def test_a_grant_in_the_cloud_later_than_a_held_revoke_supersedes_it() -> None:
    p = _linked(PlannerSettings(deletes_threshold=0))
    (u,) = _holding_a_written_back_role(p, 1)
    p.gate(p.cloud(change(6, entry("Regnskap", origin="directory", modified=1), user=u)))
    assert p.r.held_deletions() == 1
    regranted = (entry("Regnskap", origin="directory", modified=1), entry("Lønn", modified=7))
    again = p.cloud(change(7, *regranted, user=u))
    assert [type(op) for op in _sent(again.sends, "directory_operations")] == [GrantDirectoryAccess]
    superseded = [r for r in _sent(again.sends, "results") if r.outcome is ResultOutcome.SUPERSEDED]
    assert [r.kind for r in superseded] == ["directory.access.revoke"] and p.r.parked() == 0
    (listed,) = gate.outstanding(p.control)
    assert _sent(p.approve(listed.seq), "directory_operations") == [], "approved: nothing left to revoke"


def _removed_on_premise_granted_again_in_the_cloud_earlier(p: Planner, u: str) -> Effects:
    """``u`` held Regnskap and Innkjøp (the directory's); an administrator revoked Regnskap in the
    cloud and granted it again (origin cloud, at 8); unaware, the directory removed it at 10.
    The rule gives the entry to the directory: it is to be revoked in the cloud."""
    p.fact(FactKind.USER, u, f"cu-{u[1:]}")
    p.user(1, CompanyAccess(company_id="c1", services={BUSINESS: INNKJOP}), uid=u)
    mine = (
        entry("Innkjøp", origin="directory", modified=1),
        entry("Regnskap", origin="directory", modified=1),
    )
    p.cloud(change(5, *mine, user=u))
    p.user(10, CompanyAccess(company_id="c1", services={BUSINESS: ServiceAccess(roles=("Innkjøp",))}), uid=u)
    return p.cloud(change(11, mine[0], entry("Regnskap", modified=8), user=u))


def test_a_burst_of_revokes_the_conflict_rule_sends_to_the_cloud_is_held_whole_then_approved() -> None:
    """The writeback's revokes in the cloud (the directory won the conflict) pass the gate like a
    removal on premise: a burst over the threshold is held whole, listed, approved."""
    p = _linked(PlannerSettings(deletes_threshold=2))
    users = [f"u{i}" for i in range(1, 4)]
    decided = [_removed_on_premise_granted_again_in_the_cloud_earlier(p, u) for u in users]
    assert not [op for fx in decided for op in fx.operations()], "none goes to the cloud before the gate"
    sent = p.gate(*decided, settled=3600)
    assert _sent(sent, "operations") == [], "over the threshold: held whole"
    listed = gate.outstanding(p.control)
    assert [(h.entity_id, h.deletes_from) for h in listed] == [
        (f"{u}@writeback-c1-cloud", "cloud") for u in users
    ]
    assert p.r.held_deletions() == 3 and p.r.waiting().held == 3
    went = _sent(p.approve(listed[-1].seq), "operations")
    assert sorted((op.user_id, op.kind, op.name, op.cloud_user_id) for op in went) == [
        (u, "access.revoke_entry", "Regnskap", f"cu-{u[1:]}") for u in users
    ]
    assert p.r.parked() == 0 and p.r.held_deletions() == 0


def test_revokes_the_conflict_rule_sends_to_the_cloud_under_the_threshold_settle_then_go() -> None:
    p = _linked(PlannerSettings(deletes_threshold=2))
    decided = [_removed_on_premise_granted_again_in_the_cloud_earlier(p, u) for u in ("u1", "u2")]
    assert _sent(p.gate(*decided, settled=4.9), "operations") == []
    went = _sent(p.gate(settled=5), "operations")
    assert sorted((op.user_id, op.name) for op in went) == [("u1", "Regnskap"), ("u2", "Regnskap")]
    assert p.r.parked() == 0


# -- changes of one user folded into one event (docs/domain.md, rule 6) -----------------------


@pytest.mark.parametrize("removed", [3.0, 7.0])
def test_a_removal_folded_with_a_later_change_of_the_user_is_judged_at_the_entry_s_own_time(
    removed: float,
) -> None:
    """Capture emits one event per user at the *last* folded change's commit time; the store's
    triggers keep each access entry's own change time and the event carries it
    (``access_changed_at``), so the directory's side of the conflict rule is the entry's time.
    Here an administrator removes Lønn on premise at ``removed`` and edits the user's name at 9
    (one event, committed at 9); in the cloud Lønn was revoked and granted again at 6. Removed
    at 3, the cloud's grant is the later change and stays (written back to the store again; the
    revoke the removal planned is superseded before it leaves the gate); removed at 7, the
    directory wins and Lønn is revoked in the cloud. Judged at the event's time (9) the
    directory would win both."""
    p = _linked(PlannerSettings(deletes_settle_seconds=0))
    _written_back(p, modified=1.5)
    folded = user_event(
        9,  # the user events of the helpers commit at T0 + version seconds: the name's edit at 9
        state=user_state(
            last_name="Berg",
            access=(CompanyAccess(company_id="c1", services={BUSINESS: REGNSKAP}),),  # Lønn gone
        ),
    ).model_copy(
        update={
            "access_changed_at": {
                access_entry_key("c1", "business", "role", "Regnskap"): at(0.5),
                access_entry_key("c1", "business", "role", "Lønn"): at(removed),
            }
        }
    )
    assert folded.source.committed_at == at(9)
    removed_fx = p.perform(p.r.on_directory_event(folded, p.coords("users"), None))
    regranted = p.cloud(
        change(7, entry("Regnskap", origin="directory", modified=1), entry("Lønn", modified=6))
    )
    sent = p.gate(removed_fx, regranted)
    conflicts = [r for r in _sent(regranted.sends, "results") if r.kind == "journal.writeback_conflict"]
    assert len(conflicts) == 1, conflicts
    message = conflicts[0].details["message"]
    assert f"removed it at {at(removed).isoformat()}" in message, message
    revokes = [op for op in _sent(sent, "operations") if op.kind == "access.revoke_entry"]
    written_back = _sent(regranted.sends, "directory_operations")
    if removed < 6:
        assert "the cloud wins" in message
        assert [(op.name, op.entry_kind) for op in written_back] == [("Lønn", "role")], "written back again"
        assert all(isinstance(op, GrantDirectoryAccess) for op in written_back)
        # the removal's revoke, planned before the cloud's grant was seen, is superseded by it
        assert revokes == []
    else:
        assert "the directory wins" in message
        assert written_back == [], "the cloud's grant is not written back"
        (revoke,) = revokes
        assert revoke.name == "Lønn" and revoke.unless_changed_after == at(removed), "the entry's time, not 9"


def test_an_event_without_entry_times_judges_its_entries_at_its_own_time() -> None:
    """Backwards compatible: a user event written before the store kept entry times (no
    ``access_changed_at``) counts every entry at its commit time, as before."""
    p = _linked(PlannerSettings(deletes_settle_seconds=0))
    _written_back(p, modified=1.5)
    folded = user_event(
        9, state=user_state(access=(CompanyAccess(company_id="c1", services={BUSINESS: REGNSKAP}),))
    )
    assert folded.access_changed_at == {}
    removed_fx = p.perform(p.r.on_directory_event(folded, p.coords("users"), None))
    regranted = p.cloud(
        change(7, entry("Regnskap", origin="directory", modified=1), entry("Lønn", modified=6))
    )
    sent = p.gate(removed_fx, regranted)
    (revoke,) = [op for op in _sent(sent, "operations") if op.kind == "access.revoke_entry"]
    assert revoke.name == "Lønn" and revoke.unless_changed_after == at(9)
    assert _sent(regranted.sends, "directory_operations") == []


def test_a_written_back_grant_removed_on_premise_before_capture_saw_it_is_revoked_in_the_cloud() -> None:
    """The flaky e2e's cause (tests/e2e/test_writeback.py, grants_and_revokes): the directory
    sink writes the cloud's grant of Lønn (at 3) and an administrator removes it on premise (at
    3.5) before capture reads the first change; capture folds both into one event whose state
    shows no Lønn, like the one before. The entry's own time (its removal, after the cloud's
    grant it was written back from) tells the planner the store held it and the directory
    removed it: revoked in the cloud (the directory's change is the later one), and the
    writeback's grant is no longer on its way."""
    p = _linked(PlannerSettings(deletes_settle_seconds=0))
    p.user(1, CompanyAccess(company_id="c1", services={BUSINESS: REGNSKAP}))
    granted = p.cloud(change(5, entry("Regnskap", origin="directory", modified=1), entry("Lønn", modified=2)))
    assert [op.name for op in _sent(granted.sends, "directory_operations")] == ["Lønn"]
    folded = user_event(
        4, state=user_state(access=(CompanyAccess(company_id="c1", services={BUSINESS: REGNSKAP}),))
    ).model_copy(
        update={
            "access_changed_at": {
                access_entry_key("c1", "business", "role", "Regnskap"): at(0.5),
                access_entry_key("c1", "business", "role", "Lønn"): at(3.5),
            }
        }
    )
    removed = p.perform(p.r.on_directory_event(folded, p.coords("users"), None))
    sent = p.gate(removed)
    (revoke,) = [op for op in _sent(sent, "operations") if op.kind == "access.revoke_entry"]
    assert (revoke.name, revoke.unless_changed_after) == ("Lønn", at(3.5))
    pair = PairState.from_json(p.table["w|u1|c1"])
    assert "business/role/Lønn" not in pair.pending
    assert pair.directory["business/role/Lønn"] == Change(False, at(3.5), version=4)
    # the cloud's revoke (vudsync's own) comes back through the feed: nothing more to do
    echoed = p.cloud(change(6, entry("Regnskap", origin="directory", modified=1), changed=4))
    assert _sent(echoed.sends, "directory_operations") == [] and _sent(echoed.sends, "operations") == []


def test_a_written_back_grant_not_yet_applied_is_not_taken_for_a_removal() -> None:
    """The same event while the directory sink has not applied the grant yet: the entry's last
    time in the store is older than the cloud's grant (an earlier removal), or it has none —
    nothing was removed, nothing is revoked in the cloud."""
    for times in ({access_entry_key("c1", "business", "role", "Lønn"): at(1.5)}, {}):
        p = _linked(PlannerSettings(deletes_settle_seconds=0))
        p.user(1, CompanyAccess(company_id="c1", services={BUSINESS: REGNSKAP}))
        p.cloud(change(5, entry("Regnskap", origin="directory", modified=1), entry("Lønn", modified=2)))
        ev = user_event(
            4,
            state=user_state(
                last_name="Berg", access=(CompanyAccess(company_id="c1", services={BUSINESS: REGNSKAP}),)
            ),
        ).model_copy(update={"access_changed_at": times})
        fx = p.perform(p.r.on_directory_event(ev, p.coords("users"), None))
        assert [op for op in _sent(p.gate(fx), "operations") if op.kind == "access.revoke_entry"] == []
        assert PairState.from_json(p.table["w|u1|c1"]).pending == {"business/role/Lønn": True}
