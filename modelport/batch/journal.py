"""The batch journal: the single source of truth for a job's rows.

One implementation over the records layer (modelport.state.records), keyed by the job's id,
in one of two places:

* a SQLite file (WAL) of the job's own (``Journal(path)``): the CLI's and the Python API's
  jobs, and a gateway's with SQLite records. The process running the job holds its lock file.
* the records database every gateway instance shares (``Journal(db, job)``, PostgreSQL
  records), so a job begun on one machine resumes on another with no shared disk. The
  batch's lease (files_api) decides who runs the job; the output file is remade from the
  final rows wherever it resumes (``writers.open_output``).

Exactly once, by construction:

* Every input row is copied into ``rows`` (state ``PENDING``) before any is sent. Ingest is
  committed in chunks together with its watermark, so a kill mid-ingest resumes reading
  the input just after the last committed row.
* A row becomes ``DONE`` (or ``FAILED``) only in the transaction that stores its answer
  (or error). A kill before that commit leaves it open, and it is sent again on resume: it
  was never completed. A committed row is never sent again.
* ``INFLIGHT`` is bookkeeping for ``batch status``; resume treats it like ``PENDING``.
  Marks ride along with the next commit instead of costing one of their own.
* The output file is derived from the journal: rows are appended in input order, only
  once every earlier row is final, and the journal records how many rows and bytes of
  output are valid in one transaction after the bytes are flushed. On resume the output is
  truncated back to that length, dropping any torn tail, and extended from there.

Commits use ``synchronous=NORMAL``: in WAL mode a committed transaction survives the
process being killed (the case this is designed for), though not a power cut. A transaction
stays open between ``_begin`` and ``commit``: on PostgreSQL that is one pooled connection
held by the job's thread (transactions are per thread in ``RecordsDB``), so the job's writes
never mix with those of the server's worker thread.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from typing import Any, ContextManager, Iterable, Iterator

from ..jsonio import dumps, loads
from ..state.records import RecordsDB, SQLiteRecords, migrate, migrated

PENDING, INFLIGHT, DONE, FAILED = 0, 1, 2, 3
STATE_NAMES = {PENDING: "pending", INFLIGHT: "inflight", DONE: "done", FAILED: "failed"}
INGEST_CHUNK = 5000
# The job id of a journal file's rows: the file is the job, whatever it is called.
FILE_JOB = ""
# How long a statement waits for another process's write lock on a journal file.
BUSY_SECONDS = 30.0
_ROW_COLUMNS = "idx, key, data, state, attempts, result, error, input_tokens, output_tokens, cost, cached, finished_at"


def _adopt_file_tables(db: RecordsDB) -> None:
    """A journal file from before the journal kept its rows by job (tables ``meta``,
    ``rows``, ``remote``): its rows move into the tables every journal uses, as ``FILE_JOB``."""
    if db.engine != "sqlite" or not db.columns("rows"):
        return
    db.execute(f"INSERT INTO journal_rows (job, {_ROW_COLUMNS}) SELECT ?, {_ROW_COLUMNS} FROM rows", (FILE_JOB,))
    db.execute("INSERT INTO journal_meta (job, key, value) SELECT ?, key, value FROM meta", (FILE_JOB,))
    db.execute("INSERT INTO journal_remote (job, name, first_idx, last_idx, remote_id, status, info)"
               " SELECT ?, name, first_idx, last_idx, remote_id, status, info FROM remote", (FILE_JOB,))
    for table in ("rows", "meta", "remote"):
        db.execute(f"DROP TABLE {table}")


# The journal's schema, versioned (modelport.state.records.migrate): every step it has needed.
_STEPS = (
    "CREATE TABLE journal_meta (job TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL, PRIMARY KEY (job, key));"
    "CREATE TABLE journal_rows (job TEXT NOT NULL, idx INTEGER NOT NULL, key TEXT, data BLOB NOT NULL,"
    " state INTEGER NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0, result BLOB, error BLOB,"
    " input_tokens INTEGER NOT NULL DEFAULT 0, output_tokens INTEGER NOT NULL DEFAULT 0, cost REAL,"
    " cached INTEGER NOT NULL DEFAULT 0, finished_at REAL, PRIMARY KEY (job, idx), UNIQUE (job, key));"
    "CREATE INDEX journal_rows_open ON journal_rows (job, state, idx)",
    # Native mode's provider batches.
    "CREATE TABLE journal_remote (job TEXT NOT NULL, name TEXT NOT NULL, first_idx INTEGER NOT NULL, last_idx INTEGER NOT NULL,"
    " remote_id TEXT, status TEXT NOT NULL, info BLOB, PRIMARY KEY (job, name))",
    _adopt_file_tables,
)


class RunLock:
    """Who runs a job kept in a file: the process holding an exclusive lock on
    ``<journal>.lock`` (flock: the OS drops it when the process dies, however it dies). So a
    job whose status says "running" while nobody holds the lock was left by a killed
    process: it is interrupted."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def claim(self, job_name: str) -> None:
        """Take the lock for this process; a job another process runs is not run twice."""
        import fcntl

        if self._fd is not None:
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            from ..errors import ConfigError

            raise ConfigError(f"batch job {job_name} is running in another process (pid {holder})",
                              hint=f"wait for it, or stop it: modelport batch cancel {job_name}") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def held_elsewhere(self) -> bool:
        """Whether another process holds the lock (is running the job right now)."""
        import fcntl

        if self._fd is not None:
            return False
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False


