"""Change capture from a real PostgreSQL store to the real broker.

What only PostgreSQL has (the cases both stores share run on each in
``test_capture_stores.py``): seq values drawn at INSERT time become visible in commit order, so
a lower seq can appear after a higher one; the reader must never step over such a gap while a
transaction may still fill it, and must not stall on a gap a rollback left. And LISTEN/NOTIFY
wakes the tailer.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from devtools.processes import wait_until
from devtools.seed.pg_writer import PostgresDirectoryWriter
from kernel.settings import Settings
from producers.postgres_changelog import PostgresChangeLog
from schemas.codec import decode_event
from schemas.directory import EntityType
from schemas.topics import DIRECTORY_TOPICS
from tests.capture_check import change_log_end, drain, read_topics, store_query
from tests.integration.conftest import MakeCapture
from vudsync.topics import ensure_catalogue


@pytest.fixture
def writer(postgres_url: str) -> Iterator[PostgresDirectoryWriter]:
    made = PostgresDirectoryWriter(postgres_url)
    yield made
    made.close()


def _insert_user(conn: psycopg.Connection[Any], user_id: str) -> None:
    conn.execute(
        "INSERT INTO users (id, username, email) VALUES (%s, %s, %s)",
        (user_id, user_id, f"{user_id}@fjord.no"),
    )


def test_a_lower_seq_committed_after_a_higher_one_is_not_skipped(postgres_url: str) -> None:
    change_log = PostgresChangeLog(postgres_url)
    start = change_log.position()
    slow = psycopg.connect(postgres_url)  # a transaction left open: it holds the lower seq
    fast = psycopg.connect(postgres_url, autocommit=True)
    try:
        _insert_user(slow, "slow")
        _insert_user(fast, "fast")  # higher seq, committed first
        assert change_log_end(postgres_url) == start + 2  # visible: only the higher one
        assert change_log.read_changes(start, 100) == []  # must not step over the open one
        assert change_log.oldest_uncaptured(start) is not None
        slow.commit()
        rows = change_log.read_changes(start, 100)
        assert [(r.seq, r.entity_id) for r in rows] == [(start + 1, "slow"), (start + 2, "fast")]
    finally:
        slow.close()
        fast.close()
        change_log.close()


def test_a_rolled_back_seq_does_not_stall_capture(postgres_url: str) -> None:
    change_log = PostgresChangeLog(postgres_url)
    start = change_log.position()
    with psycopg.connect(postgres_url) as conn:
        _insert_user(conn, "ghost")
        conn.rollback()
        _insert_user(conn, "real")
        conn.commit()
    seen: list[int] = []

    def read() -> bool:
        seen.extend(r.seq for r in change_log.read_changes(start, 100))
        return bool(seen)

    wait_until(read, 30, what="the row after a rolled-back seq")
    assert seen == [start + 2]
    assert change_log.position() == start + 2
    change_log.close()


def test_position_waits_for_open_transactions_below_it(postgres_url: str) -> None:
    change_log = PostgresChangeLog(postgres_url, barrier_poll=0.01)
    slow = psycopg.connect(postgres_url)
    try:
        _insert_user(slow, "slow")
        with psycopg.connect(postgres_url, autocommit=True) as fast:
            _insert_user(fast, "fast")
        result: list[int] = []
        thread = threading.Thread(target=lambda: result.append(change_log.position()))
        thread.start()
        thread.join(timeout=1.0)
        assert thread.is_alive() and not result  # the snapshot must not start below an open writer
        slow.commit()
        thread.join(timeout=60)
        assert result == [2]
    finally:
        slow.close()
        change_log.close()


def test_listen_notify_wakes_the_tailer(postgres_url: str) -> None:
    change_log = PostgresChangeLog(postgres_url)
    woke = threading.Event()

    def wait() -> None:
        change_log.wait_for_changes(600)  # only a NOTIFY ends this in time
        woke.set()

    thread = threading.Thread(target=wait, daemon=True)
    thread.start()
    assert not woke.wait(0.3)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        _insert_user(conn, "u1")
    assert woke.wait(60), "no NOTIFY reached the tailer"
    thread.join(timeout=10)
    change_log.close()


def test_concurrent_writers_every_change_captured_in_order(
    kafka_settings: Settings, kafka_bootstrap: str, postgres_url: str, make_capture: MakeCapture
) -> None:
    """Four writers commit small, randomly delayed transactions (some rolled back) while
    capture streams; afterwards every committed change-log row was covered by an event, and
    each user's events arrived in increasing versions ending at its last change."""
    ensure_catalogue(kafka_settings, kafka_bootstrap)
    capture = make_capture(kafka_settings, postgres_url)
    position = capture.snapshot()
    read_seqs: list[int] = []
    read_changes = capture.log.read_changes

    def recording(after_seq: int, limit: int) -> list[Any]:
        rows = read_changes(after_seq, limit)
        read_seqs.extend(r.seq for r in rows)
        return rows

    capture.log.read_changes = recording  # type: ignore[method-assign]  # observe, not fake
    stop = threading.Event()
    errors: list[BaseException] = []

    def write(worker: int) -> None:
        rng = random.Random(worker)
        try:
            with psycopg.connect(postgres_url) as conn:
                n = 0
                while not stop.is_set():
                    n += 1
                    user_id = f"w{worker}-{rng.randrange(15)}"
                    conn.execute(
                        "INSERT INTO users (id, username, email, first_name) VALUES (%s, %s, %s, %s) "
                        "ON CONFLICT (id) DO UPDATE SET first_name = excluded.first_name",
                        (user_id, user_id, f"{user_id}@fjord.no", f"n{n}"),
                    )
                    stop.wait(rng.random() * 0.02)  # hold the transaction open a little
                    if rng.random() < 0.1:
                        conn.rollback()
                    else:
                        conn.commit()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(w,), daemon=True) for w in range(4)]
    for t in threads:
        t.start()
    after = position
    try:
        while after - position < 300:
            after = capture.poll_once(after).last_seq
            assert not errors, errors
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert not errors, errors

    after = drain(capture, after, postgres_url, 60)
    committed = [
        int(r[0])
        for r in store_query(
            postgres_url, "SELECT seq FROM change_log WHERE seq > ? ORDER BY seq", (position,)
        )
    ]
    assert read_seqs == committed, f"rows never read: {sorted(set(committed) - set(read_seqs))[:10]}"
    users_topic = kafka_settings.topic(DIRECTORY_TOPICS[EntityType.USER].name)
    events: dict[str, list[Any]] = {}
    for record in read_topics(kafka_bootstrap, [users_topic])[users_topic]:
        events.setdefault(record.key.decode(), []).append(decode_event(record.value))
    last_change = dict(
        store_query(
            postgres_url,
            "SELECT entity_id, MAX(seq) FROM change_log WHERE seq > ? GROUP BY entity_id",
            (position,),
        )
    )
    assert last_change and set(events) == set(last_change)
    for user_id, first_name in store_query(postgres_url, "SELECT id, first_name FROM users"):
        versions = [e.version for e in events[user_id]]
        assert versions == sorted(versions), f"{user_id}: versions out of order {versions}"
        assert versions[-1] == last_change[user_id], (
            f"{user_id}: last change {last_change[user_id]} not emitted"
        )
        assert events[user_id][-1].state.first_name == first_name
    assert capture.log.load_checkpoint("default") == ("streaming", after)


