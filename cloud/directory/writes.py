"""What the directory's reads and writes share: row and body types, ``If-Match``, 409, outcomes."""

from __future__ import annotations

import sqlite3
from typing import Any

from cloud.errors import ApiError
from cloud.normalise import etag, parse_if_match
from cloud.store import Effect, Outcome

Row = sqlite3.Row | dict[str, Any]  # a row read, or as written
Body = dict[str, Any]


def check_if_match(if_match: str | None, version: int) -> None:
    """412 unless ``If-Match`` is absent, ``*`` or names ``version``."""
    if if_match is None or if_match.strip() == "*":
        return
    wanted = parse_if_match(if_match)
    if wanted != version:
        raise ApiError(
            412,
            "precondition_failed",
            f"If-Match does not name the current version ({version})",
            current_version=version,
        )


def conflict(description: str, existing_id: str) -> ApiError:
    return ApiError(409, "conflict", description, existing_id=existing_id)


def outcome(status: int, body: Body, kind: str, ident: str, effect: str) -> Outcome:
    headers = {"ETag": etag(body["version"])} if "version" in body else {}
    return Outcome(status, body, Effect(kind, ident, effect), headers)