class Journal:
    """The journal of one job: ``Journal(path)`` for a file of its own, ``Journal(db, job)``
    for job ``job`` in a records database the caller owns. Use it from one thread (the job's)."""

    def __init__(self, where: str | Path | RecordsDB, job: str = FILE_JOB) -> None:
        self.job = job
        self.path: Path | None
        self._lock: RunLock | None
        if isinstance(where, (str, Path)):
            from ..config import private_file

            self.path = Path(where)
            self.db: RecordsDB = migrated(SQLiteRecords(private_file(self.path), timeout=BUSY_SECONDS), "batch_journal", _STEPS)
            self._lock = RunLock(self.path.with_name(self.path.name + ".lock"))
        else:
            migrate(where, "batch_journal", _STEPS)
            # Who runs a job in shared records is decided by its batch's lease, not here.
            self.path, self.db, self._lock = None, where, None
        self._tx: ContextManager[Any] | None = None

    def close(self) -> None:
        self.commit()
        if self.path is not None:  # a shared database is its owner's to close
            self.db.close()
        self.release()

    def delete(self) -> None:
        """Drop the job's rows (its batch is closed, or the journal was copied elsewhere)."""
        with self.db.transaction():
            for table in ("journal_rows", "journal_meta", "journal_remote"):
                self.db.execute(f"DELETE FROM {table} WHERE job = ?", (self.job,))

    # -- who runs the job ------------------------------------------------------------------

    def claim(self) -> None:
        """Take the job's run lock for this process (a file's; a shared database's batch lease is taken elsewhere)."""
        if self._lock is not None and self.path is not None:
            self._lock.claim(self.path.stem)

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()

    def held_elsewhere(self) -> bool:
        """Whether another process runs the job right now."""
        return self._lock is not None and self._lock.held_elsewhere()

    @property
    def status(self) -> str:
        """The job's status; "running" only while a process runs it (else "interrupted")."""
        status = self.get("status", "new")
        if status == "running" and not self.held_elsewhere():
            return "interrupted"
        return str(status)

    # -- transactions --------------------------------------------------------------------

    def _begin(self) -> None:
        if self._tx is None:
            tx = self.db.transaction()
            tx.__enter__()
            self._tx = tx

    def commit(self) -> None:
        if self._tx is not None:
            tx, self._tx = self._tx, None
            tx.__exit__(None, None, None)

    def _rollback(self, exc: BaseException) -> None:
        if self._tx is not None:
            tx, self._tx = self._tx, None
            tx.__exit__(type(exc), exc, exc.__traceback__)

    def _execute(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        """A statement inside the open transaction, if any; one that fails rolls it back
        (as PostgreSQL has already done), so the next statement starts a clean one."""
        try:
            return self.db.execute(sql, params)
        except BaseException as exc:
            self._rollback(exc)
            raise

    def _executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        try:
            self.db.executemany(sql, rows)
        except BaseException as exc:
            self._rollback(exc)
            raise

    # -- meta ----------------------------------------------------------------------------

    def get(self, key: str, default: Any = None) -> Any:
        row = self._execute("SELECT value FROM journal_meta WHERE job = ? AND key = ?", (self.job, key)).fetchone()
        return default if row is None else loads(row[0])

    def set(self, key: str, value: Any, *, commit: bool = True) -> None:
        self._begin()
        self._execute("INSERT INTO journal_meta (job, key, value) VALUES (?, ?, ?) ON CONFLICT (job, key) DO UPDATE SET value = excluded.value",
                      (self.job, key, dumps(value)))
        if commit:
            self.commit()

    # -- ingest --------------------------------------------------------------------------

    @property
    def ingested(self) -> int:
        return int(self.get("ingested", 0))

    @property
    def ingest_done(self) -> bool:
        return bool(self.get("ingest_done", False))

    def ingest(self, rows: Iterable[tuple[str | None, Any]], start: int | None = None) -> int:
        """Store ``(key, data)`` rows from index ``start`` (default: the watermark) on.

        The caller passes the input already positioned at ``start``. Returns the total.
        """
        n = self.ingested if start is None else start
        chunk: list[tuple[str, int, str | None, bytes]] = []
        for key, data in rows:
            chunk.append((self.job, n, key, dumps(data)))
            n += 1
            if len(chunk) >= INGEST_CHUNK:
                self._ingest_chunk(chunk, n)
                chunk = []
        self._ingest_chunk(chunk, n)
        self.set("ingest_done", True)
        return n

    def _ingest_chunk(self, chunk: list[tuple[str, int, str | None, bytes]], upto: int) -> None:
        self._begin()
        try:
            self._executemany("INSERT INTO journal_rows (job, idx, key, data) VALUES (?, ?, ?, ?)", chunk)
        except sqlite3.IntegrityError as exc:
            raise ValueError(f"duplicate custom_id in the input ({exc}); each request needs its own") from None
        self.set("ingested", upto)

    # -- rows ----------------------------------------------------------------------------

    def open_rows(self, after: int = -1, limit: int = 1000, upto: int | None = None) -> list[tuple[int, str | None, Any]]:
        """Rows not yet final with index > ``after`` (and < ``upto``), in input order."""
        rows = self._execute("SELECT idx, key, data FROM journal_rows WHERE job = ? AND state < 2 AND idx > ? AND idx < ? ORDER BY idx LIMIT ?",
                             (self.job, after, 2**62 if upto is None else upto, limit)).fetchall()
        return [(idx, key, loads(data)) for idx, key, data in rows]

    def release_inflight(self) -> int:
        """Rows marked in flight by a run that has ended are open again (pending). Returns how many."""
        self._begin()
        n = self._execute("UPDATE journal_rows SET state = 0 WHERE job = ? AND state = 1", (self.job,)).rowcount
        self.commit()
        return int(n)

    def mark_inflight(self, idx: int) -> None:
        self._begin()
        self._execute("UPDATE journal_rows SET state = 1, attempts = attempts + 1 WHERE job = ? AND idx = ? AND state < 2", (self.job, idx))

    def finish(self, idx: int, *, result: Any = None, error: Any = None, input_tokens: int = 0, output_tokens: int = 0,
               cost: float | None = None, cached: bool = False, commit: bool = True) -> bool:
        """Make a row final with its answer or error. False if it already was (never overwritten)."""
        self._begin()
        cur = self._execute(
            "UPDATE journal_rows SET state = ?, result = ?, error = ?, input_tokens = ?, output_tokens = ?, cost = ?, cached = ?, "
            "finished_at = ? WHERE job = ? AND idx = ? AND state < 2",
            (FAILED if error is not None else DONE, None if result is None else dumps(result),
             None if error is None else dumps(error), input_tokens, output_tokens, cost, int(cached), time.time(), self.job, idx),
        )
        if commit:
            self.commit()
        return cur.rowcount == 1

    def attempts(self, idx: int) -> int:
        """How often the row was sent (native mode: in how many provider batches)."""
        row = self._execute("SELECT attempts FROM journal_rows WHERE job = ? AND idx = ?", (self.job, idx)).fetchone()
        return 0 if row is None else int(row[0])

    def idx_for_key(self, key: str) -> int | None:
        row = self._execute("SELECT idx FROM journal_rows WHERE job = ? AND key = ?", (self.job, key)).fetchone()
        return None if row is None else int(row[0])

    def final_rows(self, start: int, limit: int = 2000) -> list[tuple[int, str | None, Any, int, Any, Any, float | None, bool]]:
        """Contiguous final rows from ``start``: stops before the first row still open."""
        rows = self._execute("SELECT idx, key, data, state, result, error, cost, cached FROM journal_rows"
                             " WHERE job = ? AND idx >= ? ORDER BY idx LIMIT ?", (self.job, start, limit)).fetchall()
        out: list[tuple[int, str | None, Any, int, Any, Any, float | None, bool]] = []
        for idx, key, data, state, result, error, cost, cached in rows:
            if idx != start + len(out) or state < DONE:
                break
            out.append((idx, key, loads(data), state, None if result is None else loads(result),
                        None if error is None else loads(error), cost, bool(cached)))
        return out

    def copy_final_rows(self, source: Journal, start: int, limit: int = 2000) -> int:
        """Copy ``source``'s contiguous final rows from ``start`` into this journal (rows
        final here already stay as they are), in one commit. Returns where the copy stopped."""
        rows = source._execute(
            "SELECT idx, state, result, error, input_tokens, output_tokens, cost, cached, finished_at FROM journal_rows "
            "WHERE job = ? AND idx >= ? ORDER BY idx LIMIT ?", (source.job, start, limit)).fetchall()
        batch: list[tuple[Any, ...]] = []
        for row in rows:
            if row[0] != start + len(batch) or row[1] < DONE:
                break
            batch.append((*row[1:], self.job, row[0]))
        if batch:
            self._begin()
            self._executemany(
                "UPDATE journal_rows SET state = ?, result = ?, error = ?, input_tokens = ?, output_tokens = ?, cost = ?, cached = ?, "
                "finished_at = ? WHERE job = ? AND idx = ? AND state < 2", batch)
            self.commit()
        return start + len(batch)

    def copy_into(self, other: Journal) -> None:
        """This job's meta and rows into ``other`` (the job moving to another database), in
        ``other``'s open transaction if any; what ``other`` has already stays as it is."""
        meta = self._execute("SELECT key, value FROM journal_meta WHERE job = ?", (self.job,)).fetchall()
        rows = self._execute(f"SELECT {_ROW_COLUMNS} FROM journal_rows WHERE job = ? ORDER BY idx", (self.job,)).fetchall()
        other._executemany("INSERT INTO journal_meta (job, key, value) VALUES (?, ?, ?) ON CONFLICT (job, key) DO NOTHING",
                           [(other.job, key, value) for key, value in meta])
        other._executemany(f"INSERT INTO journal_rows (job, {_ROW_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                           " ON CONFLICT (job, idx) DO NOTHING", [(other.job, *row) for row in rows])

    def reopen_failed(self) -> int:
        """Make failed rows pending again (``resume --retry-failed``). Returns how many."""
        self._begin()
        n = self._execute("UPDATE journal_rows SET state = 0, error = NULL, result = NULL WHERE job = ? AND state = 3", (self.job,)).rowcount
        self.commit()
        return int(n)

    # -- output watermark ------------------------------------------------------------------

    @property
    def written(self) -> tuple[int, int]:
        """(rows written to the output, valid output bytes)."""
        value = self.get("written", [0, 0])
        return int(value[0]), int(value[1])

    def set_written(self, rows: int, size: int) -> None:
        self.set("written", [rows, size])

    # -- totals --------------------------------------------------------------------------

    def totals(self) -> dict[str, Any]:
        """Counts per state, tokens, known cost, rows of unknown cost and cached rows."""
        counts = {name: 0 for name in STATE_NAMES.values()}
        for state, n in self._execute("SELECT state, count(*) FROM journal_rows WHERE job = ? GROUP BY state", (self.job,)).fetchall():
            counts[STATE_NAMES[state]] = int(n)
        sums = self._execute(
            "SELECT coalesce(sum(input_tokens), 0), coalesce(sum(output_tokens), 0), coalesce(sum(cost), 0.0), "
            "coalesce(sum(CASE WHEN cost IS NULL AND state = 2 THEN 1 ELSE 0 END), 0), coalesce(sum(cached), 0) "
            "FROM journal_rows WHERE job = ? AND state >= 2", (self.job,)).fetchone()
        # PostgreSQL sums integers as numeric (Decimal): as plain numbers, they mix with the engine's.
        tin, tout, unknown, cached = (int(n) for n in (sums[0], sums[1], sums[3], sums[4]))
        return {**counts, "rows": sum(counts.values()), "input_tokens": tin, "output_tokens": tout, "cost": float(sums[2]),
                "unknown_cost_rows": unknown, "cached": cached}

    def common_error(self) -> tuple[dict[str, Any], int] | None:
        """The error most failed rows share and how many share it (None: no row failed), for
        a summary that says why rows failed, not only how many."""
        row = self._execute("SELECT error, count(*) AS n FROM journal_rows WHERE job = ? AND state = 3 GROUP BY error"
                            " ORDER BY n DESC LIMIT 1", (self.job,)).fetchone()
        return (loads(row[0]), int(row[1])) if row else None

    # -- provider batch jobs (native mode) ---------------------------------------------------

    def remotes(self) -> list[dict[str, Any]]:
        rows = self._execute("SELECT name, first_idx, last_idx, remote_id, status, info FROM journal_remote WHERE job = ? ORDER BY first_idx",
                             (self.job,)).fetchall()
        return [{"name": n, "first": a, "last": b, "remote_id": r, "status": s, "info": loads(i) if i else {}} for n, a, b, r, s, i in rows]

    def set_remote(self, name: str, first: int, last: int, remote_id: str | None, status: str, info: Any = None) -> None:
        self._begin()
        self._execute("INSERT INTO journal_remote (job, name, first_idx, last_idx, remote_id, status, info) VALUES (?, ?, ?, ?, ?, ?, ?)"
                      " ON CONFLICT (job, name) DO UPDATE SET first_idx = excluded.first_idx, last_idx = excluded.last_idx,"
                      " remote_id = excluded.remote_id, status = excluded.status, info = excluded.info",
                      (self.job, name, first, last, remote_id, status, dumps(info or {})))
        self.commit()

    def rows_between(self, first: int, last: int) -> Iterator[tuple[int, str | None, Any, int]]:
        rows = self._execute("SELECT idx, key, data, state FROM journal_rows WHERE job = ? AND idx >= ? AND idx <= ? ORDER BY idx",
                             (self.job, first, last)).fetchall()
        for idx, key, data, state in rows:
            yield idx, key, loads(data), state
