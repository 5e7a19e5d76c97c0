"""The call log: one SQLite row per model call made through the SDK, CLI, batch engine or
gateway.

It is a plain SQLite file (``modelport logs path`` prints where) that sqlite3, datasette
or pandas open directly: table ``calls`` with one column per fact and the full canonical
request and response as JSON, plus the full-text index ``calls_fts``.

Recording never slows the caller: ``record`` stamps an id, turns the request and response
into plain data (so later mutation by the caller cannot change what is logged) and queues
it; a background thread writes queued rows in batched transactions. ``flush`` waits for the
queue, reads flush first, and the queue is flushed at interpreter exit.

Secrets are never stored: headers and keys never reach this module, ``extra`` entries whose
names look like credentials are replaced, and anything shaped like an API key, or equal to
a credential found in the environment, is redacted from every stored text.

Switches: ``MODELPORT_LOG=0`` turns logging off everywhere (``MODELPORT_LOG=1`` turns it
on for the SDK too); ``MODELPORT_LOG_PATH`` moves the file; the config file's ``[log]``
table may set ``enabled`` and ``path``.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import queue
import re
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from modelport import config
from modelport.errors import ConfigError
from modelport.sqlite_wal import wal_mode
from modelport.serialize import (
    message_from_dict,
    request_from_dict,
    request_to_dict,
    response_from_dict,
    response_to_dict,
    usage_to_dict,
)
from modelport.types import ChatRequest, ChatResponse, Message, Usage

SOURCES = ("sdk", "cli", "batch", "gateway")
REDACTED = "[redacted]"

_log = logging.getLogger("modelport.calllog")
_OFF = {"0", "false", "no", "off"}
_ON = {"1", "true", "yes", "on"}
_WRITE_BATCH = 500
# Calls waiting for the writer. When a million-row batch outruns SQLite, record() waits for
# room instead of letting the backlog (and the process's memory) grow without bound.
_MAX_PENDING = 5000

# ---------------------------------------------------------------------------------------
# Schema. Each migration moves the file from version N-1 to N (PRAGMA user_version) and
# is never edited once released: an old file replays the ones it lacks, in place.


def _migration_1_calls(conn: sqlite3.Connection) -> None:
    # `seq` is an explicit INTEGER PRIMARY KEY because the full-text index refers to rows by
    # rowid, and VACUUM may renumber an implicit rowid.
    conn.execute(
        """CREATE TABLE calls (
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
            cache_write_tokens INTEGER NOT NULL DEFAULT 0,
            reasoning_tokens INTEGER NOT NULL DEFAULT 0,
            cost REAL,
            latency REAL,
            error_kind TEXT,
            error TEXT,
            cached INTEGER NOT NULL DEFAULT 0,
            stream INTEGER NOT NULL DEFAULT 0
        )"""
    )
    conn.execute("CREATE INDEX calls_created_at ON calls (created_at)")
    conn.execute("CREATE INDEX calls_conversation ON calls (conversation_id, seq)")
    conn.execute("CREATE INDEX calls_model ON calls (provider, model)")


def _migration_2_full_text(conn: sqlite3.Connection) -> None:
    # An external-content index: the text lives once, in `calls`; triggers keep it in step,
    # and 'rebuild' indexes the rows a version-1 file already holds.
    conn.execute("CREATE VIRTUAL TABLE calls_fts USING fts5(prompt, response, content='calls', content_rowid='seq')")
    conn.execute(
        "CREATE TRIGGER calls_fts_insert AFTER INSERT ON calls BEGIN "
        "INSERT INTO calls_fts (rowid, prompt, response) VALUES (new.seq, new.prompt, new.response); END"
    )
    conn.execute(
        "CREATE TRIGGER calls_fts_delete AFTER DELETE ON calls BEGIN "
        "INSERT INTO calls_fts (calls_fts, rowid, prompt, response) VALUES ('delete', old.seq, old.prompt, old.response); END"
    )
    conn.execute(
        "CREATE TRIGGER calls_fts_update AFTER UPDATE ON calls BEGIN "
        "INSERT INTO calls_fts (calls_fts, rowid, prompt, response) VALUES ('delete', old.seq, old.prompt, old.response); "
        "INSERT INTO calls_fts (rowid, prompt, response) VALUES (new.seq, new.prompt, new.response); END"
    )
    conn.execute("INSERT INTO calls_fts (calls_fts) VALUES ('rebuild')")


def _migration_3_usage_index(conn: sqlite3.Connection) -> None:
    # Covers usage sums over a time range (the console's charts, `modelport usage`): they
    # read this index alone instead of every row's request and response JSON.
    conn.execute(
        "CREATE INDEX calls_usage ON calls (created_at, provider, model, source, key_name, error_kind, cached, "
        "input_tokens, output_tokens, cost)"
    )


MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_migration_1_calls, _migration_2_full_text, _migration_3_usage_index]
SCHEMA_VERSION = len(MIGRATIONS)


def migrate(conn: sqlite3.Connection, migrations: list[Callable[[sqlite3.Connection], None]], what: str) -> None:
    """Bring a database (opened with isolation_level=None) up to ``len(migrations)``.

    BEGIN IMMEDIATE makes two processes opening an old file at once upgrade it only once.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > len(migrations):
            raise ConfigError(
                f"the {what} database was written by a newer modelport (schema {version}, this one knows {len(migrations)})",
                hint="upgrade modelport, or point it at another file",
            )
        for number in range(version + 1, len(migrations) + 1):
            migrations[number - 1](conn)
            conn.execute(f"PRAGMA user_version = {number}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def connect(path: Path, migrations: list[Callable[[sqlite3.Connection], None]], what: str) -> sqlite3.Connection:
    """Open (creating if needed) a modelport SQLite file in WAL mode at its newest schema."""
    from .config import private_file

    private_file(path)
    conn = sqlite3.connect(path, isolation_level=None, timeout=10.0, check_same_thread=False)
    try:
        wal_mode(conn)
        conn.execute("PRAGMA synchronous = NORMAL")
        migrate(conn, migrations, what)
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise ConfigError(f"cannot open the {what} database {path}: {exc}") from None
    except BaseException:
        conn.close()
        raise
    return conn


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
    "conversation_id, key_name, error_kind, error, cached, stream"
)

