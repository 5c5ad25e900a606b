"""The planner table's on-disk format: every key kind and every need, spelled exactly as an
existing installation's changelog holds them, and read back to the same typed value."""

from __future__ import annotations

import pytest

from processors import keys
from processors.keys import (
    EntityKey,
    GateKey,
    IndexKey,
    Known,
    KnownKey,
    LiveKey,
    ParkedKey,
    TableKey,
)
from processors.model import Identities, Parked, PlannerSettings
from processors.needs import Need, NeedKind
from processors.parking import parked_from_json, parked_json
from processors.planner import plan
from schemas.directory import ApplicationType, EntityType
from schemas.results import FactKind, PlannerFact
from tests.factories import T0, access, user_event

BUSINESS = ApplicationType.BUSINESS

NEEDS: list[tuple[Need, str]] = [
    (Need.user("u1"), "user:u1"),
    (Need.company("c1"), "company:c1"),
    (Need.catalogue(BUSINESS, "roles", "Regnskap"), "catalogue:business:roles:Regnskap"),
    (Need.catalogue(BUSINESS, "layout_groups", "a:b"), "catalogue:business:layout_groups:a:b"),
    (Need.application(BUSINESS), "application:business"),
    (Need.deletion("user:u1:4"), "deletion:user:u1:4"),
]


@pytest.mark.parametrize(("need", "text"), NEEDS)
def test_a_need_is_spelled_kind_colon_subject_and_reads_back(need: Need, text: str) -> None:
    assert need.encode() == text and str(need) == text
    assert text.encode() == f"{need.kind.value}:{need.subject}".encode()
    assert Need.decode(text) == need


def test_only_an_application_need_blocks() -> None:
    assert [n.blocks for n, _ in NEEDS] == [False, False, False, False, True, False]


@pytest.mark.parametrize("text", ["", "user", "user:", "nothing:x"])
def test_what_is_no_need_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        Need.decode(text)


def test_a_fact_meets_the_need_spelled_like_its_key() -> None:
    for kind, subject in [
        (FactKind.USER, "u1"),
        (FactKind.COMPANY, "c1"),
        (FactKind.CATALOGUE, "business:roles:Regnskap"),
    ]:
        fact = PlannerFact(kind=kind, subject=subject, cloud_id="x", observed_at=T0, source="results")
        need = Need.of_fact(kind, subject)
        assert need is not None and need.encode() == fact.key
    assert Need.of_fact(FactKind.REGISTRY, "business") is None
    assert Need.of_fact(FactKind.INSTANCE, "business") is None
    # connect and review facts meet their needs by what they say (connected; accepted)
    assert Need.of_fact(FactKind.CONNECT, "installation") is None
    assert Need.of_fact(FactKind.REVIEW, "c1") is None
    assert Need.connect().encode() == "connect:installation" == f"{FactKind.CONNECT.value}:installation"
    assert Need.review("c1").encode() == "review:c1"
    # no fact meets it: a user's directory event releases the writeback's changes waiting for it
    assert Need.on_premise("u1").encode() == "on_premise:u1"
    assert {k.value for k in NeedKind} == {
        "user", "company", "catalogue", "application", "deletion", "connect", "review", "on_premise"
    }  # fmt: skip


