"""One worker thread per store database, and the store's connection on it.

A store's database client blocks (sqlite3, psycopg), and a SQLite connection must stay on
the thread that made it, so every store runs its calls on one thread of its own: never on
the event loop, and in the order they were made. ``StoreRunner`` is that thread. It opens
the connection on first use, on the thread itself; ``run`` awaits a call from the event
loop, ``submit`` queues one from anywhere (a batch's own thread, a group commit), and
``aclose`` closes the connection on its thread before letting the thread go.
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from typing import Callable, Generic, ParamSpec, Protocol, TypeVar

T = TypeVar("T")
P = ParamSpec("P")


class Closable(Protocol):
    def close(self) -> None: ...


C = TypeVar("C", bound=Closable)


class StoreRunner(Generic[C]):
    """The worker thread of one store and the connection ``connect`` makes on it."""

    def __init__(self, name: str, connect: Callable[[], C], close: Callable[[C], None] | None = None) -> None:
        """``close`` lets a connection go (by default its ``close()``): a store holding a
        share of a pool others use may leave it open."""
        self._connect = connect
        self._close = close or _close
        self._name = name
        self._pid = os.getpid()
        self._pool = self._new_pool()
        self._conn: C | None = None

    def _new_pool(self) -> ThreadPoolExecutor:
        return ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"modelport-{self._name}")

    def _here(self) -> ThreadPoolExecutor:
        """The pool, made anew in a forked child: it inherits the parent's pool but not its
        thread (work queued there would wait forever), nor may it use the parent's connection."""
        if self._pid != os.getpid():
            self._pid, self._conn, self._pool = os.getpid(), None, self._new_pool()
        return self._pool

    @property
    def conn(self) -> C:
        """The connection, opened now if need be; only calls running on the worker may use it."""
        if self._conn is None:
            self._conn = self._connect()
        return self._conn

    @property
    def opened(self) -> C | None:
        """The connection if it is open, without opening it (safe to look at from any thread)."""
        return self._conn

    def reset(self) -> None:
        """Close the connection (on the worker); the next call opens a new one."""
        conn, self._conn = self._conn, None
        if conn is not None:
            self._close(conn)

    def submit(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        """Queue ``fn`` on the worker, from any thread."""
        return self._here().submit(fn, *args, **kwargs)

    def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn`` on the worker and wait for it: for threads that may block (never the loop)."""
        return self._here().submit(fn, *args, **kwargs).result()

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn`` on the worker, from the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self._here(), partial(fn, *args, **kwargs))

    async def aclose(self) -> None:
        """Close the connection on its own thread, after the calls queued before; then let
        the thread go. A call made afterwards raises RuntimeError."""
        try:
            await self.run(self.reset)
        finally:
            self._pool.shutdown(wait=False)

    def close(self) -> None:
        """``aclose`` for code off the event loop."""
        try:
            self.call(self.reset)
        finally:
            self._pool.shutdown(wait=False)


def _close(conn: Closable) -> None:
    conn.close()
