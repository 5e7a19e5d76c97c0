"""The call log: one SQLite row per model call made through the SDK, CLI, batch engine or
gateway.

It is a plain SQLite file (``modelport logs path`` prints where) that sqlite3, datasette
or pandas open directly: table ``calls`` with one column per fact and the full canonical
request and response as JSON, plus the full-text index ``calls_fts``.

Recording never slows the caller: ``record`` stamps an id, turns the request and response
into plain data (so later mutation by the caller cannot change what is logged) and queues
it; the log's writer thread (a StoreRunner) writes the calls queued together in batched
transactions. ``flush`` waits for what was queued, reads flush first, and the queue is
written out at interpreter exit.

Secrets are never stored: headers and keys never reach this module, ``extra`` entries whose
names look like credentials are replaced, and anything shaped like an API key, or equal to
a credential found in the environment, is redacted from every stored text.

Switches: ``MODELPORT_LOG=0`` turns logging off everywhere (``MODELPORT_LOG=1`` turns it
on for the SDK too); ``MODELPORT_LOG_PATH`` moves the file; the config file's ``[log]``
table may set ``enabled`` and ``path``, and bound what the log keeps with ``max_age_days``
and ``max_mb`` (``Retention``: a gateway's writer prunes by itself, ``modelport logs prune`` now).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import re
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from concurrent.futures import Future, wait
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

from modelport import config
from modelport.errors import ConfigError
from modelport.serialize import (
    message_from_dict,
    request_from_dict,
    request_to_dict,
    response_from_dict,
    response_to_dict,
    usage_to_dict,
)
from modelport.state.records import RecordsDB, SQLiteRecords, Step, migrated
from modelport.state.runner import StoreRunner
from modelport.types import ChatRequest, ChatResponse, Message, Usage

SOURCES = ("sdk", "cli", "batch", "gateway")
REDACTED = "[redacted]"
T = TypeVar("T")

_log = logging.getLogger("modelport.calllog")
_OFF = {"0", "false", "no", "off"}
_ON = {"1", "true", "yes", "on"}
_WRITE_BATCH = 500
# Calls waiting for the writer. When a million-row batch outruns SQLite, record() waits for
# room instead of letting the backlog (and the process's memory) grow without bound.
_MAX_PENDING = 5000

# ---------------------------------------------------------------------------------------
# Schema: the records layer's versioned steps (modelport.state.records.migrate), each never
# edited once released; an old file replays the ones it lacks, in place.

# `seq` is an explicit INTEGER PRIMARY KEY because the full-text index refers to rows by
# rowid, and VACUUM may renumber an implicit rowid.
_CALLS_TABLE = """CREATE TABLE calls (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    source TEXT NOT NULL,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    conversation_id TEXT,
    key_name TEXT,
    prompt TEXT NOT NULL DEFAULT '',
    response TEXT,
    request_json TEXT NOT NULL,
    response_json TEXT,
    finish_reason TEXT,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    cached_tokens INTEGER NOT NULL DEFAULT 0,
    reasoning_tokens INTEGER NOT NULL DEFAULT 0,
    cost REAL,
    latency REAL,
    error_kind TEXT,
    error TEXT,
    cached INTEGER NOT NULL DEFAULT 0,
    stream INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX calls_created_at ON calls (created_at);
CREATE INDEX calls_conversation ON calls (conversation_id, seq);
CREATE INDEX calls_model ON calls (provider, model)"""


def _full_text(db: RecordsDB) -> None:
    # An external-content index: the text lives once, in `calls`; triggers keep it in step,
    # and 'rebuild' indexes the rows a version-1 file already holds. A function, not SQL
    # text: the triggers' bodies hold semicolons.
    db.execute("CREATE VIRTUAL TABLE calls_fts USING fts5(prompt, response, content='calls', content_rowid='seq')")
    db.execute(
        "CREATE TRIGGER calls_fts_insert AFTER INSERT ON calls BEGIN "
        "INSERT INTO calls_fts (rowid, prompt, response) VALUES (new.seq, new.prompt, new.response); END"
    )
    db.execute(
        "CREATE TRIGGER calls_fts_delete AFTER DELETE ON calls BEGIN "
        "INSERT INTO calls_fts (calls_fts, rowid, prompt, response) VALUES ('delete', old.seq, old.prompt, old.response); END"
    )
    db.execute(
        "CREATE TRIGGER calls_fts_update AFTER UPDATE ON calls BEGIN "
        "INSERT INTO calls_fts (calls_fts, rowid, prompt, response) VALUES ('delete', old.seq, old.prompt, old.response); "
        "INSERT INTO calls_fts (rowid, prompt, response) VALUES (new.seq, new.prompt, new.response); END"
    )
    db.execute("INSERT INTO calls_fts (calls_fts) VALUES ('rebuild')")


# Covers usage sums over a time range (the console's charts, `modelport usage`): they read
# this index alone instead of every row's request and response JSON.
_USAGE_INDEX = ("CREATE INDEX calls_usage ON calls (created_at, provider, model, source, key_name, error_kind, cached, "
                "input_tokens, output_tokens, cost)")

# The gateway key's id beside its name: a revoked key's name may be given to a new key, and
# the id is what tells their calls apart (rows logged before this step keep NULL). The
# usage index gains it so usage per key id is still read from the index alone.
_KEY_ID = """ALTER TABLE calls ADD COLUMN key_id TEXT;
DROP INDEX calls_usage;
CREATE INDEX calls_usage ON calls (created_at, provider, model, source, key_name, key_id, error_kind, cached,
    input_tokens, output_tokens, cost)"""

# Tokens written to a provider's prompt cache (billed above the input rate), beside the
# cached tokens read: what caching cost and saved.
_CACHE_WRITES = "ALTER TABLE calls ADD COLUMN cache_write_tokens INTEGER NOT NULL DEFAULT 0"

STEPS: tuple[Step, ...] = (_CALLS_TABLE, _full_text, _USAGE_INDEX, _KEY_ID, _CACHE_WRITES)
SCHEMA_VERSION = len(STEPS)


def _legacy_version(db: RecordsDB) -> int:
    """A log file of a modelport that counted its steps in ``PRAGMA user_version``: that count."""
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def connect(path: Path) -> SQLiteRecords:
    """Open (creating if needed) a call log file, 0600 and in WAL mode, at its newest schema."""
    return migrated(SQLiteRecords(path), "call_log", STEPS, legacy=_legacy_version)


# ---------------------------------------------------------------------------------------
# Ids and time

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# Two characters per lookup: 13 lookups encode an id instead of 26 shifts and masks.
_CROCKFORD_PAIRS = [a + b for a in _CROCKFORD for b in _CROCKFORD]
_id_lock = threading.Lock()
_last_id_ms = 0
_last_id_random = 0


def new_id() -> str:
    """A ULID: 26 characters that sort by creation time (monotonic within a process)."""
    global _last_id_ms, _last_id_random
    with _id_lock:
        ms = time.time_ns() // 1_000_000
        if ms <= _last_id_ms:
            ms, rand = _last_id_ms, _last_id_random + 1
            if rand >> 80:
                ms, rand = ms + 1, int.from_bytes(os.urandom(10), "big")
        else:
            rand = int.from_bytes(os.urandom(10), "big")
        _last_id_ms, _last_id_random = ms, rand
    value = (ms << 80) | rand
    return "".join([_CROCKFORD_PAIRS[(value >> shift) & 1023] for shift in range(120, -1, -10)])


def _iso(ts: float) -> str:
    """UTC with milliseconds and a Z: sorts as text, and SQLite's date functions read it."""
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$", re.I)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(value: str | datetime, now: datetime | None = None) -> datetime:
    """``30m``, ``2h``, ``3d``, ``1w``, an ISO date (``2025-06-01``, local midnight) or
    date-time, or a datetime; naive times are local. Raises ValueError saying what it takes."""
    if isinstance(value, datetime):
        moment = value
    else:
        match = _RELATIVE.match(value)
        if match:
            seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2).lower()]
            return (now or datetime.now(timezone.utc)) - timedelta(seconds=seconds)
        try:
            moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(
                f"cannot read {value!r} as a time: use an age like 30m, 2h, 3d, 1w or a date like 2025-06-01"
            ) from None
    if moment.tzinfo is None:
        moment = moment.astimezone()
    return moment.astimezone(timezone.utc)


