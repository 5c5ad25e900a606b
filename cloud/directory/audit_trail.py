"""The audit trail: every effect, in order, found by idempotency key or resource."""

from __future__ import annotations

import sqlite3
from typing import Any

from cloud.directory.writes import Body


def audit_page(
    conn: sqlite3.Connection,
    idempotency_key: str | None,
    resource_id: str | None,
    after_seq: int,
    limit: int,
) -> Body:
    sql = "SELECT * FROM audit WHERE seq > ?"
    args: list[Any] = [after_seq]
    if idempotency_key is not None:
        sql += " AND idempotency_key = ?"
        args.append(idempotency_key)
    if resource_id is not None:
        sql += " AND resource_id = ?"
        args.append(resource_id)
    sql += " ORDER BY seq LIMIT ?"
    args.append(limit)
    items = [dict(r) for r in conn.execute(sql, args)]
    return {"items": items, "next_after_seq": items[-1]["seq"] if items else after_seq}
