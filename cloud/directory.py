"""The directory itself: companies, users, catalogues, application instances and access.

Each write function runs inside the transaction :meth:`cloud.store.Store.write` opened,
takes the connection and the current time, and returns an :class:`~cloud.store.Outcome`
(status, body, the one effect to audit) or raises :class:`~cloud.errors.ApiError` (which
rolls the transaction back). No HTTP here.

A write answers with the row as it wrote it (the values it bound, the version it set),
not read back: the tables have no defaults or triggers that would change them, and a
read-back per write was a fifth of a batched write's statements.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from typing import Any

from cloud import models
from cloud.errors import ApiError, not_found
from cloud.normalise import etag, normalise_email, normalise_org_number, parse_if_match
from cloud.store import Effect, Outcome, iso

Row = sqlite3.Row | dict[str, Any]  # a row read, or as written
Body = dict[str, Any]


# -- helpers -----------------------------------------------------------------------


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


def _conflict(description: str, existing_id: str) -> ApiError:
    return ApiError(409, "conflict", description, existing_id=existing_id)


def _outcome(status: int, body: Body, kind: str, ident: str, effect: str) -> Outcome:
    headers = {"ETag": etag(body["version"])} if "version" in body else {}
    return Outcome(status, body, Effect(kind, ident, effect), headers)


def known_service(service: str) -> str:
    if service not in models.SERVICES:
        raise not_found("service")
    return service


# -- companies ---------------------------------------------------------------------


def company_body(row: Row) -> Body:
    return {
        "id": row["id"],
        "external_id": row["external_id"],
        "name": row["name"],
        "organisation_number": row["organisation_number"],
        "country": row["country"],
        "status": row["status"],
        "version": row["version"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def get_company_row(conn: sqlite3.Connection, company_id: str) -> Row:
    row: Row | None = conn.execute("SELECT * FROM companies WHERE id = ?", (company_id,)).fetchone()
    if row is None:
        raise not_found("company")
    return row


def _org_number(value: str) -> str:
    digits = normalise_org_number(value)
    if not digits:
        raise ApiError(422, "validation_error", "organisation_number has no digits")
    return digits


def _company_in_way(conn: sqlite3.Connection, column: str, value: str, self_id: str | None) -> str | None:
    row = conn.execute(
        f"SELECT id FROM companies WHERE {column} = ? AND id IS NOT ?",
        (value, self_id),
    ).fetchone()
    return None if row is None else str(row["id"])


def create_company(conn: sqlite3.Connection, now: float, body: models.CompanyCreate) -> Outcome:
    org = _org_number(body.organisation_number)
    if existing := _company_in_way(conn, "organisation_number", org, None):
        raise _conflict("a company with this organisation number exists", existing)
    if body.external_id is not None and (
        existing := _company_in_way(conn, "external_id", body.external_id, None)
    ):
        raise _conflict("a company is linked to this external id", existing)
    company_id = str(uuid.uuid4())
    stamp = iso(now)
    conn.execute(
        "INSERT INTO companies (id, external_id, name, organisation_number, country, status,"
        " version, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, 1, ?, ?)",
        (
            company_id,
            body.external_id,
            body.name,
            org,
            body.country.upper() if body.country else None,
            body.status,
            stamp,
            stamp,
        ),
    )
    row = {
        "id": company_id,
        "external_id": body.external_id,
        "name": body.name,
        "organisation_number": org,
        "country": body.country.upper() if body.country else None,
        "status": body.status,
        "version": 1,
        "created_at": stamp,
        "updated_at": stamp,
    }
    return _outcome(201, company_body(row), "company", company_id, "created")


def patch_company(
    conn: sqlite3.Connection,
    now: float,
    company_id: str,
    patch: models.CompanyPatch,
    if_match: str | None,
) -> Outcome:
    row = get_company_row(conn, company_id)
    check_if_match(if_match, row["version"])
    new = dict(row)
    if patch.name is not None:
        new["name"] = patch.name
    if patch.organisation_number is not None:
        new["organisation_number"] = _org_number(patch.organisation_number)
    if "country" in patch.model_fields_set:
        new["country"] = patch.country.upper() if patch.country else None
    if patch.status is not None:
        new["status"] = patch.status
    if new == dict(row):
        return _outcome(200, company_body(row), "company", company_id, "noop")
    if new["organisation_number"] != row["organisation_number"] and (
        existing := _company_in_way(conn, "organisation_number", new["organisation_number"], company_id)
    ):
        raise _conflict("a company with this organisation number exists", existing)
    new["version"], new["updated_at"] = row["version"] + 1, iso(now)
    conn.execute(
        "UPDATE companies SET name = ?, organisation_number = ?, country = ?, status = ?,"
        " version = ?, updated_at = ? WHERE id = ?",
        (
            new["name"],
            new["organisation_number"],
            new["country"],
            new["status"],
            new["version"],
            new["updated_at"],
            company_id,
        ),
    )
    return _outcome(200, company_body(new), "company", company_id, "updated")


def link_company(conn: sqlite3.Connection, now: float, company_id: str, external_id: str) -> Outcome:
    row = get_company_row(conn, company_id)
    if row["external_id"] == external_id:
        return _outcome(200, company_body(row), "company", company_id, "noop")
    if row["external_id"] is not None:
        raise ApiError(409, "conflict", "the company is linked to a different external id")
    if existing := _company_in_way(conn, "external_id", external_id, company_id):
        raise _conflict("another company is linked to this external id", existing)
    new = {**dict(row), "external_id": external_id, "version": row["version"] + 1, "updated_at": iso(now)}
    conn.execute(
        "UPDATE companies SET external_id = ?, version = ?, updated_at = ? WHERE id = ?",
        (external_id, new["version"], new["updated_at"], company_id),
    )
    return _outcome(200, company_body(new), "company", company_id, "linked")


def find_companies(
    conn: sqlite3.Connection,
    organisation_number: str | None,
    external_id: str | None,
    limit: int,
    after: int = 0,
) -> Body:
    """One page of companies in creation order (see :func:`_page`)."""
    sql = "SELECT rowid AS _after, * FROM companies WHERE rowid > ?"
    args: list[Any] = [after]
    if organisation_number is not None:
        sql += " AND organisation_number = ?"
        args.append(normalise_org_number(organisation_number))
    if external_id is not None:
        sql += " AND external_id = ?"
        args.append(external_id)
    return _page(conn, sql, args, limit, company_body)


def _page(conn: sqlite3.Connection, sql: str, args: list[Any], limit: int, body: Any) -> Body:
    """``{"items", "next_after"}``: keyset paging by rowid, so a page costs the same at any
    depth and rows created while a reader pages on are never skipped. ``next_after`` is the
    cursor to pass as ``after`` for the next page, or None when this page was the last."""
    rows = conn.execute(sql + " ORDER BY rowid LIMIT ?", [*args, limit + 1]).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    return {"items": [body(r) for r in rows], "next_after": rows[-1]["_after"] if more else None}


# -- users -------------------------------------------------------------------------


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
        "version": row["version"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def get_user_row(conn: sqlite3.Connection, user_id: str) -> Row:
    row: Row | None = conn.execute("SELECT * FROM users WHERE id = ?", (user_id,)).fetchone()
    if row is None:
        raise not_found("user")
    return row


def _user_in_way(conn: sqlite3.Connection, column: str, value: str, self_id: str | None) -> str | None:
    row = conn.execute(
        f"SELECT id FROM users WHERE {column} = ? AND id IS NOT ?",
        (value, self_id),
    ).fetchone()
    return None if row is None else str(row["id"])


def create_user(conn: sqlite3.Connection, now: float, body: models.UserCreate) -> Outcome:
    email_key = normalise_email(body.email)
    if existing := _user_in_way(conn, "email_key", email_key, None):
        raise _conflict("a user with this e-mail address exists", existing)
    if body.external_id is not None and (
        existing := _user_in_way(conn, "external_id", body.external_id, None)
    ):
        raise _conflict("a user is linked to this external id", existing)
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
        "version": 1,
        "created_at": stamp,
        "updated_at": stamp,
    }
    return _outcome(201, user_body(row), "user", user_id, "created")


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
        return _outcome(200, user_body(row), "user", user_id, "noop")
    if new["email_key"] != row["email_key"] and (
        existing := _user_in_way(conn, "email_key", new["email_key"], user_id)
    ):
        raise _conflict("a user with this e-mail address exists", existing)
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
    return _outcome(200, user_body(new), "user", user_id, "updated")


def set_user_active(conn: sqlite3.Connection, now: float, user_id: str, active: bool) -> Outcome:
    """Deactivate or reactivate; asking for the current state is a 200 no-op."""
    row = get_user_row(conn, user_id)
    if bool(row["active"]) == active:
        return _outcome(200, user_body(row), "user", user_id, "noop")
    new = {**dict(row), "active": int(active), "version": row["version"] + 1, "updated_at": iso(now)}
    conn.execute(
        "UPDATE users SET active = ?, version = ?, updated_at = ? WHERE id = ?",
        (new["active"], new["version"], new["updated_at"], user_id),
    )
    effect = "reactivated" if active else "deactivated"
    return _outcome(200, user_body(new), "user", user_id, effect)


def link_user(conn: sqlite3.Connection, now: float, user_id: str, external_id: str) -> Outcome:
    row = get_user_row(conn, user_id)
    if row["external_id"] == external_id:
        return _outcome(200, user_body(row), "user", user_id, "noop")
    if row["external_id"] is not None:
        raise ApiError(409, "conflict", "the user is linked to a different external id")
    if existing := _user_in_way(conn, "external_id", external_id, user_id):
        raise _conflict("another user is linked to this external id", existing)
    new = {**dict(row), "external_id": external_id, "version": row["version"] + 1, "updated_at": iso(now)}
    conn.execute(
        "UPDATE users SET external_id = ?, version = ?, updated_at = ? WHERE id = ?",
        (external_id, new["version"], new["updated_at"], user_id),
    )
    return _outcome(200, user_body(new), "user", user_id, "linked")


def find_users(
    conn: sqlite3.Connection, email: str | None, external_id: str | None, limit: int, after: int = 0
) -> Body:
    """One page of users in creation order (see :func:`_page`)."""
    sql = "SELECT rowid AS _after, * FROM users WHERE rowid > ?"
    args: list[Any] = [after]
    if email is not None:
        sql += " AND email_key = ?"
        args.append(normalise_email(email))
    if external_id is not None:
        sql += " AND external_id = ?"
        args.append(external_id)
    return _page(conn, sql, args, limit, user_body)


# -- service catalogues ------------------------------------------------------------


def _known_kind(kind: str) -> str:
    if kind not in models.KINDS:
        raise not_found("catalogue kind")
    return kind


def entry_body(row: Row) -> Body:
    return {
        "service": row["service"],
        "kind": row["kind"],
        "name": row["name"],
        "description": row["description"],
        "version": row["version"],
        "updated_at": row["updated_at"],
    }


def _entry_row(conn: sqlite3.Connection, service: str, kind: str, name: str) -> Row | None:
    row: Row | None = conn.execute(
        "SELECT * FROM catalogue WHERE service = ? AND kind = ? AND name = ?", (service, kind, name)
    ).fetchone()
    return row


def get_entry(conn: sqlite3.Connection, service: str, kind: str, name: str) -> Body:
    row = _entry_row(conn, known_service(service), _known_kind(kind), name)
    if row is None:
        raise not_found("catalogue entry")
    return entry_body(row)


def put_entry(
    conn: sqlite3.Connection, now: float, service: str, kind: str, name: str, description: str | None
) -> Outcome:
    known_service(service)
    _known_kind(kind)
    ident = f"{service}/{kind}/{name}"
    row = _entry_row(conn, service, kind, name)
    if row is not None and row["description"] == description:
        return _outcome(200, entry_body(row), "catalogue_entry", ident, "noop")
    new = {
        "service": service,
        "kind": kind,
        "name": name,
        "description": description,
        "version": 1 if row is None else row["version"] + 1,
        "updated_at": iso(now),
    }
    if row is None:
        conn.execute(
            "INSERT INTO catalogue (service, kind, name, description, version, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (service, kind, name, description, new["version"], new["updated_at"]),
        )
        status, effect = 201, "created"
    else:
        conn.execute(
            "UPDATE catalogue SET description = ?, version = ?, updated_at = ?"
            " WHERE service = ? AND kind = ? AND name = ?",
            (description, new["version"], new["updated_at"], service, kind, name),
        )
        status, effect = 200, "updated"
    return _outcome(status, entry_body(new), "catalogue_entry", ident, effect)


def delete_entry(conn: sqlite3.Connection, now: float, service: str, kind: str, name: str) -> Outcome:
    """Remove a catalogue entry and take it out of every assignment that named it."""
    known_service(service)
    _known_kind(kind)
    if _entry_row(conn, service, kind, name) is None:
        raise not_found("catalogue entry")
    conn.execute("DELETE FROM catalogue WHERE service = ? AND kind = ? AND name = ?", (service, kind, name))
    needle = json.dumps(name)
    rows = conn.execute("SELECT * FROM access WHERE instr(services, ?) > 0", (needle,)).fetchall()
    for row in rows:
        services = json.loads(row["services"])
        names = services.get(service, {}).get(kind, [])
        if name in names:
            names.remove(name)
            conn.execute(
                "UPDATE access SET services = ?, version = version + 1, updated_at = ?"
                " WHERE user_id = ? AND company_id = ?",
                (json.dumps(services, sort_keys=True), iso(now), row["user_id"], row["company_id"]),
            )
    return Outcome(204, None, Effect("catalogue_entry", f"{service}/{kind}/{name}", "deleted"))


def list_services(conn: sqlite3.Connection) -> list[Body]:
    catalogue: dict[str, Body] = {s: {"service": s, **{k: [] for k in models.KINDS}} for s in models.SERVICES}
    for row in conn.execute("SELECT service, kind, name, description FROM catalogue ORDER BY name"):
        if row["service"] in catalogue and row["kind"] in models.KINDS:
            catalogue[row["service"]][row["kind"]].append(
                {"name": row["name"], "description": row["description"]}
            )
    return list(catalogue.values())


# -- application instances ---------------------------------------------------------


def instance_body(row: Row) -> Body:
    return {
        "service": row["service"],
        "uri": row["uri"],
        "license_fingerprint": row["license_fingerprint"],
        "version": row["version"],
        "updated_at": row["updated_at"],
    }


def put_instance(
    conn: sqlite3.Connection, now: float, service: str, body: models.ApplicationInstanceBody
) -> Outcome:
    """One instance per service: create it or replace its URI and fingerprint."""
    known_service(service)
    row = conn.execute("SELECT * FROM application_instances WHERE service = ?", (service,)).fetchone()
    if row is not None and (row["uri"], row["license_fingerprint"]) == (body.uri, body.license_fingerprint):
        return _outcome(200, instance_body(row), "application_instance", service, "noop")
    new = {
        "service": service,
        "uri": body.uri,
        "license_fingerprint": body.license_fingerprint,
        "version": 1 if row is None else row["version"] + 1,
        "updated_at": iso(now),
    }
    if row is None:
        conn.execute(
            "INSERT INTO application_instances (service, uri, license_fingerprint, version,"
            " updated_at) VALUES (?, ?, ?, ?, ?)",
            (service, body.uri, body.license_fingerprint, new["version"], new["updated_at"]),
        )
        status, effect = 201, "created"
    else:
        conn.execute(
            "UPDATE application_instances SET uri = ?, license_fingerprint = ?,"
            " version = ?, updated_at = ? WHERE service = ?",
            (body.uri, body.license_fingerprint, new["version"], new["updated_at"], service),
        )
        status, effect = 200, "updated"
    return _outcome(status, instance_body(new), "application_instance", service, effect)


def list_instances(conn: sqlite3.Connection) -> list[Body]:
    return [instance_body(r) for r in conn.execute("SELECT * FROM application_instances ORDER BY service")]


# -- access ------------------------------------------------------------------------


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
        return _outcome(200, access_body(row), "access", ident, "noop")
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
    return _outcome(200, access_body(new), "access", ident, "assigned")


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


# -- audit -------------------------------------------------------------------------


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
