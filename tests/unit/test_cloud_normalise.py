"""Cloud API matching rules: organisation numbers, e-mails, If-Match versions (pure)."""

from __future__ import annotations

import pytest

from cloud.normalise import (
    entry_etag,
    etag,
    matches_tag,
    normalise_email,
    normalise_org_number,
    parse_if_match,
)


@pytest.mark.parametrize(
    "written", ["923609016", "923 609 016", "923-609-016", "NO 923 609 016 MVA", " 923.609.016 "]
)
def test_org_numbers_written_differently_normalise_to_the_same_digits(written: str) -> None:
    assert normalise_org_number(written) == "923609016"


def test_org_number_without_digits_normalises_to_empty() -> None:
    assert normalise_org_number("n/a") == ""
    assert normalise_org_number("٣٤٥") == ""  # only ASCII digits count


def test_email_is_case_insensitive_and_trimmed() -> None:
    assert normalise_email("  Kari.Nordmann@Firma.NO ") == normalise_email("kari.nordmann@firma.no")


@pytest.mark.parametrize(("header", "version"), [("3", 3), ('"3"', 3), ('W/"3"', 3), (" 12 ", 12)])
def test_if_match_names_a_version(header: str, version: int) -> None:
    assert parse_if_match(header) == version


@pytest.mark.parametrize("header", ["", "abc", '"3', "3.0", "-1", "٣"])
def test_if_match_that_names_no_version(header: str) -> None:
    assert parse_if_match(header) is None


def test_etag_round_trips_through_if_match() -> None:
    assert parse_if_match(etag(41)) == 41


def test_an_entry_s_tag_is_matched_as_sent_weak_or_in_a_list_and_never_when_it_is_not_held() -> None:
    tag = entry_etag("cloud", "2026-12-05T10:00:00.123456Z")
    assert tag == '"cloud@2026-12-05T10:00:00.123456Z"'
    assert matches_tag(tag, tag) and matches_tag(f"W/{tag}", tag) and matches_tag(f'"x", {tag}', tag)
    assert matches_tag("*", tag) and not matches_tag("*", None), "* means: any entry held"
    assert not matches_tag(entry_etag("cloud", "2026-12-05T10:00:01Z"), tag), "changed since it was read"
    assert not matches_tag(entry_etag("directory", "2026-12-05T10:00:00.123456Z"), tag)
