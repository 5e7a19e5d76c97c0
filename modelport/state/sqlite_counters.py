"""Counters in one SQLite file (``sqlite:///path``; ``sqlite:`` alone is ``counters.db`` in
the data dir): exact limits for the gateway processes of one machine, with no server.

The same model as ``redis_counters``: a ``window`` row per booked request (its tokens), a
``holds`` row per worst-case cost held against the budget (lapsing after ``hold_seconds``),
and a ``counters`` row per key with the running sums, the spend (seeded once from the key
store) and ``born`` (a settlement for a key's earlier life is dropped). Every
check-and-book runs in a ``BEGIN IMMEDIATE`` transaction: SQLite's write lock makes it
atomic across processes, and the busy timeout queues the others behind it. The calls a
process has waiting share one transaction (``QueuedCounters``), which is what keeps the
cost per request down under load. The file is WAL with
``synchronous=NORMAL`` (a commit does not wait for the disk: counters may lose their last
moments in a power cut, never their consistency). Every call runs on this process's one
worker thread, never on the event loop. Windows are timed by the wall clock, which every
process of the machine shares.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

from ..errors import ConfigError, ModelportError, StateUnavailableError
from ..sqlite_wal import retry_while_busy
from .counters import (
    DEFAULT_HOLD_SECONDS,
    IDLE_SECONDS,
    WINDOW,
    Booking,
    KeyLimits,
    QueuedCounters,
    budget_error,
    rpm_error,
    too_many_tokens_error,
    token_wait,
    tpm_error,
    unavailable_error,
)
from .records import SQLiteRecords, migrated
from .runner import StoreRunner

log = logging.getLogger("modelport.state")

# How long a check-and-book waits for the other processes' transactions before a 503.
BUSY_SECONDS = 5.0
# How often a process looks for keys idle for IDLE_SECONDS.
SWEEP_SECONDS = 3600.0

# The schema's versions (modelport.state.records.migrate). The first says IF NOT EXISTS: a
# counters file made before versions were kept has its tables already, and adopts it as is.
_STEPS = ("""
CREATE TABLE IF NOT EXISTS counters (
    key TEXT PRIMARY KEY, spent REAL NOT NULL, held REAL NOT NULL DEFAULT 0, tokens INTEGER NOT NULL DEFAULT 0,
    requests INTEGER NOT NULL DEFAULT 0, seq INTEGER NOT NULL DEFAULT 0, born REAL NOT NULL, touched REAL NOT NULL);
