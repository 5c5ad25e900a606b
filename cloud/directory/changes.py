"""The change feed of users, companies and access: ``GET /v1/changes``.

In the style of Microsoft Graph delta queries and SCIM sync, so a client never misses a change
and never scans the whole directory to find one:

* ``GET /v1/changes`` without a cursor answers no items and the cursor of *now*. A client takes
  it **before** it reads the directory in full, then follows the feed from it: a change made
  during the full read comes again, and applying it twice is harmless (each item is the
  resource's state, not a difference).
* ``GET /v1/changes?cursor=…`` answers the resources changed after the cursor, oldest first,
  each once with its **current** state (``change: upserted``) or ``change: deleted``, the
  origin of its last change (``directory``: the integration's client; ``cloud``: anyone else),
  and the next cursor. ``more: true`` — read again at once; ``more: false`` — no more changes
  yet, poll later with the cursor given.
* A cursor older than the feed keeps (``changes_retention_seconds`` since it was issued, or
  before an administrator expired every cursor with ``POST /admin/changes/expire``) is answered
  ``410 cursor_expired``: read the directory in full again, from a new cursor.

The feed is read from the audit trail (every effect of every write, in commit order, written
in the same transaction as the effect), so it cannot disagree with what was written.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from cloud.directory.access import access_body
from cloud.directory.companies import company_body
from cloud.directory.users import user_body
from cloud.directory.writes import Body
from cloud.errors import ApiError

FEED_TYPES = ("user", "company", "access")
EPOCH_KEY = "changes_epoch"  # raised by expire(): cursors of an older epoch are expired
_CURSOR_PREFIX = "c1"


def make_cursor(epoch: int, seq: int, issued_at: float) -> str:
    return f"{_CURSOR_PREFIX}.{epoch}.{seq}.{int(issued_at)}"


def parse_cursor(cursor: str) -> tuple[int, int, float]:
    """(epoch, seq, issued at) of a cursor; 400 for anything else."""
    prefix, *numbers = cursor.split(".")
    if prefix != _CURSOR_PREFIX or len(numbers) != 3 or not all(n.isdigit() for n in numbers):
        raise ApiError(400, "invalid_cursor", "not a cursor of this feed: start again with GET /v1/changes")
    return int(numbers[0]), int(numbers[1]), float(numbers[2])


def head(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT coalesce(max(seq), 0) FROM audit").fetchone()[0])


def epoch(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (EPOCH_KEY,)).fetchone()
    return int(row[0]) if row is not None else 0


def expire(conn: sqlite3.Connection) -> int:
    """Every cursor issued so far expires (an administrator's way to force full reads);
    returns the new epoch."""
    new = epoch(conn) + 1
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        (EPOCH_KEY, str(new)),
    )
    return new


def _state(conn: sqlite3.Connection, resource_type: str, resource_id: str) -> Body | None:
    if resource_type == "access":
        user_id, _, company_id = resource_id.partition("/")
        row = conn.execute(
            "SELECT * FROM access WHERE user_id = ? AND company_id = ?", (user_id, company_id)
        ).fetchone()
        return None if row is None else access_body(row)
    table, body = ("users", user_body) if resource_type == "user" else ("companies", company_body)
    row = conn.execute(f"SELECT * FROM {table} WHERE id = ?", (resource_id,)).fetchone()
    return None if row is None else body(row)


def changes_page(
    conn: sqlite3.Connection,
    cursor: str | None,
    limit: int,
    *,
    now: float,
    retention_seconds: float,
    integration_client: str,
) -> Body:
    """One page of the feed (see the module's docstring)."""
    current = epoch(conn)
    if cursor is None:
        return {"items": [], "cursor": make_cursor(current, head(conn), now), "more": False}
    cursor_epoch, after, issued_at = parse_cursor(cursor)
    if cursor_epoch != current or now - issued_at > retention_seconds:
        raise ApiError(
            410,
            "cursor_expired",
            "the feed no longer holds the changes after this cursor: read the directory in full, "
            "from a new cursor (GET /v1/changes)",
        )
    marks = ",".join("?" * len(FEED_TYPES))
    rows = conn.execute(
        f"SELECT seq, at, client_id, resource_type, resource_id FROM audit WHERE seq > ?"
        f" AND resource_type IN ({marks}) AND effect != 'noop' ORDER BY seq LIMIT ?",
        (after, *FEED_TYPES, limit + 1),
    ).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    latest: dict[tuple[str, str], Any] = {}
    for row in rows:  # each resource once, where it last changed
        latest.pop((row["resource_type"], row["resource_id"]), None)
        latest[(row["resource_type"], row["resource_id"])] = row
    items = []
    for (resource_type, resource_id), row in latest.items():
        state = _state(conn, resource_type, resource_id)
        items.append(
            {
                "seq": row["seq"],
                "at": row["at"],
                "resource_type": resource_type,
                "resource_id": resource_id,
                "change": "deleted" if state is None else "upserted",
                "origin": "directory" if row["client_id"] == integration_client else "cloud",
                "state": state,
            }
        )
    next_seq = rows[-1]["seq"] if rows else after
    return {"items": items, "cursor": make_cursor(current, next_seq, now), "more": more}
