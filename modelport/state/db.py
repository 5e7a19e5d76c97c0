"""The seam of the records database, as types: what a store (keys, stored responses, the
cache, files and batches, batch journals) may ask of ``records.SQLiteRecords`` and
``records.PostgresRecords``, whichever ``open_records(url)`` gave it.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, Iterable, Protocol, Sequence


class Rows(Protocol):
    """The answer to one statement: its rows (a ``RETURNING`` clause's too) and how many it changed."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class RecordsDB(Protocol):
    """SQL with ``?`` placeholders in the subset both engines share, on whichever engine
    the URL names. Blocking: call it from a worker thread, never on the event loop."""

    engine: str  # "sqlite" or "postgresql"
    url: str  # for messages: never carries a password

    @property
    def failing(self) -> bool:
        """Whether the last use of the database failed (until one succeeds); a local file
        never fails this way."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Rows: ...

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None: ...

    def transaction(self) -> AbstractContextManager[RecordsDB]:
        """The statements inside commit together or not at all; nested, part of the outer one."""

    def lock_schema(self) -> None:
        """Hold the schema lock to the end of the transaction, so concurrent starts migrate
        one after the other."""

    def ddl(self, sql: str) -> str:
        """A migration's SQL in this engine's column types."""

    def columns(self, table: str) -> set[str]:
        """The column names of ``table``; empty when there is no such table."""

    def footprint(self) -> int | None:
        """Bytes the database takes on disk, when that means something for a store's stats."""

    def compact(self) -> None:
        """Give the space of deleted rows back, where the engine does not do it by itself."""

    def close(self) -> None: ...
