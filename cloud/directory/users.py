"""Users: create, patch, deactivate and reactivate, link to an external id, find by e-mail."""

from __future__ import annotations

import sqlite3
import uuid
from typing import Any, Literal

from cloud import models
from cloud.directory.paging import page
from cloud.directory.writes import Body, Row, check_if_match, conflict, holder, link_external_id, outcome
from cloud.errors import not_found
from cloud.normalise import normalise_email
from cloud.store import Outcome, iso


def user_body(row: Row) -> Body:
    return {
        "id": row["id"],
        "external_id": row["external_id"],
        "email": row["email"],
        "username": row["username"],
        "first_name": row["first_name"],
        "last_name": row["last_name"],
        "language": row["language"],
        "active": bool(row["active"]),
        "customer_admin": bool(row["customer_admin"]),
        "version": row["version"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def get_user_row(conn: sqlite3.Connection, user_id: str) -> Row:
    row: Row | None = conn.execute("SELECT * FROM users WHERE id = ?", (user_id,)).fetchone()
    if row is None:
        raise not_found("user")
    return row


def create_user(conn: sqlite3.Connection, now: float, body: models.UserCreate) -> Outcome:
    email_key = normalise_email(body.email)
    if existing := holder(conn, "users", "email_key", email_key, None):
        raise conflict("a user with this e-mail address exists", existing)
    if body.external_id is not None and (
        existing := holder(conn, "users", "external_id", body.external_id, None)
    ):
        raise conflict("a user is linked to this external id", existing)
    user_id = str(uuid.uuid4())
    stamp = iso(now)
    conn.execute(
        "INSERT INTO users (id, external_id, email, email_key, username, first_name, last_name,"
        " language, active, version, created_at, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1, 1, ?, ?)",
        (
            user_id,
            body.external_id,
            body.email.strip(),
            email_key,
            body.username,
            body.first_name,
            body.last_name,
            body.language,
            stamp,
            stamp,
        ),
    )
    row = {
        "id": user_id,
        "external_id": body.external_id,
        "email": body.email.strip(),
        "username": body.username,
        "first_name": body.first_name,
        "last_name": body.last_name,
        "language": body.language,
        "active": 1,
        "customer_admin": 0,
        "version": 1,
        "created_at": stamp,
        "updated_at": stamp,
    }
    return outcome(201, user_body(row), "user", user_id, "created")


def patch_user(
    conn: sqlite3.Connection, now: float, user_id: str, patch: models.UserPatch, if_match: str | None
) -> Outcome:
    row = get_user_row(conn, user_id)
    check_if_match(if_match, row["version"])
    new = dict(row)
    if patch.email is not None:
        new["email"] = patch.email.strip()
        new["email_key"] = normalise_email(patch.email)
    for field in ("username", "first_name", "last_name", "language"):
        if field in patch.model_fields_set:
            new[field] = getattr(patch, field)
    if new == dict(row):
        return outcome(200, user_body(row), "user", user_id, "noop")
    if new["email_key"] != row["email_key"] and (
        existing := holder(conn, "users", "email_key", new["email_key"], user_id)
    ):
        raise conflict("a user with this e-mail address exists", existing)
    new["version"], new["updated_at"] = row["version"] + 1, iso(now)
    conn.execute(
        "UPDATE users SET email = ?, email_key = ?, username = ?, first_name = ?, last_name = ?,"
        " language = ?, version = ?, updated_at = ? WHERE id = ?",
        (
            new["email"],
            new["email_key"],
            new["username"],
            new["first_name"],
            new["last_name"],
            new["language"],
            new["version"],
            new["updated_at"],
            user_id,
        ),
    )
    return outcome(200, user_body(new), "user", user_id, "updated")


def _set_flag(
    conn: sqlite3.Connection,
    now: float,
    user_id: str,
    column: Literal["active", "customer_admin"],
    value: bool,
    effect: str,
) -> Outcome:
    """Set one yes/no column of a user as a new version; its current value is a 200 no-op."""
    row = get_user_row(conn, user_id)
    if bool(row[column]) == value:
        return outcome(200, user_body(row), "user", user_id, "noop")
    new = {**dict(row), column: int(value), "version": row["version"] + 1, "updated_at": iso(now)}
    conn.execute(
        f"UPDATE users SET {column} = ?, version = ?, updated_at = ? WHERE id = ?",
        (new[column], new["version"], new["updated_at"], user_id),
    )
    return outcome(200, user_body(new), "user", user_id, effect)


def set_user_active(conn: sqlite3.Connection, now: float, user_id: str, active: bool) -> Outcome:
    """Deactivate or reactivate; asking for the current state is a 200 no-op."""
    return _set_flag(conn, now, user_id, "active", active, "reactivated" if active else "deactivated")


def link_user(conn: sqlite3.Connection, now: float, user_id: str, external_id: str) -> Outcome:
    row = get_user_row(conn, user_id)
    return link_external_id(conn, now, "users", "user", row, external_id, user_body)


def find_users(
    conn: sqlite3.Connection, email: str | None, external_id: str | None, limit: int, after: int = 0
) -> Body:
    """One page of users in creation order (see :func:`cloud.directory.paging.page`)."""
    sql = "SELECT rowid AS _after, * FROM users WHERE rowid > ?"
    args: list[Any] = [after]
    if email is not None:
        sql += " AND email_key = ?"
        args.append(normalise_email(email))
    if external_id is not None:
        sql += " AND external_id = ?"
        args.append(external_id)
    return page(conn, sql, args, limit, user_body)


def set_customer_admin(conn: sqlite3.Connection, now: float, user_id: str, admin: bool) -> Outcome:
    """Mark a cloud user as a customer administrator (the portal's role; the admin API's)."""
    return _set_flag(conn, now, user_id, "customer_admin", admin, "updated")
