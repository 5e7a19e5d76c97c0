"""Stored responses of the Responses door: what ``previous_response_id``, ``item_reference``,
``GET /v1/responses/{id}`` and ``input_items`` read back.

One SQLite file (0600, in a 0700 dir) in the data dir. Every call runs on this store's one
worker thread, never on the event loop, and in the order it was made: a response saved
(``save`` only queues the write) is visible to every read queued after it, so a caller's
next turn finds it even when it arrives before the write finished. Each record belongs to
the gateway key that made it; other keys see nothing. Records expire after ``ttl`` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

from ..jsonio import dumps, loads
from ..sqlite_wal import wal_mode

log = logging.getLogger("modelport.server")

T = TypeVar("T")
DEFAULT_TTL = 30 * 86400.0
# A previous_response_id chain longer than this is cut at its oldest end.
MAX_CHAIN = 512
_PURGE_EVERY = 3600.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    id TEXT PRIMARY KEY, owner TEXT NOT NULL, previous_id TEXT, expires REAL NOT NULL,
    response BLOB NOT NULL, input BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS responses_expires ON responses(expires);
CREATE TABLE IF NOT EXISTS items (
    owner TEXT NOT NULL, id TEXT NOT NULL, response_id TEXT NOT NULL, expires REAL NOT NULL, item BLOB NOT NULL,
    PRIMARY KEY (owner, id));
CREATE INDEX IF NOT EXISTS items_response ON items(response_id);
"""


@dataclass(frozen=True, slots=True)
class Stored:
    """One response as stored: the Response object and the input items it answered."""

    response: dict[str, Any]
    input: list[dict[str, Any]]


class ResponseStore:
    def __init__(self, path: Path, ttl: float = DEFAULT_TTL) -> None:
        self.path = path
        self.ttl = ttl
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="modelport-responses")
        self._db: sqlite3.Connection | None = None
        self._purged = 0.0
        # Saves waiting for the worker, written together in one transaction (group commit).
        self._pending: list[tuple[str, Stored]] = []
        self._pending_job: Future[None] | None = None  # the job that will write _pending
        self._lock = threading.Lock()

    # -- worker thread ---------------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            from ..config import private_file

            # Stored answers are nobody else's business: 0600 before SQLite opens the file.
            db = sqlite3.connect(private_file(self.path), timeout=10, check_same_thread=False)
            wal_mode(db)
            # In WAL mode NORMAL loses at most the last commits on a power cut, never the
            # file; FULL's fsync per commit capped the door's stored-stream throughput.
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
            self._db = db
        return self._db

    def _put_pending(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        if not pending:
            return
        db, now = self._conn(), time.time()
        expires = now + self.ttl
        with db:
            for owner, stored in pending:
                response = stored.response
                db.execute("INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?, ?)",
                           (response["id"], owner, response.get("previous_response_id"), expires, dumps(response), dumps(stored.input)))
                db.executemany("INSERT OR REPLACE INTO items VALUES (?, ?, ?, ?, ?)",
                               [(owner, item["id"], response["id"], expires, dumps(item))
                                for item in [*stored.input, *(response.get("output") or ())] if isinstance(item.get("id"), str)])
            if now - self._purged > _PURGE_EVERY:
                self._purged = now
                db.execute("DELETE FROM responses WHERE expires < ?", (now,))
                db.execute("DELETE FROM items WHERE expires < ?", (now,))

    def _get(self, owner: str, response_id: str) -> Stored | None:
        row = self._conn().execute("SELECT response, input FROM responses WHERE id = ? AND owner = ? AND expires >= ?",
                                   (response_id, owner, time.time())).fetchone()
        return Stored(loads(row[0]), loads(row[1])) if row else None

    def _chain(self, owner: str, response_id: str) -> list[dict[str, Any]] | None:
        """Every item the model saw and said up to and including this response, oldest first."""
        turns: list[list[dict[str, Any]]] = []
        current: str | None = response_id
        while current is not None and len(turns) < MAX_CHAIN:
            stored = self._get(owner, current)
            if stored is None:
                if not turns:
                    return None
                break  # an expired ancestor: the chain starts after it
            turns.append([*stored.input, *(stored.response.get("output") or ())])
            current = stored.response.get("previous_response_id")
        return [item for turn in reversed(turns) for item in turn]

    def _items(self, owner: str, ids: list[str]) -> dict[str, dict[str, Any]]:
        db, now = self._conn(), time.time()
        found: dict[str, dict[str, Any]] = {}
        for item_id in ids:
            row = db.execute("SELECT item FROM items WHERE owner = ? AND id = ? AND expires >= ?", (owner, item_id, now)).fetchone()
            if row:
                found[item_id] = loads(row[0])
        return found

    def _delete(self, owner: str, response_id: str) -> bool:
        db = self._conn()
        with db:
            gone = db.execute("DELETE FROM responses WHERE id = ? AND owner = ?", (response_id, owner)).rowcount
            if gone:
                db.execute("DELETE FROM items WHERE response_id = ? AND owner = ?", (response_id, owner))
        return bool(gone)

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    # -- event loop ------------------------------------------------------------------------

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._io, fn, *args)

    def save(self, owner: str, stored: Stored) -> Future[None]:
        """Queue the write and return at once (the future of the job that writes it); reads
        queued later in this process see it (a write job is queued whenever none is
        waiting, so one is always ahead of them)."""
        with self._lock:
            self._pending.append((owner, stored))
            if len(self._pending) > 1 and self._pending_job is not None:
                return self._pending_job  # the job queued for the first of them writes this one too
            future = self._pending_job = self._io.submit(self._put_pending)
        future.add_done_callback(_log_failure)
        return future

    async def persist(self, owner: str, stored: Stored) -> None:
        """Save, and return once the write is committed: other processes reading the file
        (``serve --workers N``) see it from then on, so a caller's next turn finds it on
        any worker. A failed write is logged, and the answer still goes out."""
        await committed(self.save(owner, stored))

    async def get(self, owner: str, response_id: str) -> Stored | None:
        return await self._run(self._get, owner, response_id)

    async def chain(self, owner: str, response_id: str) -> list[dict[str, Any]] | None:
        return await self._run(self._chain, owner, response_id)

    async def items(self, owner: str, ids: list[str]) -> dict[str, dict[str, Any]]:
        return await self._run(self._items, owner, ids)

    async def delete(self, owner: str, response_id: str) -> bool:
        return await self._run(self._delete, owner, response_id)

    async def aclose(self) -> None:
        await self._run(self._close)
        self._io.shutdown(wait=False)


async def committed(future: Future[None]) -> None:
    try:
        await asyncio.wrap_future(future)
    except Exception:
        pass  # logged by _log_failure


def _log_failure(future: Future[None]) -> None:
    exc = future.exception()
    if exc is not None:
        log.error("could not store a response: %s", exc)
