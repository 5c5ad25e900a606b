"""Reads the full state of the directory store, exactly as the producer would capture it.

Through the producer's ``ChangeLog`` port (``producers.service.open_change_log``: SQLite or
PostgreSQL) and its pure row → state mapping, so that verify judges the cloud by the very
states the pipeline syncs (access to unknown companies left out, license keys only as
fingerprints, invalid rows counted as rejected).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from producers.mapping import SourceInfo, record_to_event
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
from schemas.events import Op
from vudsync.ops.drift import CatalogueKey, DirectoryState


def read_directory(store_url: str, fingerprint_key: bytes, batch_size: int = 2000) -> DirectoryState:
    """Every entity of the store now; ``version`` is the change-log position read first."""
    log = open_change_log(store_url)
    try:
        position = log.position()
        source = SourceInfo(store=log.store_kind, db=log.db_name)
        now = datetime.now(UTC)
        states: dict[EntityType, list[Any]] = {e: [] for e in EntityType}
        rejected = 0
        for entity in EntityType:
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
                    if event is None:
                        rejected += 1
                        continue
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
    return DirectoryState(position, users, companies, catalogue, instances, rejected)
