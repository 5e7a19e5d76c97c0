"""One worker thread per store database, and the store's connection on it.

A store's database client blocks (sqlite3, psycopg), and a SQLite connection must stay on
the thread that made it, so every store runs its calls on one thread of its own: never on
the event loop, and in the order they were made. ``StoreRunner`` is that thread. It opens
the connection on first use, on the thread itself; ``run`` awaits a call from the event
loop, ``submit`` queues one from anywhere (a batch's own thread, a group commit), and
``aclose`` closes the connection on its thread before letting the thread go. A store used
again after that gets a new thread and connection, as a forked child does.
"""

from __future__ import annotations

import asyncio
import os
import threading
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
        self._pool: ThreadPoolExecutor | None = None  # started by the first call
        self._starting = threading.Lock()  # so that callers on many threads start one pool
        self._conn: C | None = None

    def _here(self) -> ThreadPoolExecutor:
        """The pool, started if need be, and anew in a forked child: that inherits the
        parent's pool but not its thread (work queued there would wait forever), and may
        not use the parent's connection."""
        pool = self._pool
        if pool is not None and self._pid == os.getpid():
            return pool
        with self._starting:
            if self._pid != os.getpid():
                self._pid, self._conn, self._pool = os.getpid(), None, None
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"modelport-{self._name}")
            return self._pool

    def _let_go(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False)

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
        the thread go."""
        if self._pool is None:
            return
        try:
            await self.run(self.reset)
        finally:
            self._let_go()

    def close(self) -> None:
        """``aclose`` for code off the event loop."""
        if self._pool is None:
            return
        try:
            self.call(self.reset)
        finally:
            self._let_go()


def _close(conn: Closable) -> None:
    conn.close()
