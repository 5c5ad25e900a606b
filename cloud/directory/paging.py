"""Keyset paging of the directory's lists (``GET /v1/users``, ``GET /v1/companies``)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

Body = dict[str, Any]


def page(
    conn: sqlite3.Connection, sql: str, args: list[Any], limit: int, body: Callable[[sqlite3.Row], Body]
) -> Body:
    """``{"items", "next_after"}``: keyset paging by rowid, so a page costs the same at any
    depth and rows created while a reader pages on are never skipped. ``sql`` selects
    ``rowid AS _after`` and filters ``rowid > after``; ``next_after`` is the cursor to pass as
    ``after`` for the next page, or None when this page was the last."""
    rows = conn.execute(sql + " ORDER BY rowid LIMIT ?", [*args, limit + 1]).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    return {"items": [body(r) for r in rows], "next_after": rows[-1]["_after"] if more else None}
