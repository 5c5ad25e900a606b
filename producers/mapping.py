"""Row → event mapping: pure, no I/O. The clock and the fingerprint key are arguments.

Validation happens here. A row that cannot become a valid event yields a
:class:`RowRejected` (which capture dead-letters with its reason and row reference) instead
of an event; part of a row that cannot be used (an access grant to an unknown application)
yields a rejection beside the event. A grant to a company the store does not hold (yet) is
part of the event: the planner parks it until the company is known (the store has no foreign
keys, and the company may be committed a moment later). *Any* exception while mapping one row is such a
rejection, never an exception out of here: one bad row must not stop the capture.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from producers.model import EntityRecord
from schemas.directory import (
    ApplicationType,
    EntityType,
)
from schemas.events import EVENT_BY_ENTITY, Op, event_id_for
from schemas.fingerprint import license_fingerprint


@dataclass(frozen=True, slots=True)
class RowRejected:
    """A source row that failed validation. ``row_ref`` names the row, never its secrets."""

    entity: EntityType
    entity_id: str
    reason: str
    row_ref: str
    version: int
    exception: str = "RowRejected"  # the class of the error that rejected it, for the DLQ headers


@dataclass(frozen=True, slots=True)
class SourceInfo:
    store: str  # 'sqlite' | 'postgresql'
    db: str


_KIND_FIELD = {"role": "roles", "layout_group": "layout_groups", "module": "modules"}


def _access_list(
    access: tuple[tuple[str, str, str, str], ...],
    cloud_access: tuple[tuple[str, str, str, str], ...] = (),
) -> tuple[list[dict[str, Any]], list[str]]:
    """Group (company, application, kind, name) rows; returns grants and invalid-row reasons.

    Grants are plain dicts in the shape of ``CompanyAccess``: the event is validated once, as
    a whole, in :func:`record_to_event` (one pydantic call per event instead of one per model).
    ``cloud_access`` (rows of origin ``cloud``) go to each company's ``cloud_origin``.
    """
    grouped: dict[str, dict[str, dict[str, dict[str, list[str]]]]] = {}
    problems: list[str] = []
    for part, rows in (("services", access), ("cloud_origin", cloud_access)):
        for company_id, application, kind, name in rows:
            if application not in _APPLICATIONS:
                problems.append(f"access {company_id}/{application}/{kind}/{name}: unknown application")
                continue
            field = _KIND_FIELD.get(kind)
            if field is None:
                problems.append(f"access {company_id}/{application}/{kind}/{name}: unknown kind")
                continue
            company = grouped.setdefault(company_id, {"services": {}, "cloud_origin": {}})
            company[part].setdefault(application, {}).setdefault(field, []).append(name)
    grants = [
        {
            "company_id": company_id,
            **{
                part: {app: {k: sorted(v) for k, v in kinds.items()} for app, kinds in sorted(apps.items())}
                for part, apps in parts.items()
            },
        }
        for company_id, parts in sorted(grouped.items())
    ]
    return grants, problems


_APPLICATIONS = frozenset(ApplicationType._value2member_map_)


def _state(record: EntityRecord, fingerprint_key: bytes) -> tuple[dict[str, Any], list[str]]:
    """The entity's state as a dict in the shape of its state model (validated with the event)."""
    row = record.row
    entity = record.entity
    if entity is EntityType.USER:
        grants, problems = _access_list(record.access, record.cloud_access)
        state = {
            "id": row["id"],
            "username": row["username"],
            "email": row["email"],
            "first_name": row["first_name"],
            "last_name": row["last_name"],
            "language": row["language"],
            "active": bool(row["active"]),
            "access": grants,
        }
        return state, problems
    if entity is EntityType.COMPANY:
        return dict(row), []
    if entity in (EntityType.ROLE, EntityType.LAYOUT_GROUP, EntityType.MODULE):
        return {"id": record.entity_id, **row}, []
    if entity is EntityType.APPLICATION_INSTANCE:
        if record.instances > 1:
            raise ValueError(
                f"{record.instances} instances of application type {record.entity_id}; "
                "VUD supports a single instance per application type"
            )
        return {
            "id": record.entity_id,
            "application": row["application"],
            "uri": row["uri"],
            "license_fingerprint": license_fingerprint(row["license_key"], fingerprint_key),
        }, []
    raise ValueError(f"unknown entity type {entity}")


