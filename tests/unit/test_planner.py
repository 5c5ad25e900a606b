"""The planner's rules, one by one. Pure: no broker, no cloud."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import Any

import pytest

from processors.model import (
    VERIFIED,
    Decision,
    EntityView,
    Identities,
    InstanceSeen,
    Outcome,
    PlannerSettings,
    Registry,
    VerdictStatus,
)
from processors.needs import Need
from processors.planner import instance_verdict, plan, review_instance, settle
from schemas import operations
from schemas.directory import ApplicationType
from schemas.events import DirectoryEvent, Op
from tests.factories import (
    T0,
    access,
    company_event,
    instance_event,
    role_event,
    user_event,
    user_state,
)

SETTINGS = PlannerSettings()
STAGING = PlannerSettings(staging=True)
BUSINESS, REPORTING = ApplicationType.BUSINESS, ApplicationType.REPORTING
FP_A, FP_B = "hmac-sha256:" + "a" * 64, "hmac-sha256:" + "b" * 64


class _Everything(Mapping[str, bool]):
    """A catalogue in which every entry exists."""

    def __getitem__(self, key: str) -> bool:
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def ids(**kw: Any) -> Identities:
    """Connected, every application verified, every catalogue entry present; ``kw`` overrides."""
    base: dict[str, Any] = {
        "applications": dict.fromkeys(ApplicationType, VERIFIED),
        "catalogue": _Everything(),
    }
    return Identities(**{**base, **kw})


KNOWN = ids(users={"u1": "cu-1"}, companies={"c1": "cc-1", "c2": "cc-2", "c3": "cc-3"})


def granted(*candidates: str, base: Identities = KNOWN) -> Identities:
    """``base`` once the accidental-delete gate granted ``candidates``."""
    return replace(base, deletions={c: Decision.GRANTED for c in candidates})


def run(previous: EntityView | None, event: DirectoryEvent, identities: Identities = KNOWN) -> Any:
    return plan(previous, event, identities, SETTINGS, now=T0)


def valid(op: operations.CloudOperation) -> operations.CloudOperation:
    """The planner builds operations without re-validation: they must validate all the same."""
    return operations.CLOUD_OPERATION_ADAPTER.validate_python(op.model_dump())


# -- versions --------------------------------------------------------------------------------


def test_the_same_input_plans_the_same_operations_with_the_same_ids() -> None:
    event = user_event(5, access=(access("c1"),))
    first, again = run(None, event), run(None, event)
    assert first.outcome is Outcome.PLANNED
    assert [valid(o) for o in first.operations] == [valid(o) for o in again.operations]
    assert len({o.operation_id for o in first.operations}) == 2
    other_version = run(None, user_event(6, access=(access("c1"),)))
    assert not {o.operation_id for o in other_version.operations} & {o.operation_id for o in first.operations}


def test_older_or_equal_version_is_stale_and_never_overwrites() -> None:
    seen = EntityView(10, user_state(first_name="Ny"))
    for version in (9, 10):
        result = run(seen, user_event(version, first_name="Gammel"))
        assert result.outcome is Outcome.STALE
        assert result.operations == () and result.view is None


def test_newer_version_with_the_same_state_plans_nothing() -> None:
    result = run(EntityView(3, user_state()), user_event(4))
    assert result.outcome is Outcome.NO_CHANGE and result.operations == ()
    assert result.view is not None and result.view.version == 4


# -- users -----------------------------------------------------------------------------------


def test_new_user_is_upserted_for_the_sink_to_match_by_email() -> None:
    (op,) = run(None, user_event(5), ids()).operations
    assert isinstance(op, operations.UpsertUser) and valid(op) == op
    assert op.email == "u1@firma.no" and op.cloud_id is None and op.aggregate == "user:u1"


def test_email_case_change_is_an_update_and_the_known_cloud_id_is_used() -> None:
    seen = EntityView(3, user_state(email="kari@firma.no"))
    (op,) = run(seen, user_event(4, email="Kari@Firma.no")).operations
    assert isinstance(op, operations.UpsertUser) and op.cloud_id == "cu-1" and op.email == "Kari@Firma.no"


def test_deactivated_on_premise_waits_for_the_gate_then_is_deactivated_in_the_cloud() -> None:
    """The mistake: a bad import sets ``active = false`` on everyone; each deactivation used to
    go straight to the cloud, past the accidental-delete gate."""
    waiting = run(EntityView(3, user_state()), user_event(4, active=False))
    assert waiting.outcome is Outcome.HELD and waiting.operations == ()
    assert waiting.deletion is not None and waiting.deletion.candidate == "user:u1:4"
    (parked,) = waiting.parked
    assert isinstance(parked.operation, operations.UpsertUser) and parked.needs == (
        Need.deletion("user:u1:4"),
    )
    (op,) = run(EntityView(3, user_state()), user_event(4, active=False), granted("user:u1:4")).operations
    assert isinstance(op, operations.UpsertUser) and op.active is False


def test_an_edit_of_an_inactive_user_cannot_overtake_its_held_deactivation() -> None:
    """The mistake: the deactivation is held at the gate, then the user's name changes; the new
    upsert (still inactive) supersedes the held one in its slot and would deactivate at once."""
    inactive = EntityView(4, user_state(active=False))
    later = run(inactive, user_event(5, active=False, last_name="Berg"))
    assert later.operations == () and later.deletion is not None
    assert later.parked[0].needs == (Need.deletion("user:u1:5"),)


def test_a_user_first_seen_inactive_is_created_without_the_gate() -> None:
    (op,) = run(None, user_event(2, active=False)).operations
    assert isinstance(op, operations.UpsertUser) and op.active is False


def test_a_company_set_inactive_on_premise_waits_for_the_gate() -> None:
    seen = EntityView(1, company_event(1).state)
    waiting = run(seen, company_event(2, status="inactive"), KNOWN)
    assert waiting.outcome is Outcome.HELD and waiting.deletion is not None


def test_removal_deactivates_and_revokes_after_the_delete_gate() -> None:
    seen = EntityView(3, user_state(access=(access("c1"),)))
    waiting = run(seen, user_event(4, op=Op.DELETE))
    assert waiting.outcome is Outcome.HELD and waiting.operations == ()
    assert waiting.deletion is not None and waiting.deletion.candidate == "user:u1:4"
    assert [type(p.operation) for p in waiting.parked] == [operations.DeactivateUser, operations.RevokeAccess]
    assert all(p.needs == (Need.deletion("user:u1:4"),) for p in waiting.parked)
    assert waiting.view is not None and waiting.view.deleted

    granted = run(
        seen, user_event(4, op=Op.DELETE), ids(**_known(), deletions={"user:u1:4": Decision.GRANTED})
    )
    assert [type(o) for o in granted.operations] == [operations.DeactivateUser, operations.RevokeAccess]
    assert (
        granted.deletion is None
        and granted.operations[0].operation_id == waiting.parked[0].operation.operation_id
    )

    rejected = run(
        seen, user_event(4, op=Op.DELETE), ids(**_known(), deletions={"user:u1:4": Decision.REJECTED})
    )
    assert rejected.operations == () and rejected.parked == () and len(rejected.dropped) == 2


def _known() -> dict[str, Any]:
    return {"users": KNOWN.users, "companies": KNOWN.companies}


def test_a_second_delete_of_a_removed_user_plans_nothing() -> None:
    gone = EntityView(4, user_state(), deleted=True)
    assert run(gone, user_event(5, op=Op.DELETE)).outcome is Outcome.NO_CHANGE


def test_reactivation_after_removal_upserts_and_assigns_again() -> None:
    gone = EntityView(4, user_state(access=(access("c1"),)), deleted=True)
    result = run(gone, user_event(7, op=Op.CREATE, access=(access("c1"),)))
    upsert, assign = result.operations
    assert isinstance(upsert, operations.UpsertUser) and upsert.active and upsert.cloud_id == "cu-1"
    assert isinstance(assign, operations.AssignAccess) and assign.company_id == "c1"


# -- access and its prerequisites ------------------------------------------------------------


def test_access_waits_for_the_cloud_ids_of_user_and_company_then_goes_with_them() -> None:
    # staging: nothing goes to the sink, so nothing goes behind the user's upsert either
    staging = plan(None, user_event(2, access=(access("c1"),)), ids(), STAGING, now=T0)
    assert [type(o) for o in staging.operations] == [operations.UpsertUser]
    (parked,) = staging.parked
    assert parked.needs == (Need.user("u1"), Need.company("c1")) and not parked.behind
    assert settle(parked, ids(users={"u1": "cu-1"})) == ("wait", (Need.company("c1"),))
    verdict, op = settle(parked, ids(users={"u1": "cu-1"}, companies={"c1": "cc-1"}))
    assert verdict == "send" and isinstance(op, operations.AssignAccess)
    assert (op.cloud_user_id, op.cloud_company_id) == ("cu-1", "cc-1")
    assert op.operation_id == parked.operation.operation_id and valid(op) == op


def test_a_new_users_access_goes_behind_its_upsert_and_waits_for_its_company_only() -> None:
    result = run(None, user_event(2, access=(access("c1"),)), ids())
    assert [type(o) for o in result.operations] == [operations.UpsertUser]
    (parked,) = result.parked
    assert parked.needs == (Need.company("c1"),) and parked.behind
    # the company known, it goes — without the user's cloud id: the sink finds the user, whose
    # upsert was sent before it on the same aggregate
    verdict, op = settle(parked, ids(companies={"c1": "cc-1"}))
    assert verdict == "send" and isinstance(op, operations.AssignAccess)
    assert (op.cloud_user_id, op.cloud_company_id) == (None, "cc-1") and valid(op) == op
    verdict, op = settle(parked, ids(users={"u1": "cu-1"}, companies={"c1": "cc-1"}))
    assert isinstance(op, operations.AssignAccess) and (op.cloud_user_id, op.cloud_company_id) == (
        "cu-1",
        "cc-1",
    )
    assert op.operation_id == parked.operation.operation_id


def test_access_goes_behind_the_upsert_only_when_the_upsert_goes() -> None:
    known_company = ids(companies={"c1": "cc-1"})
    went = run(None, user_event(2, access=(access("c1"),)), known_company)
    upsert, assign = went.operations
    assert isinstance(upsert, operations.UpsertUser) and isinstance(assign, operations.AssignAccess)
    assert assign.cloud_user_id is None and assign.cloud_company_id == "cc-1" and not went.parked
    # an access change without a new upsert (the user's fields unchanged): it waits for the id
    seen = EntityView(2, user_state(access=(access("c1"),)))
    later = run(seen, user_event(3, access=(access("c1", roles=("Lønn",)),)), known_company)
    assert not later.operations
    (parked,) = later.parked
    assert parked.needs == (Need.user("u1"),) and not parked.behind
    # the upsert itself waits (not connected): the assignment waits for the user as before
    waiting = run(None, user_event(2, access=(access("c1"),)), replace(known_company, connected=False))
    assert not waiting.operations
    assert [x.needs for x in waiting.parked] == [(Need.connect(),), (Need.connect(), Need.user("u1"))]


def test_an_assignment_waits_for_its_catalogue_entries() -> None:
    new = user_state(access=(access("c1", roles=("Lønn", "Regnskap")),))
    result = run(None, user_event(2, state=new), ids(**_known(), catalogue={"business:roles:Lønn": True}))
    (parked,) = result.parked
    assert parked.needs == (Need.catalogue(BUSINESS, "roles", "Regnskap"),)
    catalogue = {"business:roles:Lønn": True, "business:roles:Regnskap": True}
    assert settle(parked, ids(**_known(), catalogue=catalogue))[0] == "send"


def test_access_diff_assigns_changed_companies_and_revokes_dropped_ones() -> None:
    seen = EntityView(2, user_state(access=(access("c1"), access("c2"))))
    new = user_state(access=(access("c1"), access("c2", roles=("Lønn",)), access("c3")))
    result = run(seen, user_event(3, state=new))
    assert {o.company_id for o in result.operations if isinstance(o, operations.AssignAccess)} == {"c2", "c3"}
    assert all(o.cloud_user_id == "cu-1" for o in result.operations if isinstance(o, operations.AssignAccess))
    dropped = run(EntityView(3, new), user_event(4, access=(access("c3"),)))
    assert dropped.outcome is Outcome.HELD, "revocations count toward the accidental-delete gate"
    assert {
        x.operation.company_id for x in dropped.parked if isinstance(x.operation, operations.RevokeAccess)
    } == {
        "c1",
        "c2",
    }
    dropped = run(EntityView(3, new), user_event(4, access=(access("c3"),)), granted("user:u1:4"))
    assert {o.company_id for o in dropped.operations if isinstance(o, operations.RevokeAccess)} == {
        "c1",
        "c2",
    }


def test_a_company_whose_services_all_emptied_is_revoked() -> None:
    seen = EntityView(2, user_state(access=(access("c1"),)))
    empty = user_state(access=(access("c1", roles=()),))
    (op,) = run(seen, user_event(3, state=empty), granted("user:u1:3")).operations
    assert isinstance(op, operations.RevokeAccess) and op.company_id == "c1"


# -- application instances -------------------------------------------------------------------


def test_an_instance_event_is_observed_and_published_for_every_partition() -> None:
    result = run(None, instance_event(1))
    assert result.outcome is Outcome.OBSERVED and result.operations == ()
    assert result.instance == (BUSINESS, InstanceSeen("https://vb.fjord.local", FP_A, 1))
    same = run(EntityView(1, instance_event(1).state), instance_event(2))
    assert same.outcome is Outcome.NO_CHANGE and same.instance is None
    removed = run(EntityView(2, instance_event(2).state), instance_event(3, op=Op.DELETE))
    assert removed.instance is not None and removed.instance[1].present is False


def test_verdict_requires_the_registry_and_matches_uri_and_fingerprint() -> None:
    mine = InstanceSeen("https://vb.fjord.local", FP_A, 3)
    assert instance_verdict(mine, None).status is VerdictStatus.UNVERIFIED
    assert instance_verdict(None, Registry(True, "https://x", FP_B)).status is VerdictStatus.OK
    assert instance_verdict(mine, Registry(False)).status is VerdictStatus.REGISTER
    assert instance_verdict(mine, Registry(True, "https://vb.fjord.local", FP_A)).status is VerdictStatus.OK
    wrong_key = instance_verdict(mine, Registry(True, "https://vb.fjord.local", FP_B))
    assert (wrong_key.status, wrong_key.differing, wrong_key.blocked) == (
        VerdictStatus.MISMATCH,
        ("license key",),
        True,
    )
    both = instance_verdict(mine, Registry(True, "https://other", FP_B))
    assert both.differing == ("uri", "license key")


def test_mismatch_journal_names_the_field_never_the_key_and_registration_is_planned() -> None:
    mine = InstanceSeen("https://vb.fjord.local", FP_A, 3)
    verdict, ops, (entry,) = review_instance(
        BUSINESS, mine, Registry(True, "https://vb.fjord.local", FP_B), committed_at=T0, now=T0
    )
    assert verdict.blocked and ops == ()
    assert entry.code == "instance_mismatch" and entry.level == "error"
    assert "license key" in entry.message and FP_A not in entry.message and FP_B not in entry.message
    _, (register,), (note,) = review_instance(BUSINESS, mine, Registry(False), committed_at=T0, now=T0)
    assert isinstance(register, operations.RegisterApplicationInstance) and valid(register) == register
    assert (register.uri, register.license_fingerprint, note.code) == (mine.uri, FP_A, "instance_register")
    _, _, (unknown,) = review_instance(BUSINESS, mine, None, committed_at=T0, now=T0)
    assert unknown.code == "instance_unverified" and "vudsync connect" in unknown.message


def test_a_blocked_application_holds_its_access_and_fixing_it_releases_it() -> None:
    mismatch = InstanceSeen("https://vb.fjord.local", FP_B, 1)
    blocked = instance_verdict(mismatch, Registry(True, "https://vb.fjord.local", FP_A))
    state = user_state(
        access=(access("c1"), access("c2", app=REPORTING)),
    )
    held = ids(**_known(), applications={BUSINESS: blocked, REPORTING: VERIFIED})
    result = run(None, user_event(2, state=state), held)
    # reporting in c2 goes; business in c1 waits for its application, with a blocked outcome
    assert [o.company_id for o in result.operations if isinstance(o, operations.AssignAccess)] == ["c2"]
    (parked,) = result.parked
    assert parked.needs == (Need.application(BUSINESS),) and parked.apps == (BUSINESS,)
    assert settle(parked, ids(**_known()))[0] == "send"


def test_removing_access_in_a_blocked_application_is_held_too() -> None:
    blocked = instance_verdict(
        InstanceSeen("https://vb.fjord.local", FP_B, 1), Registry(True, "https://vb.fjord.local", FP_A)
    )
    seen = EntityView(2, user_state(access=(access("c1"),)))
    result = run(seen, user_event(3, access=()), ids(**_known(), applications={BUSINESS: blocked}))
    (parked,) = result.parked
    assert isinstance(parked.operation, operations.RevokeAccess)
    assert parked.needs == (Need.deletion("user:u1:3"), Need.application(BUSINESS))
    result = run(
        seen,
        user_event(3, access=()),
        granted("user:u1:3", base=ids(**_known(), applications={BUSINESS: blocked})),
    )
    (parked,) = result.parked
    assert parked.needs == (Need.application(BUSINESS),) and result.outcome is Outcome.BLOCKED


def test_before_connect_every_application_is_unverified_and_holds_its_access() -> None:
    result = run(None, user_event(2, access=(access("c1"),)), Identities(**_known(), catalogue=_Everything()))
    (parked,) = result.parked
    assert parked.needs == (Need.application(BUSINESS),)


# -- companies -------------------------------------------------------------------------------


def test_company_organisation_number_is_normalised_for_the_sink_to_link_by() -> None:
    (op,) = run(None, company_event(1, org="923 609 016"), ids()).operations
    assert (
        isinstance(op, operations.UpsertCompany)
        and op.organisation_number == "923609016"
        and op.cloud_id is None
    )
    assert valid(op) == op


def test_a_linked_company_is_updated_by_its_cloud_id() -> None:
    seen = EntityView(1, company_event(1).state)
    (op,) = run(seen, company_event(2, name="Fjord Holding AS")).operations
    assert (
        isinstance(op, operations.UpsertCompany) and op.cloud_id == "cc-1" and op.name == "Fjord Holding AS"
    )


def test_company_removal_marks_it_inactive_after_the_delete_gate() -> None:
    seen = EntityView(1, company_event(1).state)
    result = run(
        seen, company_event(2, op=Op.DELETE), ids(**_known(), deletions={"company:c1:2": Decision.APPROVED})
    )
    (op,) = result.operations
    assert isinstance(op, operations.UpsertCompany) and op.status == "inactive" and op.cloud_id == "cc-1"


# -- catalogues ------------------------------------------------------------------------------


def test_roles_are_published_per_service_and_removal_passes_the_gate() -> None:
    (op,) = run(None, role_event(1)).operations
    assert isinstance(op, operations.UpsertCatalogueEntry) and valid(op) == op
    assert (op.application, op.catalogue, op.name, op.aggregate) == (
        BUSINESS,
        "roles",
        "Regnskap",
        "role:business:Regnskap",
    )
    assert run(EntityView(1, role_event(1).state), role_event(2)).outcome is Outcome.NO_CHANGE
    removal = run(EntityView(2, role_event(2).state), role_event(3, op=Op.DELETE))
    (parked,) = removal.parked
    assert isinstance(parked.operation, operations.RemoveCatalogueEntry) and parked.needs == (
        Need.deletion("role:business:Regnskap:3"),
    )


def test_catalogue_of_a_blocked_application_waits() -> None:
    result = run(None, role_event(1), ids(applications={}))
    (parked,) = result.parked
    assert parked.needs == (Need.application(BUSINESS),) and result.outcome is Outcome.BLOCKED


def test_operation_ids_are_uuid5_of_kind_entity_version_and_discriminator() -> None:
    import uuid

    from schemas.operations import _OPERATION_NAMESPACE, operation_id_for

    for args in (("user.upsert", "u1", 5, ""), ("access.assign", "Ørjan-æ", 123456789, "c1")):
        expected = uuid.uuid5(_OPERATION_NAMESPACE, "|".join(str(a) for a in args))
        assert operation_id_for(*args) == str(expected)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "companies",
    [("c1",), ("c1", "c2"), ("c2", "c1", "c3")],
)
def test_behind_its_upsert_or_parked_until_its_id_a_new_user_plans_the_same_operations(
    companies: tuple[str, ...],
) -> None:
    """The operations a new user's event plans are the same — ids, order, fields — whether its
    assignments go behind its upsert or (staging, as before) wait for its cloud id and are
    released with it, but for the user's cloud id, which the sink finds for them."""
    event = user_event(2, access=tuple(access(c, roles=("Lønn", "Regnskap")) for c in companies))
    known = ids(companies={c: f"cc-{c}" for c in companies})
    behind = plan(None, event, known, SETTINGS, now=T0)
    waited = plan(None, event, known, STAGING, now=T0)
    assert not behind.parked and len(waited.parked) == len(companies)
    with_id = replace(known, users={"u1": "cu-1"})
    released = [settle(p, with_id) for p in waited.parked]
    assert all(verdict == "send" for verdict, _ in released)
    before = [*waited.operations, *(op for _, op in released)]
    assert [o.operation_id for o in behind.operations] == [o.operation_id for o in before]
    found = [
        o.model_copy(update={"cloud_user_id": "cu-1"}) if isinstance(o, operations.AssignAccess) else o
        for o in behind.operations
    ]
    assert found == before
    assert all(o.cloud_user_id is None for o in behind.operations if isinstance(o, operations.AssignAccess))
