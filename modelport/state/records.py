"""One SQL surface for the record stores, on a SQLite file or a PostgreSQL database.

A store (keys, stored responses, the cache, files and batches) writes its SQL once, in the
subset both engines share: ``?`` placeholders, ``INSERT ... ON CONFLICT``, ``RETURNING``,
and the column types ``TEXT``, ``INTEGER``, ``REAL`` and ``BLOB`` in its migrations
(``ddl`` maps them to PostgreSQL's). It gets a ``RecordsDB`` from ``open_records(url)``
and calls it from its own worker thread (``state.runner.StoreRunner``): both are blocking
clients, neither belongs on the loop.

Schemas are versioned per store (``migrate``), the one mechanism of every modelport
database, the call log's and the batch journals' files included: the ordered steps a store
has ever needed, of which a database runs those it has not run yet, inside one transaction
that also takes a lock, so that two processes starting at once upgrade it once. On PostgreSQL a lost
server is a ``StateUnavailableError`` (503), never a half-done request; the pool reconnects
by itself when the server returns.
"""

from __future__ import annotations

import os
import re
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence, TypeVar, Union
from urllib.parse import urlsplit

from ..errors import ConfigError, StateUnavailableError
from ..sqlite_wal import wal_mode
from . import redact, scheme
from .db import RecordsDB, Rows

# A migration step: SQL (one or more statements, run through ``ddl``) or a function of the db.
Step = Union[str, Callable[["RecordsDB"], None]]

_VERSIONS = "CREATE TABLE IF NOT EXISTS modelport_schema (component TEXT PRIMARY KEY, version INTEGER NOT NULL)"
_PG_TYPES = ((re.compile(r"\bBLOB\b"), "BYTEA"), (re.compile(r"\bREAL\b"), "DOUBLE PRECISION"), (re.compile(r"\bINTEGER\b"), "BIGINT"))
# How long a request waits for a PostgreSQL connection before it is refused with a 503.
POOL_TIMEOUT = 5.0
FAILING_POOL_TIMEOUT = 0.25
RECONNECT_TIMEOUT = 0.5
CONNECT_TIMEOUT = 3
# Bounds on one statement (the server cancels it) and on noticing a silent peer (TCP
# keepalives: a server gone without a reset is dropped after about idle + interval * count
# seconds), so no store call waits forever on the database.
STATEMENT_TIMEOUT = 15.0
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3}


def open_records(url: str | None, default_path: Path) -> RecordsDB:
    """The database a store keeps its records in: ``url``'s, or the SQLite file
    ``default_path`` when no records URL is configured (or it is a bare ``sqlite:``)."""
    path = _sqlite_path(url, default_path)
    if path is not None:
        return SQLiteRecords(path)
    return PostgresRecords.shared(str(url))


def open_store(url: str | None, default_path: Path, component: str, steps: Sequence[Step],
               legacy: Callable[[RecordsDB], int] | None = None) -> RecordsDB:
    """``open_records`` for one store, its schema brought up to date (see ``migrate``)."""
    return migrated(open_records(url, default_path), component, steps, legacy)


D = TypeVar("D", bound="RecordsDB")


def migrated(db: D, component: str, steps: Sequence[Step], legacy: Callable[[RecordsDB], int] | None = None) -> D:
    """``db`` with ``component``'s schema brought up to date (see ``migrate``); closed if that fails."""
    try:
        migrate(db, component, steps, legacy)
    except BaseException:
        db.close()
        raise
    return db


def records_exist(url: str | None, default_path: Path) -> bool:
    """Whether ``open_records(url, default_path)`` would find records rather than make an
    empty file: a database server always counts, a SQLite file once it exists."""
    path = _sqlite_path(url, default_path)
    return path is None or path.exists()


def _sqlite_path(url: str | None, default_path: Path) -> Path | None:
    """The SQLite file ``url`` names (``default_path`` for none or a bare ``sqlite:``), or
    None for a database server."""
    if url is not None and scheme(url) != "sqlite":
        return None
    path = urlsplit(url).path if url else ""
    return Path(path) if path.strip("/") else default_path