# ---------------------------------------------------------------------------------------
# Secrets

_SECRET_NAME = re.compile(
    r"api[-_]?key|secret|passw|authori[sz]ation|credential|cookie|token(?!s)|(^|[-_.])(key|auth)($|[-_.])",
    re.I,
)
# Shapes of provider keys and bearer credentials, wherever they appear.
_SECRET_VALUE = re.compile(
    r"sk-[A-Za-z0-9_\-]{16,}|gsk_[A-Za-z0-9]{20,}|xai-[A-Za-z0-9]{20,}|AIza[0-9A-Za-z_\-]{30,}"
    r"|hf_[A-Za-z0-9]{20,}|(?i:bearer)\s+[A-Za-z0-9._~+/\-]{8,}=*"
)
_SECRET_ENV = re.compile(r"API_KEY|_KEY$|TOKEN|SECRET|PASSWORD", re.I)


def _environment_secrets() -> list[str]:
    return sorted(
        {value for name, value in os.environ.items() if _SECRET_ENV.search(name) and len(value) >= 8},
        key=len,
        reverse=True,
    )


def scrub_params(value: Any) -> Any:
    """``extra`` with every credential-looking entry replaced, recursively."""
    if isinstance(value, dict):
        return {k: REDACTED if isinstance(k, str) and _SECRET_NAME.search(k) else scrub_params(v) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub_params(v) for v in value]
    return value


# ---------------------------------------------------------------------------------------
# Switches and the shared instance


def default_log_path(loaded: dict[str, Any] | None = None) -> Path:
    """``MODELPORT_LOG_PATH``, else the config's ``[log] path`` (``loaded``, by default the
    process's config file), else ``logs.db`` in the user data dir."""
    configured = os.environ.get("MODELPORT_LOG_PATH") or config.section("log", loaded).get("path")
    if configured:
        return Path(configured).expanduser()
    return config.data_dir() / "logs.db"


def logging_enabled(source: str, enabled: bool | None = None, loaded: dict[str, Any] | None = None) -> bool:
    """Whether calls from ``source`` are logged: ``MODELPORT_LOG=0`` always wins; then the
    caller's explicit choice; then ``MODELPORT_LOG=1``; then ``[log] enabled`` in the
    config; else on for the CLI, batch engine and gateway and off for the SDK."""
    env = os.environ.get("MODELPORT_LOG", "").strip().lower()
    if env in _OFF:
        return False
    if enabled is not None:
        return enabled
    if env in _ON:
        return True
    configured = config.section("log", loaded).get("enabled")
    if configured is not None:
        return bool(configured)
    return source != "sdk"


_shared: dict[Path, CallLog] = {}
_shared_lock = threading.Lock()


