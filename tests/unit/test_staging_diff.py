"""The staging diff (pure): one entry per operation and slot, bounds by offset, grouping against
the cloud (an identical user is "no change"), the promotion's split and the new staging mark."""

from __future__ import annotations

from typing import Any

from schemas.directory import ApplicationType, EntityType
from schemas.operations import CloudOperation, DeactivateUser, StagedOperation
from tests.factories import T0, access_op, company_upsert, user_upsert
from vudsync.ops.drift import CloudState
from vudsync.ops.staging_diff import Change, Staged, StagedRecord, diff, promotion, settled_through


def _rec(offset: int, op: CloudOperation, *waiting: str) -> StagedRecord:
    return StagedRecord(offset, StagedOperation(operation=op, waiting_for=waiting, staged_at=T0))


def _staged(*records: StagedRecord, mark: int = 0) -> Staged:
    return Staged(mark, (records[-1].offset + 1) if records else mark, records)


def _cloud(
    users: list[dict[str, Any]] = (), access: dict[str, Any] | None = None, companies: Any = ()
) -> CloudState:  # type: ignore[assignment]
    return CloudState(list(users), list(companies), access or {}, {}, {})


CLOUD_U1 = {
    "id": "cu-1",
    "external_id": "u1",
    "username": "u1",
    "email": "u1@fjord.no",
    "first_name": "Åse",
    "last_name": "Brækken",
    "language": "nb",
    "active": True,
}


def test_creations_updates_and_no_change_against_the_cloud() -> None:
    staged = _staged(
        _rec(0, user_upsert("u1")),  # identical in the cloud
        _rec(1, user_upsert("u2")),  # not there
        _rec(2, user_upsert("u3", last_name="Lie")),
        _rec(3, user_upsert("u4")),  # same e-mail, unlinked: linked
    )
    u3 = {**CLOUD_U1, "id": "cu-3", "external_id": "u3", "username": "u3", "email": "u3@fjord.no"}
    u4 = {**CLOUD_U1, "id": "cu-4", "external_id": None, "username": "u4", "email": "U4@fjord.no"}
    result = diff(staged, _cloud([CLOUD_U1, u3, u4]))
    assert result.counts() == {"creations": 1, "links": 1, "updates": 1, "no change": 1}
    assert result.groups[Change.UPDATE][0].detail == "last_name"
    assert result.changes == 3 and result.high_water == 3


def test_assignments_waiting_for_a_creation_say_so_and_identical_access_is_no_change() -> None:
    waiting = access_op(2, uid="u2", cloud_user=None, cloud_company=None)
    same = access_op(2, uid="u1", company="c1")
    staged = _staged(
        _rec(0, user_upsert("u2")),
        _rec(1, company_upsert("c1")),
        _rec(2, waiting, "user:u2"),
        _rec(3, same),
    )
    cloud = _cloud(
        [CLOUD_U1],
        {"cu-1": [{"company_id": "cc-1", "services": {"business": {"roles": ["Regnskap"]}}}]},
        [
            {
                "id": "cc-1",
                "external_id": "c1",
                "name": "Fjord AS",
                "organisation_number": "923609016",
                "country": "NO",
                "status": "active",
            }
        ],
    )
    result = diff(staged, cloud)
    assert result.counts() == {"creations": 1, "assignments": 1, "no change": 2}
    (assign,) = result.groups[Change.ASSIGNMENT]
    assert assign.waiting_for == ("user:u2",) and "user:u2 (would be created)" in assign.detail
    assert result.waiting == 1


def test_one_entry_per_operation_id_and_the_newest_version_per_slot() -> None:
    parked = access_op(2, cloud_user=None, cloud_company=None)
    ready = access_op(2)  # the same id, staged again with its cloud ids
    staged = _staged(
        _rec(0, user_upsert("u1", 1, operation_id="v1")),
        _rec(1, parked, "user:u1"),
        _rec(2, user_upsert("u1", 3, operation_id="v3")),
        _rec(3, ready),
    )
    shown = staged.shown()
    assert [(r.offset, r.operation.operation_id) for r in shown] == [(2, "v3"), (3, ready.operation_id)]
    assert not shown[1].staged.waiting_for


