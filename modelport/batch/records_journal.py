"""A batch journal kept in the records database (modelport.state.records), so that a job
started on one gateway instance can be resumed on another machine with no shared disk.

It keeps ``Journal``'s guarantees and its interface as the live engine uses it (ingest,
open rows, in-flight marks, final rows, the output watermark, totals): a row becomes final
only in the transaction that stores its answer, marks ride along with the next commit,
and the output is derived from the final rows, so an output file missing on the machine
that resumes the job is simply written again from here (``writers.open_output``). Every
job's rows live in two tables shared by all jobs, keyed by the job's id.

Transactions stay open between ``_begin`` and ``commit`` as in ``Journal``: on PostgreSQL
that is one pooled connection held by the job's thread (transactions are per thread in
``RecordsDB``), so the job's writes never mix with those of the server's worker thread.
Who runs the job is decided by the batch's lease (files_api), not by a lock file.
"""

from __future__ import annotations

import time
from typing import Any, ContextManager

from ..jsonio import dumps, loads
from ..state.records import RecordsDB, migrate
from .journal import DONE, FAILED, Journal

_STEPS = (
    "CREATE TABLE journal_meta (job TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL, PRIMARY KEY (job, key));"
    "CREATE TABLE journal_rows (job TEXT NOT NULL, idx INTEGER NOT NULL, key TEXT, data BLOB NOT NULL,"
    " state INTEGER NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0, result BLOB, error BLOB,"
    " input_tokens INTEGER NOT NULL DEFAULT 0, output_tokens INTEGER NOT NULL DEFAULT 0, cost REAL,"
    " cached INTEGER NOT NULL DEFAULT 0, finished_at REAL, PRIMARY KEY (job, idx), UNIQUE (job, key));"
    "CREATE INDEX journal_rows_open ON journal_rows (job, state, idx)",
)


class RecordsJournal(Journal):
    """The journal of job ``job`` in ``db``; use it from one thread (the job's). Live jobs
    only: the provider-batch bookkeeping of native mode (``remotes``...) stays in files."""

    def __init__(self, db: RecordsDB, job: str) -> None:  # noqa: D107 - no file: Journal.__init__ does not apply
        migrate(db, "batch_journal", _STEPS)
        self.records = db
        self.job = job
        self._tx: ContextManager[Any] | None = None

    def close(self) -> None:
        self.commit()

    def delete(self) -> None:
        """Drop the job's rows (its batch is deleted, or the journal is copied elsewhere)."""
        with self.records.transaction():
            self.records.execute("DELETE FROM journal_rows WHERE job = ?", (self.job,))
            self.records.execute("DELETE FROM journal_meta WHERE job = ?", (self.job,))

    # -- who runs the job: the batch's lease decides --------------------------------------------

    def claim(self) -> None:
        """Nothing to take: only the instance holding the batch's lease runs its job."""

    def release(self) -> None:
        """Nothing to give back (see ``claim``)."""

    def held_elsewhere(self) -> bool:
        return False

    # -- transactions ---------------------------------------------------------------------

    def _begin(self) -> None:
        if self._tx is None:
            tx = self.records.transaction()
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
            return self.records.execute(sql, params)
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

    # -- ingest and rows --------------------------------------------------------------------

    def _ingest_chunk(self, chunk: list[tuple[int, str | None, bytes]], upto: int) -> None:
        self._begin()
        try:
            self.records.executemany("INSERT INTO journal_rows (job, idx, key, data) VALUES (?, ?, ?, ?)",
                                     [(self.job, *row) for row in chunk])
        except BaseException as exc:
            self._rollback(exc)
            raise
        self.set("ingested", upto)

    def open_rows(self, after: int = -1, limit: int = 1000, upto: int | None = None) -> list[tuple[int, str | None, Any]]:
        rows = self._execute("SELECT idx, key, data FROM journal_rows WHERE job = ? AND state < 2 AND idx > ? AND idx < ? ORDER BY idx LIMIT ?",
                             (self.job, after, 2**62 if upto is None else upto, limit)).fetchall()
        return [(idx, key, loads(data)) for idx, key, data in rows]

    def release_inflight(self) -> int:
        self._begin()
        n = self._execute("UPDATE journal_rows SET state = 0 WHERE job = ? AND state = 1", (self.job,)).rowcount
        self.commit()
        return int(n)

    def mark_inflight(self, idx: int) -> None:
        self._begin()
        self._execute("UPDATE journal_rows SET state = 1, attempts = attempts + 1 WHERE job = ? AND idx = ? AND state < 2", (self.job, idx))

    def finish(self, idx: int, *, result: Any = None, error: Any = None, input_tokens: int = 0, output_tokens: int = 0,
               cost: float | None = None, cached: bool = False, commit: bool = True) -> bool:
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

    def final_rows(self, start: int, limit: int = 2000) -> list[tuple[int, str | None, Any, int, Any, Any, float | None, bool]]:
        rows = self._execute("SELECT idx, key, data, state, result, error, cost, cached FROM journal_rows"
                             " WHERE job = ? AND idx >= ? ORDER BY idx LIMIT ?", (self.job, start, limit)).fetchall()
        return self._contiguous_final(rows, start)

    def totals(self) -> dict[str, Any]:
        by_state = self._execute("SELECT state, count(*) FROM journal_rows WHERE job = ? GROUP BY state", (self.job,)).fetchall()
        sums = self._execute(
            "SELECT coalesce(sum(input_tokens), 0), coalesce(sum(output_tokens), 0), coalesce(sum(cost), 0.0), "
            "coalesce(sum(CASE WHEN cost IS NULL AND state = 2 THEN 1 ELSE 0 END), 0), coalesce(sum(cached), 0) "
            "FROM journal_rows WHERE job = ? AND state >= 2", (self.job,)).fetchone()
        return self._sum_totals(by_state, sums)