def migrate(db: RecordsDB, component: str, steps: Sequence[Step], legacy: Callable[[RecordsDB], int] | None = None) -> None:
    """Run the steps of ``component``'s schema that ``db`` has not run yet, at most once
    even when several processes start together.

    ``legacy`` tells the version of a database made before versions were kept here (a
    SQLite file of an older modelport): asked only when ``component`` has no row yet."""
    if _version(db, component) == len(steps):
        return  # up to date: no write lock, so opening never waits behind another process's writes
    with db.transaction():
        db.lock_schema()
        db.execute(_VERSIONS)
        row = db.execute("SELECT version FROM modelport_schema WHERE component = ?", (component,)).fetchone()
        version = row[0] if row else (legacy(db) if legacy is not None else 0)
        if version > len(steps):
            raise ConfigError(
                f"the {component} records in {db.url} were written by a newer modelport (schema {version}, this one knows {len(steps)})",
                hint="upgrade modelport, or point [state] records at another database",
            )
        for step in steps[version:]:
            if callable(step):
                step(db)
            else:
                for statement in filter(str.strip, db.ddl(step).split(";")):
                    db.execute(statement)
        if row is None or len(steps) > version:  # a legacy database's version is recorded too
            db.execute(
                "INSERT INTO modelport_schema (component, version) VALUES (?, ?)"
                " ON CONFLICT (component) DO UPDATE SET version = excluded.version",
                (component, len(steps)),
            )


def _version(db: RecordsDB, component: str) -> int | None:
    """The schema version ``db`` records for ``component`` (None: none yet), read without a lock."""
    if not db.columns("modelport_schema"):
        return None
    row = db.execute("SELECT version FROM modelport_schema WHERE component = ?", (component,)).fetchone()
    return None if row is None else int(row[0])


class SQLiteRecords:
    """A SQLite file in WAL mode, one connection, 0600 like every file modelport makes."""

    engine = "sqlite"
    failing = False  # a local file is never "away"

    def __init__(self, path: Path, *, timeout: float = 10.0) -> None:
        """``timeout``: how long a statement waits for another process's write lock."""
        from ..config import private_file

        self.path = Path(path)
        self.url = f"sqlite:///{self.path}"
        self._conn = sqlite3.connect(private_file(self.path), isolation_level=None, timeout=timeout, check_same_thread=False)
        try:
            wal_mode(self._conn)
            self._conn.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.DatabaseError as exc:  # not a database: a user's file, named with the problem
            self._conn.close()
            raise ConfigError(f"cannot open the records database {self.path}: {exc}",
                              hint="move the file away (modelport makes a new one) or point modelport at another") from None

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Rows:
        return self._conn.execute(sql, params)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self._conn.executemany(sql, rows)

    @contextmanager
    def transaction(self) -> Iterator[SQLiteRecords]:
        if self._conn.in_transaction:  # nested: part of the outer one
            yield self
            return
        # IMMEDIATE: the write lock is taken up front, so no two processes read-then-write.
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self
            self._conn.execute("COMMIT")
        except BaseException:
            # A failed statement or COMMIT may have ended the transaction already, or not:
            # a connection left inside one would take the next transaction for a nested one.
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise

    def lock_schema(self) -> None:
        """Nothing to do: BEGIN IMMEDIATE already holds the database's one write lock."""

    def ddl(self, sql: str) -> str:
        return sql

    def columns(self, table: str) -> set[str]:
        return {row[1] for row in self._conn.execute("SELECT * FROM pragma_table_info(?)", (table,))}

    def footprint(self) -> int | None:
        return sum(p.stat().st_size for p in (self.path, Path(f"{self.path}-wal")) if p.exists())

    def compact(self) -> None:
        self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._conn.execute("VACUUM")
        # In WAL mode VACUUM writes the new file into the WAL: empty that too.
        self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def close(self) -> None:
        self._conn.close()


