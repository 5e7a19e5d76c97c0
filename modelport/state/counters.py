"""Per-key counters: requests and tokens per sliding window, and a spending budget.

``Counters`` is what the gateway asks before and after every metered request:

* ``reserve(key_id, limits, tokens, cost)`` checks the key's rpm, tpm and budget and books
  the request in ONE atomic step (no read-then-write race, wherever the counters live): one
  request in the window, ``tokens`` (the most it may use) in the token window, ``cost`` (its
  worst-case price) held against the budget. It returns a ``Booking``, or raises
  ``RateLimitError``/``QuotaExceededError`` (429), or ``StateUnavailableError`` (503) when
  the store cannot be reached: fail closed, never an unlimited key. A key with no limit at
  all books nothing and touches no store.
* ``settle(booking, tokens, cost)`` replaces the booking by what the request really used
  (zero and zero is the refund after an upstream error): the window keeps the request, the
  token entry becomes ``tokens`` if it is still in the window, the hold is released and
  ``cost`` is added to the key's spend. Once per booking; it never raises (a store that
  is away gets the settlement when it returns).
* ``seed(key_id, spent)`` tells the counters what the key store says the key has spent
  (plus what this process has not written yet). In-process counters take it every time
  (they are this process's view of the store); shared counters take it only for a key
  they have no figure for yet, so N instances do not add the stored spend N times.
* ``healthy()`` says whether the store answers now (for /ready); ``close()`` lets go of it.

Implementations, chosen by ``counter_stores.open_counters(url)``: ``memory:`` (this module, in-process,
no ``await`` between check and book), ``sqlite:///path`` (``sqlite_counters``: the
processes of one machine), ``redis://`` (``redis_counters``: many machines). No database
client is imported until a URL needs one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

from ..errors import QuotaExceededError, RateLimitError, StateUnavailableError
from ..throttle import ThrottledLog

log = logging.getLogger("modelport.state")
_failures = ThrottledLog(log)

WINDOW = 60.0
# How long a shared store keeps a request's worst-case cost held against the budget if no
# settlement ever comes (the instance that booked it died): longer than any request lasts.
DEFAULT_HOLD_SECONDS = 3600.0
# A key nobody has used for this long vanishes from a shared store; its spend comes back
# from the key store (seed) when it is next used.
IDLE_SECONDS = 86400.0


@dataclass(slots=True)
class KeyLimits:
    rpm: int | None = None
    tpm: int | None = None
    budget: float | None = None


@dataclass(slots=True)
class Booking:
    """One request's hold on a key's limits, until ``settle``. ``ref`` is how the store
    finds the booking again (opaque to callers)."""

    key_id: str
    tokens: int
    cost: float
    ref: Any
    settled: bool = False


# -- the answers every implementation gives, so callers see one wording --------------------

def rpm_error(rpm: int, wait: float) -> RateLimitError:
    return RateLimitError(f"rate limit reached: this key allows {rpm} requests per minute",
                          retry_after=max(wait, 0.001), code="rate_limit_exceeded")


def too_many_tokens_error(tokens: int, tpm: int) -> QuotaExceededError:
    return QuotaExceededError(
        f"this request may use {tokens} tokens, more than the key's limit of {tpm} tokens per minute",
        param="max_tokens", code="tokens_exceed_limit", hint="lower max_tokens or shorten the prompt",
    )


def tpm_error(tpm: int, wait: float) -> RateLimitError:
    return RateLimitError(f"rate limit reached: this key allows {tpm} tokens per minute",
                          retry_after=max(wait, 0.001), code="rate_limit_exceeded")


def budget_error(budget: float, spent: float, held: float) -> QuotaExceededError:
    return QuotaExceededError(
        f"budget exhausted: this key may spend ${budget:.4f}; ${spent:.4f} spent and ${held:.4f} held by requests in flight",
        code="insufficient_quota", hint="raise the budget with a new key, or lower max_tokens",
    )


def unavailable_error(detail: str) -> StateUnavailableError:
    """The 503 for a counters store that cannot be used. The caller learns only that the
    gateway's store is away; ``detail`` (where it is, URL redacted, and why) is for the
    operator's log and terminal, never an answer."""
    return StateUnavailableError(
        "the gateway's rate-limit store is unavailable, so requests under a key's limits are refused until it answers",
        hint="retry in a moment", retry_after=1.0, detail=detail,
    )


