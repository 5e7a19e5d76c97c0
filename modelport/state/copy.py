"""Copying record stores from one records database to another (``modelport state migrate``).

Each store describes its part once, as a ``StoreCopy``: its name, the SQLite file it keeps
by default under a config, how to open its database at the newest schema, and the tables
(with their key columns) to copy. A store whose copy is more than rows of tables (files
kept beside the records, journals) gives a ``CustomCopy`` instead: a function that copies
it all and says how many of each thing were new. ``STORES`` lists them by
``"module:attribute"``, so this module imports no store until a copy runs; a new store adds
one line there.

Rows are read in key order, a page at a time, and written with ``ON CONFLICT DO NOTHING``:
a row already in the target (same key, or the same value of another unique column, such as
a gateway key's name) stays as it is, so running the copy twice copies nothing twice, and a
copy cut short resumes where it stopped.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from .records import RecordsDB

# One line per store: the "module:attribute" of its StoreCopy, copied in this order.
STORES = [
    "modelport.server.auth:KEYS_COPY",
    "modelport.server.responses_store:RESPONSES_COPY",
    "modelport.cache:CACHE_COPY",
    "modelport.batch.files_copy:FILES_COPY",
]
PAGE = 500


@dataclass(frozen=True, slots=True)
class Table:
    name: str
    columns: tuple[str, ...]
    key: tuple[str, ...]  # the primary key: pages are read in its order


@dataclass(frozen=True, slots=True)
class StoreCopy:
    name: str  # shown to the user: "gateway keys"
    default_path: Callable[[dict[str, Any]], Path]  # the store's SQLite file under a loaded config
    open: Callable[[str | None, Path], RecordsDB]  # its database at a records URL (None: the file), migrated
    tables: tuple[Table, ...]


@dataclass(frozen=True, slots=True)
class CustomCopy:
    name: str  # shown to the user: "files and batches"
    # (the loaded config, the target database) -> {what: how many were new}; copies nothing
    # twice, and nothing at all when this machine has no such state.
    run: Callable[[dict[str, Any], RecordsDB], dict[str, int]]


def stores() -> list[StoreCopy | CustomCopy]:
    found = []
    for target in STORES:
        module, _, attr = target.partition(":")
        found.append(getattr(importlib.import_module(module), attr))
    return found


def count(db: RecordsDB, table: Table) -> int:
    return int(db.execute(f"SELECT count(*) FROM {table.name}").fetchone()[0])


def pages(db: RecordsDB, table: Table) -> Iterator[list[tuple[Any, ...]]]:
    """The table's rows in key order, ``PAGE`` at a time (keyset paging: no OFFSET scans)."""
    columns, key = ", ".join(table.columns), ", ".join(table.key)
    at = [table.columns.index(k) for k in table.key]
    last: tuple[Any, ...] | None = None
    while True:
        after = "" if last is None else f" WHERE ({key}) > ({', '.join('?' for _ in table.key)})"
        rows = db.execute(f"SELECT {columns} FROM {table.name}{after} ORDER BY {key} LIMIT {PAGE}", last or ()).fetchall()
        if not rows:
            return
        yield [tuple(row) for row in rows]
        last = tuple(rows[-1][i] for i in at)


def copy_table(source: RecordsDB, target: RecordsDB, table: Table, progress: Callable[[int], None] = lambda n: None) -> int:
    """Add the rows of ``table`` in ``source`` that ``target`` lacks; returns how many were added."""
    # No conflict target: a row clashing with any unique column (a key's name too) is left out.
    insert = f"INSERT INTO {table.name} ({', '.join(table.columns)}) VALUES ({', '.join('?' for _ in table.columns)}) ON CONFLICT DO NOTHING"
    added = 0
    for page in pages(source, table):
        with target.transaction():
            for row in page:
                added += target.execute(insert, row).rowcount
        progress(len(page))
    return added