class PostgresRecords:
    """A PostgreSQL database through a psycopg connection pool, shared by every store of
    the process (``shared``). Connections are checked before use, so a restarted server
    costs the first request after it nothing but a reconnect."""

    engine = "postgresql"
    _shared: dict[str, PostgresRecords] = {}
    _shared_lock = threading.Lock()

    def __init__(self, url: str, *, max_size: int = 16, statement_timeout: float = STATEMENT_TIMEOUT) -> None:
        # The stores that hold this pool (``shared``): the last ``close`` closes it.
        self._users = 1
        # A forked child must not touch its parent's connections (nor wait on its threads).
        self._pid = os.getpid()
        from ..extras import require

        require("psycopg", "PostgreSQL records ([state] records = postgresql://...)")
        require("psycopg_pool", "PostgreSQL records ([state] records = postgresql://...)")
        from psycopg_pool import ConnectionPool

        self.url = redact(url)
        self._in_transaction = threading.local()
        # Set by a failure, cleared by a success: while the server is away, requests wait
        # FAILING_POOL_TIMEOUT for a connection instead of POOL_TIMEOUT, so they are refused
        # promptly rather than each holding a store's one worker thread for seconds.
        self._failing = False
        self._pool = ConnectionPool(
            url, min_size=1, max_size=max_size, open=False, timeout=POOL_TIMEOUT,
            # The pool's own retries back off to many seconds; giving them up at once lets
            # the next request that waits start a fresh attempt, so the gateway is back
            # within about a second of the server's return.
            reconnect_timeout=RECONNECT_TIMEOUT,
            check=ConnectionPool.check_connection, name="modelport-records",
            kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT, **KEEPALIVES,
                    "options": f"-c statement_timeout={int(statement_timeout * 1000)}"},
        )
        self._pool.open(wait=False)

    @classmethod
    def shared(cls, url: str) -> PostgresRecords:
        with cls._shared_lock:
            db = cls._shared.get(url)
            if db is None or db._pool.closed or db._pid != os.getpid():
                db = cls._shared[url] = cls(url)
            else:
                db._users += 1
            return db

    @staticmethod
    def sql(statement: str) -> str:
        """``?`` placeholders as psycopg's ``%s`` (a literal ``%`` doubled first)."""
        return _translate(statement)

    def _unavailable(self, exc: BaseException) -> StateUnavailableError:
        # Where (URL redacted) only in the detail: a gateway's callers are shown no state URL.
        return StateUnavailableError(
            "the gateway's records database is unavailable", hint="retry in a moment",
            detail=f"PostgreSQL at {self.url} ([state] records) cannot be reached ({type(exc).__name__}: {exc}); "
                   "check that it runs and is reachable from here; modelport reconnects by itself when it is back",
        )

    @contextmanager
    def _connection(self) -> Iterator[Any]:
        conn = getattr(self._in_transaction, "conn", None)
        if conn is not None:
            yield conn
            return
        import psycopg
        from psycopg_pool import PoolTimeout

        try:
            with self._pool.connection(timeout=FAILING_POOL_TIMEOUT if self._failing else None) as conn:
                yield conn
            self._failing = False
        except (PoolTimeout, psycopg.OperationalError, psycopg.InterfaceError) as exc:
            self._failing = True
            raise self._unavailable(exc) from None

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Rows:
        with self._connection() as conn:
            cursor = conn.execute(_translate(sql), params)
            return _Fetched(cursor)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        with self._connection() as conn, conn.cursor() as cursor:
            cursor.executemany(_translate(sql), list(rows))

    @contextmanager
    def transaction(self) -> Iterator[PostgresRecords]:
        if getattr(self._in_transaction, "conn", None) is not None:
            yield self
            return
        with self._connection() as conn, conn.transaction():
            self._in_transaction.conn = conn
            try:
                yield self
            finally:
                self._in_transaction.conn = None

    @property
    def failing(self) -> bool:
        """Whether the last use of the database failed (until one succeeds)."""
        return self._failing

    def lock_schema(self) -> None:
        # Held to the end of the transaction: concurrent starts migrate one after the other.
        self.execute("SELECT pg_advisory_xact_lock(7426150)")

    def ddl(self, sql: str) -> str:
        for pattern, replacement in _PG_TYPES:
            sql = pattern.sub(replacement, sql)
        return sql

    def columns(self, table: str) -> set[str]:
        rows = self.execute("SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = ?",
                            (table,)).fetchall()
        return {row[0] for row in rows}

    def footprint(self) -> int | None:
        return None  # the server's business: pg_database_size counts every store together

    def compact(self) -> None:
        """Nothing to do: autovacuum reclaims deleted rows."""

    def ping(self) -> None:
        """Raise StateUnavailableError unless the database answers now."""
        self.execute("SELECT 1").fetchone()

    def close(self) -> None:
        with self._shared_lock:
            self._users -= 1
            if self._users > 0:
                return
            for url in [url for url, db in self._shared.items() if db is self]:
                del self._shared[url]
        self._pool.close()


class _Fetched:
    """A psycopg result read while its connection is held, so the connection can go back to
    the pool at once (the stores' results are small)."""

    def __init__(self, cursor: Any) -> None:
        self.rowcount = cursor.rowcount
        self._rows = cursor.fetchall() if cursor.description is not None else []

    def fetchone(self) -> Any:
        return self._rows[0] if self._rows else None

    def fetchall(self) -> list[Any]:
        return self._rows


_translated: dict[str, str] = {}


def _translate(sql: str) -> str:
    out = _translated.get(sql)
    if out is None:
        out = _translated[sql] = sql.replace("%", "%%").replace("?", "%s")
    return out
