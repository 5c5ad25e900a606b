"""The pure mapping of cloud-capture (issue 16): a feed item or a full read's access body →
``CloudAccessChanged``, with the cloud's words translated and unlinked sides reported."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from cloudcapture.mapping import (
    Mapped,
    Unlinked,
    entries_of,
    feed_access_event,
    full_read_events,
    split_access_id,
)
from schemas.cloud_changes import CloudAccessChanged
from schemas.directory import ApplicationType

AT = "2026-12-05T20:00:00.123456Z"


def _entry(service: str, kind: str, name: str, origin: str = "cloud") -> dict[str, Any]:
    return {"service": service, "kind": kind, "name": name, "origin": origin, "modified_at": AT}


def _state(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"user_id": "cu1", "company_id": "cc1", "entries": list(entries), "updated_at": AT}


IDS = {("user", "cu1"): "u1", ("company", "cc1"): "c1"}


def test_an_access_item_becomes_the_whole_state_in_the_directorys_words() -> None:
    item = {
        "seq": 42,
        "at": AT,
        "resource_type": "access",
        "resource_id": "cu1/cc1",
        "change": "upserted",
        "origin": "cloud",
        "state": _state(
            _entry("reporting", "modules", "Rapport"),
            _entry("business", "roles", "Lønn"),
            _entry("business", "layout_groups", "Standard", origin="directory"),
            _entry("business", "roles", "Innkjøp"),
        ),
    }
    mapped = feed_access_event(item, IDS)
    assert isinstance(mapped, Mapped) and mapped.skipped == ()
    event = mapped.event
    assert (event.user_id, event.company_id, event.cloud_user_id, event.cloud_company_id) == (
        "u1",
        "c1",
        "cu1",
        "cc1",
    )
    assert event.event_id == CloudAccessChanged.make_event_id(42, "u1", "c1") == "cloud-access|42|u1|c1"
    assert event.feed_seq == 42 and not event.deleted and not event.full_read
    assert [(e.application, e.kind, e.name, e.origin) for e in event.entries] == [
        (ApplicationType.BUSINESS, "layout_group", "Standard", "directory"),
        (ApplicationType.BUSINESS, "role", "Innkjøp", "cloud"),
        (ApplicationType.BUSINESS, "role", "Lønn", "cloud"),
        (ApplicationType.REPORTING, "module", "Rapport", "cloud"),
    ]
    assert event.changed_at == datetime(2026, 12, 5, 20, 0, 0, 123456, tzinfo=UTC)
    assert event.entries[0].modified_at == event.changed_at


def test_a_deleted_access_is_deleted_with_no_entries() -> None:
    item = {"seq": 7, "at": AT, "resource_type": "access", "resource_id": "cu1/cc1", "change": "deleted"}
    item["state"] = None
    mapped = feed_access_event(item, IDS)
    assert isinstance(mapped, Mapped)
    assert mapped.event.deleted and mapped.event.entries == ()


@pytest.mark.parametrize(
    ("ids", "expected"),
    [
        ({("company", "cc1"): "c1"}, Unlinked("user", "cu1")),
        ({("user", "cu1"): "u1", ("company", "cc1"): None}, Unlinked("company", "cc1")),
        ({}, Unlinked("user", "cu1")),
    ],
)
def test_an_unlinked_user_or_company_is_reported_not_mapped(
    ids: dict[tuple[str, str], str | None], expected: Unlinked
) -> None:
    item = {"seq": 1, "at": AT, "resource_type": "access", "resource_id": "cu1/cc1", "change": "upserted"}
    item["state"] = _state(_entry("business", "roles", "Lønn"))
    assert feed_access_event(item, ids) == expected


def test_entries_of_a_service_the_directory_does_not_hold_are_left_out_and_named() -> None:
    state = _state(_entry("payroll", "roles", "X"), _entry("business", "roles", "Lønn"))
    entries, skipped = entries_of(state)
    assert [e.name for e in entries] == ["Lønn"]
    assert skipped == ("payroll/roles/X",)


def test_a_full_read_stamps_the_cursors_position_and_full_read() -> None:
    bodies = [_state(_entry("business", "roles", "Lønn")), {**_state(), "company_id": "cc-unlinked"}]
    out = full_read_events(bodies, IDS, position=99)
    assert isinstance(out[0], Mapped)
    assert out[0].event.full_read and out[0].event.feed_seq == 99
    assert out[0].event.event_id == "cloud-access|99|u1|c1"
    assert out[1] == Unlinked("company", "cc-unlinked")


def test_the_same_item_maps_to_the_same_event() -> None:
    item = {"seq": 3, "at": AT, "resource_type": "access", "resource_id": "cu1/cc1", "change": "upserted"}
    item["state"] = _state(_entry("business", "roles", "B"), _entry("business", "roles", "A"))
    first, again = feed_access_event(item, IDS), feed_access_event(dict(item), IDS)
    assert isinstance(first, Mapped) and isinstance(again, Mapped)
    assert first.event.model_dump_json() == again.event.model_dump_json()


@pytest.mark.parametrize("bad", ["cu1", "/cc1", "cu1/", ""])
def test_an_access_id_names_both_sides(bad: str) -> None:
    with pytest.raises(ValueError):
        split_access_id(bad)
