"""The response cache shared by the SDK, CLI, batch engine and gateway (opt-in).

An exact-match cache: the key is the SHA-256 of the canonical serialized request, minus
its ``stream`` flag, so a streamed and a non-streamed call of the same request share an
entry, and any difference in model, messages, parameters, tools or ``extra`` misses.
Streamed answers are stored as their assembled ChatResponse; ``replay`` turns a cached
response back into the stream events that assemble into it.

The cache is a SQLite file beside the call log (``cache.db``), or ``MODELPORT_CACHE_PATH``;
given a records URL (the gateway passes its ``[state] records``) it lives in that database,
so that every gateway instance sharing a PostgreSQL database shares the cache. Its reads
and writes run on the cache's one worker thread, which owns the connection.
Turn it on per client (``Client(cache=True)`` or a TTL in seconds), with
``MODELPORT_CACHE=1`` (or a TTL in seconds), or with ``[cache] enabled = true`` and
``ttl = 3600`` in the config file; ``MODELPORT_CACHE=0`` turns it off everywhere.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from modelport.calllog import default_log_path
from modelport.config import section
from modelport.state.copy import StoreCopy, Table
from modelport.state.records import RecordsDB
from modelport.state.runner import StoreRunner
from modelport.serialize import request_to_dict, response_from_dict, response_to_dict
from modelport.types import ChatRequest, ChatResponse, ReasoningPart, StreamEvent, TextPart


# The versions of the cache's table, oldest first (see modelport.state.records.migrate).
STEPS = (
    """CREATE TABLE entries (
        key TEXT PRIMARY KEY,
        model TEXT NOT NULL,
        response_json TEXT NOT NULL,
        created_at REAL NOT NULL,
        hits INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX entries_created_at ON entries (created_at)""",
)
COLUMNS = ("key", "model", "response_json", "created_at", "hits")


def _legacy_version(db: RecordsDB) -> int:
    """A cache.db of a modelport that counted versions in PRAGMA user_version: its one
    version made the entries table."""
    return 1 if db.columns("entries") else 0


def open_cache(url: str | None, path: Path) -> RecordsDB:
    """The cache's records database (``url``, else the SQLite file ``path``) at its newest schema."""
    from modelport.state.records import open_store

    return open_store(url, path, "response_cache", STEPS, legacy=_legacy_version)


def default_cache_path(loaded: dict[str, Any] | None = None) -> Path:
    configured = os.environ.get("MODELPORT_CACHE_PATH")
    return Path(configured).expanduser() if configured else default_log_path(loaded).parent / "cache.db"


def cache_for(setting: bool | float | None = None, loaded: dict[str, Any] | None = None, url: str | None = None) -> ResponseCache | None:
    """The cache to use, or None: ``MODELPORT_CACHE=0`` always wins; then ``setting``
    (True, False, or a TTL in seconds); then ``MODELPORT_CACHE`` (1 or a TTL); then the
    config's ``[cache]`` table (``loaded``, by default the process's config file); else off.
    ``url``: a records database to keep it in instead of the local file."""
    env = os.environ.get("MODELPORT_CACHE", "").strip().lower()
    if env in {"0", "false", "no", "off"}:
        return None
    if setting is None and env:
        setting = True if env in {"1", "true", "yes", "on"} else float(env)
    config = section("cache", loaded)
    if setting is None:
        setting = bool(config.get("enabled", False))
    if setting is False:
        return None
    ttl = config.get("ttl") if setting is True else float(setting)
    return ResponseCache(default_cache_path(loaded), ttl=None if ttl is None else float(ttl), url=url)


def request_key(request: ChatRequest) -> str:
    # Stdlib json with fixed options, never orjson: a key must not depend on what is installed.
    canonical = json.dumps(
        request_to_dict(request, include_stream=False), sort_keys=True, ensure_ascii=False, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class ResponseCache:
    """Cached responses at ``path`` (or in the records database ``url``); entries older
    than ``ttl`` seconds are misses."""

    def __init__(self, path: str | Path | None = None, ttl: float | None = None, url: str | None = None) -> None:
        self.path = Path(path).expanduser() if path is not None else default_cache_path()
        self.url = url
        self.ttl = ttl
        # Called from any thread (the SDK's callers, the gateway's): the worker serializes them.
        self._io: StoreRunner[RecordsDB] = StoreRunner("cache", lambda: open_cache(self.url, self.path))

    key = staticmethod(request_key)

    def get(self, request: ChatRequest) -> ChatResponse | None:
        found = self._io.call(self._lookup, request_key(request))
        return None if found is None else response_from_dict(json.loads(found))

    def _lookup(self, key: str) -> str | None:
        db = self._io.conn
        row = db.execute("SELECT response_json, created_at FROM entries WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        if self.ttl is not None and row[1] < time.time() - self.ttl:
            db.execute("DELETE FROM entries WHERE key = ?", (key,))
            return None
        db.execute("UPDATE entries SET hits = hits + 1 WHERE key = ?", (key,))
        return str(row[0])

    def put(self, request: ChatRequest, response: ChatResponse) -> None:
        """Store an answer; one that ended in an error is not worth replaying."""
        if response.finish_reason == "error":
            return
        text = json.dumps(response_to_dict(response), ensure_ascii=False)
        self._io.call(lambda: self._io.conn.execute(
            "INSERT INTO entries (key, model, response_json, created_at, hits) VALUES (?, ?, ?, ?, 0) ON CONFLICT (key) DO UPDATE"
            " SET model = excluded.model, response_json = excluded.response_json, created_at = excluded.created_at, hits = 0",
            (request_key(request), request.model, text, time.time()),
        ))

    def clear(self) -> int:
        """Remove every entry; returns how many there were."""

        def clear() -> int:
            db = self._io.conn
            removed = int(db.execute("DELETE FROM entries").rowcount)
            db.compact()
            return removed

        return self._io.call(clear)

    def stats(self) -> dict[str, Any]:
        def read() -> tuple[Any, ...]:
            db = self._io.conn
            entries, hits, oldest, newest = db.execute(
                "SELECT count(*), coalesce(sum(hits), 0), min(created_at), max(created_at) FROM entries"
            ).fetchone()
            expired = 0
            if self.ttl is not None:
                expired = db.execute("SELECT count(*) FROM entries WHERE created_at < ?", (time.time() - self.ttl,)).fetchone()[0]
            return entries, hits, oldest, newest, expired, db.url, db.footprint()

        entries, hits, oldest, newest, expired, where, size = self._io.call(read)
        return {
            "path": str(self.path) if size is not None else where,
            "entries": int(entries),
            "hits": int(hits),
            "expired": int(expired),
            "ttl": self.ttl,
            "oldest": oldest,
            "newest": newest,
            "bytes": size,
        }

    def close(self) -> None:
        """Close the connection on its thread and let the thread go; using the cache again reopens both."""
        self._io.close()


# The cache's part of `modelport state migrate` (see modelport.state.copy).
CACHE_COPY = StoreCopy("cached responses", default_cache_path, open_cache, (Table("entries", COLUMNS, ("key",)),))


def replay(response: ChatResponse) -> list[StreamEvent]:
    """The stream events that ``StreamAccumulator`` assembles back into ``response``.

    A stream carries reasoning (with its signature), text, tool calls, usage and the finish
    reason; the envelope (``provider``, ``created``, ``latency``) is the caller's to set.
    """
    events = [StreamEvent("start", id=response.id, model=response.model)]
    for part in response.message.content:
        if isinstance(part, ReasoningPart):
            events.append(StreamEvent("reasoning", text=part.text, signature=part.signature))
        elif isinstance(part, TextPart):
            events.append(StreamEvent("text", text=part.text))
    for index, call in enumerate(response.message.tool_calls):
        events.append(
            StreamEvent("tool_call", index=index, id=call.id, name=call.name, arguments=call.arguments, signature=call.signature)
        )
    events.append(StreamEvent("usage", usage=response.usage))
    events.append(StreamEvent("finish", finish_reason=response.finish_reason))
    return events
