"""Ad-hoc snapshots (``vudsync snapshot``): a request in the store's signal table, served by a
running capture loop beside streaming, on SQLite and PostgreSQL, to the real broker."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from devtools.seed.writer import DirectoryWriter
from kernel.publishing.kafka_python import KafkaRecordPublisher
from kernel.settings import Settings
from producers.adhoc import AdhocSnapshots
from producers.capture import ChangeCapture
from producers.signal_table import SignalTable, open_signal_table
from producers.signals import SignalStatus, SnapshotSignal, parse_where
from schemas.codec import decode_event
from schemas.directory import EntityType
from schemas.topics import DIRECTORY_TOPICS
from tests.integration.conftest import MakeCapture
from tests.kafka_read import read_all
from vudsync.topics import ensure_catalogue


@dataclass
class Rig:
    """A store (seeded by the test), its signal table, and ``start()``: the capture loop with
    ad-hoc snapshots, on a thread until the test ends."""

    settings: Settings
    bootstrap: str
    writer: DirectoryWriter
    table: SignalTable
    start: Callable[[], ChangeCapture]

    def users(self, until: Callable[[list[Any]], bool]) -> list[Any]:
        """The users topic once ``until`` holds, read again whole (what else arrived counts too)."""
        topic = self.settings.topic(DIRECTORY_TOPICS[EntityType.USER].name)
        read_all(self.bootstrap, topic, until=until)
        return read_all(self.bootstrap, topic)


@pytest.fixture
def rig(
    kafka_settings: Settings,
    kafka_bootstrap: str,
    store_url: str,
    writer: DirectoryWriter,
    make_capture: MakeCapture,
) -> Iterator[Rig]:
    ensure_catalogue(kafka_settings, kafka_bootstrap)
    stop = threading.Event()
    threads: list[threading.Thread] = []
    tables = [open_signal_table(store_url)]

    def start() -> ChangeCapture:
        capture = make_capture(kafka_settings, store_url)
        tables.append(open_signal_table(store_url))

        def worker() -> ChangeCapture:
            return ChangeCapture(
                capture.log, KafkaRecordPublisher(kafka_bootstrap), capture.metrics, capture.config
            )

        capture.adhoc = AdhocSnapshots(tables[-1], worker, poll_seconds=0.1, progress_seconds=0.0)
        threads.append(threading.Thread(target=capture.run, args=(stop,), daemon=True))
        threads[-1].start()
        return capture

    yield Rig(kafka_settings, kafka_bootstrap, writer, tables[0], start)
    stop.set()
    for t in threads:
        t.join(30)
        assert not t.is_alive()
    for table in tables:
        table.close()


def _until_closed(table: SignalTable, signal_id: int, timeout: float = 60.0) -> SnapshotSignal:
    deadline = time.monotonic() + timeout
    while True:
        signal = table.get(signal_id)
        assert signal is not None
        if not signal.status.open:
            return signal
        assert time.monotonic() < deadline, f"request still {signal.status} after {timeout}s"
        time.sleep(0.1)


def _seed(writer: DirectoryWriter, users: int) -> None:
    writer.upsert_companies(
        [
            {"id": "c1", "name": "Fjord AS", "organisation_number": "923 609 016"},
            {"id": "c2", "name": "Vik AS", "organisation_number": "923 609 024"},
        ]
    )
    for i in range(users):
        writer.upsert_user(id=f"u{i:03}", username=f"user{i}", email=f"user{i}@fjord.no")
    writer.grant([("u000", "c1", "business", "role", "Regnskap"), ("u001", "c1", "business", "role", "Lønn")])


def test_users_are_emitted_again_each_once_with_progress(rig: Rig) -> None:
    _seed(rig.writer, 25)
    capture = rig.start()
    assert len(rig.users(lambda rs: len(rs) >= 25)) == 25
    signal_id = rig.table.request((EntityType.USER,), None)
    done = _until_closed(rig.table, signal_id)
    assert done.status is SignalStatus.DONE, done.error
    assert (done.emitted, done.total) == (25, 25)
    assert done.position == rig.writer.change_log_position()
    events = [decode_event(r.value) for r in rig.users(lambda rs: len(rs) >= 50)]
    # the initial snapshot's and the ad-hoc one's: each user twice, so the ad-hoc once each
    assert Counter(e.entity_id for e in events) == Counter({f"u{i:03}": 2 for i in range(25)})
    # no change since the initial snapshot: the same position, the same version
    assert all(e.op.value == "r" and e.source.snapshot and e.version == done.position for e in events)
    assert capture.log.load_checkpoint("default") is not None


def test_where_company_emits_only_its_users_and_live_changes_win(rig: Rig) -> None:
    _seed(rig.writer, 5)
    rig.start()
    rig.users(lambda rs: len(rs) >= 5)
    signal_id = rig.table.request((EntityType.USER,), parse_where("company=c1"))
    rig.writer.update_user("u000", first_name="Kari")  # a live change beside the snapshot
    done = _until_closed(rig.table, signal_id)
    assert done.status is SignalStatus.DONE and done.total == 2

    def adhoc_and_live(records: list[Any]) -> bool:
        events = [decode_event(r.value) for r in records]
        return sum(e.version == done.position for e in events) >= 2 and any(e.op.value == "u" for e in events)

    events = [decode_event(r.value) for r in rig.users(adhoc_and_live)]
    adhoc = [e for e in events if e.op.value == "r" and e.version == done.position]
    assert sorted(e.entity_id for e in adhoc) == ["u000", "u001"]
    # the newest version of u000 carries the live change, whichever event came first
    newest = max((e for e in events if e.entity_id == "u000"), key=lambda e: e.version)
    assert newest.state.first_name == "Kari"


def test_a_cancelled_request_emits_nothing(rig: Rig) -> None:
    _seed(rig.writer, 3)
    signal_id = rig.table.request((EntityType.USER,), None)
    assert rig.table.cancel_pending(signal_id)
    rig.start()
    rig.users(lambda rs: len(rs) >= 3)  # the initial snapshot
    rig.writer.upsert_user(id="u999", username="late", email="late@fjord.no")
    # the snapshot (3), then the live change: nothing of the cancelled request between
    records = rig.users(lambda rs: any(r.key == b"u999" for r in rs))
    assert len(records) == 4
    cancelled = rig.table.get(signal_id)
    assert cancelled is not None and cancelled.status is SignalStatus.CANCELLED


def test_the_command_says_when_no_producer_picks_the_request_up(
    rig: Rig, store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from vudsync.cli import cli

    monkeypatch.setenv("VUDSYNC_STORE_URL", store_url)
    result = CliRunner().invoke(cli, ["snapshot", "--entity", "users", "--pickup-timeout", "1s", "--json"])
    assert result.exit_code == 1, result.output
    assert "vudsync run producer" in result.output and '"outcome": "not_picked_up"' in result.output
    (request,) = rig.table.recent()
    assert request.status is SignalStatus.CANCELLED  # a producer started later emits nothing
    bad = CliRunner().invoke(cli, ["snapshot", "--entity", "roles", "--where", "company=c1"])
    assert bad.exit_code == 2 and "applies to users and companies" in bad.output