# A call was billed when it produced a response that did not come from the cache.
_BILLED = "(error IS NULL AND cached = 0)"
USAGE_GROUPS = {
    "day": "date(created_at, 'localtime')",
    "model": "provider || '/' || model",
    "provider": "provider",
    "key": "coalesce(key_name, '(no key)')",
    "source": "source",
}


def _row_to_call(row: tuple[Any, ...]) -> LoggedCall:
    (id_, created_at, source, provider, model, request_json, response_json, prompt, response_text,
     input_tokens, output_tokens, cached_tokens, cache_write_tokens, reasoning_tokens, cost, latency,
     conversation_id, key_name, error_kind, error, cached, stream) = row
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
# Writing


_INSERT_CALL = (
    "INSERT INTO calls (id, created_at, source, provider, model, conversation_id, key_name, "
    "prompt, response, request_json, response_json, finish_reason, input_tokens, output_tokens, "
    "cached_tokens, cache_write_tokens, reasoning_tokens, cost, latency, error_kind, error, "
    "cached, stream) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    conn.execute("BEGIN")
    try:
        yield
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


class _Pending:
    """One queued call, already plain data so the caller may reuse its objects at once."""

    __slots__ = ("id", "ts", "request", "response", "error_kind", "error", "provider", "model", "source",
                 "latency", "conversation_id", "key_name", "cached", "usage", "batch_discount", "prices")

    def __init__(self, **fields: Any) -> None:
        for name, value in fields.items():
            setattr(self, name, value)


_STOP = object()
_live_logs: weakref.WeakSet[CallLog] = weakref.WeakSet()


@atexit.register
def _flush_all_at_exit() -> None:
    for log in list(_live_logs):
        log.close(timeout=5.0)


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
        self.enabled = os.environ.get("MODELPORT_LOG", "").strip().lower() not in _OFF
        self._secrets = _environment_secrets()
        self._lock = threading.Lock()
        self._queue: queue.Queue[Any] = queue.Queue(_MAX_PENDING)
        self._writer: threading.Thread | None = None
        self._pid = os.getpid()
        self._read_conn: sqlite3.Connection | None = None
        self._read_lock = threading.Lock()
        _live_logs.add(self)

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
        cached: bool = False,
        batch_discount: float = 0.0,
        prices: dict[str, Any] | None = None,
    ) -> str:
        """Queue one call for the log and return its id at once.

        ``model`` is the provider's own model id (a ``provider/`` prefix is dropped); ``source`` one of SOURCES; ``latency``
        in seconds (defaults to ``response.latency``); ``cached`` marks a response served
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
            cached=cached,
            batch_discount=batch_discount,
            prices=prices,
        )
        self._ensure_writer()
        self._queue.put(pending)
        return call_id

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything recorded so far is on disk; False if ``timeout`` ran out."""
        with self._lock:
            writer = self._writer if self._pid == os.getpid() else None
        if writer is None or not writer.is_alive():
            return True
        done = threading.Event()
        self._queue.put(done)
        return done.wait(timeout)

    def close(self, timeout: float | None = None) -> None:
        """Flush, stop the writer thread and close connections; recording restarts it."""
        with self._lock:
            writer = self._writer if self._pid == os.getpid() else None
            self._writer = None
            if writer is not None and writer.is_alive():
                self._queue.put(_STOP)
        if writer is not None:
            writer.join(timeout)
        with self._read_lock:
            if self._read_conn is not None:
                self._read_conn.close()
                self._read_conn = None

    def _ensure_writer(self) -> None:
        if self._writer is not None and self._pid == os.getpid():
            return
        with self._lock:
            if self._pid != os.getpid():
                # A forked child inherits the parent's queue but not its thread.
                self._pid, self._queue, self._writer = os.getpid(), queue.Queue(_MAX_PENDING), None
                self._read_conn = None
            if self._writer is None:
                self._writer = threading.Thread(target=self._write_loop, name="modelport-calllog", daemon=True)
                self._writer.start()

    def _write_loop(self) -> None:
        conn: sqlite3.Connection | None = None
        while True:
            batch = [self._queue.get()]
            while len(batch) < _WRITE_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                built = (self._row_or_none(item) for item in batch if isinstance(item, _Pending))
                rows = [row for row in built if row is not None]
                if rows:
                    if conn is None:
                        conn = connect(self.path, MIGRATIONS, "call log")
                    self._insert(conn, rows)
            except Exception as exc:  # a full disk or a locked file must not break the caller
                _log.warning("modelport: could not write calls to the log %s: %s", self.path, exc)
            finally:
                for item in batch:
                    if isinstance(item, threading.Event):
                        item.set()
            if any(item is _STOP for item in batch):
                if conn is not None:
                    conn.close()
                return

    def _row_or_none(self, call: _Pending) -> tuple[Any, ...] | None:
        """The row for one call, or None (with a warning) when that call cannot be stored:
        one odd call must not cost the others in its write batch their rows."""
        try:
            return self._row(call)
        except Exception as exc:
            _log.warning("modelport: could not log call %s: %s: %s", call.id, type(exc).__name__, exc)
            return None

    def _insert(self, conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
        """All rows in one transaction; if that fails, each row in its own, so a row SQLite
        refuses (a value out of its range) is the only one lost."""
        try:
            with _transaction(conn):
                conn.executemany(_INSERT_CALL, rows)
            return
        except Exception as exc:
            if len(rows) == 1:
                raise
            _log.warning("modelport: writing %d calls at once failed (%s); writing them one by one", len(rows), exc)
        for row in rows:
            try:
                with _transaction(conn):
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

    @contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection]:
        self.flush()
        with self._read_lock:
            if self._read_conn is None or self._pid != os.getpid():
                self._read_conn = connect(self.path, MIGRATIONS, "call log")
            yield self._read_conn

    def get(self, call_id: str) -> LoggedCall | None:
        with self._reader() as conn:
            row = conn.execute(f"SELECT {_CALL_COLUMNS} FROM calls WHERE id = ?", (call_id.strip().upper(),)).fetchone()
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
        """Logged calls, newest first unless ``oldest_first``.

        ``model`` matches the provider's id or ``provider/model``, with ``*`` wildcards;
        ``since`` takes what ``parse_since`` takes; ``search`` finds calls whose prompt or
        response contains all its words.
        """
        where, params = self._filters(model=model, provider=provider, since=since, conversation_id=conversation_id, source=source)
        if search is not None:
            where.append("seq IN (SELECT rowid FROM calls_fts WHERE calls_fts MATCH ?)")
            params.append(_match_expression(search))
        sql = f"SELECT {_CALL_COLUMNS} FROM calls"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY seq" + ("" if oldest_first else " DESC")
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        with self._reader() as conn:
            rows = conn.execute(sql, params).fetchall()
        return [_row_to_call(row) for row in rows]

    def usage(self, by: str = "day", *, since: str | datetime | None = None, model: str | None = None) -> list[UsageRow]:
        """Calls, tokens and cost grouped ``by`` one of USAGE_GROUPS, in group order.

        Tokens and cost count billed calls only: failed calls and cache hits cost nothing.
        """
        if by not in USAGE_GROUPS:
            raise ValueError(f"cannot group usage by {by!r}; choose one of {', '.join(USAGE_GROUPS)}")
        where, params = self._filters(model=model, since=since)
        group = USAGE_GROUPS[by]
        sql = (
            f"SELECT {group} AS grp, count(*), sum(error IS NOT NULL), sum(cached), "
            f"sum(CASE WHEN {_BILLED} THEN input_tokens ELSE 0 END), "
            f"sum(CASE WHEN {_BILLED} THEN output_tokens ELSE 0 END), "
            f"sum(CASE WHEN {_BILLED} THEN cached_tokens ELSE 0 END), "
            f"sum(CASE WHEN {_BILLED} THEN reasoning_tokens ELSE 0 END), "
            f"total(CASE WHEN {_BILLED} THEN cost END), "
            f"sum({_BILLED} AND cost IS NULL) FROM calls"
        )
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " GROUP BY grp ORDER BY grp"
        # Per model within each group, because what a cached token saves is the model's price.
        cache_sql = (f"SELECT {group} AS grp, provider, model, sum(cached_tokens), sum(cache_write_tokens) FROM calls "
                     f"WHERE {' AND '.join([*where, _BILLED])} GROUP BY grp, provider, model")
        with self._reader() as conn:
            rows = conn.execute(sql, params).fetchall()
            caching = conn.execute(cache_sql, params).fetchall()
        savings = cache_savings(caching)
        return [UsageRow(*row[:8], round(row[8], 11), row[9], *savings.get(row[0], (0, 0.0))) for row in rows]

    def last_conversation_id(self) -> str | None:
        """The conversation of the most recent call, among conversations with an answer, for
        ``ask -c``: a conversation of failed calls only is never the one to continue, while a
        failed follow-up keeps its (answered) conversation the latest."""
        with self._reader() as conn:
            row = conn.execute(
                "SELECT conversation_id FROM calls AS c WHERE conversation_id IS NOT NULL AND EXISTS "
                "(SELECT 1 FROM calls AS a WHERE a.conversation_id = c.conversation_id AND a.response_json IS NOT NULL) "
                "ORDER BY seq DESC LIMIT 1"
            ).fetchone()
        return row[0] if row else None

    def conversation_messages(self, conversation_id: str) -> list[Message]:
        """The conversation so far: the messages of its latest answered call plus the answer.

        Raises ConfigError when the log has no such conversation; returns [] when it has
        calls but none was answered.
        """
        with self._reader() as conn:
            row = conn.execute(
                "SELECT request_json, response_json FROM calls WHERE conversation_id = ? "
                "ORDER BY response_json IS NOT NULL DESC, seq DESC LIMIT 1",
                (conversation_id,),
            ).fetchone()
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

    def _filters(
        self,
        *,
        model: str | None = None,
        provider: str | None = None,
        since: str | datetime | None = None,
        conversation_id: str | None = None,
        source: str | None = None,
    ) -> tuple[list[str], list[Any]]:
        where: list[str] = []
        params: list[Any] = []
        if model is not None:
            if "*" in model:
                where.append("(model GLOB ? OR provider || '/' || model GLOB ?)")
            else:
                where.append("(model = ? OR provider || '/' || model = ?)")
            params += [model, model]
        for column, value in (("provider", provider), ("conversation_id", conversation_id), ("source", source)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if since is not None:
            where.append("created_at >= ?")
            params.append(_iso(parse_since(since).timestamp()))
        return where, params
