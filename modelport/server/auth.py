"""Gateway keys: who may call the gateway, on which models, within which limits.

A key reads ``mpk_<id>_<secret>``. The store (SQLite, beside the call log) keeps the id,
a random salt and ``sha256(salt + secret)``: never the key itself, so a copy of the file
gives nobody access. The id is public and finds the row; the hash proves the secret.
Secrets are 256 random bits, so one salted SHA-256 is as strong as a slow KDF here, and
costs a microsecond per request instead of tens of milliseconds.

The server holds every key row in memory (``KeyRing``) and reloads the rows in a worker
thread about once a second, so `modelport keys revoke` takes effect within a second
without a database read on the request path.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import os
import re
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from ..errors import AuthenticationError, BadRequestError, PermissionDeniedError
from ..state.counters import Counters, KeyLimits, MemoryCounters
from ..sqlite_wal import wal_mode

PREFIX = "mpk_"
ID_BYTES = 6
_KEY_SHAPE = re.compile(r"^mpk_([0-9a-f]{12})_([A-Za-z0-9_-]{20,})$")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS gateway_keys (
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
    last_used REAL,
    admin INTEGER NOT NULL DEFAULT 0
);
"""
# Columns added after the first release: a store made before gains them when opened.
_MIGRATIONS = (("admin", "ALTER TABLE gateway_keys ADD COLUMN admin INTEGER NOT NULL DEFAULT 0"),)


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
    """The SQLite file of gateway keys and their usage totals. Blocking: call it from the
    CLI, or from one worker thread in the server. One connection, opened on first use and
    kept until ``close``: reopening it every second would leave a trail of handles."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path else default_store_path()
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection:
        """The store's connection (the caller holds ``_lock``)."""
        if self._db is not None:
            return self._db
        from ..config import private_file

        # The file holds only hashes, but its usage totals are nobody else's business.
        db = sqlite3.connect(private_file(self.path), timeout=10, check_same_thread=False)
        wal_mode(db)
        with db:
            db.executescript(_SCHEMA)
            columns = {row[1] for row in db.execute("PRAGMA table_info(gateway_keys)")}
            for column, statement in _MIGRATIONS:
                if column not in columns:
                    db.execute(statement)
        self._db = db
        return db

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

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
        key_id = secrets.token_hex(ID_BYTES)
        secret = secrets.token_urlsafe(32)
        salt = secrets.token_bytes(16)
        with self._lock, self._connect() as db:
            try:
                db.execute(
                    "INSERT INTO gateway_keys (id, name, salt, hash, rpm, tpm, budget, models, expires, created, admin)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (key_id, name, salt, _digest(salt, secret), rpm, tpm, budget, ",".join(models) or None, expires, time.time(), int(admin)),
                )
            except sqlite3.IntegrityError:
                raise BadRequestError(
                    f"a key named {name!r} already exists", hint=f"revoke it first (modelport keys revoke {name}) or pick another name"
                ) from None
        return f"{PREFIX}{key_id}_{secret}"

    def revoke(self, name: str) -> bool:
        with self._lock, self._connect() as db:
            cursor = db.execute("UPDATE gateway_keys SET revoked = ?, name = name || '#revoked-' || id WHERE name = ? AND revoked IS NULL", (time.time(), name))
            return cursor.rowcount > 0

    def records(self, include_revoked: bool = False) -> list[KeyRecord]:
        query = "SELECT id, name, salt, hash, rpm, tpm, budget, models, expires, revoked, created, requests, input_tokens, output_tokens, cost, last_used, admin FROM gateway_keys"
        if not include_revoked:
            query += " WHERE revoked IS NULL"
        if self._db is None and not self.path.exists():
            return []  # reading makes no store
        with self._lock, self._connect() as db:
            rows = db.execute(query + " ORDER BY created").fetchall()
        return [
            KeyRecord(
                id=r[0], name=r[1], salt=r[2], hash=r[3], limits=KeyLimits(r[4], r[5], r[6]),
                models=tuple(r[7].split(",")) if r[7] else (), expires=r[8], revoked=r[9], created=r[10],
                requests=r[11], input_tokens=r[12], output_tokens=r[13], cost=r[14], last_used=r[15], admin=bool(r[16]),
            )
            for r in rows
        ]

    def add_usage(self, usage: dict[str, list[Any]]) -> None:
        """Add ``{key id: [requests, input tokens, output tokens, cost, last used]}`` to the totals."""
        if not usage:
            return
        with self._lock, self._connect() as db:
            db.executemany(
                "UPDATE gateway_keys SET requests = requests + ?, input_tokens = input_tokens + ?,"
                " output_tokens = output_tokens + ?, cost = cost + ?, last_used = MAX(COALESCE(last_used, 0), ?) WHERE id = ?",
                [(*totals, key_id) for key_id, totals in usage.items()],
            )

    def exists(self) -> bool:
        return self.path.exists()


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

    Event-loop code calls ``authenticate``, ``record_usage`` and ``pending_usage`` (all
    non-blocking); ``refresh`` and ``flush`` run in a worker thread. Each load tells the
    counters what every key has spent (``Counters.seed``).
    """

    def __init__(self, store: KeyStore, counters: Counters | None = None) -> None:
        self.store = store
        self.counters = counters if counters is not None else MemoryCounters()
        self._by_id: dict[str, KeyRecord] = {}
        self._unsaved: dict[str, list[Any]] = {}
        self.loaded_at = 0.0

    def __len__(self) -> int:
        return len(self._by_id)

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
        match = _KEY_SHAPE.match(key)
        if match is None:
            return None, None
        key_id, secret = match.groups()
        record = self._by_id.get(key_id)
        if record is None or not hmac.compare_digest(record.hash, _digest(record.salt, secret)):
            return key_id, None
        return key_id, Caller(record)

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
