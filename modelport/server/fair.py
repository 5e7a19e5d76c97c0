"""Heavy CPU work of requests (decoding bodies of megabytes), off the event loop and fair.

A 6 MiB body of many small messages takes about a second of Python to decode; on the event
loop that second freezes every other caller, and eight such bodies froze the gateway for
seconds even though each was refused afterwards. Here such jobs run on one worker thread,
one job per key at a time, the keys taking turns: a key that sends many heavy bodies waits
behind its own, while another key's job runs next. The event loop keeps serving between
them (a pure-Python job gives up the GIL every few milliseconds).
"""

from __future__ import annotations

import asyncio
import functools
import sys
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, TypeVar

T = TypeVar("T")

SWITCH_INTERVAL = 0.001
# Bodies above this many bytes are decoded here; below it, inline is cheaper than the hop.
HEAVY_BYTES = 256 * 1024

_Job = tuple[Callable[..., Any], tuple[Any, ...], "asyncio.Future[Any]"]


class FairExecutor:
    """Runs ``fn(*args)`` on a worker thread, round-robin over keys, one job per key at a time."""

    def __init__(self, threads: int = 1) -> None:
        self._threads = threads
        self._pool: ThreadPoolExecutor | None = None
        self._queues: dict[str, deque[_Job]] = {}
        self._turns: deque[str] = deque()  # keys with jobs waiting, in the order they are served
        self._busy = 0

    async def run(self, key: str, fn: Callable[..., T], *args: Any) -> T:
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = deque()
            self._turns.append(key)
        queue.append((fn, args, future))
        self._dispatch()
        return await future

    def _dispatch(self) -> None:
        while self._busy < self._threads and self._turns:
            key = self._turns.popleft()
            queue = self._queues[key]
            fn, args, future = queue.popleft()
            if queue:
                self._turns.append(key)  # its next job waits for the other keys' turns
            else:
                del self._queues[key]
            if future.done():  # the caller went away while it waited
                continue
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="modelport-decode")
                # The event loop waits for the GIL at every socket call while a job runs; at
                # the default 5 ms a request's dozen waits added up to half a second.
                sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL))
            self._busy += 1
            asyncio.get_running_loop().run_in_executor(self._pool, fn, *args).add_done_callback(
                functools.partial(self._finished, target=future))

    def _finished(self, done: asyncio.Future[Any], target: asyncio.Future[Any]) -> None:
        self._busy -= 1
        if done.cancelled():
            target.cancel()
        elif not target.done():
            exc = done.exception()
            if exc is not None:
                target.set_exception(exc)
            else:
                target.set_result(done.result())
        self._dispatch()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
