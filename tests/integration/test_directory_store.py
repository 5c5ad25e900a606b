"""The directory sink's store adapters against real SQLite and PostgreSQL: one operation, one
transaction, at most once; rows of origin cloud, and their change-log rows say so."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from devtools.seed.writer import DirectoryWriter, open_writer
from schemas.directory_operations import DirectoryOperation, GrantDirectoryAccess, RevokeDirectoryAccess
from sinks.directory_store import DirectoryStore, open_directory_store
from tests.factories import directory_op

NOW = datetime(2026, 12, 5, 20, 0, tzinfo=UTC)


@pytest.fixture
def writer(store_url: str) -> Iterator[DirectoryWriter]:
    made = open_writer(store_url)  # migrates the store
    made.upsert_catalogue("roles", [("business", "Regnskap", ""), ("business", "Lønn", "")])
    made.upsert_companies([{"id": "c1", "name": "Fjord AS", "organisation_number": "923609016"}])
    made.upsert_user(id="u1", username="kari", email="kari@fjord.no")
    made.grant([("u1", "c1", "business", "role", "Regnskap")])
    yield made
    made.close()


@pytest.fixture
def store(store_url: str, writer: DirectoryWriter) -> Iterator[DirectoryStore]:
    opened = open_directory_store(store_url)
    yield opened
    opened.close()


def op(
    cls: type[GrantDirectoryAccess] | type[RevokeDirectoryAccess], name: str, seq: int, **kw: str
) -> DirectoryOperation:
    return directory_op(name, seq, revoke=cls is RevokeDirectoryAccess, at=NOW, **kw)  # type: ignore[arg-type]


def test_a_grant_is_written_once_as_origin_cloud_with_one_change_log_row_of_its_own(
    writer: DirectoryWriter, store: DirectoryStore
) -> None:
    before = writer.change_log_position()
    grant = op(GrantDirectoryAccess, "Lønn", 7)
    first = store.apply(grant)
    again = store.apply(grant)
    assert (first.outcome, first.effect) == ("applied", "granted")
    assert (again.outcome, again.effect) == ("already_applied", "granted")
    assert writer.access_rows("u1") == [
        ("c1", "business", "role", "Lønn", "cloud"),
        ("c1", "business", "role", "Regnskap", "directory"),
    ]
    assert writer.change_log_origins("u1", before) == ["cloud"]


def test_a_grant_of_an_entry_held_already_leaves_it_the_directory_s(
    writer: DirectoryWriter, store: DirectoryStore
) -> None:
    before = writer.change_log_position()
    applied = store.apply(op(GrantDirectoryAccess, "Regnskap", 8))
    assert (applied.outcome, applied.effect) == ("applied", "held_already")
    assert ("c1", "business", "role", "Regnskap", "directory") in writer.access_rows("u1")
    assert writer.change_log_origins("u1", before) == []


def test_a_revoke_removes_only_a_row_of_origin_cloud(writer: DirectoryWriter, store: DirectoryStore) -> None:
    store.apply(op(GrantDirectoryAccess, "Lønn", 7))
    before = writer.change_log_position()
    revoked = store.apply(op(RevokeDirectoryAccess, "Lønn", 9))
    kept = store.apply(op(RevokeDirectoryAccess, "Regnskap", 9))
    assert (revoked.effect, kept.effect) == ("revoked", "not_held")
    assert writer.access_rows("u1") == [("c1", "business", "role", "Regnskap", "directory")]
    assert writer.change_log_origins("u1", before) == ["cloud"]


@pytest.mark.parametrize(
    ("name", "fields", "reason"),
    [
        ("Innkjøp", {}, "unknown_role"),
        ("Lønn", {"user_id": "u9"}, "unknown_user"),
        ("Lønn", {"company_id": "c9"}, "unknown_company"),
    ],
)
def test_what_the_directory_cannot_hold_is_rejected_and_the_store_untouched(
    writer: DirectoryWriter, store: DirectoryStore, name: str, fields: dict[str, str], reason: str
) -> None:
    before = writer.change_log_position()
    grant = op(GrantDirectoryAccess, name, 7, **fields)
    rejected = store.apply(grant)
    assert (rejected.outcome, rejected.reason) == ("rejected", reason)
    assert store.apply(grant).reason == reason  # asked again: the same answer
    assert writer.change_log_position() == before
    assert writer.access_rows("u1") == [("c1", "business", "role", "Regnskap", "directory")]


def test_an_adoption_makes_a_row_of_origin_cloud_the_directory_s_and_nothing_else(
    writer: DirectoryWriter, store: DirectoryStore
) -> None:
    """An operator rejected the writeback's revoke of an entry: the store's row of origin cloud
    becomes the directory's (one change-log row, of the directory: the user's next event assigns
    it in the cloud); one of the directory's already, or none, stays as it is."""
    store.apply(op(GrantDirectoryAccess, "Lønn", 7))
    before = writer.change_log_position()
    adopt = op(GrantDirectoryAccess, "Lønn", 8).model_copy(update={"operation_id": "adopt-1", "adopt": True})
    first = store.apply(adopt)
    assert (first.outcome, first.effect) == ("applied", "adopted")
    assert (store.apply(adopt).outcome, store.apply(adopt).effect) == ("already_applied", "adopted")
    assert writer.access_rows("u1") == [
        ("c1", "business", "role", "Lønn", "directory"),
        ("c1", "business", "role", "Regnskap", "directory"),
    ]
    assert writer.change_log_origins("u1", before) == ["directory"]
    held = op(GrantDirectoryAccess, "Regnskap", 9).model_copy(
        update={"operation_id": "adopt-2", "adopt": True}
    )
    assert store.apply(held).effect == "held_already"
    writer.revoke_entry("u1", "c1", "business", "role", "Lønn")  # removed on premise since
    gone = op(GrantDirectoryAccess, "Lønn", 10).model_copy(update={"operation_id": "adopt-3", "adopt": True})
    assert store.apply(gone).effect == "not_held"  # never a new row
    assert writer.access_rows("u1") == [("c1", "business", "role", "Regnskap", "directory")]