def token_wait(entries: Iterable[Sequence[float]], excess: float, now: float, window: float) -> float:
    """Seconds until enough of the window's (time, tokens) entries, oldest first, leave it
    to take ``excess`` tokens off the running sum."""
    for at, used in entries:
        excess -= used
        if excess <= 0:
            return max(at + window - now, 0.001)
    return window


# -- the interface -----------------------------------------------------------------------

class Counters(ABC):
    """See the module docstring. ``name`` says where the counters live, password redacted."""

    name: str

    async def reserve(self, key_id: str, limits: KeyLimits, tokens: int, cost: float) -> Booking | None:
        """Book a request of up to ``tokens`` tokens and ``cost`` USD, or raise; None for a
        key without limits (nothing to book, no store touched)."""
        if limits.rpm is None and limits.tpm is None and limits.budget is None:
            return None
        return await self._reserve(key_id, limits, int(tokens), float(cost))

    async def settle(self, booking: Booking | None, tokens: int, cost: float) -> None:
        """Replace a booking by what the request used (once; later calls do nothing)."""
        if booking is None or booking.settled:
            return
        booking.settled = True
        await self._settle(booking, int(tokens), float(cost))

    @abstractmethod
    async def _reserve(self, key_id: str, limits: KeyLimits, tokens: int, cost: float) -> Booking: ...

    @abstractmethod
    async def _settle(self, booking: Booking, tokens: int, cost: float) -> None: ...

    @abstractmethod
    def seed(self, key_id: str, spent: float) -> None:
        """The key store's figure of what a key has spent (no I/O; see the module docstring)."""

    @abstractmethod
    async def healthy(self) -> bool:
        """Whether the store answers now (never raises)."""

    async def close(self) -> None:
        """Let go of the store (settlements still pending are tried once more)."""


class QueuedCounters(Counters):
    """Counters in a store reached by I/O (SQLite, Redis). One writer task per process
    sends every call waiting as one batch (one transaction, one pipeline), answers each
    caller, and repeats while calls arrived meanwhile: at concurrency 1 a booking costs one
    trip to the store as without the queue, under load one trip carries the bookings of
    many requests. Settlements are queued, not awaited: an answer need not wait for the
    bookkeeping (a settlement only ever frees a hold later than it could, never earlier),
    and they reach the store in the order they were made, before any later booking."""

    def __init__(self) -> None:
        # (call, future; None for a settlement), in the order they were made.
        self._queue: deque[tuple[Any, asyncio.Future[Any] | None]] = deque()
        self._writer: asyncio.Task[None] | None = None
        # What the key store says each key has spent: the store takes it for a key it has
        # no figure for (the first booking after the key appeared, or was swept or lost).
        self._seeds: dict[str, float] = {}

    def seed(self, key_id: str, spent: float) -> None:
        self._seeds[key_id] = spent

    @abstractmethod
    async def _send(self, calls: list[Any]) -> list[Any]:
        """Run the calls in order: each one's result, or the exception its caller gets.
        Raise StateUnavailableError when the store cannot be reached at all."""

    def _unsent(self, settlements: list[Any]) -> None:
        """Settlements a failed batch did not write (default: lost, and said so)."""
        log.warning("counters store %s is away: %d settlement(s) not written", self.name, len(settlements))

    def _sent(self) -> None:
        """A batch went through (a store that is back may take what it missed)."""

    async def _call(self, call: Any) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._submit(call, future)
        return await future

    def _submit(self, call: Any, future: asyncio.Future[Any] | None) -> None:
        self._queue.append((call, future))
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._write())

    async def _write(self) -> None:
        try:
            while self._queue:
                batch = list(self._queue)
                self._queue.clear()
                try:
                    replies = await self._send([call for call, _ in batch])
                except StateUnavailableError as exc:
                    _failures.warning(self.name, "counters store %s failed: %s", self.name, exc.detail or exc.message)
                    for _, future in batch:
                        if future is not None and not future.done():
                            future.set_exception(exc)
                    self._unsent([call for call, future in batch if future is None])
                    continue
                for (_, future), reply in zip(batch, replies):
                    if future is None:
                        if isinstance(reply, Exception):
                            log.error("counters store %s refused a settlement: %s", self.name, reply)
                    elif not future.done():  # a caller that hung up no longer waits
                        if isinstance(reply, Exception):
                            future.set_exception(reply)
                        else:
                            future.set_result(reply)
                self._sent()
        finally:
            self._writer = None

    async def _drain(self) -> None:
        """Wait until everything queued has been sent (for ``close``)."""
        if self._writer is not None:
            await asyncio.shield(self._writer)