def log_for(source: str, enabled: bool | None = None, loaded: dict[str, Any] | None = None) -> CallLog | None:
    """The process-wide log if calls from ``source`` should be logged, else None; ``loaded``
    is the caller's config (by default the process's config file)."""
    if not logging_enabled(source, enabled, loaded):
        return None
    path = default_log_path(loaded)
    with _shared_lock:
        log = _shared.get(path)
        if log is None:
            log = _shared[path] = CallLog(path)
        return log


# ---------------------------------------------------------------------------------------
# Reading


@dataclass(slots=True)
class LoggedCall:
    id: str
    created_at: str
    source: str
    provider: str
    model: str
    request: ChatRequest
    response: ChatResponse | None
    prompt: str
    response_text: str | None
    usage: Usage
    cost: float | None
    latency: float | None
    conversation_id: str | None
    key_name: str | None
    key_id: str | None
    error_kind: str | None
    error: str | None
    cached: bool
    stream: bool

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data, the shape of ``logs --json`` and JSONL export."""
        return {
            "id": self.id,
            "created_at": self.created_at,
            "source": self.source,
            "provider": self.provider,
            "model": self.model,
            "conversation_id": self.conversation_id,
            "key_name": self.key_name,
            "key_id": self.key_id,
            "prompt": self.prompt,
            "response_text": self.response_text,
            "usage": usage_to_dict(self.usage),
            "cost": self.cost,
            "latency": self.latency,
            "error_kind": self.error_kind,
            "error": self.error,
            "cached": self.cached,
            "stream": self.stream,
            "request": request_to_dict(self.request),
            "response": response_to_dict(self.response) if self.response is not None else None,
        }


@dataclass(slots=True)
class UsageRow:
    group: str
    calls: int
    errors: int
    cache_hits: int
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    reasoning_tokens: int
    cost: float
    # Calls that were billed but whose price is unknown: ``cost`` is then a lower bound.
    unpriced_calls: int
    cache_write_tokens: int = 0
    # USD prompt caching saved against the full input rate (``prices.cache_saving``).
    cache_saved: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


def cache_savings(rows: Iterable[tuple[Any, str, str, int, int]]) -> dict[Any, tuple[int, float]]:
    """Cache-write tokens and the USD prompt caching saved, per group, from rows of (group,
    provider, model, cached tokens, cache-write tokens): a cached token saves what its
    model's price says, so totals are summed per model first. Unknown prices save nothing."""
    from .prices import cache_saving, price_for

    out: dict[Any, tuple[int, float]] = {}
    for group, provider, model, read, written in rows:
        writes, saved = out.get(group, (0, 0.0))
        out[group] = (writes + written, round(saved + (cache_saving(read, written, price_for(provider, model)) or 0.0), 11))
    return out


_CALL_COLUMNS = (
    "id, created_at, source, provider, model, request_json, response_json, prompt, response, "
    "input_tokens, output_tokens, cached_tokens, cache_write_tokens, reasoning_tokens, cost, latency, "
    "conversation_id, key_name, key_id, error_kind, error, cached, stream"
)

# A call was billed when it produced a response that did not come from the cache. On
# error_kind (set whenever error is), so the covering index calls_usage serves the sums.
_BILLED = "(error_kind IS NULL AND cached = 0)"
# Between a key's name and its id in a usage group by key (see _name_keys).
_KEY_SEP = "\x1f"
# What usage can be grouped by; `usage` also by local day, `usage_series` by time bucket.
USAGE_BY = {
    "model": "provider || '/' || model",
    "provider": "provider",
    # Name and id (see _name_keys): two keys that held one name are two groups.
    "key": f"coalesce(key_name, '(no key)') || coalesce(char({ord(_KEY_SEP)}) || key_id, '')",
    "source": "source",
}
USAGE_GROUPS = {"day": "date(created_at, 'localtime')", **USAGE_BY}
# Time buckets as prefixes of the stored UTC time: a day is its first 10 characters, an hour 13.
BUCKETS = {"day": 10, "hour": 13, "month": 7}
# Per group: calls, errors, cache hits, then the billed calls' tokens and cost, and how many
# billed calls had no known price.
_USAGE_SUMS = (
    "count(*), sum(error_kind IS NOT NULL), sum(cached), "
    f"sum(CASE WHEN {_BILLED} THEN input_tokens ELSE 0 END), "
    f"sum(CASE WHEN {_BILLED} THEN output_tokens ELSE 0 END), "
    f"sum(CASE WHEN {_BILLED} THEN cached_tokens ELSE 0 END), "
    f"sum(CASE WHEN {_BILLED} THEN reasoning_tokens ELSE 0 END), "
    f"total(CASE WHEN {_BILLED} THEN cost END), "
    f"sum({_BILLED} AND cost IS NULL)"
)
# A call in a list: its facts and the start of its prompt and answer, without the JSON.
_SUMMARY_COLUMNS = ("seq, id, created_at, source, provider, model, key_name, key_id, substr(prompt, 1, 200), substr(response, 1, 200), "
                    "input_tokens, output_tokens, cost, latency, error_kind, cached, stream")