def row_ref(entity: EntityType, entity_id: str) -> str:
    return f"{entity.value}:{entity_id}"


#: columns whose value is a secret: never in a reason, whatever the exception's message says
_SECRET_COLUMNS = ("license_key",)
_EXPECTED = (ValidationError, ValueError, KeyError, TypeError)


def _reason(exc: Exception, row: dict[str, Any]) -> str:
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        loc = tuple(first.get("loc", ()))
        where = ".".join(str(p) for p in (loc[1:] if loc[:1] == ("state",) else loc))  # names the column
        return f"invalid {where}: {first.get('msg')}"
    text = str(exc) if isinstance(exc, _EXPECTED) else f"{type(exc).__name__} while mapping: {exc}"
    for column in _SECRET_COLUMNS:
        value = row.get(column)
        if value:
            for shown in {repr(value), str(value)}:
                text = text.replace(shown, f"<{column}>")
    return text


def record_to_event(
    record: EntityRecord,
    *,
    op: Op,
    version: int,
    seq: int,
    committed_at: float,
    source: SourceInfo,
    now: datetime,
    fingerprint_key: bytes,
    snapshot: bool = False,
) -> tuple[Any | None, list[RowRejected]]:
    """Map the current rows of one entity to its event (or a rejection).

    Returns ``(event, rejections)``: ``event`` is None when the entity itself is invalid.
    """
    try:
        state, problems = _state(record, fingerprint_key)
        event = EVENT_BY_ENTITY[record.entity].model_validate(
            {
                "event_id": event_id_for(record.entity, record.entity_id, version, op),
                "entity_id": record.entity_id,
                "version": version,
                "op": op,
                "ts": now,
                "source": {
                    "store": source.store,
                    "db": source.db,
                    "seq": seq,
                    "snapshot": snapshot,
                    "committed_at": datetime.fromtimestamp(committed_at, UTC),
                },
                "state": state,
                **(
                    {"access_changed_at": _entry_times(record.access_times)}
                    if record.entity is EntityType.USER
                    else {}
                ),
            }
        )
    except Exception as exc:  # any of them: the row is rejected, the capture goes on
        return None, [
            RowRejected(
                record.entity,
                record.entity_id,
                _reason(exc, record.row),
                row_ref(record.entity, record.entity_id),
                version,
                type(exc).__name__,
            )
        ]
    rejections = [
        RowRejected(record.entity, record.entity_id, p, row_ref(record.entity, record.entity_id), version)
        for p in problems
    ]
    return event, rejections


def _entry_times(times: tuple[tuple[str, float], ...]) -> dict[str, datetime]:
    """``UserChanged.access_changed_at`` from a record's entry times, in key order (the same
    event JSON however the store returned its rows)."""
    return {key: datetime.fromtimestamp(at, UTC) for key, at in sorted(times)}


def deleted_record(entity: EntityType, entity_id: str, before: dict[str, Any] | None) -> EntityRecord:
    """The record of a deleted entity, from its last known state in the change log.

    Application instances keep no license key in the change log, so their last state
    carries the fingerprint of an empty key; consumers only need the application type.
    """
    row = dict(before or {})
    if entity is EntityType.USER:
        row.setdefault("active", 0)
    elif entity is EntityType.APPLICATION_INSTANCE:
        row.setdefault("application", entity_id)
        row.setdefault("uri", "(deleted)")
        row["license_key"] = ""
    elif entity in (EntityType.ROLE, EntityType.LAYOUT_GROUP, EntityType.MODULE):
        row = {k: v for k, v in row.items() if k != "id"}
    return EntityRecord(entity, entity_id, row)