CREATE TABLE IF NOT EXISTS window (
    key TEXT NOT NULL, seq INTEGER NOT NULL, at REAL NOT NULL, tokens INTEGER NOT NULL, PRIMARY KEY (key, seq)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS window_at ON window (key, at);
CREATE TABLE IF NOT EXISTS holds (
    key TEXT NOT NULL, seq INTEGER NOT NULL, lapses REAL NOT NULL, cost REAL NOT NULL, PRIMARY KEY (key, seq)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS holds_lapses ON holds (key, lapses);
""",)


def path_of(url: str) -> Path:
    """The file a ``sqlite:`` counters URL names (``sqlite:`` alone: the data dir's)."""
    path = urlsplit(url).path
    if path:
        return Path(path)
    from ..config import data_dir

    return data_dir() / "counters.db"


class SQLiteCounters(QueuedCounters):
    def __init__(self, url: str, *, window: float = WINDOW, hold_seconds: float = DEFAULT_HOLD_SECONDS,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self.path = path_of(url)
        self.name = f"sqlite:///{self.path}" if self.path.is_absolute() else f"sqlite:{self.path}"
        self.window = window
        self.hold_seconds = hold_seconds
        self.clock = clock
        self._io: StoreRunner[SQLiteRecords] = StoreRunner("counters", self._open)
        self._swept = 0.0

    def unavailable(self, exc: BaseException) -> StateUnavailableError:
        return unavailable_error(
            f"the counters file {self.name} cannot be used ({type(exc).__name__}: {exc} ({getattr(exc, 'sqlite_errorname', '?')})); "
            "check that it is on a local disk with free space and that no other program holds it locked")

    # -- worker thread ---------------------------------------------------------------------

    def _open(self) -> SQLiteRecords:
        # A failed open leaves nothing behind: the next call opens it anew.
        return migrated(SQLiteRecords(self.path, timeout=BUSY_SECONDS), "counters", _STEPS)

    def _run(self, calls: list[tuple[Callable[..., Any], tuple[Any, ...]]]) -> list[Any]:
        """The calls in one IMMEDIATE transaction: SQLite's write lock makes each
        check-and-book atomic across processes. A limit a call breaks is its answer (the
        expiries it made stand); a database error fails them all with a 503.

        SQLite answers some lock conflicts at once instead of waiting out its busy timeout
        (SQLITE_BUSY_SNAPSHOT in WAL mode, when another process wrote since this connection
        last read): those are retried on a new connection, for up to BUSY_SECONDS."""
        try:
            # A fresh connection holds no snapshot from before the other process's write.
            return retry_while_busy(lambda: self._attempt(calls), BUSY_SECONDS, between=self._io.reset)
        except (sqlite3.Error, ConfigError) as exc:  # ConfigError: a file that would not open as a database
            raise self.unavailable(exc) from None

    def _attempt(self, calls: list[tuple[Callable[..., Any], tuple[Any, ...]]]) -> list[Any]:
        replies: list[Any] = []
        with self._io.conn.transaction() as db:  # BEGIN IMMEDIATE
            now = self.clock()
            for work, args in calls:
                try:
                    replies.append(work(db, now, *args))
                except ModelportError as exc:
                    replies.append(exc)
            if now - self._swept > SWEEP_SECONDS:
                self._swept = now
                _sweep(db, now)
        return replies

    def _book(self, db: SQLiteRecords, now: float, key_id: str, limits: KeyLimits, tokens: int, cost: float,
              seed: float) -> Booking:
        row = db.execute("SELECT spent, held, tokens, requests, seq, born FROM counters WHERE key = ?", (key_id,)).fetchone()
        if row is None:
            db.execute("DELETE FROM window WHERE key = ?", (key_id,))
            db.execute("DELETE FROM holds WHERE key = ?", (key_id,))
            db.execute("INSERT INTO counters (key, spent, born, touched) VALUES (?, ?, ?, ?)", (key_id, seed, now, now))
            row = (seed, 0.0, 0, 0, 0, now)
        spent, held, used, count, seq, born = row
        gone = db.execute("DELETE FROM window WHERE key = ? AND at <= ? RETURNING tokens", (key_id, now - self.window)).fetchall()
        if gone:
            used -= sum(r[0] for r in gone)
            count -= len(gone)
        lapsed = db.execute("DELETE FROM holds WHERE key = ? AND lapses <= ? RETURNING cost", (key_id, now)).fetchall()
        if lapsed:
            held = max(held - sum(r[0] for r in lapsed), 0.0)
        try:
            _check(db, key_id, limits, tokens, cost, now, self.window, spent, held, used, count)
        except ModelportError:
            if gone or lapsed:
                db.execute("UPDATE counters SET held = ?, tokens = ?, requests = ? WHERE key = ?", (held, used, count, key_id))
            raise
        seq += 1
        db.execute("INSERT INTO window VALUES (?, ?, ?, ?)", (key_id, seq, now, tokens))
        if cost > 0:
            db.execute("INSERT INTO holds VALUES (?, ?, ?, ?)", (key_id, seq, now + self.hold_seconds, cost))
        db.execute("UPDATE counters SET held = ?, tokens = ?, requests = ?, seq = ?, touched = ? WHERE key = ?",
                   (held + cost, used + tokens, count + 1, seq, now, key_id))
        return Booking(key_id, tokens, cost, (seq, born))

    @staticmethod
    def _unbook(db: SQLiteRecords, now: float, booking: Booking, tokens: int, cost: float) -> None:
        seq, born = booking.ref
        key_id = booking.key_id
        row = db.execute("SELECT born FROM counters WHERE key = ?", (key_id,)).fetchone()
        if row is None or row[0] != born:
            return  # the key's counters were swept since: the key store seeds them anew
        changed = db.execute("UPDATE window SET tokens = ? WHERE key = ? AND seq = ?", (tokens, key_id, seq)).rowcount
        released = db.execute("DELETE FROM holds WHERE key = ? AND seq = ? RETURNING cost", (key_id, seq)).fetchone()
        db.execute("UPDATE counters SET tokens = tokens + ?, held = MAX(held - ?, 0), spent = spent + ? WHERE key = ?",
                   (tokens - booking.tokens if changed else 0, released[0] if released else 0.0, cost, key_id))

    # -- event loop ------------------------------------------------------------------------

    async def _send(self, calls: list[Any]) -> list[Any]:
        return await self._io.run(self._run, calls)

    async def _reserve(self, key_id: str, limits: KeyLimits, tokens: int, cost: float) -> Booking:
        return await self._call((self._book, (key_id, limits, tokens, cost, self._seeds.get(key_id, 0.0))))

    async def _settle(self, booking: Booking, tokens: int, cost: float) -> None:
        self._submit((self._unbook, (booking, tokens, cost)), None)

    async def healthy(self) -> bool:
        def probe() -> bool:
            self._io.conn.execute("SELECT 1 FROM counters LIMIT 1").fetchall()
            return True

        try:
            return await self._io.run(probe)
        except Exception:  # noqa: BLE001 - any failure means "not usable"
            return False

    async def close(self) -> None:
        await self._drain()
        await self._io.aclose()


def _sweep(db: SQLiteRecords, now: float) -> None:
    """Forget keys nobody used for a day (their spend comes back from the key store)."""
    idle = now - IDLE_SECONDS
    for table in ("window", "holds"):
        db.execute(f"DELETE FROM {table} WHERE key IN (SELECT key FROM counters WHERE touched < ?)", (idle,))
    db.execute("DELETE FROM counters WHERE touched < ?", (idle,))


def _check(db: SQLiteRecords, key_id: str, limits: KeyLimits, tokens: int, cost: float, now: float, window: float,
           spent: float, held: float, used: int, count: int) -> None:
    """Raise the limit a request of ``tokens`` tokens and ``cost`` USD would break."""
    if limits.rpm is not None and count >= limits.rpm:
        first = db.execute("SELECT MIN(at) FROM window WHERE key = ?", (key_id,)).fetchone()[0]
        raise rpm_error(limits.rpm, (first if first is not None else now) + window - now)
    if limits.tpm is not None:
        if tokens > limits.tpm:
            raise too_many_tokens_error(tokens, limits.tpm)
        if used + tokens > limits.tpm:
            entries = db.execute("SELECT at, tokens FROM window WHERE key = ? ORDER BY at", (key_id,)).fetchall()
            raise tpm_error(limits.tpm, token_wait(entries, used + tokens - limits.tpm, now, window))
    if limits.budget is not None and spent + held + cost > limits.budget:
        raise budget_error(limits.budget, spent, held)
