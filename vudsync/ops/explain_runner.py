"""Gathers what ``vudsync explain`` shows: the store (read-only), the journal index brought up to
date from Kafka (as ``vudsync status`` and ``journal`` do), and the cloud API (read scope, as
verify reads it). The judgement is the pure :mod:`vudsync.ops.explain`."""

from __future__ import annotations

import time
from collections.abc import Callable

from pydantic import SecretStr

from kernel.settings import Settings
from schemas.directory import EntityType
from vudsync.ops.cloud_reader import HttpCloudReader
from vudsync.ops.directory_reader import find_entity
from vudsync.ops.drift import CloudState
from vudsync.ops.explain import DirectoryView, Explanation, explain
from vudsync.ops.journal import JournalEntry, JournalFilter, WaitingOperation
from vudsync.ops.journal_index import SqliteJournalIndex
from vudsync.ops.journal_sync import JournalIndexer, journal_path
from vudsync.ops.kafka_admin import group_admin

JOURNAL_READ = 500  # the entity's newest journal entries the planner's view is judged from


def catch_up_journal(
    settings: Settings,
    bootstrap: str,
    index: SqliteJournalIndex,
    timeout: float = 600,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Index what the journal's topics hold now (``progress``: records read, per batch);
    returns the entries added."""
    indexer = JournalIndexer(settings, bootstrap, index)
    try:
        with group_admin(bootstrap, security=settings.kafka_security()) as admin:
            return indexer.catch_up(admin, timeout=timeout, progress=progress)
    finally:
        indexer.close()


def read_directory_view(settings: Settings, entity: EntityType, key: str) -> DirectoryView:
    found = find_entity(
        settings.resolved_store_url(),
        settings.require_secret("fingerprint_key").encode(),
        entity,
        key,
        settings.capture_batch_size,
    )
    return DirectoryView(found.key, found.entity_id, found.state, found.rejected, found.position)


def read_cloud(settings: Settings, entity: EntityType, entity_id: str | None) -> CloudState:
    if entity_id is None:
        return CloudState([], [], {}, {}, {})
    secret = settings.require_secret("cloud_client_secret")
    reader = HttpCloudReader(settings.cloud_url, settings.cloud_client_id, SecretStr(secret))
    try:
        return reader.read_one(entity, entity_id)
    finally:
        reader.close()


def explain_from(
    settings: Settings,
    index: SqliteJournalIndex,
    entity: EntityType,
    directory: DirectoryView,
    shown: int = 10,
) -> Explanation:
    """The explanation from the index as it is now (the caller brought it up to date)."""
    entity_id = directory.entity_id
    journal: list[JournalEntry] = []
    waiting: list[WaitingOperation] = []
    dependents: tuple[list[WaitingOperation], int] = ([], 0)
    if entity_id is not None:
        rows = index.query(JournalFilter(entity_id=entity_id, limit=JOURNAL_READ))
        journal = [e for _, e in rows if e.entity == entity.value]
        waiting, _ = index.waiting(entity_id=entity_id)
        waiting = [w for w in waiting if w.entry.entity == entity.value]
        dependents = index.waiting(need=f"{entity.value}:{entity_id}", limit=5)
    cloud = read_cloud(settings, entity, entity_id)
    return explain(entity, directory, journal, waiting, cloud, time.time(), shown, dependents)


def explain_entity(
    settings: Settings,
    bootstrap: str,
    entity: EntityType,
    key: str,
    *,
    shown: int = 10,
    progress: Callable[[int], None] | None = None,
) -> Explanation:
    directory = read_directory_view(settings, entity, key)
    index = SqliteJournalIndex(journal_path(settings))
    try:
        catch_up_journal(settings, bootstrap, index, progress=progress)
        return explain_from(settings, index, entity, directory, shown)
    finally:
        index.close()