# -- in this process -----------------------------------------------------------------------

@dataclass(slots=True)
class KeyState:
    """One key's windows and budget in this process. Synchronous on purpose: ``reserve``
    checks and books with no ``await`` in between, so the event loop's concurrent requests
    can never jointly overshoot a limit."""

    limits: KeyLimits
    spent: float = 0.0  # USD settled so far, including what was stored before this process
    held: float = 0.0  # USD booked by requests in flight
    requests: deque[float] = field(default_factory=deque)
    token_log: deque[list[float]] = field(default_factory=deque)
    tokens_in_window: float = 0.0
    window: float = WINDOW

    def _expire(self, now: float) -> None:
        horizon = now - self.window
        requests = self.requests
        while requests and requests[0] <= horizon:
            requests.popleft()
        log = self.token_log
        while log and log[0][0] <= horizon:
            self.tokens_in_window -= log.popleft()[1]

    def reserve(self, tokens: int, cost: float, now: float) -> list[float]:
        """Book one request of up to ``tokens`` tokens costing up to ``cost`` USD, or raise;
        returns its [time, tokens] entry in the token window, for ``settle``."""
        self._expire(now)
        limits = self.limits
        if limits.rpm is not None and len(self.requests) >= limits.rpm:
            raise rpm_error(limits.rpm, self.requests[0] + self.window - now)
        if limits.tpm is not None:
            if tokens > limits.tpm:
                raise too_many_tokens_error(tokens, limits.tpm)
            if self.tokens_in_window + tokens > limits.tpm:
                excess = self.tokens_in_window + tokens - limits.tpm
                raise tpm_error(limits.tpm, token_wait(self.token_log, excess, now, self.window))
        if limits.budget is not None and self.spent + self.held + cost > limits.budget:
            raise budget_error(limits.budget, self.spent, self.held)
        self.requests.append(now)
        entry = [now, float(tokens)]
        self.token_log.append(entry)
        self.tokens_in_window += tokens
        self.held += cost
        return entry

    def settle(self, entry: list[float], booked_cost: float, tokens: int, cost: float) -> None:
        """Replace a booking (its token entry and held cost) by what the request used."""
        self.held -= booked_cost
        self.spent += cost
        # Only an entry still inside the window counts towards the running sum.
        if self.token_log and entry[0] >= self.token_log[0][0]:
            self.tokens_in_window += tokens - entry[1]
        entry[1] = float(tokens)


class MemoryCounters(Counters):
    """Counters in this process (``memory:``): the default, and exact for one process."""

    name = "memory:"

    def __init__(self, *, window: float = WINDOW, clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window
        self.clock = clock
        self._states: dict[str, KeyState] = {}

    def _state(self, key_id: str) -> KeyState:
        state = self._states.get(key_id)
        if state is None:
            state = self._states[key_id] = KeyState(KeyLimits(), window=self.window)
        return state

    async def _reserve(self, key_id: str, limits: KeyLimits, tokens: int, cost: float) -> Booking:
        state = self._state(key_id)
        state.limits = limits
        return Booking(key_id, tokens, cost, (state, state.reserve(tokens, cost, self.clock())))

    async def _settle(self, booking: Booking, tokens: int, cost: float) -> None:
        state, entry = booking.ref
        state.settle(entry, booking.cost, tokens, cost)

    def seed(self, key_id: str, spent: float) -> None:
        # This process's view of the store: the stored total plus its own unsaved spend.
        self._state(key_id).spent = spent

    def spent(self, key_id: str) -> float:
        """What the key has spent, as far as this process knows."""
        return self._state(key_id).spent

    async def healthy(self) -> bool:
        return True
