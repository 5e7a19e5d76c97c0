"""Stored responses of the Responses door: what ``previous_response_id``, ``item_reference``,
``GET /v1/responses/{id}`` and ``input_items`` read back.

In the records database: a SQLite file (0600, in a 0700 dir) in the data dir, or the
PostgreSQL database of ``[state] records`` that every gateway instance shares. Every call
runs on this store's one worker thread, never on the event loop, and in the order it was
made. Saves queued together are written in one transaction (group commit); ``save``
returns the write's future, which the door awaits before the caller sees the end of the
answer, so its next turn finds the response on any instance. Each record belongs to the
gateway key that made it; other keys see nothing. Records expire after ``ttl`` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BadRequestError, ModelportError, StateUnavailableError
from ..jsonio import dumps, loads
from ..state.copy import StoreCopy, Table
from ..state.records import RecordsDB
from ..state.runner import StoreRunner

log = logging.getLogger("modelport.server")

DEFAULT_TTL = 30 * 86400.0
# Ids per IN (...) query: under SQLite's and PostgreSQL's parameter limits.
_CHUNK = 500
_PURGE_EVERY = 3600.0

# The versions of the store's tables, oldest first (see modelport.state.records.migrate). The
# first is what the SQLite-only store made, so an older responses.db counts as version 1.
_STEPS = ("""
CREATE TABLE IF NOT EXISTS responses (
    id TEXT PRIMARY KEY, owner TEXT NOT NULL, previous_id TEXT, expires REAL NOT NULL,
    response BLOB NOT NULL, input BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS responses_expires ON responses(expires);
CREATE TABLE IF NOT EXISTS items (
    owner TEXT NOT NULL, id TEXT NOT NULL, response_id TEXT NOT NULL, expires REAL NOT NULL, item BLOB NOT NULL,
    PRIMARY KEY (owner, id));
CREATE INDEX IF NOT EXISTS items_response ON items(response_id);
""",
    # What a key has stored is counted before each storing request (StoreQuota) from this
    # index alone: each response's size is kept beside it, so no blob row is read.
    """ALTER TABLE responses ADD COLUMN size INTEGER NOT NULL DEFAULT 0;
UPDATE responses SET size = length(response) + length(input);
CREATE INDEX responses_owner ON responses(owner, expires, size)""",
)
RESPONSE_COLUMNS = ("id", "owner", "previous_id", "expires", "response", "input", "size")
ITEM_COLUMNS = ("owner", "id", "response_id", "expires", "item")
# A response saved again (same id, same owner) replaces the old; another key's never does.
_PUT_RESPONSE = ("INSERT INTO responses (id, owner, previous_id, expires, response, input, size) VALUES (?, ?, ?, ?, ?, ?, ?)"
                 " ON CONFLICT (id) DO UPDATE SET previous_id = excluded.previous_id, expires = excluded.expires,"
                 " response = excluded.response, input = excluded.input, size = excluded.size WHERE responses.owner = excluded.owner")
_PUT_ITEM = ("INSERT INTO items (owner, id, response_id, expires, item) VALUES (?, ?, ?, ?, ?)"
             " ON CONFLICT (owner, id) DO UPDATE SET response_id = excluded.response_id, expires = excluded.expires, item = excluded.item")


def open_responses(url: str | None, path: Path) -> RecordsDB:
    """The stored responses' records database (``url``, else the SQLite file ``path``) at its newest schema."""
    from ..state.records import open_store

    return open_store(url, path, "responses", _STEPS)


@dataclass(frozen=True, slots=True)
class ChainLimits:
    """How much stored conversation one request may load through previous_response_id."""

    turns: int
    bytes: int

    def exceeded(self, turns: int, size: int) -> BadRequestError:
        return BadRequestError(
            f"the conversation of previous_response_id is over this gateway's limit of {self.turns} turns and "
            f"{self.bytes / 2**20:g} MiB (at least {turns} turns, {size / 2**20:.1f} MiB)",
            param="previous_response_id", code="conversation_too_large",
            hint="start a new conversation with the part that matters as input, or raise max_chain_turns / "
                 "max_chain_mb under [server] in the config")


@dataclass(frozen=True, slots=True)
class StoreQuota:
    """How much one key may keep stored: responses, and their bytes (each response's JSON
    plus the input items it answered, as stored)."""

    responses: int
    bytes: int

    def check(self, responses: int, size: int) -> None:
        """Refuse another response for a key that holds ``responses`` of ``size`` bytes.
        A 400, not a 429: waiting frees nothing, so an SDK must not retry it."""
        if responses < self.responses and size < self.bytes:
            return
        raise BadRequestError(
            f"this gateway key already stores {responses} responses ({size / 2**20:.1f} MiB), at this gateway's limit of "
            f"{self.responses} responses and {self.bytes / 2**20:g} MiB per key (max_stored_responses, max_stored_mb)",
            param="store", code="stored_responses_limit",
            hint="delete old responses with DELETE /v1/responses/{id}, send store: false, or raise max_stored_responses / "
                 "max_stored_mb under [server] in the config")


def decode_chain(blobs: list[tuple[bytes, bytes]]) -> list[dict[str, Any]]:
    """Every item the model saw and said in these stored turns, oldest first."""
    items: list[dict[str, Any]] = []
    for raw_input, raw_response in blobs:
        items += loads(raw_input)
        items += loads(raw_response).get("output") or ()
    return items


def _chunks(ids: list[str]) -> list[list[str]]:
    return [ids[i:i + _CHUNK] for i in range(0, len(ids), _CHUNK)]


@dataclass(frozen=True, slots=True)
class Stored:
    """One response as stored: the Response object and the input items it answered."""

    response: dict[str, Any]
    input: list[dict[str, Any]]


class ResponseStore:
    def __init__(self, path: Path, ttl: float = DEFAULT_TTL, url: str | None = None) -> None:
        self.path = path
        # A PostgreSQL records URL keeps the responses there, for every instance; else the file at path.
        self.url = url
        self.ttl = ttl
        # Stored answers are nobody else's business: a SQLite file is 0600 (and WAL with
        # synchronous NORMAL: FULL's fsync per commit capped stored-stream throughput).
        self._io: StoreRunner[RecordsDB] = StoreRunner("responses", lambda: open_responses(self.url, self.path))
        self._purged = 0.0
        # Saves waiting for the worker, written together in one transaction (group commit),
        # and the future of the job that writes them.
        self._pending: list[tuple[str, Stored]] = []
        self._pending_job: Future[None] | None = None  # the job that will write _pending
        self._lock = threading.Lock()

    # -- worker thread ---------------------------------------------------------------------

    def _conn(self) -> RecordsDB:
        return self._io.conn

    def _put_pending(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        if not pending:
            return
        now = time.time()
        expires = now + self.ttl
        with self._conn().transaction() as db:
            for owner, stored in pending:
                response = stored.response
                response_blob, input_blob = dumps(response), dumps(stored.input)
                db.execute(_PUT_RESPONSE, (response["id"], owner, response.get("previous_response_id"), expires, response_blob,
                                           input_blob, len(response_blob) + len(input_blob)))
                db.executemany(_PUT_ITEM, [(owner, item["id"], response["id"], expires, dumps(item))
                                           for item in [*stored.input, *(response.get("output") or ())] if isinstance(item.get("id"), str)])
            if now - self._purged > _PURGE_EVERY:
                self._purged = now
                db.execute("DELETE FROM responses WHERE expires < ?", (now,))
                db.execute("DELETE FROM items WHERE expires < ?", (now,))

    def _get(self, owner: str, response_id: str) -> Stored | None:
        row = self._conn().execute("SELECT response, input FROM responses WHERE id = ? AND owner = ? AND expires >= ?",
                                   (response_id, owner, time.time())).fetchone()
        return Stored(loads(row[0]), loads(row[1])) if row else None

    def _chain(self, owner: str, response_id: str, limits: ChainLimits) -> list[tuple[bytes, bytes]] | None:
        """The stored (input, response) blobs of this response and its ancestors, oldest
        first, undecoded; None if the response is not there. The chain's turns and bytes are
        counted from the index before any blob is read, so a chain over ``limits`` costs a
        few small reads, not the loading of every turn."""
        db, now = self._conn(), time.time()
        ids: list[str] = []
        size = 0
        current: str | None = response_id
        while current is not None:
            row = db.execute("SELECT previous_id, size FROM responses"
                             " WHERE id = ? AND owner = ? AND expires >= ?", (current, owner, now)).fetchone()
            if row is None:
                break  # an expired ancestor: the chain starts after it
            ids.append(current)
            size += int(row[1])
            if len(ids) > limits.turns or size > limits.bytes:
                raise limits.exceeded(len(ids), size)
            current = row[0]
        if not ids:
            return None
        blobs: dict[str, tuple[bytes, bytes]] = {}
        for chunk in _chunks(ids):
            marks = ", ".join("?" for _ in chunk)
            for row in db.execute(f"SELECT id, input, response FROM responses WHERE owner = ? AND id IN ({marks})", (owner, *chunk)).fetchall():
                blobs[row[0]] = (bytes(row[1]), bytes(row[2]))
        return [blobs[i] for i in reversed(ids) if i in blobs]

    def _items(self, owner: str, ids: list[str]) -> dict[str, dict[str, Any]]:
        """The stored items with these ids; stops at the first chunk that misses one (the
        caller reports it), so a flood of unknown references costs one read."""
        db, now = self._conn(), time.time()
        found: dict[str, dict[str, Any]] = {}
        for chunk in _chunks(list(dict.fromkeys(ids))):
            marks = ", ".join("?" for _ in chunk)
            rows = db.execute(f"SELECT id, item FROM items WHERE owner = ? AND expires >= ? AND id IN ({marks})", (owner, now, *chunk)).fetchall()
            found.update((row[0], loads(row[1])) for row in rows)
            if len(rows) < len(chunk):
                break
        return found

    def _check_room(self, owner: str, quota: StoreQuota) -> None:
        count, size = self._conn().execute(
            "SELECT count(*), coalesce(sum(size), 0) FROM responses WHERE owner = ? AND expires >= ?",
            (owner, time.time())).fetchone()
        quota.check(int(count), int(size))

    def _delete(self, owner: str, response_id: str) -> bool:
        with self._conn().transaction() as db:
            gone = db.execute("DELETE FROM responses WHERE id = ? AND owner = ?", (response_id, owner)).rowcount
            if gone:
                db.execute("DELETE FROM items WHERE response_id = ? AND owner = ?", (response_id, owner))
        return bool(gone)

    # -- event loop ------------------------------------------------------------------------

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
        """Save, and return once the write is committed: other processes (``serve
        --workers N``, other instances) see it from then on, so a caller's next turn finds
        it anywhere. A failed write is a StateUnavailableError: the caller asked for an
        answer it can continue, and it could not be kept."""
        try:
            await asyncio.wrap_future(self.save(owner, stored))
        except ModelportError:
            raise
        except Exception as exc:  # noqa: BLE001 - logged by _log_failure
            raise StateUnavailableError(f"the response could not be stored ({type(exc).__name__})",
                                        hint="retry, or send store: false for an answer that is not kept") from None

    async def ensure_room(self, owner: str, quota: StoreQuota) -> None:
        """Refuse, before it costs a model call, a request whose response could not be
        stored: ``owner`` already keeps ``quota``'s worth (a BadRequestError naming the fix),
        or the records database does not answer (StateUnavailableError)."""
        await self._io.run(self._check_room, owner, quota)

    async def get(self, owner: str, response_id: str) -> Stored | None:
        return await self._io.run(self._get, owner, response_id)

    async def chain(self, owner: str, response_id: str, limits: ChainLimits) -> list[tuple[bytes, bytes]] | None:
        return await self._io.run(self._chain, owner, response_id, limits)

    async def items(self, owner: str, ids: list[str]) -> dict[str, dict[str, Any]]:
        return await self._io.run(self._items, owner, ids)

    async def delete(self, owner: str, response_id: str) -> bool:
        return await self._io.run(self._delete, owner, response_id)

    async def aclose(self) -> None:
        await self._io.aclose()


async def committed(future: Future[None]) -> None:
    """Wait for a ``save``; a failed one was logged (by ``_log_failure``) and is not raised."""
    try:
        await asyncio.wrap_future(future)
    except Exception:
        pass  # logged by _log_failure


def _log_failure(future: Future[None]) -> None:
    exc = future.exception()
    if exc is not None:
        log.error("could not store a response: %s", exc)


def default_responses_path(config: dict[str, Any]) -> Path:
    """The SQLite file of stored responses when no records database is configured."""
    from ..config import data_dir

    return data_dir() / "gateway" / "responses.db"


# The stored responses' part of `modelport state migrate` (see modelport.state.copy).
RESPONSES_COPY = StoreCopy("stored responses", default_responses_path, open_responses,
                           (Table("responses", RESPONSE_COLUMNS, ("id",)), Table("items", ITEM_COLUMNS, ("owner", "id"))))