class FilterError(ValueError):
    """A filter value that cannot be used; ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True, slots=True)
class CallFilter:
    """Which calls a query reads; every field given must match.

    ``model`` matches the provider's id or ``provider/model``, with ``*`` wildcards;
    ``since`` and ``until`` take what ``parse_since`` takes (``until`` excluded); ``status``
    is ``ok`` or ``error``; ``search`` finds calls whose prompt or response has all its words.
    """

    model: str | None = None
    provider: str | None = None
    source: str | None = None
    key_name: str | None = None
    key_id: str | None = None
    conversation_id: str | None = None
    since: str | datetime | None = None
    until: str | datetime | None = None
    status: str | None = None
    search: str | None = None

    def where(self) -> tuple[str, list[Any]]:
        """The SQL condition (`` WHERE ...``, or empty) and its parameters; FilterError for a bad value."""
        where: list[str] = []
        params: list[Any] = []
        if self.model is not None:
            op = "GLOB" if "*" in self.model else "="
            where.append(f"(model {op} ? OR provider || '/' || model {op} ?)")
            params += [self.model, self.model]
        for column, value in (("provider", self.provider), ("source", self.source), ("key_name", self.key_name),
                              ("key_id", self.key_id), ("conversation_id", self.conversation_id)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if self.status is not None:
            if self.status not in ("ok", "error"):
                raise FilterError("status", "ok or error")
            where.append("error_kind IS NULL" if self.status == "ok" else "error_kind IS NOT NULL")
        bounds: tuple[tuple[str, str, str | datetime | None], ...] = (("since", ">=", self.since), ("until", "<", self.until))
        for field, op, bound in bounds:
            if bound is not None:
                try:
                    moment = parse_since(bound)
                except ValueError as exc:
                    raise FilterError(field, str(exc)) from None
                where.append(f"created_at {op} ?")
                params.append(_iso(moment.timestamp()))
        if self.search is not None:
            try:
                expression = _match_expression(self.search)
            except ValueError as exc:
                raise FilterError("search", str(exc)) from None
            where.append("seq IN (SELECT rowid FROM calls_fts WHERE calls_fts MATCH ?)")
            params.append(expression)
        return (" WHERE " + " AND ".join(where) if where else ""), params


@dataclass(frozen=True, slots=True)
class CallSummary:
    """A call as a list shows it: ``seq`` orders the log (and pages it: ``before``)."""

    seq: int
    id: str
    created_at: str
    source: str
    provider: str
    model: str
    key_name: str | None
    key_id: str | None
    prompt: str  # its first 200 characters
    response: str | None  # likewise
    input_tokens: int
    output_tokens: int
    cost: float | None
    latency: float | None
    error_kind: str | None
    cached: bool
    stream: bool

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


@dataclass(frozen=True, slots=True)
class UsageBucket:
    """One group's usage in one time bucket (``time``: the bucket's UTC start, as a prefix
    of the stored ISO times, e.g. ``2025-06-01T14`` for an hour)."""

    time: str
    usage: UsageRow


def _row_to_call(row: tuple[Any, ...]) -> LoggedCall:
    (id_, created_at, source, provider, model, request_json, response_json, prompt, response_text,
     input_tokens, output_tokens, cached_tokens, cache_write_tokens, reasoning_tokens, cost, latency,
     conversation_id, key_name, key_id, error_kind, error, cached, stream) = row
    return LoggedCall(
        id=id_,
        created_at=created_at,
        source=source,
        provider=provider,
        model=model,
        request=request_from_dict(json.loads(request_json)),
        response=response_from_dict(json.loads(response_json)) if response_json else None,
        prompt=prompt,
        response_text=response_text,
        usage=Usage(input_tokens, output_tokens, cached_tokens, cache_write_tokens, reasoning_tokens),
        cost=cost,
        latency=latency,
        conversation_id=conversation_id,
        key_name=key_name,
        key_id=key_id,
        error_kind=error_kind,
        error=error,
        cached=bool(cached),
        stream=bool(stream),
    )


def _match_expression(search: str) -> str:
    """Each word as a quoted FTS5 phrase, so text like ``gpt-4o`` or ``AND`` never trips the
    query syntax; the words must all appear."""
    words = search.split()
    if not words:
        raise ValueError("the search text is empty")
    return " ".join('"' + word.replace('"', '""') + '"' for word in words)


# ---------------------------------------------------------------------------------------
# Retention

# How often a gateway prunes its log, and the calls one piece of pruning deletes (one
# transaction on the writer thread: calls recorded meanwhile are written between pieces).
PRUNE_EVERY = 300.0
_PRUNE_BATCH = 1000


@dataclass(frozen=True, slots=True)
class Retention:
    """What the call log keeps (``[log] max_age_days`` and ``max_mb``; None: no bound).

    ``max_mb`` bounds the MB the log's calls and their full-text index take in the file:
    its pages in use, not its size. Pruning frees pages that new calls reuse, so the file
    stops growing near ``max_mb``; ``modelport logs prune --vacuum`` gives them back to the disk.
    """

    max_age_days: float | None = None
    max_mb: float | None = None

    @classmethod
    def from_config(cls, loaded: dict[str, Any] | None = None) -> Retention:
        """The ``[log]`` table's bounds (``loaded``, by default the process's config file)."""
        table = config.section("log", loaded)
        values = {}
        for name in ("max_age_days", "max_mb"):
            value = table.get(name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
                raise ConfigError(f"[log] {name} must be a positive number, not {value!r}",
                                  hint=f"set {name} under [log] in the config to a number above 0, or remove it for no bound")
            values[name] = value
        return cls(**values)

    @property
    def bounded(self) -> bool:
        return self.max_age_days is not None or self.max_mb is not None


@dataclass(frozen=True, slots=True)
class Pruned:
    """What a prune did: the calls removed, and the MB in use (see Retention) before and after."""

    removed: int
    mb_before: float
    mb_after: float
    file_mb: float


def _mb_in_use(db: SQLiteRecords) -> float:
    """The MB of the file's pages in use (free pages excluded): three pragmas, no scan."""
    pages, free, size = (db.execute(f"PRAGMA {name}").fetchone()[0] for name in ("page_count", "freelist_count", "page_size"))
    return (pages - free) * size / 1e6


