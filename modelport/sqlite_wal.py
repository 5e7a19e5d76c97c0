"""WAL mode for a SQLite file that several processes open at once (``serve --workers N``).

Switching a new file to WAL needs a lock that SQLite does not wait for: its busy timeout
covers reads and writes, not this pragma, so a second process opening the file while the
first was switching it (or creating its tables) failed at once with "database is locked".
"""

from __future__ import annotations

import sqlite3
import time
from typing import Callable, TypeVar

T = TypeVar("T")


def wal_mode(conn: sqlite3.Connection, timeout: float = 10.0) -> None:
    """``PRAGMA journal_mode=WAL``, retried while another process holds the lock, for up to ``timeout`` seconds."""
    retry_while_busy(lambda: conn.execute("PRAGMA journal_mode=WAL"), timeout)


def retry_while_busy(attempt: Callable[[], T], timeout: float, between: Callable[[], None] | None = None) -> T:
    """``attempt()``, tried again while SQLite answers "database is locked" at once rather
    than after its busy timeout (the WAL switch above; SQLITE_BUSY_SNAPSHOT, when another
    process wrote since the connection last read), for up to ``timeout`` seconds. ``between``
    runs before each retry; any other error, or the last one, is raised."""
    deadline = time.monotonic() + timeout
    pause = 0.002
    while True:
        try:
            return attempt()
        except sqlite3.OperationalError as exc:
            if not _busy(exc) or time.monotonic() + pause > deadline:
                raise
        if between is not None:
            between()
        time.sleep(pause)
        pause = min(pause * 2, 0.1)


def _busy(exc: sqlite3.OperationalError) -> bool:
    # sqlite_errorname is Python 3.11+; the message is what 3.10 offers.
    return getattr(exc, "sqlite_errorname", "").startswith("SQLITE_BUSY") or "locked" in str(exc)
