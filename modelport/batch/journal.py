"""The batch journal: one SQLite file (WAL) per job, the single source of truth for its rows.

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
process being killed (the case this is designed for), though not a power cut.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

from ..jsonio import dumps, loads
from ..sqlite_wal import wal_mode

PENDING, INFLIGHT, DONE, FAILED = 0, 1, 2, 3
STATE_NAMES = {PENDING: "pending", INFLIGHT: "inflight", DONE: "done", FAILED: "failed"}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS rows (
    idx INTEGER PRIMARY KEY,
    key TEXT UNIQUE,
    data BLOB NOT NULL,
    state INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    result BLOB,
    error BLOB,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    cost REAL,
    cached INTEGER NOT NULL DEFAULT 0,
    finished_at REAL
);
CREATE INDEX IF NOT EXISTS rows_open ON rows (idx) WHERE state < 2;
CREATE TABLE IF NOT EXISTS remote (
    name TEXT PRIMARY KEY,
    first_idx INTEGER NOT NULL,
    last_idx INTEGER NOT NULL,
    remote_id TEXT,
    status TEXT NOT NULL,
    info BLOB
);
"""

INGEST_CHUNK = 5000


class Journal:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        from ..config import private_file

        private_file(self.path)
        # isolation_level=None: transactions are explicit, so marks can wait for the next commit.
        self.db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False, timeout=30)
        wal_mode(self.db)
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)
        self._open_tx = False
        self._lock: int | None = None

    def close(self) -> None:
        self.commit()
        self.db.close()
        self.release()

    # -- who runs the job --------------------------------------------------------------------
    # A process running the job holds an exclusive lock on ``<journal>.lock`` (flock: the OS
    # drops it when the process dies, however it dies). So a job whose status says "running"
    # while nobody holds the lock was left by a killed process: it is interrupted.

    @property
    def lock_path(self) -> Path:
        return self.path.with_name(self.path.name + ".lock")

    def claim(self) -> None:
        """Take the run lock for this process; a job another process runs is not run twice."""
        import fcntl

        if self._lock is not None:
            return
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            from ..errors import ConfigError

            raise ConfigError(f"batch job {self.path.stem} is running in another process (pid {holder})",
                              hint=f"wait for it, or stop it: modelport batch cancel {self.path.stem}") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock = fd

    def release(self) -> None:
        if self._lock is not None:
            os.close(self._lock)  # closing the descriptor drops the flock
            self._lock = None

    def held_elsewhere(self) -> bool:
        """Whether another process holds the run lock (is running the job right now)."""
        import fcntl

        if self._lock is not None:
            return False
        try:
            fd = os.open(self.lock_path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    @property
    def status(self) -> str:
        """The job's status; "running" only while a process runs it (else "interrupted")."""
        status = self.get("status", "new")
        if status == "running" and not self.held_elsewhere():
            return "interrupted"
        return str(status)

    # -- transactions --------------------------------------------------------------------

    def _begin(self) -> None:
        if not self._open_tx:
            self.db.execute("BEGIN")
            self._open_tx = True

    def commit(self) -> None:
        if self._open_tx:
            self.db.execute("COMMIT")
            self._open_tx = False

    # -- meta ----------------------------------------------------------------------------

    def get(self, key: str, default: Any = None) -> Any:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else loads(row[0])

    def set(self, key: str, value: Any, *, commit: bool = True) -> None:
        self._begin()
        self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, dumps(value)))
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
        chunk: list[tuple[int, str | None, bytes]] = []
        for key, data in rows:
            chunk.append((n, key, dumps(data)))
            n += 1
            if len(chunk) >= INGEST_CHUNK:
                self._ingest_chunk(chunk, n)
                chunk = []
        self._ingest_chunk(chunk, n)
        self.set("ingest_done", True)
        return n

    def _ingest_chunk(self, chunk: list[tuple[int, str | None, bytes]], upto: int) -> None:
        self._begin()
        try:
            self.db.executemany("INSERT INTO rows (idx, key, data) VALUES (?, ?, ?)", chunk)
        except sqlite3.IntegrityError as exc:
            self.db.execute("ROLLBACK")
            self._open_tx = False
            raise ValueError(f"duplicate custom_id in the input ({exc}); each request needs its own") from None
        self.set("ingested", upto)

    # -- rows ----------------------------------------------------------------------------

    def open_rows(self, after: int = -1, limit: int = 1000, upto: int | None = None) -> list[tuple[int, str | None, Any]]:
        """Rows not yet final with index > ``after`` (and < ``upto``), in input order."""
        if upto is None:
            cur = self.db.execute("SELECT idx, key, data FROM rows WHERE state < 2 AND idx > ? ORDER BY idx LIMIT ?", (after, limit))
        else:
            cur = self.db.execute("SELECT idx, key, data FROM rows WHERE state < 2 AND idx > ? AND idx < ? ORDER BY idx LIMIT ?", (after, upto, limit))
        return [(idx, key, loads(data)) for idx, key, data in cur]

    def release_inflight(self) -> int:
        """Rows marked in flight by a run that has ended are open again (pending). Returns how many."""
        self._begin()
        n = self.db.execute("UPDATE rows SET state = 0 WHERE state = 1").rowcount
        self.commit()
        return n

    def mark_inflight(self, idx: int) -> None:
        self._begin()
        self.db.execute("UPDATE rows SET state = 1, attempts = attempts + 1 WHERE idx = ? AND state < 2", (idx,))

    def finish(self, idx: int, *, result: Any = None, error: Any = None, input_tokens: int = 0, output_tokens: int = 0,
               cost: float | None = None, cached: bool = False, commit: bool = True) -> bool:
        """Make a row final with its answer or error. False if it already was (never overwritten)."""
        self._begin()
        cur = self.db.execute(
            "UPDATE rows SET state = ?, result = ?, error = ?, input_tokens = ?, output_tokens = ?, cost = ?, cached = ?, "
            "finished_at = ? WHERE idx = ? AND state < 2",
            (FAILED if error is not None else DONE, None if result is None else dumps(result),
             None if error is None else dumps(error), input_tokens, output_tokens, cost, int(cached), time.time(), idx),
        )
        if commit:
            self.commit()
        return cur.rowcount == 1

    def attempts(self, idx: int) -> int:
        """How often the row was sent (native mode: in how many provider batches)."""
        row = self.db.execute("SELECT attempts FROM rows WHERE idx = ?", (idx,)).fetchone()
        return 0 if row is None else int(row[0])

    def idx_for_key(self, key: str) -> int | None:
        row = self.db.execute("SELECT idx FROM rows WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def final_rows(self, start: int, limit: int = 2000) -> list[tuple[int, str | None, Any, int, Any, Any, float | None, bool]]:
        """Contiguous final rows from ``start``: stops before the first row still open."""
        cur = self.db.execute(
            "SELECT idx, key, data, state, result, error, cost, cached FROM rows WHERE idx >= ? ORDER BY idx LIMIT ?", (start, limit)
        )
        return self._contiguous_final(cur, start)

    @staticmethod
    def _contiguous_final(rows: Iterable[Any], start: int) -> list[tuple[int, str | None, Any, int, Any, Any, float | None, bool]]:
        """Of rows (idx, key, data, state, result, error, cost, cached) from ``start`` in
        order: the final ones up to the first gap or open row, decoded."""
        out = []
        expected = start
        for idx, key, data, state, result, error, cost, cached in rows:
            if idx != expected or state < DONE:
                break
            out.append((idx, key, loads(data), state, None if result is None else loads(result),
                        None if error is None else loads(error), cost, bool(cached)))
            expected += 1
        return out

    def copy_final_rows(self, source: Journal, start: int, limit: int = 2000) -> int:
        """Copy ``source``'s contiguous final rows from ``start`` into this journal (rows
        final here already stay as they are), in one commit. Returns where the copy stopped."""
        cur = source.db.execute(
            "SELECT idx, state, result, error, input_tokens, output_tokens, cost, cached, finished_at FROM rows "
            "WHERE idx >= ? ORDER BY idx LIMIT ?", (start, limit))
        batch: list[tuple[Any, ...]] = []
        for row in cur:
            if row[0] != start + len(batch) or row[1] < DONE:
                break
            batch.append((*row[1:], row[0]))
        if batch:
            self._begin()
            self.db.executemany(
                "UPDATE rows SET state = ?, result = ?, error = ?, input_tokens = ?, output_tokens = ?, cost = ?, cached = ?, "
                "finished_at = ? WHERE idx = ? AND state < 2", batch)
            self.commit()
        return start + len(batch)

    def reopen_failed(self) -> int:
        """Make failed rows pending again (``resume --retry-failed``). Returns how many."""
        self._begin()
        n = self.db.execute("UPDATE rows SET state = 0, error = NULL, result = NULL WHERE state = 3").rowcount
        self.commit()
        return n

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
        by_state = self.db.execute("SELECT state, count(*) FROM rows GROUP BY state")
        sums = self.db.execute(
            "SELECT coalesce(sum(input_tokens), 0), coalesce(sum(output_tokens), 0), coalesce(sum(cost), 0.0), "
            "coalesce(sum(CASE WHEN cost IS NULL AND state = 2 THEN 1 ELSE 0 END), 0), coalesce(sum(cached), 0) "
            "FROM rows WHERE state >= 2"
        ).fetchone()
        return self._sum_totals(by_state, sums)

    @staticmethod
    def _sum_totals(by_state: Iterable[Any], sums: Any) -> dict[str, Any]:
        """``totals`` from its two queries' answers: (state, count) rows and the final rows' sums."""
        counts = {name: 0 for name in STATE_NAMES.values()}
        for state, n in by_state:
            counts[STATE_NAMES[state]] = n
        tin, tout, spent, unknown, cached = sums
        return {**counts, "rows": sum(counts.values()), "input_tokens": tin, "output_tokens": tout, "cost": spent,
                "unknown_cost_rows": unknown, "cached": cached}

    # -- provider batch jobs (native mode) ---------------------------------------------------

    def remotes(self) -> list[dict[str, Any]]:
        cur = self.db.execute("SELECT name, first_idx, last_idx, remote_id, status, info FROM remote ORDER BY first_idx")
        return [{"name": n, "first": a, "last": b, "remote_id": r, "status": s, "info": loads(i) if i else {}} for n, a, b, r, s, i in cur]

    def set_remote(self, name: str, first: int, last: int, remote_id: str | None, status: str, info: Any = None) -> None:
        self._begin()
        self.db.execute("INSERT OR REPLACE INTO remote (name, first_idx, last_idx, remote_id, status, info) VALUES (?, ?, ?, ?, ?, ?)",
                        (name, first, last, remote_id, status, dumps(info or {})))
        self.commit()

    def rows_between(self, first: int, last: int) -> Iterator[tuple[int, str | None, Any, int]]:
        for idx, key, data, state in self.db.execute("SELECT idx, key, data, state FROM rows WHERE idx >= ? AND idx <= ? ORDER BY idx", (first, last)):
            yield idx, key, loads(data), state