def _prune_piece(db: SQLiteRecords, retention: Retention, limit: int) -> int:
    """Delete up to ``limit`` of the oldest calls the bounds exclude, in one transaction;
    how many. Deleting from ``calls`` fires its trigger, which takes each call out of the
    full-text index too."""
    if retention.max_age_days is not None:
        cutoff = _iso(time.time() - retention.max_age_days * 86400)
        with db.transaction():
            # By created_at, so the index finds the old calls (by seq, a log with none is scanned whole).
            removed = db.execute("DELETE FROM calls WHERE seq IN (SELECT seq FROM calls WHERE created_at < ? ORDER BY created_at LIMIT ?)",
                                 (cutoff, limit)).rowcount
        if removed:
            return int(removed)
    if retention.max_mb is None:
        return 0
    used = _mb_in_use(db)
    if used <= retention.max_mb:
        return 0
    first, last = db.execute("SELECT min(seq), max(seq) FROM calls").fetchone()
    if first is None:
        return 0  # nothing left to delete: what remains is the schema and the index's own pages
    # The share of the calls over the bound, oldest first (seq has no gaps but deleted ones).
    over = min(limit, max(1, int((last - first + 1) * (used - retention.max_mb) / used) + 1))
    with db.transaction():
        return int(db.execute("DELETE FROM calls WHERE seq IN (SELECT seq FROM calls ORDER BY seq LIMIT ?)", (over,)).rowcount)


# ---------------------------------------------------------------------------------------
# Writing


_INSERT_CALL = (
    "INSERT INTO calls (id, created_at, source, provider, model, conversation_id, key_name, key_id, "
    "prompt, response, request_json, response_json, finish_reason, input_tokens, output_tokens, "
    "cached_tokens, cache_write_tokens, reasoning_tokens, cost, latency, error_kind, error, "
    "cached, stream) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)


class _Pending:
    """One queued call, already plain data so the caller may reuse its objects at once."""

    __slots__ = ("id", "ts", "request", "response", "error_kind", "error", "provider", "model", "source",
                 "latency", "conversation_id", "key_name", "key_id", "cached", "usage", "batch_discount", "prices")
    id: str
    ts: float
    request: dict[str, Any]
    response: dict[str, Any] | None
    error_kind: str | None
    error: str | None
    provider: str
    model: str
    source: str
    latency: float | None
    conversation_id: str | None
    key_name: str | None
    key_id: str | None
    cached: bool
    usage: Usage | None
    batch_discount: float
    prices: dict[str, Any] | None

    def __init__(self, **fields: Any) -> None:
        for name, value in fields.items():
            setattr(self, name, value)


_live_logs: weakref.WeakSet[CallLog] = weakref.WeakSet()


@atexit.register
def _flush_all_at_exit() -> None:
    for log in list(_live_logs):
        log.close(timeout=5.0)


def _closed_or_exiting(runner: StoreRunner[SQLiteRecords]) -> None:
    try:
        runner.close()
    except RuntimeError:
        pass  # interpreter exit: no thread takes work any more, and the process closes the file


def _prompt_text(messages: list[dict[str, Any]]) -> str:
    """The text of the turn this call added: the messages after the last assistant one.

    Earlier turns were indexed with the calls that added them, so a long conversation
    does not index its history again on every call."""
    last_assistant = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=-1)
    texts = (
        part["text"]
        for message in messages[last_assistant + 1 :]
        for part in message.get("content", ())
        if part["type"] == "text"
    )
    return "\n\n".join(t for t in texts if t)


def _response_text(message: dict[str, Any]) -> str:
    lines = [part["text"] for part in message.get("content", ()) if part["type"] == "text" and part["text"]]
    lines += [f"[tool call] {call['name']}({call['arguments']})" for call in message.get("tool_calls", ())]
    return "\n\n".join(lines)