KEYS: list[tuple[TableKey, str]] = [
    (EntityKey(EntityType.USER, "u1"), "e|user:u1"),
    (EntityKey(EntityType.APPLICATION_INSTANCE, "business"), "e|application_instance:business"),
    (ParkedKey(EntityType.USER, "u:1"), "p|user:u:1"),
    (KnownKey(1, Known.USER, "u1"), "k|1|user:u1"),
    (KnownKey(0, Known.COMPANY, "c1"), "k|0|company:c1"),
    (KnownKey(2, Known.CATALOGUE, "business:roles:Regnskap"), "k|2|catalogue:business:roles:Regnskap"),
    (KnownKey(0, Known.REGISTRY, "business"), "k|0|registry:business"),
    (KnownKey(0, Known.INSTANCE, "business"), "k|0|instance:business"),
    (KnownKey(3, Known.DELETION, "user:u1:4"), "k|3|deletion:user:u1:4"),
    (KnownKey(0, Known.REVIEWED, "business"), "k|0|reviewed:business"),
    (IndexKey(0, Need.company("c1")), "n|0|company:c1"),
    (IndexKey(12, Need.company("c1"), 0), "n|12|company:c1|0"),
    (IndexKey(1, Need.deletion("user:u1:4"), 3), "n|1|deletion:user:u1:4|3"),
    (LiveKey(5), "c|5|live"),
    (GateKey("gate"), "g|gate"),
    (GateKey("seq"), "g|seq"),
    (GateKey("h", "7"), "g|h|7"),
    (GateKey("hc", "user:u1:4"), "g|hc|user:u1:4"),
    (GateKey("d", "user:u1:4"), "g|d|user:u1:4"),
]


@pytest.mark.parametrize(("key", "text"), KEYS)
def test_every_key_kind_is_spelled_exactly_and_reads_back(key: TableKey, text: str) -> None:
    assert key.encode() == text
    assert keys.parse(text) == key


def test_the_builders_spell_the_same_keys() -> None:
    ref = keys.entity_ref(EntityType.USER, "u1")
    assert ref == "user:u1"
    assert keys.entity_key(ref) == "e|user:u1" and keys.parked_key(ref) == "p|user:u1"
    assert keys.fact_key(1, "user:u1") == "k|1|user:u1"
    assert keys.known_prefix(1, Known.USER) == "k|1|user:"
    assert keys.known_key(3, Known.DELETION, "user:u1:4") == "k|3|deletion:user:u1:4"
    assert keys.instance_key(0, BUSINESS) == "k|0|instance:business"
    assert keys.registry_key(0, BUSINESS) == "k|0|registry:business"
    assert keys.index_key(0, "company:c1") == "n|0|company:c1"
    assert keys.bucket_key(0, "company:c1", 2) == "n|0|company:c1|2"
    assert keys.live_key(5) == "c|5|live"
    assert (keys.GATE_STATE, keys.GATE_SEQ) == ("g|gate", "g|seq")
    assert keys.gate_held_key(7) == "g|h|7"
    assert keys.gate_candidate_key("user:u1:4") == "g|hc|user:u1:4"
    assert keys.gate_decided_key("user:u1:4") == "g|d|user:u1:4"
    assert keys.is_parked("p|user:u1") and not keys.is_parked("e|user:u1")


@pytest.mark.parametrize(
    "text", ["", "x|y", "e|user", "e|nobody:1", "k|x|user:u1", "k|0|user", "c|0|dead", "g|h"]
)
def test_what_is_no_table_key_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        keys.parse(text)


def test_a_parked_item_stores_its_needs_as_their_strings_and_reads_them_back() -> None:
    event = user_event(2, access=(access("c1"),))
    # staging: nothing goes behind the user's upsert, so the assignment waits for the user too
    (parked,) = plan(None, event, Identities(), PlannerSettings(staging=True), now=T0).parked
    raw = parked_json(parked)
    assert "behind" not in raw
    (behind,) = plan(None, event, Identities(), PlannerSettings(), now=T0).parked
    assert parked_json(behind)["behind"] is True and parked_from_json(parked_json(behind)) == behind
    assert raw["needs"] == [
        "user:u1",
        "company:c1",
        "catalogue:business:roles:Regnskap",
        "application:business",
    ]
    assert raw["slot"] == "access:c1" and raw["apps"] == ["business"] and raw["del"] is None
    assert parked_from_json(raw) == parked
    deletion = Parked(parked.operation, (Need.deletion("user:u1:4"),), (BUSINESS,), "user:u1:4")
    assert parked_json(deletion)["needs"] == ["deletion:user:u1:4"]
    assert parked_from_json(parked_json(deletion)) == deletion
