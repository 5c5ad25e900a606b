"""Directory events: what changed in the directory store, in Debezium's vocabulary.

An event carries the entity's full current state (event-carried state). ``op`` is ``r``
(read during a snapshot), ``c`` (create), ``u`` (update) or ``d`` (delete; ``state`` is
then the last known state, and a tombstone follows on the topic). ``version`` is the
entity's monotonic source version: a consumer that has seen version V ignores any event
with a version ≤ V.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field, TypeAdapter

from schemas.base import Message
from schemas.directory import (
    ApplicationInstanceState,
    CompanyState,
    EntityType,
    LayoutGroupState,
    ModuleState,
    RoleState,
    UserState,
)

_EVENT_NAMESPACE = uuid.UUID("6f1d3c52-9a2e-4c1b-8f7e-0a5d2b9c4e10")


class Op(StrEnum):
    READ = "r"
    CREATE = "c"
    UPDATE = "u"
    DELETE = "d"


class Source(Message):
    """Where and when the change happened in the directory store."""

    store: Literal["sqlite", "postgresql"]
    db: str = Field(description="database name or file name (no credentials)")
    seq: int = Field(ge=0, description="change-log position of the change")
    snapshot: bool = False
    committed_at: datetime = Field(description="when the change was committed in the store")


class Repair(Message):
    """What ``vudsync verify --repair`` asks the planner to re-assert with an event: the
    entity's current state (or, for one the store no longer holds, its removal) for the slots
    the cloud differs in — planned even if the state is not newer than the one the planner has
    seen, through the same gates as any directory event.

    ``run`` tells repairs apart: it is derived from the drift verify saw (including the cloud
    object's version), so a repair of the same drift sent twice plans the same operation ids,
    and a repair of a new drift plans new ones. ``cloud_ids`` are the cloud ids verify found
    linked (by external id) to the entity and to the companies of its access slots: the
    planner uses them where it has not learned them itself (an entity it never planned)."""

    run: str = Field(min_length=1, max_length=64, pattern=r"^[0-9A-Za-z_-]+$")
    slots: tuple[str, ...] = Field(
        min_length=1, description='"user", "company", "catalogue" or "access:<company id>"'
    )
    cloud_ids: dict[str, str] = Field(
        default_factory=dict, description='"user:<id>" / "company:<id>" -> the linked cloud id'
    )
    apps: dict[str, tuple[str, ...]] = Field(
        default_factory=dict,
        description="per access slot, the applications the cloud holds there (they are touched too)",
    )


class _DirectoryEvent(Message):
    event_id: str
    entity_id: str = Field(min_length=1)
    version: int = Field(ge=0)
    op: Op
    ts: datetime = Field(description="when the producer emitted the event")
    source: Source
    repair: Repair | None = Field(
        default=None, description="set by `vudsync verify --repair` only: re-assert this state"
    )


def access_entry_key(company_id: str, application: str, kind: str, name: str) -> str:
    """``<company>|<application>/<kind>/<name>``: one access entry of a user, ``kind`` the
    store's (``role``, ``layout_group``, ``module``); the keys of
    :attr:`UserChanged.access_changed_at`."""
    return f"{company_id}|{application}/{kind}/{name}"


class UserChanged(_DirectoryEvent):
    entity: Literal[EntityType.USER] = EntityType.USER
    state: UserState
    access_changed_at: dict[str, datetime] = Field(
        default_factory=dict,
        description=(
            "each access entry's own change time in the store, by access_entry_key: when an "
            "entry the state holds was granted, when one it no longer holds was removed. "
            "Capture folds a user's changes into one event at the last one's time; the "
            "conflict rule judges each entry at its own. An entry not listed (an event "
            "written before the store kept these times, a snapshot) counts at source.committed_at"
        ),
    )

    def entry_changed_at(self, company_id: str, application: str, kind: str, name: str) -> datetime:
        """When the store last changed this access entry: its own time, else the event's."""
        return self.access_changed_at.get(
            access_entry_key(company_id, application, kind, name), self.source.committed_at
        )


class CompanyChanged(_DirectoryEvent):
    entity: Literal[EntityType.COMPANY] = EntityType.COMPANY
    state: CompanyState


class RoleChanged(_DirectoryEvent):
    entity: Literal[EntityType.ROLE] = EntityType.ROLE
    state: RoleState


class LayoutGroupChanged(_DirectoryEvent):
    entity: Literal[EntityType.LAYOUT_GROUP] = EntityType.LAYOUT_GROUP
    state: LayoutGroupState


class ModuleChanged(_DirectoryEvent):
    entity: Literal[EntityType.MODULE] = EntityType.MODULE
    state: ModuleState


class ApplicationInstanceChanged(_DirectoryEvent):
    entity: Literal[EntityType.APPLICATION_INSTANCE] = EntityType.APPLICATION_INSTANCE
    state: ApplicationInstanceState


DirectoryEvent = Annotated[
    UserChanged
    | CompanyChanged
    | RoleChanged
    | LayoutGroupChanged
    | ModuleChanged
    | ApplicationInstanceChanged,
    Field(discriminator="entity"),
]

DIRECTORY_EVENT_ADAPTER: TypeAdapter[DirectoryEvent] = TypeAdapter(DirectoryEvent)

EVENT_BY_ENTITY: dict[EntityType, type[_DirectoryEvent]] = {
    EntityType.USER: UserChanged,
    EntityType.COMPANY: CompanyChanged,
    EntityType.ROLE: RoleChanged,
    EntityType.LAYOUT_GROUP: LayoutGroupChanged,
    EntityType.MODULE: ModuleChanged,
    EntityType.APPLICATION_INSTANCE: ApplicationInstanceChanged,
}


_EVENT_NAMESPACE_BYTES = _EVENT_NAMESPACE.bytes
# the UUID variant nibble (RFC 4122: 10xx) for each hex digit the hash puts there
_VARIANT_NIBBLE = {d: "0123456789abcdef"[(int(d, 16) & 0x3) | 0x8] for d in "0123456789abcdef"}


def event_id_for(entity: EntityType, entity_id: str, version: int, op: Op) -> str:
    """Deterministic: a re-send of the same change carries the same event id.

    The id is the name-based UUID (version 5) of ``entity|entity_id|version|op`` in the event
    namespace, i.e. exactly ``str(uuid.uuid5(_EVENT_NAMESPACE, name))``, computed with one
    SHA-1 call and string slicing: ``uuid.uuid5`` builds a UUID object per call, which cost
    about 12 % of a snapshot's CPU (docs/benchmarks.md, "Change capture").
    """
    name = f"{entity.value}|{entity_id}|{version}|{op.value}"
    h = hashlib.sha1(_EVENT_NAMESPACE_BYTES + name.encode(), usedforsecurity=False).hexdigest()
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT_NIBBLE[h[16]]}{h[17:20]}-{h[20:32]}"
