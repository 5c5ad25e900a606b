"""Access: a user's assignments in a company, per service, checked against the catalogue."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from cloud import models
from cloud.directory.companies import get_company_row
from cloud.directory.users import get_user_row
from cloud.directory.writes import Body, Row, outcome
from cloud.errors import ApiError, not_found
from cloud.store import Effect, Outcome, iso


def access_body(row: Row) -> Body:
    return {
        "user_id": row["user_id"],
        "company_id": row["company_id"],
        "services": json.loads(row["services"]),
        "version": row["version"],
        "updated_at": row["updated_at"],
    }


def _canonical_services(body: models.AccessBody) -> dict[str, dict[str, list[str]]]:
    return {
        service: {kind: sorted(set(getattr(assignment, kind))) for kind in models.KINDS}
        for service, assignment in sorted(body.services.items())
    }


def _missing_entries(
    conn: sqlite3.Connection, services: dict[str, dict[str, list[str]]]
) -> list[dict[str, Any]]:
    missing: list[dict[str, Any]] = []
    for service, kinds in services.items():
        for kind, names in kinds.items():
            if not names:
                continue
            marks = ",".join("?" * len(names))
            known = {
                r["name"]
                for r in conn.execute(
                    f"SELECT name FROM catalogue WHERE service = ? AND kind = ? AND name IN ({marks})",
                    (service, kind, *names),
                )
            }
            missing.extend(
                {
                    "loc": ["body", "services", service, kind],
                    "msg": "not in the catalogue",
                    "type": "unknown_catalogue_entry",
                    "service": service,
                    "kind": kind,
                    "name": n,
                }
                for n in names
                if n not in known
            )
    return missing


def _require(conn: sqlite3.Connection, table: str, ident: str, what: str) -> None:
    """404 unless ``table`` has the row ``ident`` (an existence check, no row read)."""
    if conn.execute(f"SELECT 1 FROM {table} WHERE id = ?", (ident,)).fetchone() is None:
        raise not_found(what)


def _access_row(conn: sqlite3.Connection, user_id: str, company_id: str) -> Row | None:
    row: Row | None = conn.execute(
        "SELECT * FROM access WHERE user_id = ? AND company_id = ?", (user_id, company_id)
    ).fetchone()
    return row


def get_access(conn: sqlite3.Connection, user_id: str, company_id: str) -> Body:
    get_user_row(conn, user_id)
    get_company_row(conn, company_id)
    row = _access_row(conn, user_id, company_id)
    if row is None:
        raise not_found("access")
    return access_body(row)


def put_access(
    conn: sqlite3.Connection, now: float, user_id: str, company_id: str, body: models.AccessBody
) -> Outcome:
    """Replace the user's assignments in the company (404 unknown user/company, 422 unknown name)."""
    _require(conn, "users", user_id, "user")
    _require(conn, "companies", company_id, "company")
    services = _canonical_services(body)
    missing = _missing_entries(conn, services)
    if missing:
        first = missing[0]
        raise ApiError(
            422,
            "unknown_catalogue_entry",
            f"{len(missing)} name(s) are not in the service catalogue, first: "
            f"{first['kind']} of {first['service']}",
            detail=missing,
        )
    ident = f"{user_id}/{company_id}"
    encoded = json.dumps(services, sort_keys=True)
    row = _access_row(conn, user_id, company_id)
    if row is not None and row["services"] == encoded:
        return outcome(200, access_body(row), "access", ident, "noop")
    new = {
        "user_id": user_id,
        "company_id": company_id,
        "services": encoded,
        "version": 1 if row is None else row["version"] + 1,
        "updated_at": iso(now),
    }
    if row is None:
        conn.execute(
            "INSERT INTO access (user_id, company_id, services, version, updated_at) VALUES (?, ?, ?, ?, ?)",
            (user_id, company_id, encoded, new["version"], new["updated_at"]),
        )
    else:
        conn.execute(
            "UPDATE access SET services = ?, version = ?, updated_at = ?"
            " WHERE user_id = ? AND company_id = ?",
            (encoded, new["version"], new["updated_at"], user_id, company_id),
        )
    return outcome(200, access_body(new), "access", ident, "assigned")


def delete_access(conn: sqlite3.Connection, now: float, user_id: str, company_id: str) -> Outcome:
    del now
    get_user_row(conn, user_id)
    get_company_row(conn, company_id)
    if _access_row(conn, user_id, company_id) is None:
        raise not_found("access")
    conn.execute("DELETE FROM access WHERE user_id = ? AND company_id = ?", (user_id, company_id))
    return Outcome(204, None, Effect("access", f"{user_id}/{company_id}", "revoked"))


def list_access(conn: sqlite3.Connection, user_id: str) -> list[Body]:
    get_user_row(conn, user_id)
    return [
        access_body(r)
        for r in conn.execute("SELECT * FROM access WHERE user_id = ? ORDER BY rowid", (user_id,))
    ]
