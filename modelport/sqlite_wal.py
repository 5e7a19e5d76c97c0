"""WAL mode for a SQLite file that several processes open at once (``serve --workers N``).

Switching a new file to WAL needs a lock that SQLite does not wait for: its busy timeout
covers reads and writes, not this pragma, so a second process opening the file while the
first was switching it (or creating its tables) failed at once with "database is locked".
"""

from __future__ import annotations

import sqlite3
import time


def wal_mode(conn: sqlite3.Connection, timeout: float = 10.0) -> None:
    """``PRAGMA journal_mode=WAL``, retried while another process holds the lock, for up to ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    pause = 0.005
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.1)
