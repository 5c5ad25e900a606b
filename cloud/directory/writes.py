"""What the directory's reads and writes share: row and body types, ``If-Match``, 409, outcomes."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any, Literal

from cloud.errors import ApiError
from cloud.normalise import etag, parse_if_match
from cloud.store import Effect, Outcome, iso

Row = sqlite3.Row | dict[str, Any]  # a row read, or as written
Body = dict[str, Any]
#: the tables whose rows carry an ``external_id`` and are linked to one
Linkable = Literal["users", "companies"]


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


def holder(
    conn: sqlite3.Connection, table: Linkable, column: str, value: str, self_id: str | None
) -> str | None:
    """The id of the row of ``table`` other than ``self_id`` whose ``column`` holds ``value``
    (what stands in the way of a unique value), or ``None``."""
    row = conn.execute(
        f"SELECT id FROM {table} WHERE {column} = ? AND id IS NOT ?",
        (value, self_id),
    ).fetchone()
    return None if row is None else str(row["id"])


def link_external_id(
    conn: sqlite3.Connection,
    now: float,
    table: Linkable,
    kind: str,
    row: Row,
    external_id: str,
    body_of: Callable[[Row], Body],
) -> Outcome:
    """Link ``row`` (a ``kind`` of ``table``) to ``external_id``: a no-op when it already is,
    409 when it is linked to another one or another row holds that id, else a new version."""
    ident = str(row["id"])
    if row["external_id"] == external_id:
        return outcome(200, body_of(row), kind, ident, "noop")
    if row["external_id"] is not None:
        raise ApiError(409, "conflict", f"the {kind} is linked to a different external id")
    if existing := holder(conn, table, "external_id", external_id, ident):
        raise conflict(f"another {kind} is linked to this external id", existing)
    new = {**dict(row), "external_id": external_id, "version": row["version"] + 1, "updated_at": iso(now)}
    conn.execute(
        f"UPDATE {table} SET external_id = ?, version = ?, updated_at = ? WHERE id = ?",
        (external_id, new["version"], new["updated_at"], ident),
    )
    return outcome(200, body_of(new), kind, ident, "linked")