class CallLog:
    """The call log at ``path`` (default: see ``default_log_path``)."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path).expanduser() if path is not None else default_log_path()
        # What the writer prunes on its own, and when it last did (``retain``; off by default).
        self._retention = Retention()
        self._prune_every = PRUNE_EVERY
        self._pruned = float("-inf")
        self.enabled = os.environ.get("MODELPORT_LOG", "").strip().lower() not in _OFF
        self._secrets = _environment_secrets()
        self._lock = threading.Lock()
        self._pid = os.getpid()
        # Calls waiting for the writer, and the job queued to write them all in one go.
        self._pending: list[_Pending] = []
        self._job: Future[None] | None = None
        self._room = threading.BoundedSemaphore(_MAX_PENDING)
        self._writing = False  # whether this process has queued a write since the log was closed
        self._writes: StoreRunner[SQLiteRecords] = StoreRunner("calllog", lambda: connect(self.path))
        # Reads run on a thread of their own, beside the writer's, with their own connection.
        self._reads: StoreRunner[SQLiteRecords] = StoreRunner("calllog-reads", lambda: connect(self.path))
        _live_logs.add(self)

    def retain(self, retention: Retention, every: float | None = None) -> None:
        """Keep the log within ``retention`` from now on: the writer prunes it after a write,
        at most once every ``every`` seconds (default PRUNE_EVERY), the first time at the
        first write. The gateway's log does; a CLI's, gone in a second, leaves it to `logs prune`."""
        self._retention, self._prune_every = retention, PRUNE_EVERY if every is None else every

    def prune(self, retention: Retention, *, vacuum: bool = False) -> Pruned:
        """Delete the calls ``retention`` excludes, oldest first, now (blocking); with
        ``vacuum``, give the freed pages back to the disk (rewrites the file)."""

        def run() -> Pruned:
            db = self._writes.conn
            before, removed = _mb_in_use(db), 0
            while piece := _prune_piece(db, retention, _PRUNE_BATCH):
                removed += piece
            if vacuum:
                db.compact()
            return Pruned(removed, before, _mb_in_use(db), (db.footprint() or 0) / 1e6)

        self.flush()
        return self._writes.call(run)

    def _prune_due(self) -> None:
        """On the writer, after a write: start pruning if it is time."""
        if not self._retention.bounded or time.monotonic() - self._pruned < self._prune_every:
            return
        self._pruned = time.monotonic()
        self._prune_step()

    def _prune_step(self) -> None:
        """One piece of pruning; the next is queued behind the writes recorded meanwhile."""
        try:
            removed = _prune_piece(self._writes.conn, self._retention, _PRUNE_BATCH)
        except Exception as exc:  # a locked or full disk costs the log its pruning, never a call
            _log.warning("modelport: could not prune the call log %s: %s", self.path, exc)
            return
        if removed == _PRUNE_BATCH and self._writing:  # a closed log's writer takes no more pieces
            try:
                self._writes.submit(self._prune_step)
            except RuntimeError:
                pass  # interpreter exit: the rest waits for the next run

    def add_secret(self, value: str) -> None:
        """Never store this value (e.g. a key the gateway or client holds), wherever it appears."""
        if value and len(value) >= 4:
            self._secrets = sorted({*self._secrets, value}, key=len, reverse=True)

    # -- writing ------------------------------------------------------------------------

    def record(
        self,
        request: ChatRequest,
        response: ChatResponse | None = None,
        error: BaseException | str | None = None,
        *,
        provider: str,
        model: str,
        source: str,
        latency: float | None = None,
        conversation_id: str | None = None,
        key_name: str | None = None,
        key_id: str | None = None,
        cached: bool = False,
        batch_discount: float = 0.0,
        prices: dict[str, Any] | None = None,
    ) -> str:
        """Queue one call for the log and return its id at once.

        ``model`` is the provider's own model id (a ``provider/`` prefix is dropped); ``source`` one of SOURCES; ``latency``
        in seconds (defaults to ``response.latency``); ``key_name`` and ``key_id`` are the
        gateway key's; ``cached`` marks a response served
        from the response cache (it cost nothing); ``batch_discount`` is passed to
        ``prices.cost`` for calls made through a provider's batch API; ``prices`` is the
        caller's config's ``[prices]`` table (by default the process's config file's).
        """
        call_id = new_id()
        if not self.enabled:
            return call_id
        # Callers may hand over the routed name ("groq/openai/gpt-oss-120b"); prices and
        # the log's model column use the provider's own id.
        if model.startswith(provider + "/"):
            model = model[len(provider) + 1 :]
        if isinstance(error, BaseException):
            error_kind = getattr(error, "kind", None) or type(error).__name__
            error_text = str(error) or type(error).__name__
        elif error is not None:
            error_kind, error_text = "error", error
        else:
            error_kind = error_text = None
        pending = _Pending(
            id=call_id,
            ts=time.time(),
            request=request_to_dict(request),
            response=response_to_dict(response) if response is not None else None,
            usage=response.usage if response is not None else None,
            error_kind=error_kind,
            error=error_text,
            provider=provider,
            model=model,
            source=source,
            latency=latency if latency is not None else (response.latency if response is not None else None),
            conversation_id=conversation_id,
            key_name=key_name,
            key_id=key_id,
            cached=cached,
            batch_discount=batch_discount,
            prices=prices,
        )
        self._here()
        self._room.acquire()  # a backlog at _MAX_PENDING holds the caller up rather than growing
        with self._lock:
            self._pending.append(pending)
            if self._job is None:
                self._writing = True
                self._job = self._writes.submit(self._write_pending)
        return call_id

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything recorded so far is on disk; False if ``timeout`` ran out."""
        self._here()
        if not self._writing:
            return True
        try:
            # The writer runs jobs in order: this one ends after every write queued before it.
            marker = self._writes.submit(lambda: None)
        except RuntimeError:
            return True  # interpreter exit: the writer has run every queued write and ended
        return bool(wait([marker], timeout).done)

    def close(self, timeout: float | None = None) -> None:
        """Flush, stop the writer thread and close connections; recording restarts it."""
        if self.flush(timeout):
            self._writing = False
            _closed_or_exiting(self._writes)
        _closed_or_exiting(self._reads)

    def _here(self) -> None:
        """A forked child inherits the calls its parent had waiting (the parent writes them),
        not its writer: it starts with none."""
        if self._pid != os.getpid():
            with self._lock:
                if self._pid != os.getpid():
                    self._pid, self._pending, self._job, self._writing = os.getpid(), [], None, False
                    self._room = threading.BoundedSemaphore(_MAX_PENDING)

    def _write_pending(self) -> None:
        """The writer's job: the calls waiting now, in transactions of up to _WRITE_BATCH.
        Calls recorded meanwhile queue the next job, behind any ``flush`` made before them."""
        with self._lock:
            calls, self._pending, self._job = self._pending, [], None
        try:
            for start in range(0, len(calls), _WRITE_BATCH):
                rows = [row for row in map(self._row_or_none, calls[start:start + _WRITE_BATCH]) if row is not None]
                try:
                    if rows:
                        self._insert(self._writes.conn, rows)
                except Exception as exc:  # a full disk or a locked file must not break the caller
                    _log.warning("modelport: could not write calls to the log %s: %s", self.path, exc)
        finally:
            for _ in calls:
                self._room.release()
        self._prune_due()

    def _row_or_none(self, call: _Pending) -> tuple[Any, ...] | None:
        """The row for one call, or None (with a warning) when that call cannot be stored:
        one odd call must not cost the others in its write batch their rows."""
        try:
            return self._row(call)
        except Exception as exc:
            _log.warning("modelport: could not log call %s: %s: %s", call.id, type(exc).__name__, exc)
            return None

    def _insert(self, conn: SQLiteRecords, rows: list[tuple[Any, ...]]) -> None:
        """All rows in one transaction; if that fails, each row in its own, so a row SQLite
        refuses (a value out of its range) is the only one lost."""
        try:
            with conn.transaction():
                conn.executemany(_INSERT_CALL, rows)
            return
        except Exception as exc:
            if len(rows) == 1:
                raise
            _log.warning("modelport: writing %d calls at once failed (%s); writing them one by one", len(rows), exc)
        for row in rows:
            try:
                with conn.transaction():
                    conn.execute(_INSERT_CALL, row)
            except Exception as exc:
                _log.warning("modelport: could not log call %s: %s: %s", row[0], type(exc).__name__, exc)

    def _row(self, call: _Pending) -> tuple[Any, ...]:
        request = call.request
        if "extra" in request:
            request["extra"] = scrub_params(request["extra"])
        response = call.response
        usage: Usage = call.usage or Usage()
        return (
            call.id,
            _iso(call.ts),
            call.source,
            call.provider,
            call.model,
            call.conversation_id,
            call.key_name,
            call.key_id,
            self._redact(_prompt_text(request["messages"])),
            self._redact(_response_text(response["message"])) if response is not None else None,
            self._redact(json.dumps(request, ensure_ascii=False)),
            self._redact(json.dumps(response, ensure_ascii=False)) if response is not None else None,
            response["finish_reason"] if response is not None else None,
            usage.input_tokens,
            usage.output_tokens,
            usage.cached_tokens,
            usage.cache_write_tokens,
            usage.reasoning_tokens,
            self._cost(call),
            call.latency,
            call.error_kind,
            self._redact(call.error) if call.error is not None else None,
            int(call.cached),
            int(bool(request.get("stream"))),
        )

    def _cost(self, call: _Pending) -> float | None:
        if call.usage is None:
            return None
        if call.cached:
            return 0.0
        from modelport import prices

        try:
            price = prices.price_for(call.provider, call.model, overrides=call.prices)
        except ValueError as exc:  # a malformed [prices] entry in the config
            _log.warning("modelport: %s", exc)
            return None
        return prices.cost(call.usage, price, batch_discount=call.batch_discount)

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return _SECRET_VALUE.sub(REDACTED, text)

    # -- reading ------------------------------------------------------------------------

    def _read(self, query: Callable[[SQLiteRecords], T]) -> T:
        """``query(conn)`` on the reading thread, after what was recorded so far is written."""
        self.flush()
        return self._reads.call(lambda: query(self._reads.conn))

    def get(self, call_id: str) -> LoggedCall | None:
        """The call with this id, or None."""
        row = self._read(lambda db: db.execute(f"SELECT {_CALL_COLUMNS} FROM calls WHERE id = ?", (call_id.strip().upper(),)).fetchone())
        return _row_to_call(row) if row else None

    def query(
        self,
        *,
        limit: int | None = 20,
        model: str | None = None,
        provider: str | None = None,
        since: str | datetime | None = None,
        search: str | None = None,
        conversation_id: str | None = None,
        source: str | None = None,
        oldest_first: bool = False,
    ) -> list[LoggedCall]:
        """Logged calls, newest first unless ``oldest_first``; the filters are ``CallFilter``'s."""
        return self.calls(CallFilter(model=model, provider=provider, since=since, search=search, conversation_id=conversation_id,
                                     source=source), limit=limit, oldest_first=oldest_first)

    def calls(self, where: CallFilter = CallFilter(), *, limit: int | None = 20, oldest_first: bool = False) -> list[LoggedCall]:
        """The calls ``where`` matches, in full, newest first unless ``oldest_first``."""
        condition, params = where.where()
        sql = f"SELECT {_CALL_COLUMNS} FROM calls{condition} ORDER BY seq" + ("" if oldest_first else " DESC")
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        rows = self._read(lambda db: db.execute(sql, params).fetchall())
        return [_row_to_call(row) for row in rows]

    def summaries(self, where: CallFilter = CallFilter(), *, limit: int = 50, before: int | None = None) -> list[CallSummary]:
        """Up to ``limit`` calls ``where`` matches, newest first, as a list shows them; ``before``
        (a summary's ``seq``) continues a list where that call ended it."""
        condition, params = where.where()
        if before is not None:
            condition += (" AND " if condition else " WHERE ") + "seq < ?"
            params.append(before)
        sql = f"SELECT {_SUMMARY_COLUMNS} FROM calls{condition} ORDER BY seq DESC LIMIT ?"
        rows = self._read(lambda db: db.execute(sql, [*params, limit]).fetchall())
        return [_summary(row) for row in rows]

    def usage(self, by: str = "day", *, since: str | datetime | None = None, model: str | None = None) -> list[UsageRow]:
        """Calls, tokens and cost grouped ``by`` one of USAGE_GROUPS, in group order.

        Tokens and cost count billed calls only: failed calls and cache hits cost nothing.
        """
        if by not in USAGE_GROUPS:
            raise ValueError(f"cannot group usage by {by!r}; choose one of {', '.join(USAGE_GROUPS)}")
        condition, params = CallFilter(model=model, since=since).where()
        group = USAGE_GROUPS[by]
        sql = f"SELECT {group} AS grp, {_USAGE_SUMS} FROM calls{condition} GROUP BY grp ORDER BY grp"
        cache_sql = _cache_sql(group, condition)
        found, caching = self._read(lambda db: (db.execute(sql, params).fetchall(), db.execute(cache_sql, params).fetchall()))
        savings = cache_savings(caching)
        rows = [_usage_row(row, savings.get(row[0])) for row in found]
        return _name_keys(rows) if by == "key" else rows

    def usage_series(self, by: str = "model", bucket: str = "day", where: CallFilter = CallFilter()) -> list[UsageBucket]:
        """``usage`` per time ``bucket`` (one of BUCKETS, in UTC) and group (one of USAGE_BY),
        in time then group order."""
        if by not in USAGE_BY:
            raise ValueError(f"cannot group usage by {by!r}; choose one of {', '.join(USAGE_BY)}")
        if bucket not in BUCKETS:
            raise ValueError(f"cannot bucket usage by {bucket!r}; choose one of {', '.join(BUCKETS)}")
        condition, params = where.where()
        t = f"substr(created_at, 1, {BUCKETS[bucket]})"
        sql = f"SELECT {t} AS t, {USAGE_BY[by]} AS grp, {_USAGE_SUMS} FROM calls{condition} GROUP BY t, grp ORDER BY t, grp"
        cache_sql = _cache_sql(f"{t} || char(0) || {USAGE_BY[by]}", condition)
        found, caching = self._read(lambda db: (db.execute(sql, params).fetchall(), db.execute(cache_sql, params).fetchall()))
        savings = cache_savings(caching)
        buckets = [UsageBucket(row[0], _usage_row(row[1:], savings.get(f"{row[0]}\0{row[1]}"))) for row in found]
        if by == "key":
            _name_keys([bucket_row.usage for bucket_row in buckets])
        return buckets

    def last_conversation_id(self) -> str | None:
        """The conversation of the most recent call, among conversations with an answer, for
        ``ask -c``: a conversation of failed calls only is never the one to continue, while a
        failed follow-up keeps its (answered) conversation the latest."""
        row = self._read(lambda db: db.execute(
            "SELECT conversation_id FROM calls AS c WHERE conversation_id IS NOT NULL AND EXISTS "
            "(SELECT 1 FROM calls AS a WHERE a.conversation_id = c.conversation_id AND a.response_json IS NOT NULL) "
            "ORDER BY seq DESC LIMIT 1"
        ).fetchone())
        return row[0] if row else None

    def conversation_messages(self, conversation_id: str) -> list[Message]:
        """The conversation so far: the messages of its latest answered call plus the answer.

        Raises ConfigError when the log has no such conversation; returns [] when it has
        calls but none was answered.
        """
        row = self._read(lambda db: db.execute(
            "SELECT request_json, response_json FROM calls WHERE conversation_id = ? "
            "ORDER BY response_json IS NOT NULL DESC, seq DESC LIMIT 1",
            (conversation_id,),
        ).fetchone())
        if row is None:
            raise ConfigError(
                f"no conversation {conversation_id!r} in the call log {self.path}",
                hint="`modelport logs` lists recent calls with their conversation ids",
            )
        request_json, response_json = row
        if response_json is None:
            return []
        messages = [message_from_dict(m) for m in json.loads(request_json)["messages"]]
        messages.append(message_from_dict(json.loads(response_json)["message"]))
        return messages


