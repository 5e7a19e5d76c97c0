"""One schema mechanism for every store (modelport.state.records.migrate): files made by
earlier modelports, each with its own way of versioning, are adopted where they stand."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest

from modelport.errors import ConfigError, QuotaExceededError, RateLimitError
from modelport.state.records import SQLiteRecords, migrate

# The journal file as modelport made it before journals kept their rows by job.
OLD_JOURNAL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS rows (
    idx INTEGER PRIMARY KEY, key TEXT UNIQUE, data BLOB NOT NULL, state INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0, result BLOB, error BLOB, input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0, cost REAL, cached INTEGER NOT NULL DEFAULT 0, finished_at REAL);
CREATE INDEX IF NOT EXISTS rows_open ON rows (idx) WHERE state < 2;
CREATE TABLE IF NOT EXISTS remote (
    name TEXT PRIMARY KEY, first_idx INTEGER NOT NULL, last_idx INTEGER NOT NULL, remote_id TEXT, status TEXT NOT NULL, info BLOB);
"""

def _version(path: Path, component: str) -> int | None:
    with sqlite3.connect(path) as db:
        row = db.execute("SELECT version FROM modelport_schema WHERE component = ?", (component,)).fetchone()
    return None if row is None else row[0]


def test_an_old_journal_file_answers_as_before_from_the_job_keyed_tables(tmp_path: Path) -> None:
    from modelport.batch.journal import _STEPS, DONE, FAILED, Journal
    from modelport.jsonio import dumps

    path = tmp_path / "job.db"
    with sqlite3.connect(path) as db:
        db.executescript(OLD_JOURNAL)
        db.executemany("INSERT INTO rows (idx, key, data, state, result, error, input_tokens, output_tokens, cost) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       [(0, "a", dumps({"n": 0}), DONE, dumps({"ok": 0}), None, 3, 2, 0.25),
                        (1, "b", dumps({"n": 1}), FAILED, None, dumps({"kind": "boom"}), 0, 0, None),
                        (2, "c", dumps({"n": 2}), 0, None, None, 0, 0, None)])
        db.executemany("INSERT INTO meta (key, value) VALUES (?, ?)",
                       [("status", dumps("running")), ("ingested", dumps(3)), ("ingest_done", dumps(True)), ("written", dumps([2, 40]))])
        db.execute("INSERT INTO remote VALUES ('part-0', 0, 2, 'rb_1', 'submitted', ?)", (dumps({"x": 1}),))
    journal = Journal(path)
    try:
        assert journal.status == "interrupted" and journal.ingested == 3 and journal.ingest_done and journal.written == (2, 40)
        assert [r[0] for r in journal.final_rows(0)] == [0, 1] and journal.open_rows() == [(2, "c", {"n": 2})]
        totals = journal.totals()
        assert (totals["done"], totals["failed"], totals["pending"], totals["cost"], totals["input_tokens"]) == (1, 1, 1, 0.25, 3)
        assert journal.remotes() == [{"name": "part-0", "first": 0, "last": 2, "remote_id": "rb_1", "status": "submitted", "info": {"x": 1}}]
        assert journal.finish(2, result={"ok": 2}) and journal.idx_for_key("c") == 2
    finally:
        journal.close()
    with sqlite3.connect(path) as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert not tables & {"rows", "meta", "remote"}
    assert _version(path, "batch_journal") == len(_STEPS)
    again = Journal(path)  # opened again: nothing left to adopt, the rows are where they were
    try:
        assert again.totals()["done"] == 2
    finally:
        again.close()


def test_an_old_counters_file_keeps_its_counts(tmp_path: Path) -> None:
    from modelport.state.counters import KeyLimits
    from modelport.state.sqlite_counters import _STEPS, SQLiteCounters

    path = tmp_path / "counters.db"
    now = time.time()
    with sqlite3.connect(path) as db:
        db.executescript(_STEPS[0])  # the tables of an unversioned counters file are step 1's, as they were
        db.execute("INSERT INTO counters (key, spent, tokens, requests, seq, born, touched) VALUES ('k', 0.9, 5, 1, 1, ?, ?)", (now, now))
        db.execute("INSERT INTO window VALUES ('k', 1, ?, 5)", (now,))

    async def main() -> None:
        counters = SQLiteCounters(f"sqlite:///{path}")
        try:
            with pytest.raises(QuotaExceededError):  # the spend kept in the old file still counts: over budget
                await counters.reserve("k", KeyLimits(budget=1.0), 1, 0.2)
            with pytest.raises(RateLimitError):  # and so does its request in the window
                await counters.reserve("k", KeyLimits(rpm=1), 1, 0.0)
            await counters.reserve("k", KeyLimits(rpm=2), 1, 0.0)
        finally:
            await counters.close()

    asyncio.run(main())
    assert _version(path, "counters") == 1


@pytest.mark.parametrize("user_version", [2, 3])
def test_a_call_log_is_adopted_at_the_version_its_user_version_shows(tmp_path: Path, user_version: int) -> None:
    from modelport.calllog import STEPS, CallLog, _full_text
    from modelport.state.records import migrated

    path = tmp_path / "logs.db"
    # Made at the last version of the user_version era, then turned back into a file of it.
    old = migrated(SQLiteRecords(path), "call_log", STEPS[:3])
    old.execute("DROP TABLE modelport_schema")
    if user_version == 2:
        old.execute("DROP INDEX calls_usage")
    old.execute(f"PRAGMA user_version = {user_version}")
    old.close()
    log = CallLog(path)
    try:
        assert log.query() == []  # opened: a step it had already run (the full-text index) is not run again
    finally:
        log.close()
    assert _version(path, "call_log") == len(STEPS) and _full_text in STEPS
    with sqlite3.connect(path) as db:
        # The usage index of step 3, remade with the key id by step 4.
        assert "key_id" in db.execute("SELECT sql FROM sqlite_master WHERE name = 'calls_usage'").fetchone()[0]


def test_an_up_to_date_database_opens_while_another_process_writes(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    steps = ("CREATE TABLE things (id INTEGER PRIMARY KEY)",)
    db = SQLiteRecords(path, timeout=0.2)
    migrate(db, "things", steps)
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # holds the write lock, as a busy store's writer does
    try:
        migrate(db, "things", steps)  # no upgrade to make: no lock to wait for
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            migrate(db, "things", (*steps, "CREATE TABLE more (id INTEGER)"))  # an upgrade waits for the writer
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    migrate(db, "things", (*steps, "CREATE TABLE more (id INTEGER)"))
    assert db.columns("more") == {"id"}
    db.close()


def test_a_journal_from_a_newer_modelport_is_refused(tmp_path: Path) -> None:
    from modelport.batch.journal import _STEPS, Journal

    path = tmp_path / "job.db"
    Journal(path).close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE modelport_schema SET version = ? WHERE component = 'batch_journal'", (len(_STEPS) + 1,))
    with pytest.raises(ConfigError, match="newer modelport"):
        Journal(path)
