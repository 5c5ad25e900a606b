"""Reads the full state of the directory store, exactly as the producer would capture it.

Through the producer's ``ChangeLog`` port (``producers.service.open_change_log``: SQLite or
PostgreSQL) and its pure row → state mapping, so that verify judges the cloud by the very
states the pipeline syncs (access to unknown companies left out, license keys only as
fingerprints, invalid rows counted as rejected).

The store is opened **read-only**, and a store that does not exist or holds no users is
refused (:class:`~vudsync.errors.ConfigurationError`): compared with it, every cloud user
would look "removed on premise", and a repair would deactivate them all. (A wrong working
directory with a relative SQLite path used to create exactly such an empty store.)
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from kernel.errors import ConfigurationError
from producers.mapping import SourceInfo, record_to_event
from producers.ports import ChangeLog
from producers.service import open_change_log
from schemas.directory import (
    ApplicationInstanceState,
    ApplicationType,
    CompanyState,
    EntityType,
    LayoutGroupState,
    ModuleState,
    RoleState,
    UserState,
)
from schemas.events import DirectoryEvent, Op
from vudsync.ops.drift import CatalogueKey, DirectoryState


def snapshot_events(
    log: ChangeLog,
    entity: EntityType,
    fingerprint_key: bytes,
    *,
    position: int,
    now: datetime,
    batch_size: int,
) -> Iterator[tuple[str, DirectoryEvent | None]]:
    """Each ``entity`` of the store as the snapshot would emit it (``r`` at ``position``), by
    id; None for a row capture would dead-letter (an invalid e-mail, a second instance of a
    type)."""
    source = SourceInfo(store=log.store_kind, db=log.db_name)
    for ids in log.snapshot_ids(entity, batch_size):
        records = log.read_entities(entity, ids)
        for entity_id in ids:
            record = records.get(entity_id)
            if record is None:
                continue
            event, _rejections = record_to_event(
                record,
                op=Op.READ,
                version=position,
                seq=position,
                committed_at=now.timestamp(),
                source=source,
                now=now,
                fingerprint_key=fingerprint_key,
                snapshot=True,
            )
            yield entity_id, event


def read_directory(store_url: str, fingerprint_key: bytes, batch_size: int = 2000) -> DirectoryState:
    """Every entity of the store now; ``version`` is the change-log position read first."""
    log = open_change_log(store_url, read_only=True)
    try:
        if log.count(EntityType.USER) == 0:
            raise ConfigurationError(
                f"the directory store {log.db_name} holds no users: refusing to compare the cloud with it",
                hint="check VUDSYNC_STORE_URL (a relative SQLite path depends on the working directory)",
            )
        position = log.position()
        now = datetime.now(UTC)
        states: dict[EntityType, list[Any]] = {e: [] for e in EntityType}
        rejected: dict[EntityType, set[str]] = {e: set() for e in EntityType}
        for entity in EntityType:
            read = snapshot_events(
                log, entity, fingerprint_key, position=position, now=now, batch_size=batch_size
            )
            for entity_id, event in read:
                if event is None:
                    rejected[entity].add(entity_id)
                else:
                    states[entity].append(event.state)
    finally:
        log.close()
    catalogue: dict[CatalogueKey, str] = {}
    for role in states[EntityType.ROLE]:
        assert isinstance(role, RoleState)
        catalogue[(role.application.value, "roles", role.name)] = role.description
    for group in states[EntityType.LAYOUT_GROUP]:
        assert isinstance(group, LayoutGroupState)
        catalogue[(group.application.value, "layout_groups", group.name)] = group.description
    for module in states[EntityType.MODULE]:
        assert isinstance(module, ModuleState)
        catalogue[(module.application.value, "modules", module.code)] = module.name
    users: dict[str, UserState] = {u.id: u for u in states[EntityType.USER]}
    companies: dict[str, CompanyState] = {c.id: c for c in states[EntityType.COMPANY]}
    instances: dict[ApplicationType, ApplicationInstanceState] = {
        i.application: i for i in states[EntityType.APPLICATION_INSTANCE]
    }
    others = sum(len(v) for e, v in rejected.items() if e not in (EntityType.USER, EntityType.COMPANY))
    return DirectoryState(
        position,
        users,
        companies,
        catalogue,
        instances,
        frozenset(rejected[EntityType.USER]),
        frozenset(rejected[EntityType.COMPANY]),
        others,
    )
