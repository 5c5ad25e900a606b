"""Companies: create, patch, link to an external id, find by organisation number."""

from __future__ import annotations

import sqlite3
import uuid
from typing import Any

from cloud import models
from cloud.directory.paging import page
from cloud.directory.writes import Body, Row, check_if_match, conflict, holder, link_external_id, outcome
from cloud.errors import ApiError, not_found
from cloud.normalise import normalise_org_number
from cloud.store import Outcome, iso


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


def create_company(conn: sqlite3.Connection, now: float, body: models.CompanyCreate) -> Outcome:
    org = _org_number(body.organisation_number)
    if existing := holder(conn, "companies", "organisation_number", org, None):
        raise conflict("a company with this organisation number exists", existing)
    if body.external_id is not None and (
        existing := holder(conn, "companies", "external_id", body.external_id, None)
    ):
        raise conflict("a company is linked to this external id", existing)
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
    return outcome(201, company_body(row), "company", company_id, "created")


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
        return outcome(200, company_body(row), "company", company_id, "noop")
    if new["organisation_number"] != row["organisation_number"] and (
        existing := holder(conn, "companies", "organisation_number", new["organisation_number"], company_id)
    ):
        raise conflict("a company with this organisation number exists", existing)
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
    return outcome(200, company_body(new), "company", company_id, "updated")


def link_company(conn: sqlite3.Connection, now: float, company_id: str, external_id: str) -> Outcome:
    row = get_company_row(conn, company_id)
    return link_external_id(conn, now, "companies", "company", row, external_id, company_body)


def find_companies(
    conn: sqlite3.Connection,
    organisation_number: str | None,
    external_id: str | None,
    limit: int,
    after: int = 0,
) -> Body:
    """One page of companies in creation order (see :func:`cloud.directory.paging.page`)."""
    sql = "SELECT rowid AS _after, * FROM companies WHERE rowid > ?"
    args: list[Any] = [after]
    if organisation_number is not None:
        sql += " AND organisation_number = ?"
        args.append(normalise_org_number(organisation_number))
    if external_id is not None:
        sql += " AND external_id = ?"
        args.append(external_id)
    return page(conn, sql, args, limit, company_body)
