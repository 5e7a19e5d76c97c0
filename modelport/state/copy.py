"""Copying record stores from one records database to another (``modelport state migrate``).

Each store describes its part once, as a ``StoreCopy``: its name, the SQLite file it keeps
by default under a config, how to open its database at the newest schema, and the tables
(with their key columns) to copy. A store whose copy is more than rows of tables (files
kept beside the records, journals) gives a ``CustomCopy`` instead: a function that copies
it all and says how many of each thing were new. A store registers its copy as an entry
point of the ``modelport.stores`` group (modelport's own in its pyproject.toml, a plugin's in
its own), so this module names none of them and imports none until a copy runs.

Rows are read in key order, a page at a time, and written with ``ON CONFLICT DO NOTHING``:
a row already in the target (same key, or the same value of another unique column, such as
a gateway key's name) stays as it is, so running the copy twice copies nothing twice, and a
copy cut short resumes where it stopped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from ..errors import ConfigError
from .records import RecordsDB

GROUP = "modelport.stores"
PAGE = 500
# Where a store's copy runs among the others when it names no place (``order``).
LAST = 100


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
    order: int = LAST  # copies run in this order (then by name): the user sees them so


@dataclass(frozen=True, slots=True)
class CustomCopy:
    name: str  # shown to the user: "files and batches"
    # (the loaded config, the target database) -> {what: how many were new}; copies nothing
    # twice, and nothing at all when this machine has no such state.
    run: Callable[[dict[str, Any], RecordsDB], dict[str, int]]
    order: int = LAST


def stores() -> list[StoreCopy | CustomCopy]:
    """Every registered store's copy, in ``order`` (then by name)."""
    from importlib.metadata import entry_points

    found: list[StoreCopy | CustomCopy] = [point.load() for point in entry_points(group=GROUP)]
    if not found:
        # modelport registers its own stores: none at all means its install's metadata is stale.
        raise ConfigError(f"no record stores are registered (entry points {GROUP!r}), so there is nothing to copy",
                          hint="reinstall modelport (pip install -e . in a checkout) so its metadata lists them")
    return sorted(found, key=lambda store: (store.order, store.name))


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
