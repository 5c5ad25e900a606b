"""Pure normalisation rules: how the cloud matches things up.

* organisation numbers: digits only (``"923 609 016"`` == ``"NO923609016MVA"`` == ``"923609016"``)
* e-mail addresses: case-insensitive, surrounding blanks ignored
* versions in ``If-Match``: ``3``, ``"3"`` and ``W/"3"`` all mean version 3
* an access entry's tag: its origin and modification time (any change of the entry changes it)
"""

from __future__ import annotations


def normalise_org_number(value: str) -> str:
    """Keep the ASCII digits of ``value``. Returns ``""`` when there are none."""
    return "".join(ch for ch in value if "0" <= ch <= "9")


def normalise_email(value: str) -> str:
    """The key e-mail addresses are compared by (case-insensitive)."""
    return value.strip().casefold()


def parse_if_match(value: str) -> int | None:
    """The version an ``If-Match`` header names, or ``None`` if it names none.

    ``*`` is handled by the caller (it matches any existing resource).
    """
    text = value.strip()
    if text.startswith("W/"):
        text = text[2:]
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        text = text[1:-1]
    if not text.isascii() or not text.isdigit():
        return None
    return int(text)


def etag(version: int) -> str:
    """The ``ETag`` header value for a resource version (a quoted strong tag)."""
    return f'"{version}"'


def entry_etag(origin: str, modified_at: str) -> str:
    """The tag of one access entry (a quoted strong tag): a grant, a revoke and grant again, or
    a change of origin each give the entry a new modification time, so a new tag."""
    return f'"{origin}@{modified_at}"'


def matches_tag(if_match: str, tag: str | None) -> bool:
    """Whether ``If-Match`` names ``tag`` (``*``: any existing; a weak ``W/`` prefix ignored);
    never when there is no current tag (the entry is not held)."""
    if tag is None:
        return False
    wanted = [t.strip().removeprefix("W/") for t in if_match.split(",")]
    return "*" in wanted or tag in wanted