def test_up_to_bounds_the_listing_exactly_and_later_records_stay_out() -> None:
    staged = _staged(*(_rec(i, user_upsert(f"u{i}")) for i in range(5, 10)), mark=5)
    chosen = staged.up_to(7)
    assert [r.offset for r in chosen.records] == [5, 6, 7] and chosen.high_water == 7
    assert chosen.end == 8
    assert staged.up_to(4).records == () and staged.up_to(4).high_water is None


def test_the_promotion_splits_ready_from_waiting_and_counts_deletions() -> None:
    deactivate = DeactivateUser(
        operation_id="d1",
        aggregate="user:u9",
        entity=EntityType.USER,
        entity_id="u9",
        source_version=4,
        source_committed_at=T0,
        planned_at=T0,
        cloud_id="cu-9",
        email="u9@fjord.no",
    )
    staged = _staged(
        _rec(0, user_upsert("u1")),
        _rec(1, access_op(2, cloud_user=None), "user:u1"),
        _rec(2, deactivate),
        _rec(3, company_upsert("c2", status="inactive")),
    )
    p = promotion(staged)
    assert [o.operation_id for o in p.ready] == ["op-u1-1", "d1", "op-c2-1"]
    assert list(p.waiting) == [access_op(2).operation_id] and p.destructive == 2
    assert p.total == 4


def test_the_mark_moves_past_what_only_repeats_promoted_operations() -> None:
    after = [_rec(10, access_op(2)), _rec(11, access_op(3)), _rec(12, user_upsert("u7"))]
    assert settled_through(10, after, {access_op(2).operation_id, access_op(3).operation_id}) == 12
    assert settled_through(10, after, {access_op(3).operation_id}) == 10, "stops at the first other"
    assert settled_through(10, [], set()) == 10


def test_catalogue_and_registration_entries() -> None:
    from schemas.operations import RegisterApplicationInstance, UpsertCatalogueEntry

    role = UpsertCatalogueEntry(
        operation_id="r1",
        aggregate="catalogue:business:roles:Regnskap",
        entity=EntityType.ROLE,
        entity_id="business:Regnskap",
        source_version=1,
        source_committed_at=T0,
        planned_at=T0,
        application=ApplicationType.BUSINESS,
        catalogue="roles",
        name="Regnskap",
        description="R",
    )
    reg = RegisterApplicationInstance(
        operation_id="i1",
        aggregate="instance:business",
        entity=EntityType.APPLICATION_INSTANCE,
        entity_id="business",
        source_version=1,
        source_committed_at=T0,
        planned_at=T0,
        application=ApplicationType.BUSINESS,
        uri="https://vb",
        license_fingerprint="hmac-sha256:" + "a" * 64,
    )
    result = diff(_staged(_rec(0, role), _rec(1, reg)), _cloud())
    assert result.counts() == {"catalogue": 1, "registrations": 1}
    cloud = CloudState([], [], {}, {("business", "roles", "Regnskap"): "R"}, {})
    assert diff(_staged(_rec(0, role)), cloud).counts() == {"no change": 1}


def test_a_promotion_over_the_delete_threshold_is_judged_as_one_burst() -> None:
    from kernel.settings import Settings
    from vudsync.ops.staging import deletions_go
    from vudsync.ops.staging_diff import Promotion

    settings = Settings(planner_deletes_threshold=500)
    assert deletions_go(settings, Promotion((), {}, destructive=500))
    assert not deletions_go(settings, Promotion((), {}, destructive=1000)), "1,000 deactivations: held"
    assert deletions_go(settings, Promotion((), {}, destructive=0))
