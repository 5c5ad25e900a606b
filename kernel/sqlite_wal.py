"""WAL checkpoints in a thread of their own, off a SQLite writer's commit path; and
:func:`immediate`, the one write transaction of every SQLite writer of vudsync.

SQLite's automatic checkpoint runs inside whichever COMMIT takes the WAL past 1,000 pages:
that commit copies the pages into the database file and waits on two fsyncs. For a writer
everything else waits behind — the cloud's store under its write lock, the sink's ledger on
the sink's event loop — that is a stall of up to ~90 ms every few hundred thousand bytes
written (measured: 500-entry ledger commits took 4 ms at the median and 20-90 ms at the
checkpoints).

A writer hands its connection to :meth:`WalCheckpointer.start`, which turns the connection's
automatic checkpoint off (``PRAGMA wal_autocheckpoint=0``), and calls
:meth:`WalCheckpointer.after_commit` after each commit, while it still holds its own lock:

1. the checkpointer's thread runs ``PRAGMA wal_checkpoint(PASSIVE)`` on a connection of its
   own, at most every ``interval`` seconds: it copies what no reader still needs, fsyncs
   included, and never waits for the writer or for readers (SQLite releases the GIL while
   it works);
2. a PASSIVE checkpoint never empties a WAL that is written all the time (each finds frames
   appended since it began), and a WAL that only grows makes every page read slower: SQLite
   looks a page up in one hash table per 4,096 frames, newest first (a 100,000-operation sink
   run slowed from 5,400 to 3,200 operations/s that way). So once the thread finds more than
   ``restart_frames`` in the WAL, the writer's next ``after_commit`` runs
   ``PRAGMA wal_checkpoint(RESTART)`` on the writer's connection: with no write of its own
   under way it copies the few frames the thread has not, and the next write starts the WAL
   over from its beginning. Done by the writer, under its lock, it needs no lock of its own
   and cannot be starved by writes that follow each other closely. RESTART waits for
   readers of older frames and for another process's writer; it waits at most
   ``RESTART_WAIT_MS`` here (the writer's own busy timeout is put back after it), and one
   that could not finish is tried again when the WAL is found long again.

A failed checkpoint loses nothing (the frames stay in the WAL); it is logged and tried
again after the next commit. Closing the last connection of a database checkpoints what
is left.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)


@contextmanager
def immediate(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction on a connection in autocommit mode (``isolation_level=None``):
    ``BEGIN IMMEDIATE`` (the write lock from the start, so the statements inside never fail
    half-way on a busy database), ``COMMIT`` when the block ends, ``ROLLBACK`` when it raises
    anything (``KeyboardInterrupt`` and cancellation included), the exception going on."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


# how long a writer's WAL restart may wait for readers or another process's writer
RESTART_WAIT_MS = 200


class WalCheckpointer:
    """Checkpoints one WAL database from a daemon thread: :meth:`start`, :meth:`after_commit`, :meth:`stop`.

    ``connect`` opens the thread's own connection to the database (called in the thread).
    """

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        *,
        name: str,
        interval: float = 0.5,
        restart_frames: int = 4096,
    ) -> None:
        self._connect = connect
        self._interval = interval
        self._restart_frames = restart_frames
        self._restart_due = False
        self._poked = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self, writer: sqlite3.Connection) -> None:
        """Take the checkpoints over from ``writer`` (its commits no longer run them)."""
        writer.execute("PRAGMA wal_autocheckpoint=0")
        self._thread.start()

    def after_commit(self, writer: sqlite3.Connection) -> None:
        """``writer`` committed: checkpoint soon. Call it holding the lock the writes hold.

        Restarts the WAL on ``writer`` when the thread has found it long (see the module doc).
        """
        if self._restart_due:
            self._restart_due = False
            busy_timeout = int(writer.execute("PRAGMA busy_timeout").fetchone()[0])
            writer.execute(f"PRAGMA busy_timeout={RESTART_WAIT_MS}")
            try:
                writer.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
            except sqlite3.Error as exc:
                log.warning("WAL restart failed (tried again when the WAL is long again): %s", exc)
            finally:
                writer.execute(f"PRAGMA busy_timeout={busy_timeout}")
        self._poked.set()

    def stop(self) -> None:
        """End the thread (a checkpoint under way finishes first) and close its connection."""
        self._stopping.set()
        self._poked.set()
        if self._thread.is_alive():
            self._thread.join()

    def _loop(self) -> None:
        try:
            conn = self._connect()
        except sqlite3.Error as exc:
            log.error(
                "WAL checkpointer %s could not open the database, the WAL will grow: %s",
                self._thread.name,
                exc,
            )
            return
        try:
            while True:
                self._poked.wait()
                if self._stopping.is_set():
                    return
                self._poked.clear()
                try:
                    self._checkpoint(conn)
                except sqlite3.Error as exc:
                    log.warning("WAL checkpoint failed (tried again at the next commit): %s", exc)
                if self._stopping.wait(self._interval):
                    return
        finally:
            conn.close()

    def _checkpoint(self, conn: sqlite3.Connection) -> None:
        _, frames, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        if frames >= self._restart_frames:
            self._restart_due = True