def test_snapshot_batches_read_by_range_what_the_id_lookups_read(
    postgres_url: str, writer: PostgresDirectoryWriter
) -> None:
    """Users and companies are snapshotted by id range (snapshot_batches): every entity once,
    batches of at most the batch size, each record as ``read_entities`` reads it (access
    included, an unknown company flagged, and each entry's change time, a removed entry's
    too), and batch edges cut no user's access or times apart."""
    writer.upsert_companies(
        [{"id": f"c{i}", "name": f"Fjord {i} AS", "organisation_number": "923 609 016"} for i in range(5)]
    )
    for i in range(23):
        writer.upsert_user(id=f"u{i:02d}", username=f"user{i}", email=f"user{i}@fjord.no")
    writer.grant(
        [(f"u{i:02d}", f"c{i % 5}", "business", "role", r) for i in range(0, 23, 2) for r in ("A", "B")]
        + [("u07", "nope", "reporting", "module", "M")]
    )
    writer.revoke_entry("u08", "c3", "business", "role", "B")
    log = PostgresChangeLog(postgres_url)
    try:
        for entity, expected in ((EntityType.USER, 23), (EntityType.COMPANY, 5)):
            batches = list(log.snapshot_batches(entity, 7))
            ids = [i for batch_ids, _records in batches for i in batch_ids]
            assert len(ids) == len(set(ids)) == expected
            assert all(0 < len(batch_ids) <= 7 for batch_ids, _records in batches)
            by_range = {k: v for _ids, records in batches for k, v in records.items()}
            by_id = log.read_entities(entity, ids)
            assert by_range.keys() == by_id.keys() == set(ids)
            for key, record in by_range.items():
                other = by_id[key]
                assert (record.row, sorted(record.access), sorted(record.access_times)) == (
                    other.row,
                    sorted(other.access),
                    sorted(other.access_times),
                )
        batches = list(log.snapshot_batches(EntityType.USER, 7))
        users = {k: v for _ids, records in batches for k, v in records.items()}
        assert len(users["u06"].access) == 2 and [a[0] for a in users["u07"].access] == ["nope"]
        assert len(users["u08"].access) == 1 and len(users["u08"].access_times) == 2
        assert {len(u.access_times) for k, u in users.items() if k not in ("u07", "u08")} == {0, 2}
    finally:
        log.close()
