"""A full read's end-of-read marker (issue 16): the cloud-origin entries the store holds in a
company the read found no access in are revoked on premise, through the rule; directory-origin
entries never are. Pure: :func:`processors.full_reads.swept`, and the reconciler over a dict."""

from __future__ import annotations

from processors.full_reads import swept
from processors.writeback import Change, PairState
from schemas.cloud_changes import CloudAccessRead
from schemas.codec import decode_cloud_change
from schemas.directory import CompanyAccess, ServiceAccess
from schemas.directory_operations import RevokeDirectoryAccess
from schemas.results import OperationResult
from tests.unit.test_writeback import BUSINESS, Planner, _linked, _written_back, at, change, entry

REGNSKAP, LONN = "business/role/Regnskap", "business/role/Lønn"


def read(seq: int, *companies: str, when: float = 50.0) -> CloudAccessRead:
    return CloudAccessRead(
        event_id=CloudAccessRead.make_event_id(seq, "u1"),
        feed_seq=seq,
        user_id="u1",
        cloud_user_id="cu-1",
        cloud_companies=companies,
        read_at=at(when),
    )


def _pair(seq: int = 5) -> PairState:
    """Regnskap the directory's in the cloud, Lønn the cloud's (written back)."""
    return PairState(seq, {REGNSKAP: Change(True, at(1), "directory"), LONN: Change(True, at(3), "cloud")})


HELD = {REGNSKAP: "directory", LONN: "cloud"}


def test_only_the_cloud_origin_entries_are_removed_the_directory_s_carried_unchanged() -> None:
    previous = _pair()
    found = swept(read(10), "c1", "cc-1", HELD, previous)
    assert found is not None and found.state is previous
    ch = found.change
    assert (ch.feed_seq, ch.changed_at, ch.full_read, ch.deleted) == (10, at(50), True, False)
    assert ch.event_id == "cloud-access|10|u1|c1" and ch.cloud_company_id == "cc-1"
    (kept,) = ch.entries
    assert (kept.name, kept.origin, kept.modified_at) == ("Regnskap", "directory", at(1))


def test_nothing_is_removed_when_the_read_found_the_company_or_nothing_is_the_cloud_s() -> None:
    assert swept(read(10, "cc-1"), "c1", "cc-1", HELD, _pair()) is None  # found: its own event
    assert swept(read(10), "c1", None, HELD, _pair()) is None  # not linked on premise
    assert swept(read(10), "c1", "cc-1", {REGNSKAP: "directory"}, _pair()) is None
    assert swept(read(5), "c1", "cc-1", HELD, _pair(seq=5)) is None  # seen at the read's position


def test_a_cloud_entry_the_pair_state_does_not_know_is_removed_too() -> None:
    found = swept(read(10), "c1", "cc-1", {LONN: "cloud"}, None)
    assert found is not None and found.change.deleted and found.change.entries == ()
    assert found.state.cloud == {LONN: Change(True, at(50), "cloud")}


def test_a_writeback_revoke_on_its_way_is_not_removed_again() -> None:
    previous = PairState(5, _pair().cloud, pending={LONN: False})
    assert swept(read(10), "c1", "cc-1", HELD, previous) is None


def test_the_marker_decodes_as_itself_and_a_change_as_a_change() -> None:
    marker = read(10, "cc-2")
    assert decode_cloud_change(marker.model_dump_json().encode()) == marker
    ch = change(5, entry("Lønn"))
    assert decode_cloud_change(ch.model_dump_json().encode()) == ch


# -- the reconciler ------------------------------------------------------------------------------


def _directory_ops(p: Planner, marker: CloudAccessRead) -> list[RevokeDirectoryAccess]:
    """What the marker sends to the directory sink, through the accidental-delete gate (a
    store revoke is a deletion: it goes once it has settled)."""
    fx = p.cloud(marker)  # type: ignore[arg-type]
    assert fx.operations() == []  # never a cloud write
    sent = [*fx.sends, *p.gate(fx)]
    return [s.value for s in sent if s.role == "directory_operations"]  # type: ignore[misc]


def test_planner_access_removed_whole_while_expired_revokes_the_cloud_s_entry_only() -> None:
    p = _linked()
    _written_back(p, modified=3)
    (revoke,) = _directory_ops(p, read(10))
    assert isinstance(revoke, RevokeDirectoryAccess)
    assert (revoke.name, revoke.feed_seq, revoke.any_origin) == ("Lønn", 10, False)
    assert revoke.cloud_changed_at == at(50)
    # the marker again (a replay, or the next page read again) plans nothing more
    assert _directory_ops(p, read(10)) == []
    state = PairState.from_json(p.table["w|u1|c1"])
    assert state.seq == 10 and not state.cloud[LONN].present and state.cloud[REGNSKAP].present


def test_planner_a_read_that_found_the_company_revokes_nothing() -> None:
    p = _linked()
    _written_back(p, modified=3)
    assert _directory_ops(p, read(10, "cc-1")) == []


def test_planner_a_user_holding_only_the_directory_s_entries_is_left_alone() -> None:
    p = _linked()
    p.user(1, CompanyAccess(company_id="c1", services={BUSINESS: ServiceAccess(roles=("Regnskap",))}))
    p.cloud(change(5, entry("Regnskap", origin="directory", modified=1)))
    fx = p.cloud(read(10))  # type: ignore[arg-type]
    assert [s for s in fx.sends if not isinstance(s.value, OperationResult)] == []
    assert (fx.entity, fx.outcome) == ("cloud_access", "no_change")


def test_planner_an_unknown_user_s_marker_plans_nothing() -> None:
    p = Planner()
    fx = p.cloud(read(10))  # type: ignore[arg-type]
    assert fx.sends == [] and fx.writes == {}
