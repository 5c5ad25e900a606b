"""Access: a user's assignments in a company, per service, checked against the catalogue."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from typing import Any

from cloud import models
from cloud.directory.catalogue import known_kind, known_service
from cloud.directory.companies import get_company_row
from cloud.directory.users import get_user_row
from cloud.directory.writes import Body, Row, outcome
from cloud.errors import ApiError, not_found
from cloud.normalise import entry_etag, matches_tag
from cloud.store import Effect, Outcome, iso

Services = dict[str, dict[str, list[str]]]  # service -> kind -> sorted names
Origins = dict[str, list[str]]  # "service/kind/name" -> [origin, modified_at]


def access_body(row: Row) -> Body:
    services: Services = json.loads(row["services"])
    return {
        "user_id": row["user_id"],
        "company_id": row["company_id"],
        "services": services,
        "entries": _entries(services, json.loads(row["entries"] or "{}"), row["updated_at"]),
        "version": row["version"],
        "updated_at": row["updated_at"],
    }


def _entries(services: Services, origins: Origins, updated_at: str) -> list[Body]:
    """Each assignment with where it came from and when it last changed. An entry written
    before origins were kept counts as the integration's (``directory``) as of the row's time."""
    return [
        {
            "service": service,
            "kind": kind,
            "name": name,
            "origin": origin,
            "modified_at": modified_at,
            "etag": entry_etag(origin, modified_at),
        }
        for service, kinds in services.items()
        for kind, names in kinds.items()
        for name in names
        for origin, modified_at in [origins.get(f"{service}/{kind}/{name}", ("directory", updated_at))]
    ]


def _origins(new: Services, old: Origins, origin: str, stamp: str) -> Origins:
    """The entries of ``new``: those already held keep their origin and time, the others are
    ``origin``'s as of ``stamp``."""
    return {
        key: old.get(key, [origin, stamp])
        for service, kinds in new.items()
        for kind, names in kinds.items()
        for key in (f"{service}/{kind}/{name}" for name in names)
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
    conn: sqlite3.Connection,
    now: float,
    user_id: str,
    company_id: str,
    body: models.AccessBody,
    origin: str = "directory",
    scope: str = "all",
) -> Outcome:
    """Replace the user's assignments in the company (404 unknown user/company, 422 unknown name).

    ``scope="all"``: the body is the whole set; entries it adds are ``origin``'s, entries it
    keeps keep theirs. ``scope="directory"``: the body is the *directory's* whole set — entries
    of origin ``cloud`` outside it are kept as they are, the directory's own outside it are
    revoked, and every entry in it is the directory's from now on (it changed that entry too)."""
    _require(conn, "users", user_id, "user")
    _require(conn, "companies", company_id, "company")
    services = _canonical_services(body)
    _check_catalogue(conn, services)
    if scope != "directory":
        return _write_services(conn, now, user_id, company_id, services, origin, "assigned")
    row = _access_row(conn, user_id, company_id)
    claim = frozenset(_keys(services))
    if row is not None:
        services = _with_cloud_entries(services, row)
    return _write_services(conn, now, user_id, company_id, services, "directory", "assigned", row, claim)


def _keys(services: Services) -> Iterator[str]:
    for service, kinds in services.items():
        for kind, names in kinds.items():
            for name in names:
                yield f"{service}/{kind}/{name}"


def _with_cloud_entries(services: Services, row: Row) -> Services:
    """``services`` plus the entries of ``row`` whose origin is the cloud."""
    origins: Origins = json.loads(row["entries"] or "{}")
    merged: Services = {
        service: {k: list(v) for k, v in kinds.items()} for service, kinds in services.items()
    }
    for key, (origin, _) in origins.items():
        if origin != "cloud":
            continue
        service, kind, name = key.split("/", 2)
        names = merged.setdefault(service, {k: [] for k in models.KINDS})[kind]
        if name not in names:
            names.append(name)
            names.sort()
    return merged


def _check_catalogue(conn: sqlite3.Connection, services: Services) -> None:
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


