"""Sample data and churn planning (pure): mod-11, Norwegian names, determinism, the change mix."""

from __future__ import annotations

import random
import re
from collections import Counter
from datetime import UTC, datetime

import pytest

from devtools.seed.churn import ChurnState, plan_changes
from devtools.seed.data import (
    ascii_local,
    organisation_number,
    sample_directory,
    valid_organisation_number,
)
from producers.mapping import SourceInfo, record_to_event
from producers.model import EntityRecord
from schemas.directory import EntityType
from schemas.events import Op


@pytest.mark.parametrize("number", ["974760673", "923609016", "923 609 016", "988077917"])
def test_known_organisation_numbers_are_valid(number: str) -> None:
    assert valid_organisation_number(number)


@pytest.mark.parametrize("number", ["974760674", "92360901", "9236090160", "abc"])
def test_wrong_check_digit_or_length_is_invalid(number: str) -> None:
    assert not valid_organisation_number(number)


def test_generated_organisation_numbers_carry_a_valid_mod11_check_digit() -> None:
    rng = random.Random(1)
    numbers = [organisation_number(rng) for _ in range(2000)]
    weights = (3, 2, 7, 6, 5, 4, 3, 2)
    for number in numbers:
        assert len(number) == 9 and number[0] in "89"
        remainder = sum(int(d) * w for d, w in zip(number[:8], weights, strict=True)) % 11
        assert int(number[8]) == (0 if remainder == 0 else 11 - remainder)
    assert len(set(numbers)) > 1900


def test_names_keep_aeoeaa_and_email_local_parts_are_ascii() -> None:
    assert ascii_local("Bjørn") == "bjorn"
    assert ascii_local("Åse") == "aase"
    assert ascii_local("Ærlend Sæther") == "aerlendsaether"
    sample = sample_directory(300, 5, seed=3)
    names = " ".join(u["first_name"] + u["last_name"] for u in sample.users)
    assert set("æøåÆØÅ") & set(names)
    for user in sample.users:
        assert user["email"].isascii() and re.fullmatch(r"[a-z0-9.\-]+@[a-z0-9.\-]+\.no", user["email"])


def test_same_seed_same_directory_other_seed_other_directory() -> None:
    a, b = sample_directory(200, 10, seed=5), sample_directory(200, 10, seed=5)
    assert (a.users, a.companies, a.access, a.instances) == (b.users, b.companies, b.access, b.instances)
    c = sample_directory(200, 10, seed=6)
    assert c.users != a.users


def test_access_per_user_sets_the_average_size_of_the_access_table() -> None:
    sample = sample_directory(3000, 40, seed=2, access_per_user=3)
    assert 2.6 <= len(sample.access) / 3000 <= 3.4
    per_user = Counter(row[0] for row in sample.access)
    assert len(per_user) == 3000  # every user has access somewhere
    assert len(set(sample.access)) == len(sample.access)  # no duplicate primary keys


def test_every_sample_user_and_company_maps_to_a_valid_event() -> None:
    sample = sample_directory(200, 10, seed=9)
    known = {c["id"] for c in sample.companies}
    grants: dict[str, list[tuple[str, str, str, str]]] = {}
    for user_id, company_id, app, kind, name in sample.access:
        assert company_id in known
        grants.setdefault(user_id, []).append((company_id, app, kind, name))
    for user in sample.users:
        record = EntityRecord(EntityType.USER, user["id"], user, access=tuple(grants.get(user["id"], ())))
        event, rejections = record_to_event(
            record,
            op=Op.READ,
            version=1,
            seq=1,
            committed_at=0.0,
            source=SourceInfo("sqlite", "t.db"),
            now=datetime(2026, 1, 1, tzinfo=UTC),
            fingerprint_key=b"k",
        )
        assert event is not None and not rejections, rejections


def _state() -> ChurnState:
    users = [f"u{i:06d}" for i in range(1, 51)]
    return ChurnState(users, ["c00001", "c00002", "c00003"], {u: {"c00001"} for u in users})


def test_churn_plans_are_deterministic_for_a_seed() -> None:
    a = plan_changes(random.Random(4), _state(), 300)
    b = plan_changes(random.Random(4), _state(), 300)
    assert a == b and len(a) == 300
    assert a != plan_changes(random.Random(5), _state(), 300)


def test_churn_mix_and_consistency() -> None:
    state = _state()
    changes = plan_changes(random.Random(8), state, 2000)
    kinds = Counter(c.kind for c in changes)
    assert set(kinds) == {"update_user", "grant", "revoke", "create_user", "delete_user", "update_company"}
    assert kinds["update_user"] > kinds["delete_user"]
    deleted: set[str] = set()
    created: set[str] = set()
    for change in changes:
        if change.kind == "create_user":
            assert change.target not in created and change.target not in {f"u{i:06d}" for i in range(1, 51)}
            created.add(change.target)
            assert change.args["rows"][0][3] == "role"
        elif change.kind in ("update_user", "grant", "revoke", "delete_user"):
            assert change.target not in deleted, f"{change.kind} of deleted user {change.target}"
        if change.kind == "delete_user":
            deleted.add(change.target)
    assert set(state.users).isdisjoint(deleted)
    assert created - deleted <= set(state.users)
