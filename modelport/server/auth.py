"""Gateway keys: who may call the gateway, on which models, within which limits.

A key reads ``mpk_<id>_<secret>``. The store (gateway.db in the data dir, or the PostgreSQL
database of ``[state] records`` that every instance shares) keeps the id, a random salt and
``sha256(salt + secret)``: never the key itself, so a copy of the store gives nobody access. The id is public and finds the row; the hash proves the secret.
Secrets are 256 random bits, so one salted SHA-256 is as strong as a slow KDF here, and
costs a microsecond per request instead of tens of milliseconds.

The server holds every key row in memory (``KeyRing``) and reloads the rows in a worker
thread about once a second, so `modelport keys revoke` takes effect within a second, on
every instance, without a database read on the request path.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Concatenate, Iterable, ParamSpec, TypeVar

from ..errors import AuthenticationError, BadRequestError, PermissionDeniedError
from ..state.copy import StoreCopy, Table
from ..state.counters import Counters, KeyLimits, MemoryCounters
from ..state.runner import StoreRunner

PREFIX = "mpk_"
ID_BYTES = 6
_KEY_SHAPE = re.compile(r"^mpk_([0-9a-f]{12})_([A-Za-z0-9_-]{20,})$")
T = TypeVar("T")
P = ParamSpec("P")

# C0/C1 control characters and DEL: in a key or a key's name they are a paste accident or
# an attempt to forge a log line or a terminal's output, never meaningful.
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """``text`` with each control character escaped (``\\n``, ``\\x1b``), for a terminal or a log."""
    return CONTROL_CHARACTERS.sub(lambda found: repr(found.group())[1:-1], text)


# The versions of the gateway_keys table, oldest first (see modelport.state.records.migrate).
_STEPS = (
    """CREATE TABLE gateway_keys (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        salt BLOB NOT NULL,
        hash BLOB NOT NULL,
        rpm INTEGER,
        tpm INTEGER,
        budget REAL,
        models TEXT,
        expires REAL,
        created REAL NOT NULL,
        revoked REAL,
        requests INTEGER NOT NULL DEFAULT 0,
        input_tokens INTEGER NOT NULL DEFAULT 0,
        output_tokens INTEGER NOT NULL DEFAULT 0,
        cost REAL NOT NULL DEFAULT 0,
        last_used REAL
    )""",
    "ALTER TABLE gateway_keys ADD COLUMN admin INTEGER NOT NULL DEFAULT 0",
)
# Every column, in the order KeyRecord reads them and `state migrate` copies them.
COLUMNS = ("id", "name", "salt", "hash", "rpm", "tpm", "budget", "models", "expires", "revoked", "created", "requests",
           "input_tokens", "output_tokens", "cost", "last_used", "admin")


def _legacy_version(db: Any) -> int:
    """A gateway.db of a modelport that kept no schema versions: 1 without the admin
    column (added by a PRAGMA table_info check), 2 with it, 0 without the table."""
    columns = db.columns("gateway_keys")
    return 0 if not columns else 2 if "admin" in columns else 1


def open_keys(url: str | None, path: Path) -> Any:
    """The keys' records database (``url``, else the SQLite file ``path``) at its newest schema."""
    from ..state.records import open_store

    return open_store(url, path, "gateway_keys", _STEPS, legacy=_legacy_version)


def _keys_file(config: dict[str, Any]) -> Path:
    """The gateway.db a gateway of this config uses: ``[server] keys_path``, else the default."""
    configured = (config.get("server") or {}).get("keys_path")
    return Path(configured) if configured else default_store_path()


def default_store_path() -> Path:
    """``$MODELPORT_GATEWAY_KEYS``, else ``gateway.db`` in modelport's data directory."""
    env = os.environ.get("MODELPORT_GATEWAY_KEYS")
    if env:
        return Path(env)
    from ..config import data_dir

    return data_dir() / "gateway.db"


def _digest(salt: bytes, secret: str) -> bytes:
    return hashlib.sha256(salt + secret.encode()).digest()


@dataclass(slots=True)
class KeyRecord:
    id: str
    name: str
    salt: bytes
    hash: bytes
    limits: KeyLimits
    models: tuple[str, ...]
    expires: float | None
    revoked: float | None
    created: float
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0
    last_used: float | None = None
    # Sees every key's files and batches (the Files/Batches API), not only its own.
    admin: bool = False

    def allows(self, *names: str) -> bool:
        """Whether this key may use a model, asked for by any of its names."""
        if not self.models:
            return True
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.models for name in names)


