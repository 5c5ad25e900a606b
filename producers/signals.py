"""Ad-hoc snapshots requested through the signal table (Debezium's signals). Pure.

``vudsync snapshot`` writes a :class:`SnapshotSignal` (pending) into the store's
``capture_signal`` table; the running producer claims it between batches, emits the chosen
entities' current state again as snapshot events, records its progress, and marks it done.
This module holds what both sides agree on: the entity names an operator types, the filter
(``--where``) and the row, with no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from schemas.directory import EntityType

# Catalogues before the objects that refer to them; companies before users.
SNAPSHOT_ORDER: tuple[EntityType, ...] = (
    EntityType.APPLICATION_INSTANCE,
    EntityType.ROLE,
    EntityType.LAYOUT_GROUP,
    EntityType.MODULE,
    EntityType.COMPANY,
    EntityType.USER,
)

#: the names ``vudsync snapshot --entity`` takes, as the directory topics call them
ENTITY_NAMES: dict[str, EntityType] = {
    "users": EntityType.USER,
    "companies": EntityType.COMPANY,
    "roles": EntityType.ROLE,
    "layout-groups": EntityType.LAYOUT_GROUP,
    "modules": EntityType.MODULE,
    "application-instances": EntityType.APPLICATION_INSTANCE,
}
NAME_OF: dict[EntityType, str] = {e: n for n, e in ENTITY_NAMES.items()}


class SignalStatus(StrEnum):
    PENDING = "pending"  # written by the command; no producer has claimed it yet
    RUNNING = "running"  # claimed: being emitted (``emitted`` of ``total``)
    DONE = "done"  # every chosen entity emitted and acknowledged by the broker
    FAILED = "failed"  # stopped by an error (``error``); nothing is retried by itself
    CANCELLED = "cancelled"  # the command gave up before a producer claimed it

    @property
    def open(self) -> bool:
        return self in (SignalStatus.PENDING, SignalStatus.RUNNING)


class FilterError(ValueError):
    """A ``--where`` the snapshot cannot apply; the message says what it accepts."""


@dataclass(frozen=True)
class Where:
    """One simple filter: ``id=<id>[,<id>…]`` (any entity) or ``company=<id>`` (users with
    access in that company; the company itself)."""

    field: str
    values: tuple[str, ...]

    def text(self) -> str:
        return f"{self.field}={','.join(self.values)}"

    def applies_to(self, entity: EntityType) -> bool:
        return self.field == "id" or entity in (EntityType.USER, EntityType.COMPANY)


FIELDS = ("id", "company")


def parse_where(text: str | None) -> Where | None:
    """``company=c1`` → ``Where('company', ('c1',))``; None stays None."""
    if text is None or not text.strip():
        return None
    field, sep, value = text.partition("=")
    field = field.strip().lower()
    values = tuple(v.strip() for v in value.split(",") if v.strip())
    if not sep or field not in FIELDS or not values:
        raise FilterError(f"cannot read --where {text!r}: use id=<id>[,<id>…] or company=<id>")
    if field == "company" and len(values) != 1:
        raise FilterError("--where company= takes one company id")
    return Where(field, values)


def check_where(where: Where | None, entities: tuple[EntityType, ...]) -> None:
    """Raises :class:`FilterError` when the filter means nothing for one of the entities."""
    if where is None:
        return
    wrong = [NAME_OF[e] for e in entities if not where.applies_to(e)]
    if wrong:
        raise FilterError(f"--where {where.field}= applies to users and companies, not {', '.join(wrong)}")


def parse_entities(names: tuple[str, ...]) -> tuple[EntityType, ...]:
    """Entity names in snapshot order (catalogues before the objects that refer to them,
    companies before users, as the initial snapshot); none given means all."""
    unknown = [n for n in names if n not in ENTITY_NAMES]
    if unknown:
        raise FilterError(f"unknown entity {', '.join(unknown)}: choose from {', '.join(ENTITY_NAMES)}")
    chosen = {ENTITY_NAMES[n] for n in names} or set(SNAPSHOT_ORDER)
    return tuple(e for e in SNAPSHOT_ORDER if e in chosen)


@dataclass(frozen=True)
class SnapshotSignal:
    """One row of ``capture_signal``."""

    id: int
    entities: tuple[EntityType, ...]
    where: Where | None
    status: SignalStatus
    requested_at: float
    started_at: float | None = None
    finished_at: float | None = None
    position: int | None = None
    emitted: int = 0
    total: int | None = None
    error: str | None = None

    def describe(self) -> str:
        what = ", ".join(NAME_OF[e] for e in self.entities)
        return what + (f" where {self.where.text()}" if self.where else "")

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "entities": [NAME_OF[e] for e in self.entities],
            "where": self.where.text() if self.where else None,
            "status": self.status.value,
            "requested_at": self.requested_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "position": self.position,
            "emitted": self.emitted,
            "total": self.total,
            "error": self.error,
        }


def encode_entities(entities: tuple[EntityType, ...]) -> str:
    return ",".join(e.value for e in entities)


def decode_entities(text: str) -> tuple[EntityType, ...]:
    return tuple(EntityType(v) for v in text.split(",") if v)