def _usage_row(row: tuple[Any, ...], caching: tuple[int, float] | None = None) -> UsageRow:
    """A UsageRow from a group and the ``_USAGE_SUMS`` columns, with the group's cache-write
    tokens and what caching saved (``cache_savings``)."""
    group, calls, errors, hits, input_tokens, output_tokens, cached_tokens, reasoning_tokens, cost, unpriced = row
    writes, saved = caching or (0, 0.0)
    return UsageRow(group, calls, errors, hits, input_tokens, output_tokens, cached_tokens, reasoning_tokens, round(cost, 11), unpriced,
                    writes, saved)


def _cache_sql(group: str, condition: str) -> str:
    """The billed calls' cached and cache-write tokens per ``group`` and model: what a cached
    token saves is its model's price, so ``cache_savings`` sums per model first."""
    billed = f"{condition} AND {_BILLED}" if condition else f" WHERE {_BILLED}"
    return f"SELECT {group} AS grp, provider, model, sum(cached_tokens), sum(cache_write_tokens) FROM calls{billed} GROUP BY grp, provider, model"


def _name_keys(rows: list[UsageRow]) -> list[UsageRow]:
    """Groups by key, made of a name and an id, named for humans: by the key's name, with
    its id only where several keys held that name (a revoked key's name given to a new
    key), so their usage shows apart and never merges into one key's."""
    ids: dict[str, set[str]] = {}
    for row in rows:
        name, _, key_id = row.group.partition(_KEY_SEP)
        ids.setdefault(name, set()).add(key_id)
    for row in rows:
        name, _, key_id = row.group.partition(_KEY_SEP)
        row.group = f"{name} (key {key_id})" if key_id and len(ids[name]) > 1 else name
    return rows


def _summary(row: tuple[Any, ...]) -> CallSummary:
    """A CallSummary from the ``_SUMMARY_COLUMNS``."""
    (seq, id_, created_at, source, provider, model, key_name, key_id, prompt, response, input_tokens, output_tokens, cost, latency,
     error_kind, cached, stream) = row
    return CallSummary(seq, id_, created_at, source, provider, model, key_name, key_id, prompt, response, input_tokens, output_tokens,
                       cost, latency, error_kind, bool(cached), bool(stream))