def _write_services(
    conn: sqlite3.Connection,
    now: float,
    user_id: str,
    company_id: str,
    services: Services,
    origin: str,
    effect: str,
    row: Row | None = None,
    claim: frozenset[str] = frozenset(),
) -> Outcome:
    """Write ``services``; the ``claim``ed entries become the directory's (see put_access)."""
    ident = f"{user_id}/{company_id}"
    encoded = json.dumps(services, sort_keys=True)
    row = row if row is not None else _access_row(conn, user_id, company_id)
    old: Origins = {} if row is None else json.loads(row["entries"] or "{}")
    claimed = [key for key in claim if old.get(key, ("directory",))[0] == "cloud"]
    if row is not None and row["services"] == encoded and not claimed:
        return outcome(200, access_body(row), "access", ident, "noop")
    stamp = iso(now)
    new_origins = _origins(services, old, origin, stamp)
    for key in claimed:
        new_origins[key] = ["directory", stamp]
    origins = json.dumps(new_origins, sort_keys=True)
    new = {
        "user_id": user_id,
        "company_id": company_id,
        "services": encoded,
        "entries": origins,
        "version": 1 if row is None else row["version"] + 1,
        "updated_at": stamp,
    }
    if row is None:
        conn.execute(
            "INSERT INTO access (user_id, company_id, services, entries, version, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (user_id, company_id, encoded, origins, new["version"], stamp),
        )
    else:
        conn.execute(
            "UPDATE access SET services = ?, entries = ?, version = ?, updated_at = ?"
            " WHERE user_id = ? AND company_id = ?",
            (encoded, origins, new["version"], stamp, user_id, company_id),
        )
    return outcome(200, access_body(new), "access", ident, effect)


def grant_entry(
    conn: sqlite3.Connection,
    now: float,
    user_id: str,
    company_id: str,
    entry: tuple[str, str, str],
    origin: str,
) -> Outcome:
    """Grant one role, layout group or module (``entry`` = service, kind, name), leaving every
    other entry as it is: 200 ``granted`` (or ``noop`` when held already), 404, 422."""
    service, kind, name = known_service(entry[0]), known_kind(entry[1]), entry[2]
    _require(conn, "users", user_id, "user")
    _require(conn, "companies", company_id, "company")
    _check_catalogue(conn, {service: {kind: [name]}})
    row = _access_row(conn, user_id, company_id)
    services: Services = {} if row is None else json.loads(row["services"])
    names = services.setdefault(service, {k: [] for k in models.KINDS})[kind]
    if name not in names:
        names.append(name)
        names.sort()
    return _write_services(conn, now, user_id, company_id, services, origin, "granted", row)


def revoke_entry(
    conn: sqlite3.Connection,
    now: float,
    user_id: str,
    company_id: str,
    entry: tuple[str, str, str],
    if_match: str | None = None,
) -> Outcome:
    """Revoke one entry, leaving every other as it is: 200 ``revoked`` (``noop`` when not held).
    With ``If-Match`` (the entry's ``etag`` as last read), only the entry as it was read: 412
    when it changed since or is no longer held — checked in the write's own transaction, so a
    grant between the client's read and this revoke is never lost."""
    service, kind, name = known_service(entry[0]), known_kind(entry[1]), entry[2]
    _require(conn, "users", user_id, "user")
    _require(conn, "companies", company_id, "company")
    row = _access_row(conn, user_id, company_id)
    if row is None:
        raise not_found("access")
    services: Services = json.loads(row["services"])
    if if_match is not None:
        current = _entry_tag(services, row, f"{service}/{kind}/{name}")
        if not matches_tag(if_match, current):
            raise ApiError(
                412,
                "precondition_failed",
                "If-Match does not name the entry as it is now: it changed since it was read, "
                "or is no longer held (read the access again)",
            )
    names = services.get(service, {}).get(kind, [])
    if name in names:
        names.remove(name)
        if not any(services[service].values()):
            del services[service]
    return _write_services(conn, now, user_id, company_id, services, "directory", "revoked", row)


def _entry_tag(services: Services, row: Row, key: str) -> str | None:
    """The entry's tag as :func:`access_body` shows it, None when it is not held."""
    for e in _entries(services, json.loads(row["entries"] or "{}"), row["updated_at"]):
        if f"{e['service']}/{e['kind']}/{e['name']}" == key:
            return str(e["etag"])
    return None


def delete_access(
    conn: sqlite3.Connection, now: float, user_id: str, company_id: str, scope: str = "all"
) -> Outcome:
    """Revoke the user's access to the company: all of it, or (``scope="directory"``) the
    directory's entries only — entries of origin ``cloud`` stay (204 either way; 404)."""
    get_user_row(conn, user_id)
    get_company_row(conn, company_id)
    row = _access_row(conn, user_id, company_id)
    if row is None:
        raise not_found("access")
    ident = f"{user_id}/{company_id}"
    kept = _with_cloud_entries({}, row) if scope == "directory" else {}
    if not kept:
        conn.execute("DELETE FROM access WHERE user_id = ? AND company_id = ?", (user_id, company_id))
        return Outcome(204, None, Effect("access", ident, "revoked"))
    written = _write_services(conn, now, user_id, company_id, kept, "directory", "revoked", row)
    return Outcome(204, None, written.effect)


def list_access(conn: sqlite3.Connection, user_id: str) -> list[Body]:
    get_user_row(conn, user_id)
    return [
        access_body(r)
        for r in conn.execute("SELECT * FROM access WHERE user_id = ? ORDER BY rowid", (user_id,))
    ]
