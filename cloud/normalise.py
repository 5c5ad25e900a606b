"""Pure normalisation rules: how the cloud matches things up.

* organisation numbers: digits only (``"923 609 016"`` == ``"NO923609016MVA"`` == ``"923609016"``)
* e-mail addresses: case-insensitive, surrounding blanks ignored
* versions in ``If-Match``: ``3``, ``"3"`` and ``W/"3"`` all mean version 3
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
