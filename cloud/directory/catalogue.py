"""The service catalogues: each service's roles, layout groups and modules by name."""

from __future__ import annotations

import json
import sqlite3

from cloud import models
from cloud.directory.writes import Body, Row, outcome
from cloud.errors import not_found
from cloud.store import Effect, Outcome, iso


def known_service(service: str) -> str:
    if service not in models.SERVICES:
        raise not_found("service")
    return service


def known_kind(kind: str) -> str:
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
    row = _entry_row(conn, known_service(service), known_kind(kind), name)
    if row is None:
        raise not_found("catalogue entry")
    return entry_body(row)


def put_entry(
    conn: sqlite3.Connection, now: float, service: str, kind: str, name: str, description: str | None
) -> Outcome:
    known_service(service)
    known_kind(kind)
    ident = f"{service}/{kind}/{name}"
    row = _entry_row(conn, service, kind, name)
    if row is not None and row["description"] == description:
        return outcome(200, entry_body(row), "catalogue_entry", ident, "noop")
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
    return outcome(status, entry_body(new), "catalogue_entry", ident, effect)


def delete_entry(conn: sqlite3.Connection, now: float, service: str, kind: str, name: str) -> Outcome:
    """Remove a catalogue entry and take it out of every assignment that named it."""
    known_service(service)
    known_kind(kind)
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
