"""Every SQLite store tolerates another process opening the same fresh file at the same time
(``serve --workers N`` starts N processes that open the same files at once)."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Callable

import pytest

from modelport.sqlite_wal import wal_mode


def _while_another_connection_writes(path: Path, open_store: Callable[[], object]) -> None:
    """Open the store while another connection holds the new file's write lock for 0.3 s,
    as a second worker creating its tables does: opening must wait, not fail."""
    path.parent.mkdir(parents=True, exist_ok=True)
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    other.execute("CREATE TABLE IF NOT EXISTS other_worker (x)")
    release = threading.Timer(0.3, other.execute, ("COMMIT",))
    release.start()
    try:
        open_store()
    finally:
        release.join()
        other.close()


def test_wal_mode_waits_for_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    _while_another_connection_writes(path, lambda: wal_mode(sqlite3.connect(path)))
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_wal_mode_gives_up_after_its_timeout(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    other.execute("CREATE TABLE t (x)")
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        wal_mode(sqlite3.connect(path), timeout=0.2)
    other.execute("ROLLBACK")


def test_the_key_store_opens_beside_a_writer(tmp_path: Path) -> None:
    from modelport.server.auth import KeyStore

    store = KeyStore(tmp_path / "keys.db")
    _while_another_connection_writes(store.path, lambda: store.create("k"))
    assert [r.name for r in store.records()] == ["k"]
    store.close()


def test_the_response_store_opens_beside_a_writer(tmp_path: Path) -> None:
    from modelport.server.responses_store import ResponseStore

    store = ResponseStore(tmp_path / "responses.db")
    _while_another_connection_writes(store.path, store._conn)


def test_the_files_api_opens_beside_a_writer(tmp_path: Path) -> None:
    from modelport.batch.files_api import FilesAPI

    api = FilesAPI(tmp_path / "gateway")
    _while_another_connection_writes(tmp_path / "gateway" / "files.db", lambda: api.db)


def test_the_call_log_and_cache_open_beside_a_writer(tmp_path: Path) -> None:
    from modelport.cache import open_cache
    from modelport.calllog import connect

    _while_another_connection_writes(tmp_path / "logs.db", lambda: connect(tmp_path / "logs.db"))
    _while_another_connection_writes(tmp_path / "cache.db", lambda: open_cache(None, tmp_path / "cache.db"))
