"""The sink's ledger adapters against the real databases: SQLite (a file) and PostgreSQL (a
throwaway server), and a sink worker running on the PostgreSQL ledger."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.bench.sink import AuditReader, feed, prepare_workload
from devtools.processes import wait_until
from kernel.settings import Settings
from schemas.topics import OPERATIONS
from sinks.ledger import SqliteLedger
from sinks.ledger_postgres import PostgresLedger
from sinks.ports import Ledger
from tests.fixtures.cloud import CloudReader
from tests.pipeline import alive_or_fail, components
from tests.sqlite_files import rows_in_main_file, threads_named


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[object]:
    opened: list[Ledger] = []

    def make(scope: str = "") -> Ledger:
        if request.param == "sqlite":
            ledger: Ledger = SqliteLedger(tmp_path / f"{scope}ledger.db")
        else:
            ledger = PostgresLedger(request.getfixturevalue("postgres_url"), scope=scope)
        opened.append(ledger)
        return ledger

    yield make
    for ledger in opened:
        ledger.close()


def test_applied_ids_are_kept_once_and_survive_a_reopen(ledger_factory) -> None:  # type: ignore[no-untyped-def]
    ledger = ledger_factory("a-")
    assert ledger.get("op-1") is None and ledger.get_many([]) == {}
    ledger.record_many([("op-1", {"cloud_id": "cu-1", "effect": "created"}), ("op-2", {"effect": "noop"})])
    ledger.record_many([("op-1", {"cloud_id": "other", "effect": "updated"})])  # known: kept as it was
    assert ledger.get("op-1") == {"cloud_id": "cu-1", "effect": "created"}
    assert ledger.get_many(["op-2", "op-3", "op-1"]) == {
        "op-1": {"cloud_id": "cu-1", "effect": "created"},
        "op-2": {"effect": "noop"},
    }
    ledger.close()
    again = ledger_factory("a-")
    assert set(again.get_many([f"op-{i}" for i in range(1000)])) == {"op-1", "op-2"}
    assert ledger_factory("b-").get("op-1") is None  # another installation's scope


def test_a_link_intent_survives_a_reopen_until_its_outcome_is_recorded(ledger_factory) -> None:  # type: ignore[no-untyped-def]
    """The write-ahead intent of a company link (sinks.writes.link_intent): durable before the
    link is sent, still there for the worker after a crash, ended by the operation's outcome."""
    ledger = ledger_factory("i-")
    assert ledger.intents(["op-co"]) == {} and ledger.intents([]) == {}
    ledger.record_intents([("op-co", {"cloud_id": "cc-0", "effect": "linked", "details": {}})])
    intent = {"cloud_id": "cc-7", "effect": "linked", "details": {"review": ["name"]}}
    ledger.record_intents([("op-co", intent), ("op-other", {"cloud_id": "cc-8", "effect": "linked"})])
    ledger.close()  # the worker was killed after the link, before its ledger entry
    again = ledger_factory("i-")
    assert again.intents(["op-co", "op-none"]) == {"op-co": intent}  # the newer intent
    assert ledger_factory("j-").intents(["op-co"]) == {}  # another installation's scope
    again.record_many([("op-co", {"cloud_id": "cc-7", "effect": "linked", "details": {"review": ["name"]}})])
    assert again.intents(["op-co", "op-other"]) == {"op-other": {"cloud_id": "cc-8", "effect": "linked"}}
    assert again.get("op-co") == {"cloud_id": "cc-7", "effect": "linked", "details": {"review": ["name"]}}


def test_a_slots_applied_version_only_rises_in_one_transaction_with_the_ids(ledger_factory) -> None:  # type: ignore[no-untyped-def]
    ledger = ledger_factory("v-")
    assert ledger.applied_versions(["user:u1"]) == {}
    ledger.record_many([("op-12", {"effect": "updated"})], [("user:u1", 12), ("user:u1|access:c1", 12)])
    ledger.record_many([("op-10", {"effect": "updated"})], [("user:u1", 10)])  # older: the slot keeps 12
    ledger.record_many([], [("user:u1|access:c1", 13)])
    assert ledger.applied_versions(["user:u1", "user:u1|access:c1", "user:u2"]) == {
        "user:u1": 12,
        "user:u1|access:c1": 13,
    }
    ledger.close()
    again = ledger_factory("v-")
    assert again.applied_versions([f"user:u{i}" for i in range(1200)]) == {"user:u1": 12}
    assert ledger_factory("w-").applied_versions(["user:u1"]) == {}  # another installation's scope


def test_the_sqlite_ledger_checkpoints_in_its_own_thread_not_in_record_many(tmp_path: Path) -> None:
    """``record_many`` commits on the sink's event loop: the checkpoints happen elsewhere."""
    path = tmp_path / "ledger.db"
    before = threads_named("ledger-checkpointer")
    ledger = SqliteLedger(path)
    assert ledger._conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    assert threads_named("ledger-checkpointer") == before + 1
    for batch in range(20):  # in batches, as the sink records them
        ledger.record_many(
            [(f"op-{batch}-{i}", {"cloud_id": f"cu-{i}", "effect": "updated"}) for i in range(500)]
        )
    wait_until(lambda: rows_in_main_file(path, "applied") == 10_000, 30, what="checkpointed ledger rows")
    ledger.close()
    assert threads_named("ledger-checkpointer") == before
    assert not path.with_name("ledger.db-wal").exists()
    again = SqliteLedger(path)
    try:
        assert len(again.get_many([f"op-19-{i}" for i in range(500)])) == 500
    finally:
        again.close()


def test_a_sink_on_the_postgresql_ledger_records_every_applied_operation(
    catalogued_settings: Settings, kafka_bootstrap: str, cloud: CloudReader, postgres_url: str
) -> None:
    settings = catalogued_settings
    work = prepare_workload(cloud.client, 300)
    feed(kafka_bootstrap, settings.topic(OPERATIONS.name), work.operations)
    reader = AuditReader(cloud.client, work)
    with components(settings, kafka_bootstrap, "sink", VUDSYNC_SINK_LEDGER_URL=postgres_url) as procs:
        wait_until(lambda: alive_or_fail(procs) and reader.poll() >= len(work.keys), 120, what="all applied")
    assert reader.check().exactly_once
    ledger = PostgresLedger(postgres_url, scope=settings.topic_prefix)
    try:
        wait_until(lambda: ledger.count() == len(work.operations), 30, what="every id in the ledger")
        known = ledger.get_many([op.operation_id for op in work.operations[:10]])
        assert all(entry["effect"] in ("updated", "assigned", "published") for entry in known.values())
    finally:
        ledger.close()
    assert not (settings.home / "sink" / f"{settings.topic_prefix}ledger.db").exists()
