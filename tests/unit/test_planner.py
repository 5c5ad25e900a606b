"""The planner's rules, one by one. Pure: no broker, no cloud."""

from __future__ import annotations

from processors.planner import EntityView, Identities, Outcome, RegisteredInstance, plan, release
from schemas.directory import ApplicationInstanceState, ApplicationType, EntityType
from schemas.events import ApplicationInstanceChanged, Op, event_id_for
from schemas.operations import AssignAccess, DeactivateUser, RevokeAccess, UpsertCompany, UpsertUser
from tests.factories import T0, access, company_event, source, user_event, user_state


def test_new_user_is_upserted_with_a_deterministic_id() -> None:
    first = plan(None, user_event(5), Identities(), T0)
    again = plan(None, user_event(5), Identities(), T0)
    assert first.outcome is Outcome.PLANNED
    (op,) = first.operations
    assert isinstance(op, UpsertUser)
    assert op.email == "u1@firma.no" and op.cloud_id is None
    assert [o.operation_id for o in again.operations] == [op.operation_id]
    assert op.aggregate == "user:u1"


def test_older_or_equal_version_is_stale_and_never_overwrites() -> None:
    seen = EntityView(10, user_state(first_name="Ny"))
    for version in (9, 10):
        result = plan(seen, user_event(version, first_name="Gammel"), Identities(), T0)
        assert result.outcome is Outcome.STALE
        assert result.operations == () and result.view is None


def test_unchanged_state_plans_nothing() -> None:
    seen = EntityView(3, user_state())
    result = plan(seen, user_event(4), Identities(), T0)
    assert result.outcome is Outcome.NO_CHANGE and result.operations == ()
    assert result.view is not None and result.view.version == 4


def test_email_case_change_is_an_update_and_known_cloud_id_is_used() -> None:
    seen = EntityView(3, user_state(email="kari@firma.no"))
    result = plan(seen, user_event(4, email="Kari@Firma.no"), Identities(users={"u1": "cu-1"}), T0)
    (op,) = result.operations
    assert isinstance(op, UpsertUser) and op.cloud_id == "cu-1" and op.email == "Kari@Firma.no"


def test_delete_deactivates_and_revokes_access() -> None:
    seen = EntityView(3, user_state(access=(access("c1"),)))
    ids = Identities(users={"u1": "cu-1"}, companies={"c1": "cc-1"})
    result = plan(seen, user_event(4, op=Op.DELETE), ids, T0)
    kinds = [type(o) for o in result.operations]
    assert kinds == [DeactivateUser, RevokeAccess]
    assert result.view is not None and result.view.deleted


def test_reactivation_after_delete_upserts_again() -> None:
    gone = EntityView(4, user_state(), deleted=True)
    result = plan(gone, user_event(7, op=Op.CREATE), Identities(), T0)
    (op,) = result.operations
    assert isinstance(op, UpsertUser) and op.active


def test_access_is_parked_until_user_and_company_are_known_then_released() -> None:
    result = plan(None, user_event(2, access=(access("c1"),)), Identities(), T0)
    assert [type(o) for o in result.operations] == [UpsertUser]
    (parked,) = result.parked
    assert {n for n in parked.needs} == {(EntityType.USER, "u1"), (EntityType.COMPANY, "c1")}
    assert release(parked, Identities(users={"u1": "cu-1"})) is None
    op = release(parked, Identities(users={"u1": "cu-1"}, companies={"c1": "cc-1"}))
    assert isinstance(op, AssignAccess)
    assert (op.cloud_user_id, op.cloud_company_id) == ("cu-1", "cc-1")
    assert op.operation_id == parked.operation.operation_id


def test_access_diff_assigns_changed_companies_and_revokes_dropped_ones() -> None:
    ids = Identities(users={"u1": "cu-1"}, companies={"c1": "cc-1", "c2": "cc-2", "c3": "cc-3"})
    seen = EntityView(2, user_state(access=(access("c1"), access("c2"))))
    new = user_state(access=(access("c1"), access("c2", roles=("Lønn",)), access("c3")))
    result = plan(seen, user_event(3, state=new), ids, T0)
    assigned = {o.company_id for o in result.operations if isinstance(o, AssignAccess)}
    assert assigned == {"c2", "c3"}
    dropped = plan(EntityView(3, new), user_event(4, access=(access("c3"),)), ids, T0)
    assert {o.company_id for o in dropped.operations if isinstance(o, RevokeAccess)} == {"c1", "c2"}


def test_blocked_application_holds_its_access_with_a_journal_entry() -> None:
    ids = Identities(
        users={"u1": "cu-1"}, companies={"c1": "cc-1"}, blocked=frozenset({ApplicationType.BUSINESS})
    )
    result = plan(None, user_event(2, access=(access("c1"),)), ids, T0)
    assert not any(isinstance(o, AssignAccess) for o in result.operations)
    assert [j.code for j in result.journal] == ["application_blocked"]


def test_company_organisation_number_is_normalised() -> None:
    a = plan(None, company_event(1, org="923 609 016"), Identities(), T0)
    (op,) = a.operations
    assert isinstance(op, UpsertCompany) and op.organisation_number == "923609016"


def test_company_delete_marks_it_inactive() -> None:
    seen = EntityView(1, company_event(1).state)
    (op,) = plan(seen, company_event(2, op=Op.DELETE), Identities(companies={"c1": "cc-1"}), T0).operations
    assert isinstance(op, UpsertCompany) and op.status == "inactive" and op.cloud_id == "cc-1"


def _instance_event(version: int, uri: str, fp: str) -> ApplicationInstanceChanged:
    state = ApplicationInstanceState(
        id="business", application=ApplicationType.BUSINESS, uri=uri, license_fingerprint=fp
    )
    return ApplicationInstanceChanged(
        event_id=event_id_for(EntityType.APPLICATION_INSTANCE, "business", version, Op.UPDATE),
        entity_id="business",
        version=version,
        op=Op.UPDATE,
        ts=T0,
        source=source(version),
        state=state,
    )


def test_instance_mismatch_blocks_and_names_the_field_never_the_key() -> None:
    fp_ok, fp_other = "hmac-sha256:" + "a" * 64, "hmac-sha256:" + "b" * 64
    ids = Identities(instances={ApplicationType.BUSINESS: RegisteredInstance("https://vb.local", fp_ok)})
    bad = plan(None, _instance_event(1, "https://vb.local", fp_other), ids, T0)
    assert bad.outcome is Outcome.BLOCKED and bad.blocked_update == (ApplicationType.BUSINESS, True)
    (entry,) = bad.journal
    assert "license key" in entry.message and fp_other not in entry.message
    fixed = plan(EntityView(1, None), _instance_event(2, "https://vb.local", fp_ok), ids, T0)
    assert fixed.blocked_update == (ApplicationType.BUSINESS, False)
