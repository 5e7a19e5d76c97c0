"""Whether the gateway's dependencies answer: ``GET /ready`` and the body of ``/health``.

The state layers register one async check each when they open a store that lives outside
the process (``gateway.readiness.register("counters", counters.healthy)``). A check is an async
callable: it returns (None or True) when the dependency answers, and returns False or
raises (any exception, whose message is shown; a modelport error's detail is not) when it
does not. Nothing registered means nothing to wait for: ready.

Checks run concurrently, each bounded by ``timeout``; one run is shared by every caller
that asks meanwhile, and a result younger than ``max_age`` is reused, so a flood of probes
costs a dependency at most one round of checks per ``max_age``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Awaitable, Callable

from ..errors import ModelportError

Check = Callable[[], Awaitable[object]]  # None/True: up; False or an exception: down


class Readiness:
    def __init__(self, timeout: float = 2.0) -> None:
        self.timeout = timeout
        self._checks: dict[str, Check] = {}
        self._last: dict[str, str] = {}
        self._last_at = float("-inf")
        self._running: asyncio.Future[dict[str, str]] | None = None

    def register(self, name: str, check: Check) -> None:
        """Check ``name`` (e.g. "counters", "records") with ``check`` from now on; a second
        registration under the same name replaces the first."""
        self._checks[name] = check
        self._last.pop(name, None)  # the replaced check's result says nothing of this one
        self._last_at = float("-inf")

    def unregister(self, name: str) -> None:
        self._checks.pop(name, None)
        self._last.pop(name, None)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._checks)

    async def status(self, max_age: float = 0.0) -> dict[str, str]:
        """``{name: "ok" | "down: <reason>"}`` for every registered check."""
        if not self._checks:
            return {}
        if time.monotonic() - self._last_at <= max_age:
            return dict(self._last)
        if self._running is None or self._running.done():
            self._running = asyncio.ensure_future(self._run())
        running = self._running
        try:
            return dict(await asyncio.shield(running))
        finally:
            if running.done() and self._running is running:
                self._running = None

    def known(self, max_age: float = 1.0) -> dict[str, str]:
        """The last results at once, never waiting on a dependency (for ``/health``, a
        liveness probe); a round of checks starts in the background when they are older
        than ``max_age``. A check registered since the last round is "not checked yet" (the
        gateway runs a first round at startup)."""
        if self._checks and time.monotonic() - self._last_at > max_age and (self._running is None or self._running.done()):
            self._running = asyncio.ensure_future(self._run())
        return {name: self._last.get(name, "not checked yet") for name in self._checks}

    async def _run(self) -> dict[str, str]:
        names = list(self._checks)
        results = await asyncio.gather(*(self._one(self._checks[name]) for name in names))
        self._last, self._last_at = dict(zip(names, results)), time.monotonic()
        return self._last

    async def _one(self, check: Check) -> str:
        try:
            if await asyncio.wait_for(check(), self.timeout) is False:
                return "down: not answering"
        except asyncio.TimeoutError:
            return f"down: no answer within {self.timeout:g} s"
        except Exception as exc:  # any failure means "not reachable"; its message says why
            # A modelport error's message only: its detail names the store (/health is public).
            reason = exc.message if isinstance(exc, ModelportError) else str(exc)
            return f"down: {reason[:200] or type(exc).__name__}"
        return "ok"


def all_ok(status: dict[str, str]) -> bool:
    return all(value == "ok" for value in status.values())
