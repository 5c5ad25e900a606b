"""Plain records the change-log adapters return; the pure mapping turns them into events."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from schemas.directory import EntityType


@dataclass(frozen=True, slots=True)
class ChangeRow:
    """One change-log row: entity ``entity``/``entity_id`` changed at position ``seq``."""

    seq: int
    entity: EntityType
    entity_id: str
    op: str  # 'c' | 'u' | 'd'
    committed_at: float  # unix seconds
    before: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class EntityRecord:
    """The current rows of one entity, as read from the store.

    ``row`` holds the entity's own columns. For users, ``access`` lists
    ``(company_id, application, kind, name)`` tuples and ``unknown_companies`` the company ids
    among them that do not exist. For application instances, ``row`` holds the license key
    (never leaves the producer) and ``instances`` counts the instances of that type.
    """

    entity: EntityType
    entity_id: str
    row: dict[str, Any]
    access: tuple[tuple[str, str, str, str], ...] = ()
    unknown_companies: frozenset[str] = field(default_factory=frozenset)
    instances: int = 1
