"""Waiting for a condition in a test: poll it until a deadline, never sleep a fixed time.

A fixed sleep is a guess at how long the machine takes; on a loaded machine (load average
6 on 2 cores) the guess is wrong and the test fails for nothing, and on an idle one it
wastes the whole guess. A poll returns as soon as the condition holds and fails with a
message that says what was awaited. Sleeps that pace a trickle or play a slow server are
not waits and stay sleeps.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Awaitable, Callable, TypeVar

T = TypeVar("T")

POLL_SECONDS = 0.05


def wait_for(predicate: Callable[[], T], timeout: float, message: str | Callable[[], str]) -> T:
    """``predicate()``'s first truthy value, polled until ``timeout`` seconds have passed;
    then an AssertionError with ``message`` (a callable is asked only then, for the state)."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() >= deadline:
            raise AssertionError(f"after {timeout} s: {message() if callable(message) else message}")
        time.sleep(POLL_SECONDS)
    return value


async def await_for(predicate: Callable[[], T | Awaitable[T]], timeout: float, message: str | Callable[[], str]) -> T:
    """``wait_for`` on an event loop: the loop keeps running the test's other tasks meanwhile."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"after {timeout} s: {message() if callable(message) else message}")
        await asyncio.sleep(POLL_SECONDS)


BATCH_ENDS = ("completed", "failed", "cancelled", "expired")


def batch_reaching(sdk: Any, batch_id: str, until: tuple[str, ...] = BATCH_ENDS, timeout: float = 60) -> Any:
    """The batch (OpenAI SDK object) once its status is one of ``until``: by default, once it ended."""
    def reached() -> Any:
        batch = sdk.batches.retrieve(batch_id)
        return batch if batch.status in until else None

    return wait_for(reached, timeout, f"batch {batch_id} did not reach {until}")