class KeyStore:
    """Gateway keys and their usage totals, in the records database: a SQLite file (``path``,
    by default gateway.db in the data dir) or, with a ``postgresql://`` records ``url``, the
    database every gateway instance shares. Blocking: call it from the CLI, or from one
    worker thread in the server. Opened on first use and kept until ``close``: reopening
    it every second would leave a trail of handles."""

    def __init__(self, path: str | Path | None = None, url: str | None = None) -> None:
        self.path = Path(path) if path else default_store_path()
        # A PostgreSQL URL holds every store; a bare sqlite: (or none) leaves the file at path.
        self.url = url
        self._lock = threading.Lock()
        self._db: Any = None

    @property
    def where(self) -> str:
        """Where the keys live, for messages (no password)."""
        return self._db.url if self._db is not None else str(self.path)

    def _connect(self) -> Any:
        """The store's database, at the newest schema."""
        if self._db is None:
            # The file holds only hashes, but its usage totals are nobody else's business (0600).
            self._db = open_keys(self.url, self.path)
        return self._db

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def ping(self) -> None:
        """Raise unless the records database answers now (the gateway's /ready check)."""
        with self._lock:
            self._connect().execute("SELECT 1").fetchone()

    def create(
        self,
        name: str,
        *,
        rpm: int | None = None,
        tpm: int | None = None,
        budget: float | None = None,
        models: Iterable[str] = (),
        expires: float | None = None,
        admin: bool = False,
    ) -> str:
        """Store a new key and return it: the only time its secret is ever seen."""
        if not name or not name.strip():
            raise BadRequestError("a key needs a name", hint="modelport keys create NAME")
        if CONTROL_CHARACTERS.search(name):
            raise BadRequestError(f"key name {name!r} holds a control character (a newline, tab or escape)", param="name",
                                  hint="pick a name of letters, digits, spaces and punctuation")
        key_id = secrets.token_hex(ID_BYTES)
        secret = secrets.token_urlsafe(32)
        salt = secrets.token_bytes(16)
        with self._lock:
            added = self._connect().execute(
                "INSERT INTO gateway_keys (id, name, salt, hash, rpm, tpm, budget, models, expires, created, admin)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO NOTHING",
                (key_id, name, salt, _digest(salt, secret), rpm, tpm, budget, ",".join(models) or None, expires, time.time(), int(admin)),
            ).rowcount
        if not added:
            raise BadRequestError(
                f"a key named {name!r} already exists", hint=f"revoke it first (modelport keys revoke {name}) or pick another name"
            )
        return f"{PREFIX}{key_id}_{secret}"

    def revoke(self, name: str) -> bool:
        with self._lock:
            cursor = self._connect().execute(
                "UPDATE gateway_keys SET revoked = ?, name = name || '#revoked-' || id WHERE name = ? AND revoked IS NULL", (time.time(), name))
            return cursor.rowcount > 0

    def rows(self, include_revoked: bool = True) -> list[tuple[Any, ...]]:
        """Every key's row as stored, in ``COLUMNS`` order, oldest first."""
        query = f"SELECT {', '.join(COLUMNS)} FROM gateway_keys"
        if not include_revoked:
            query += " WHERE revoked IS NULL"
        if self._db is None and not self.exists():
            return []  # reading makes no store
        with self._lock:
            return [tuple(row) for row in self._connect().execute(query + " ORDER BY created").fetchall()]

    def records(self, include_revoked: bool = False) -> list[KeyRecord]:
        return [
            KeyRecord(
                id=r[0], name=r[1], salt=bytes(r[2]), hash=bytes(r[3]), limits=KeyLimits(r[4], r[5], r[6]),
                models=tuple(r[7].split(",")) if r[7] else (), expires=r[8], revoked=r[9], created=r[10],
                requests=r[11], input_tokens=r[12], output_tokens=r[13], cost=r[14], last_used=r[15], admin=bool(r[16]),
            )
            for r in self.rows(include_revoked)
        ]

    def add_usage(self, usage: dict[str, list[Any]]) -> None:
        """Add ``{key id: [requests, input tokens, output tokens, cost, last used]}`` to the totals."""
        if not usage:
            return
        with self._lock, self._connect().transaction() as db:
            db.executemany(
                "UPDATE gateway_keys SET requests = requests + ?, input_tokens = input_tokens + ?, output_tokens = output_tokens + ?,"
                " cost = cost + ?, last_used = CASE WHEN last_used IS NULL OR last_used < ? THEN ? ELSE last_used END WHERE id = ?",
                [(requests, tokens_in, tokens_out, cost, last, last, key_id) for key_id, (requests, tokens_in, tokens_out, cost, last) in usage.items()],
            )

    def exists(self) -> bool:
        from ..state.records import records_exist

        return records_exist(self.url, self.path)


@dataclass(slots=True)
class Caller:
    """An authenticated caller: its key row (its limits live in the gateway's counters,
    under the row's id)."""

    record: KeyRecord

    @property
    def name(self) -> str:
        return self.record.name


