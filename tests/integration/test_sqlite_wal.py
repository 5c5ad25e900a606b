"""The WAL checkpointer on a real SQLite file: it keeps the WAL bounded while a writer never
stops (a PASSIVE checkpoint alone lets it grow for as long as the writes go on)."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

from devtools.processes import wait_until
from kernel.sqlite_wal import WalCheckpointer
from tests.sqlite_files import rows_in_main_file

_FRAME = 4096 + 24  # a page and its frame header
_COMMITS = 3000


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=10000")
    return conn


def test_the_wal_stays_bounded_while_the_writer_never_pauses(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    writer = _connect(path)
    writer.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, blob BLOB NOT NULL)")
    checkpointer = WalCheckpointer(
        lambda: _connect(path), name="test-checkpointer", interval=0.01, restart_frames=256
    )
    checkpointer.start(writer)
    wal = Path(f"{path}-wal")
    largest = 0
    try:
        for _ in range(_COMMITS):  # back to back: ≈ 7 frames each
            writer.execute("BEGIN IMMEDIATE")
            writer.executemany("INSERT INTO t (blob) VALUES (?)", [(os.urandom(3000),) for _ in range(5)])
            writer.execute("COMMIT")
            checkpointer.after_commit(writer)
            largest = max(largest, wal.stat().st_size)
        wait_until(lambda: rows_in_main_file(path, "t") == 5 * _COMMITS, 30, what="every row checkpointed")
        pages = writer.execute("PRAGMA page_count").fetchone()[0]
    finally:
        checkpointer.stop()
        writer.close()
    # every page of the database went through the WAL at least once; a WAL that is never
    # started over holds all of them at the end (PASSIVE checkpoints only: 10,827 frames for
    # half as many commits), this one a fraction
    assert largest // _FRAME < pages // 3, (largest // _FRAME, pages)


def test_a_restart_waits_for_an_old_reader_only_briefly(tmp_path: Path) -> None:
    """RESTART waits for readers of older frames: under the writer's lock that may not take the
    writer's busy timeout (10 s here), so it gives up after RESTART_WAIT_MS and is tried later."""
    path = tmp_path / "db.sqlite"
    writer = _connect(path)
    writer.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
    checkpointer = WalCheckpointer(lambda: _connect(path), name="test-checkpointer")  # thread not started
    reader = _connect(path)
    try:
        writer.execute("INSERT INTO t DEFAULT VALUES")
        reader.execute("BEGIN")
        assert reader.execute("SELECT count(*) FROM t").fetchone()[0] == 1  # a snapshot in the WAL
        writer.execute("INSERT INTO t DEFAULT VALUES")
        checkpointer._restart_due = True  # what the thread sets when it finds the WAL long
        started = time.monotonic()
        checkpointer.after_commit(writer)
        waited = time.monotonic() - started
        assert waited < 5, waited
        assert writer.execute("PRAGMA busy_timeout").fetchone()[0] == 10000
        assert reader.execute("SELECT count(*) FROM t").fetchone()[0] == 1  # its snapshot intact
    finally:
        reader.close()
        writer.close()
        checkpointer.stop()
