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
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kernel.errors import ConfigurationError
from producers.mapping import RowRejected, SourceInfo, record_to_event
from producers.model import EntityRecord
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
    normalise_organisation_number,
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
    for ids in log.snapshot_ids(entity, batch_size):
        records = log.read_entities(entity, ids)
        for entity_id in ids:
            record = records.get(entity_id)
            if record is None:
                continue
            event, _rejections = as_snapshot(log, record, fingerprint_key, position, now)
            yield entity_id, event


def as_snapshot(
    log: ChangeLog, record: EntityRecord, fingerprint_key: bytes, position: int, now: datetime
) -> tuple[DirectoryEvent | None, list[RowRejected]]:
    """One entity's rows as the snapshot would emit them (``r`` at ``position``), or why
    capture rejects them."""
    return record_to_event(
        record,
        op=Op.READ,
        version=position,
        seq=position,
        committed_at=now.timestamp(),
        source=SourceInfo(store=log.store_kind, db=log.db_name),
        now=now,
        fingerprint_key=fingerprint_key,
        snapshot=True,
    )


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


@dataclass(frozen=True)
class FoundEntity:
    """One user or company of the store as capture reads it: ``state`` None when the store does
    not hold it (``entity_id`` None too when ``key`` matched nothing) or capture rejects it
    (``rejected``: why)."""

    key: str
    entity_id: str | None
    state: UserState | CompanyState | None
    rejected: str | None
    position: int


def _matches(entity: EntityType, record: EntityRecord, key: str) -> bool:
    if entity is EntityType.USER:
        return str(record.row.get("email") or "").strip().lower() == key.strip().lower()
    number = normalise_organisation_number(str(record.row.get("organisation_number") or ""))
    return bool(number) and number == normalise_organisation_number(key)


def find_entity(
    store_url: str, fingerprint_key: bytes, entity: EntityType, key: str, batch_size: int = 2000
) -> FoundEntity:
    """The user (by id or e-mail) or company (by id or organisation number) named by ``key``,
    read-only, mapped as capture maps it. An e-mail or organisation number is looked up by
    reading the store's ids in batches (an operator's question, not a hot path)."""
    if entity not in (EntityType.USER, EntityType.COMPANY):
        raise ConfigurationError(f"cannot look up a {entity.value} by key", hint="a user or a company")
    log = open_change_log(store_url, read_only=True)
    try:
        position = log.position()
        record = log.read_entities(entity, [key]).get(key)
        if record is None and ("@" in key if entity is EntityType.USER else any(c.isdigit() for c in key)):
            record = next(
                (
                    r
                    for _ids, rs in log.snapshot_batches(entity, batch_size)
                    for r in rs.values()
                    if _matches(entity, r, key)
                ),
                None,
            )
        if record is None:
            return FoundEntity(key, None, None, None, position)
        event, rejections = as_snapshot(log, record, fingerprint_key, position, datetime.now(UTC))
    finally:
        log.close()
    if event is None:
        reason = "; ".join(r.reason for r in rejections) or "rejected by capture"
        return FoundEntity(key, record.entity_id, None, reason, position)
    state = event.state
    assert isinstance(state, UserState | CompanyState)  # the entities looked up above
    return FoundEntity(key, record.entity_id, state, None, position)
