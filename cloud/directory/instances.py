"""Application instances: one per service, its URI and license fingerprint."""

from __future__ import annotations

import sqlite3

from cloud import models
from cloud.directory.catalogue import known_service
from cloud.directory.writes import Body, Row, outcome
from cloud.store import Outcome, iso


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
        return outcome(200, instance_body(row), "application_instance", service, "noop")
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
    return outcome(status, instance_body(new), "application_instance", service, effect)


def list_instances(conn: sqlite3.Connection) -> list[Body]:
    return [instance_body(r) for r in conn.execute("SELECT * FROM application_instances ORDER BY service")]
