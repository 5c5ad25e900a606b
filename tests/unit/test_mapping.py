"""Row → event mapping and validation (pure)."""

from __future__ import annotations

from datetime import UTC, datetime

from producers.mapping import SourceInfo, record_to_event
from producers.model import EntityRecord
from schemas.directory import ApplicationType, EntityType
from schemas.events import Op

NOW = datetime(2026, 11, 27, tzinfo=UTC)
SRC = SourceInfo("sqlite", "test.db")
KEY = b"k"


def _map(record: EntityRecord, version: int = 7):
    return record_to_event(
        record,
        op=Op.UPDATE,
        version=version,
        seq=version,
        committed_at=1.0e9,
        source=SRC,
        now=NOW,
        fingerprint_key=KEY,
    )


USER = {
    "id": "u1",
    "username": "kari",
    "email": "kari@firma.no",
    "first_name": "Kari",
    "last_name": "Ødegård",
    "language": "nb",
    "active": 1,
}


def test_user_with_access_groups_by_company_and_application() -> None:
    record = EntityRecord(
        EntityType.USER,
        "u1",
        USER,
        access=(
            ("c2", "business", "role", "Lønn"),
            ("c1", "business", "role", "Regnskap"),
            ("c1", "business", "module", "M1"),
            ("c1", "reporting", "layout_group", "Standard"),
        ),
    )
    event, rejected = _map(record)
    assert rejected == []
    assert [a.company_id for a in event.state.access] == ["c1", "c2"]
    c1 = event.state.access[0].services
    assert c1["business"].roles == ("Regnskap",) and c1["business"].modules == ("M1",)
    assert c1["reporting"].layout_groups == ("Standard",)
    assert event.version == 7 and event.source.seq == 7


def test_malformed_email_is_rejected_with_a_reason() -> None:
    event, rejected = _map(EntityRecord(EntityType.USER, "u1", {**USER, "email": "not-an-email"}))
    assert event is None
    (r,) = rejected
    assert "e-mail" in r.reason and r.row_ref == "user:u1"


def test_access_to_a_company_not_in_the_store_yet_is_part_of_the_event() -> None:
    """Issue 15: access written a moment before its company was dead-lettered at capture, and
    nothing brought it back when the company arrived. The planner parks it now, like any grant
    whose company it does not know yet."""
    record = EntityRecord(EntityType.USER, "u1", USER, access=(("c9", "business", "role", "X"),))
    event, rejected = _map(record)
    assert rejected == [] and event is not None
    assert [(a.company_id, a.services[ApplicationType.BUSINESS].roles) for a in event.state.access] == [
        ("c9", ("X",))
    ]


def test_second_instance_of_a_type_is_rejected_and_the_key_never_leaves() -> None:
    row = {"application": "business", "uri": "https://vb", "license_key": "SECRET-LICENSE-123"}
    ok, _ = _map(EntityRecord(EntityType.APPLICATION_INSTANCE, "business", row))
    assert "SECRET-LICENSE-123" not in ok.model_dump_json()
    assert ok.state.license_fingerprint.startswith("hmac-sha256:")
    none, rejected = _map(EntityRecord(EntityType.APPLICATION_INSTANCE, "business", row, instances=2))
    assert none is None and "single instance" in rejected[0].reason
    assert "SECRET-LICENSE-123" not in rejected[0].reason


class _Exploding(dict):  # type: ignore[type-arg]
    """A row whose every read fails in a way nobody planned for."""

    def __getitem__(self, key: object) -> object:
        raise RuntimeError(f"driver lost column {key}")


def test_any_exception_while_mapping_a_row_is_a_rejection_with_its_reason() -> None:
    """Issue 17: a non-text license key used to escape as AttributeError and crash the producer
    at start, again and again. Any exception is a rejection now; the key never shows."""
    for key in (b"LIC-BYTES-0001", 42424242, ["LIC-LIST-0001"]):
        row = {"application": "business", "uri": "https://vb.local", "license_key": key}
        event, (rejected,) = _map(EntityRecord(EntityType.APPLICATION_INSTANCE, "business", row))
        assert event is None and rejected.row_ref == "application_instance:business"
        assert rejected.exception in ("AttributeError", "TypeError")
        assert str(key) not in rejected.reason and repr(key) not in rejected.reason
    event, (rejected,) = _map(EntityRecord(EntityType.USER, "u1", _Exploding()))
    assert event is None and rejected.exception == "RuntimeError"
    assert rejected.reason.startswith("RuntimeError while mapping: ")


def test_a_secret_column_is_scrubbed_from_any_reason() -> None:
    key = "LIC-INT-NOT-A-URL"
    row = {"application": "business", "uri": key, "license_key": key}  # pydantic words it
    _, rejections = _map(EntityRecord(EntityType.APPLICATION_INSTANCE, "business", row))
    assert all(key not in r.reason for r in rejections)
