"""The records layer: one SQL surface on SQLite and PostgreSQL, versioned migrations that
run once, and a lost PostgreSQL that is a 503 and reconnects by itself."""

from __future__ import annotations

import threading
import time

import pytest

from modelport.errors import ConfigError, StateUnavailableError
from modelport.state.records import PostgresRecords, migrate, open_records

STEPS = [
    "CREATE TABLE notes (id TEXT PRIMARY KEY, body BLOB, score REAL, n INTEGER)",
    "ALTER TABLE notes ADD COLUMN tag TEXT NOT NULL DEFAULT 'none'",
]


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp_path):
    url = None if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    database = open_records(url, tmp_path / "records.db")
    yield database
    database.close()


def test_same_sql_same_answers_on_both_engines(db):
    migrate(db, "notes", STEPS)
    db.execute("INSERT INTO notes (id, body, score, n) VALUES (?, ?, ?, ?)", ("a", b"\x00\xff", 0.5, 2**40))
    db.executemany("INSERT INTO notes (id, n) VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET n = notes.n + excluded.n", [("a", 1), ("b", 7)])
    rows = db.execute("SELECT id, body, score, n, tag FROM notes WHERE id LIKE '%' ORDER BY id").fetchall()
    assert [tuple(r) for r in rows] == [("a", b"\x00\xff", 0.5, 2**40 + 1, "none"), ("b", None, None, 7, "none")]


def test_a_failed_transaction_leaves_nothing(db):
    migrate(db, "notes", STEPS)
    with pytest.raises(RuntimeError):
        with db.transaction():
            db.execute("INSERT INTO notes (id) VALUES (?)", ("x",))
            raise RuntimeError("boom")
    assert db.execute("SELECT count(*) FROM notes").fetchone()[0] == 0


def test_migrations_run_once_and_only_the_new_steps(db):
    migrate(db, "notes", STEPS[:1])
    db.execute("INSERT INTO notes (id) VALUES (?)", ("kept",))
    migrate(db, "notes", STEPS)
    migrate(db, "notes", STEPS)  # nothing left to run: no "duplicate column" error
    assert [tuple(r) for r in db.execute("SELECT id, tag FROM notes").fetchall()] == [("kept", "none")]
    with pytest.raises(ConfigError, match="newer modelport"):
        migrate(db, "notes", STEPS[:1])


def test_concurrent_starts_migrate_once(postgres_url):
    errors: list[BaseException] = []

    def start() -> None:
        database = PostgresRecords(postgres_url)
        try:
            migrate(database, "notes", STEPS)
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)
        finally:
            database.close()

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_lost_postgres_is_a_503_that_heals(postgres_server, postgres_url):
    database = PostgresRecords(postgres_url.replace("modelport@", "modelport:hunter2@"))
    try:
        database.ping()
        postgres_server.stop()
        with pytest.raises(StateUnavailableError) as caught:
            database.ping()
        assert caught.value.status == 503
        assert "hunter2" not in str(caught.value) and "***" in str(caught.value)
        postgres_server.start()
        deadline = time.monotonic() + 5
        while True:
            try:
                database.ping()
                break
            except StateUnavailableError:
                assert time.monotonic() < deadline, "no reconnect within 5 s of PostgreSQL's return"
                time.sleep(0.1)
    finally:
        database.close()
        if not postgres_server.running:
            postgres_server.start()


def test_sqlite_records_are_private(tmp_path):
    database = open_records("sqlite:///" + str(tmp_path / "sub" / "r.db"), tmp_path / "unused.db")
    migrate(database, "notes", STEPS)
    database.close()
    assert (tmp_path / "sub" / "r.db").stat().st_mode & 0o777 == 0o600
    assert not (tmp_path / "unused.db").exists()


def test_a_forked_process_gets_its_own_pool(postgres_url):
    import os

    parent = open_records(postgres_url, None)
    try:
        parent.execute("SELECT 1").fetchone()
        pid = os.fork()
        if pid == 0:  # the child: a pool of its own, never the parent's connections or threads
            code = 1
            try:
                child = open_records(postgres_url, None)
                code = 0 if child is not parent and child.execute("SELECT 2").fetchone()[0] == 2 else 1
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert parent.execute("SELECT 3").fetchone()[0] == 3
    finally:
        parent.close()


def test_a_statement_that_runs_too_long_is_cancelled_as_a_503(postgres_url):
    database = PostgresRecords(postgres_url, statement_timeout=0.3)
    try:
        started = time.monotonic()
        with pytest.raises(StateUnavailableError):
            database.execute("SELECT pg_sleep(10)")
        assert time.monotonic() - started < 5
        assert database.execute("SELECT 1").fetchone()[0] == 1  # the connection went back usable
    finally:
        database.close()
