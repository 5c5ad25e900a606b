"""What a SQLite database file holds by itself, without its WAL; its checkpointer threads."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path


def rows_in_main_file(path: Path, table: str) -> int | None:
    """Rows of ``table`` in the main database file alone (``immutable``: the WAL is not read),
    i.e. what checkpoints have copied there; ``None`` if the file was caught mid-checkpoint."""
    conn = sqlite3.connect(f"file:{path}?immutable=1", uri=True)
    try:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    except sqlite3.DatabaseError:
        return None
    finally:
        conn.close()


def threads_named(name: str) -> int:
    """Threads of this name running now (a checkpointer's, e.g. ``cloud-checkpointer``)."""
    return sum(t.name == name for t in threading.enumerate())