class KeyRing:
    """The server's in-memory view of the key store, plus unsaved usage.

    Event-loop code calls ``authenticate``, ``record_usage`` and ``take_usage`` (all
    non-blocking); the store itself is used through ``run``, on the key store's one worker
    thread. Each load tells the counters what every key has spent (``Counters.seed``).
    """

    def __init__(self, store: KeyStore, counters: Counters | None = None) -> None:
        self.store = store
        # The store is this thread's connection: it opens its database on first use (so on
        # the thread), and closing the runner closes it.
        self._io: StoreRunner[KeyStore] = StoreRunner("keys", lambda: store)
        self.counters = counters if counters is not None else MemoryCounters()
        self._by_id: dict[str, KeyRecord] = {}
        self._unsaved: dict[str, list[Any]] = {}
        self.loaded_at = 0.0

    def __len__(self) -> int:
        return len(self._by_id)

    async def run(self, fn: Callable[Concatenate[KeyStore, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``fn(store, ...)`` (say ``KeyStore.records``) on the key store's thread, off the event loop."""
        return await self._io.run(lambda: fn(self._io.conn, *args, **kwargs))

    async def ping(self) -> None:
        """Raise unless the key store's database answers now (a readiness check)."""
        await self.run(KeyStore.ping)

    async def aclose(self) -> None:
        """Close the key store on its thread, then let the thread go."""
        await self._io.aclose()

    def load(self, records: list[KeyRecord]) -> None:
        """Swap in freshly read rows (on the event loop: a dict swap, no I/O)."""
        by_id = {r.id: r for r in records}
        seed = self.counters.seed
        for key_id, record in by_id.items():
            # The stored total plus what this process has spent but not yet written.
            unsaved = self._unsaved.get(key_id)
            seed(key_id, record.cost + (unsaved[3] if unsaved else 0.0))
        self._by_id = by_id
        self.loaded_at = time.monotonic()

    def lookup(self, key: str) -> tuple[str | None, Caller | None]:
        """(the key id if the key is well formed, the caller if the key is valid and live)."""
        match = _KEY_SHAPE.fullmatch(key)  # not match: its "$" lets a trailing newline by
        if match is None:
            return None, None
        key_id, secret = match.groups()
        record = self._by_id.get(key_id)
        if record is None or not hmac.compare_digest(record.hash, _digest(record.salt, secret)):
            return key_id, None
        return key_id, Caller(record)

    def caller_for_id(self, key_id: str) -> Caller | None:
        """The caller of a live key by its id (a batch's owner), or None."""
        record = self._by_id.get(key_id)
        return Caller(record) if record is not None else None

    def authenticate(self, key: str | None) -> Caller:
        if not key:
            raise AuthenticationError(
                "this gateway needs a key: send it as Authorization: Bearer, x-api-key, x-goog-api-key or ?key=",
                hint="create one with `modelport keys create NAME`",
            )
        _, caller = self.lookup(key)
        if caller is None:
            raise AuthenticationError("invalid gateway key", hint="check the key, or create one with `modelport keys create NAME`")
        record = caller.record
        if record.expires is not None and record.expires <= time.time():
            raise AuthenticationError(f"gateway key {record.name!r} has expired", hint="create a new key")
        return caller

    def check_model(self, caller: Caller, *names: str) -> None:
        if not caller.record.allows(*names):
            raise PermissionDeniedError(
                f"gateway key {caller.name!r} may not use model {names[0]!r}",
                hint=f"this key is limited to: {', '.join(caller.record.models)}",
            )

    def record_usage(self, caller: Caller, input_tokens: int, output_tokens: int, cost: float) -> None:
        totals = self._unsaved.get(caller.record.id)
        if totals is None:
            totals = self._unsaved[caller.record.id] = [0, 0, 0, 0.0, 0.0]
        totals[0] += 1
        totals[1] += input_tokens
        totals[2] += output_tokens
        totals[3] += cost
        totals[4] = time.time()

    def take_usage(self) -> dict[str, list[Any]]:
        """The usage not yet written, handed over for a worker thread to save."""
        usage, self._unsaved = self._unsaved, {}
        return usage

    def give_back_usage(self, usage: dict[str, list[Any]]) -> None:
        """``take_usage``'s answer again, after its write failed: kept for the next try."""
        for key_id, totals in usage.items():
            current = self._unsaved.setdefault(key_id, [0, 0, 0, 0.0, 0.0])
            for i in range(4):
                current[i] += totals[i]
            current[4] = max(current[4], totals[4])


# The keys' part of `modelport state migrate` (see modelport.state.copy): with their usage totals.
KEYS_COPY = StoreCopy("gateway keys", _keys_file, open_keys, (Table("gateway_keys", COLUMNS, ("id",)),))
