"""The fast event encoding is the pydantic path, byte for byte (pure; no store, no broker).

``EventEncoder`` builds user and company events without pydantic models. These tests hold it
to its contract: for every input — seeded rows, hostile rows, odd envelopes — it returns
exactly what ``record_to_event(...)`` + ``model_dump_json()`` returns (the same bytes, or the
same rejections with the same reasons), its output validates against the checked-in JSON
Schemas, and a change to a mirrored model switches the fast path off.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import jsonschema_rs
import pytest

from devtools.seed.data import sample_directory
from producers import encoding
from producers.encoding import MIRRORED, EventEncoder, model_digest
from producers.mapping import SourceInfo, deleted_record
from producers.model import EntityRecord
from schemas.directory import EntityType
from schemas.events import EVENT_BY_ENTITY, Op, UserChanged, event_id_for
from schemas.export import DEFAULT_OUT

SRC = SourceInfo("sqlite", "directory.db")
KEY = b"test-key"
NOW = datetime(2026, 11, 27, 12, 30, 5, 123456, tzinfo=UTC)

USER: dict[str, Any] = {
    "id": "u1",
    "username": "kari",
    "email": "kari@fjord.no",
    "first_name": "Kari",
    "last_name": "Ødegård",
    "language": "nb",
    "active": 1,
}
GRANTS = (
    ("c2", "business", "role", "Lønn"),
    ("c1", "reporting", "layout_group", "Standard"),
    ("c1", "business", "role", "Regnskap"),
    ("c1", "business", "module", "M1"),
    ("c1", "business", "role", "Attestant"),
)
COMPANY: dict[str, Any] = {
    "id": "c1",
    "name": "Fjord Regnskap AS",
    "organisation_number": "923 609 016",
    "country": "NO",
    "status": "active",
}


def both(
    record: EntityRecord,
    *,
    op: Op = Op.UPDATE,
    version: int = 42,
    seq: int = 42,
    committed_at: float = 1_795_000_000.25,
    now: datetime = NOW,
    snapshot: bool = False,
    source: SourceInfo = SRC,
) -> tuple[tuple[bytes | None, list[Any]], EventEncoder]:
    """Encode with the fast encoder and the pydantic-only one; assert they agree."""
    fast = EventEncoder(source, KEY)
    slow = EventEncoder(source, KEY, fast=False)
    args = {"op": op, "version": version, "seq": seq, "committed_at": committed_at, "now": now}
    got = fast.encode(record, snapshot=snapshot, **args)  # type: ignore[arg-type]
    want = slow.encode(record, snapshot=snapshot, **args)  # type: ignore[arg-type]
    assert got == want, f"fast path differs from pydantic:\n{got}\n{want}"
    assert slow.fast_encoded == 0
    return got, fast


def _seeded_records() -> Iterator[EntityRecord]:
    sample = sample_directory(400, 25, seed=11)
    grants: dict[str, list[tuple[str, str, str, str]]] = {}
    for user_id, company_id, app, kind, name in sample.access:
        grants.setdefault(user_id, []).append((company_id, app, kind, name))
    for company in sample.companies:
        yield EntityRecord(EntityType.COMPANY, company["id"], dict(company))
    for user in sample.users:
        yield EntityRecord(EntityType.USER, user["id"], dict(user), tuple(grants.get(user["id"], ())))


# -- event ids ---------------------------------------------------------------------------


def test_event_ids_are_the_uuid5_they_always_were() -> None:
    namespace = uuid.UUID("6f1d3c52-9a2e-4c1b-8f7e-0a5d2b9c4e10")
    for entity in EntityType:
        for op in Op:
            for entity_id, version in (("u000001", 0), ("business:Lønn", 7), ("ø" * 150, 2**40)):
                name = f"{entity.value}|{entity_id}|{version}|{op.value}"
                assert event_id_for(entity, entity_id, version, op) == str(uuid.uuid5(namespace, name))
    # pinned (the id the uuid.uuid5 version gave): events re-sent by a newer producer carry the
    # ids their first delivery had
    assert event_id_for(EntityType.USER, "u1", 7, Op.UPDATE) == "c43c5e0a-8dc0-5d3f-ba6d-09e484c862d2"


# -- the fast path against pydantic --------------------------------------------------------


def test_seeded_users_and_companies_take_the_fast_path_and_match_pydantic() -> None:
    fast = EventEncoder(SRC, KEY)
    slow = EventEncoder(SRC, KEY, fast=False)
    count = 0
    for record in _seeded_records():
        for op, snapshot in ((Op.READ, True), (Op.UPDATE, False)):
            args = {"op": op, "version": 9, "seq": 9, "committed_at": 1_795_000_000.0, "now": NOW}
            got = fast.encode(record, snapshot=snapshot, **args)  # type: ignore[arg-type]
            assert got == slow.encode(record, snapshot=snapshot, **args), record.entity_id  # type: ignore[arg-type]
            count += 1
    assert fast.fast_encoded == count and fast.slow_encoded == 0


def test_user_access_is_grouped_and_sorted_like_the_model() -> None:
    (value, rejections), fast = both(EntityRecord(EntityType.USER, "u1", USER, GRANTS))
    assert rejections == [] and fast.fast_encoded == 1
    assert value is not None
    access = json.loads(value)["state"]["access"]
    assert [a["company_id"] for a in access] == ["c1", "c2"]
    assert access[0]["services"]["business"] == {
        "roles": ["Attestant", "Regnskap"],
        "layout_groups": [],
        "modules": ["M1"],
    }


def test_each_access_entry_s_own_time_is_carried_like_the_model_in_key_order() -> None:
    """The store's per-entry times (issue 16, rule 6): keyed by access_entry_key, in key order
    whatever order the store returned them, the same bytes on both paths; the planner reads an
    entry's own time, and the event's for one not listed."""
    times = (("c1|business/role/Regnskap", 1_795_000_003.5), ("c1|business/role/Lønn", 1_795_000_001.0))
    record = EntityRecord(EntityType.USER, "u1", USER, GRANTS, access_times=times)
    (value, rejections), fast = both(record, committed_at=1_795_000_009.0)
    assert rejections == [] and fast.fast_encoded == 1 and value is not None
    assert list(json.loads(value)["access_changed_at"]) == [
        "c1|business/role/Lønn",
        "c1|business/role/Regnskap",
    ]
    event = UserChanged.model_validate_json(value)
    assert event.entry_changed_at("c1", "business", "role", "Lønn").timestamp() == 1_795_000_001.0
    assert event.entry_changed_at("c1", "business", "role", "Attestant").timestamp() == 1_795_000_009.0
    older = json.loads(value)
    del older["access_changed_at"]  # a record written before the field: the event's time for all
    legacy = UserChanged.model_validate(older)
    assert legacy.entry_changed_at("c1", "business", "role", "Lønn") == legacy.source.committed_at


def test_every_code_point_is_escaped_as_pydantic_escapes_it() -> None:
    text = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF)
    (value, _), fast = both(EntityRecord(EntityType.USER, "u1", {**USER, "last_name": text}))
    assert value is not None and fast.fast_encoded == 1


@pytest.mark.parametrize(
    "change",
    [
        {"email": "not-an-email"},
        {"email": "kari@fjord"},
        {"email": "kari @fjord.no"},
        {"email": "kari@fjord.no\n"},
        {"email": ""},
        {"email": None},
        {"email": 42},
        {"email": b"kari@fjord.no"},
        {"username": ""},
        {"username": None},
        {"id": ""},
        {"id": "u" * 200},
        {"id": "u" * 201},
        {"id": "ø" * 200},
        {"id": 17},
        {"first_name": None},
        {"last_name": 3},
        {"language": None},
        {"active": 0},
        {"active": "0"},
        {"active": 2},
        {"active": None},
        {"extra_column": "ignored"},
        {"first_name": "Å\x00\t\n\u2028\U0001f600"},
    ],
    ids=repr,
)
def test_user_rows_good_and_bad(change: dict[str, Any]) -> None:
    both(EntityRecord(EntityType.USER, "u1", {**USER, **change}, GRANTS))


@pytest.mark.parametrize(
    "missing", ["id", "username", "email", "first_name", "last_name", "language", "active"]
)
def test_user_row_missing_a_column(missing: str) -> None:
    both(EntityRecord(EntityType.USER, "u1", {k: v for k, v in USER.items() if k != missing}))


@pytest.mark.parametrize(
    "grants, unknown",
    [
        ((), frozenset()),
        ((("c9", "business", "role", "X"),), frozenset({"c9"})),
        ((*GRANTS, ("c9", "business", "role", "X")), frozenset({"c9"})),
        ((("c1", "visma_tid", "role", "X"),), frozenset()),
        ((("c1", "business", "group", "X"),), frozenset()),
        ((("c1", "business", "role", None),), frozenset()),
        ((("c1", "business", "role", 5),), frozenset()),
        ((("", "business", "role", "X"),), frozenset()),
        ((("c" * 201, "business", "role", "X"),), frozenset()),
        ((("c" * 200, "business", "role", "X"),), frozenset()),
        (((None, "business", "role", "X"), ("c1", "business", "role", "X")), frozenset()),
        (
            (
                ("c1", "business", "role", "b"),
                ("c1", "business", "role", "B"),
                ("c1", "business", "role", "Æ"),
            ),
            frozenset(),
        ),
        (
            (
                ("C1", "business", "role", "X"),
                ("c1", "reporting", "module", "Y"),
                ("Ø1", "business", "role", "Z"),
            ),
            frozenset(),
        ),
        ((("c1", "business", "role", "X"), ("c1", "business", "role", "X")), frozenset()),
        ((("c1", b"business", "role", "X"),), frozenset()),
    ],
    ids=repr,
)
def test_user_access_good_and_bad(grants: tuple[Any, ...], unknown: frozenset[str]) -> None:
    both(EntityRecord(EntityType.USER, "u1", USER, grants, unknown))


@pytest.mark.parametrize(
    "change",
    [
        {},
        {"status": "inactive"},
        {"status": "Active"},
        {"status": "active\n"},
        {"status": None},
        {"country": "N"},
        {"country": "NOR"},
        {"country": "se"},
        {"country": "ØÆ"},
        {"name": ""},
        {"organisation_number": ""},
        {"organisation_number": 923609016},
        {"id": "c" * 201},
        {"id": ""},
        {"extra": 1},
        {"name": "Bø & Co «AS»\u0007"},
    ],
    ids=repr,
)
def test_company_rows_good_and_bad(change: dict[str, Any]) -> None:
    both(EntityRecord(EntityType.COMPANY, "c1", {**COMPANY, **change}))


@pytest.mark.parametrize("missing", ["id", "name", "organisation_number", "country", "status"])
def test_company_row_missing_a_column(missing: str) -> None:
    both(EntityRecord(EntityType.COMPANY, "c1", {k: v for k, v in COMPANY.items() if k != missing}))


@pytest.mark.parametrize(
    "envelope",
    [
        {"op": Op.READ, "snapshot": True},
        {"op": Op.CREATE},
        {"op": Op.DELETE},
        {"version": 0, "seq": 0},
        {"version": -1},
        {"seq": -1},
        {"version": 2**63},
        {"committed_at": 1_795_000_000.0},
        {"committed_at": 0.000001},
        {"now": datetime(2026, 1, 1, tzinfo=UTC)},
        {"now": datetime(2026, 1, 1, 12, 0)},
        {"now": datetime(2026, 1, 1, 12, 0, tzinfo=timezone(timedelta(hours=1)))},
        {"source": SourceInfo("postgresql", "vud")},
        {"source": SourceInfo("oracle", "vud")},
    ],
    ids=repr,
)
def test_envelopes(envelope: dict[str, Any]) -> None:
    for record in (
        EntityRecord(EntityType.USER, "u1", USER, GRANTS),
        EntityRecord(EntityType.COMPANY, "c1", COMPANY),
    ):
        both(record, **envelope)


def test_an_empty_entity_id_goes_through_pydantic() -> None:
    (value, rejections), fast = both(EntityRecord(EntityType.USER, "", USER))
    assert value is None and rejections and fast.fast_encoded == 0


def test_deleted_entities_match_pydantic() -> None:
    user_before = {k: v for k, v in USER.items() if k != "active"}
    for record in (
        deleted_record(EntityType.USER, "u1", user_before),
        deleted_record(EntityType.COMPANY, "c1", COMPANY),
        deleted_record(EntityType.USER, "u1", None),
        deleted_record(EntityType.ROLE, "business:Lønn", {"application": "business", "name": "Lønn"}),
        deleted_record(EntityType.APPLICATION_INSTANCE, "business", None),
    ):
        both(record, op=Op.DELETE)


def test_catalogue_and_instances_take_the_pydantic_path() -> None:
    row = {"application": "business", "uri": "https://vb.local", "license_key": "LICENSE-SECRET-1"}
    (value, _), fast = both(EntityRecord(EntityType.APPLICATION_INSTANCE, "business", row))
    assert value is not None and b"LICENSE-SECRET-1" not in value and fast.slow_encoded == 1
    role = {"application": "business", "name": "Lønn", "description": ""}
    both(EntityRecord(EntityType.ROLE, "business:Lønn", role))


# -- the contract around it -----------------------------------------------------------------


@pytest.mark.parametrize("entity", [EntityType.USER, EntityType.COMPANY])
def test_fast_output_validates_against_the_checked_in_schema(entity: EntityType) -> None:
    schema = json.loads((DEFAULT_OUT / f"events/{EVENT_BY_ENTITY[entity].__name__}.json").read_text())
    union = json.loads((DEFAULT_OUT / "events/DirectoryEvent.json").read_text())
    encoder = EventEncoder(SRC, KEY)
    for record in _seeded_records():
        if record.entity is not entity:
            continue
        value, _ = encoder.encode(
            record, op=Op.READ, version=3, seq=3, committed_at=0.5, now=NOW, snapshot=True
        )
        assert value is not None
        event = json.loads(value)
        for document in (schema, union):
            validator = jsonschema_rs.validator_for(document)
            assert validator.is_valid(event), list(validator.iter_errors(event))[:3]
    assert encoder.fast_encoded > 0


def test_the_mirrored_models_are_the_ones_the_fast_path_was_written_for() -> None:
    for entity, digest in MIRRORED.items():
        model = EVENT_BY_ENTITY[entity]
        assert model_digest(model) == digest, (
            f"{model.__name__} changed. producers/encoding.py builds its JSON without pydantic: "
            "check its checks and field order against the model, then set MIRRORED "
            f"[{entity}] to {model_digest(model)!r}"
        )


def test_a_changed_model_switches_its_fast_path_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(MIRRORED, EntityType.USER, "not-the-digest")
    encoding._fast_entities.cache_clear()
    try:
        (value, _), fast = both(EntityRecord(EntityType.USER, "u1", USER, GRANTS))
        assert value is not None and fast.fast_encoded == 0 and fast.slow_encoded == 1
        both(EntityRecord(EntityType.COMPANY, "c1", COMPANY))  # the other model still mirrors
    finally:
        encoding._fast_entities.cache_clear()
