"""Counters in Redis (``redis://``, ``rediss://``, ``unix://``): one set of limits for every
gateway instance that points at the same Redis.

Each key lives in three Redis keys that share a hash tag (one cluster slot):

* ``…:w`` a sorted set, the request window: one member ``seq:tokens`` per booked request,
  scored by when it was booked. Its size is the requests in the window.
* ``…:h`` a sorted set of budget holds: ``seq:cost``, scored by when the hold lapses (a
  request whose instance died is not held for ever).
* ``…:s`` a hash: ``spent`` (seeded once from the key store, then added to by every
  settlement), ``held`` and ``tokens`` (running sums of the two sets), ``seq``, and
  ``born`` (when this state was made; a settlement for an older state is dropped).

Every check-and-book is ONE Lua script (EVALSHA), so no two instances can both take the
last request of a window; Redis's own clock (TIME) times the windows, so instances whose
clocks disagree still agree on them. Every key's TTL is renewed on use, so an idle key
vanishes and its spend comes back from the key store.

Calls go out through ``QueuedCounters``: every script call waiting is one pipeline, so
under load one round trip carries the bookings of many requests (auto-pipelining), which
is what keeps Redis-backed counters close to in-process ones in requests/s.

When Redis cannot be reached, a reservation raises ``StateUnavailableError`` (fail closed)
after at most a short socket timeout, and further ones fail at once for ``RETRY_SECONDS``;
the client reconnects on the next call after that. Settlements that could not be written
are kept and written when Redis answers again.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import deque
from typing import Any

from ..errors import StateUnavailableError
from ..throttle import ThrottledLog
from . import redact
from .counters import (
    DEFAULT_HOLD_SECONDS,
    IDLE_SECONDS,
    WINDOW,
    Booking,
    KeyLimits,
    QueuedCounters,
    budget_error,
    rpm_error,
    too_many_tokens_error,
    tpm_error,
    unavailable_error,
)

log = logging.getLogger("modelport.state")
_failures = ThrottledLog(log)

PREFIX = "modelport:counters:"
# Socket timeouts: a Redis that does not answer within this costs a request no more.
TIMEOUT_SECONDS = 1.0
# After a failure, requests fail at once for this long instead of each waiting for a timeout.
RETRY_SECONDS = 0.25
# Settlements kept while Redis is away (beyond this the oldest are dropped, and logged).
MAX_PENDING = 100_000

# KEYS: window, holds, state. ARGV: window µs, rpm, tpm, budget ('' when absent), tokens,
# cost, seed (stored spend), hold µs, idle ms.
# Returns {0, seq, booked at, born} or {1, wait µs} (rpm) / {2} (request over tpm) /
# {3, wait µs} (tpm) / {4, spent, held} (budget).
_RESERVE = """
local w, h, s = KEYS[1], KEYS[2], KEYS[3]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local window = tonumber(ARGV[1])
local v = redis.call('HMGET', s, 'spent', 'held', 'tokens', 'born', 'seq')
local spent, held, used, born, seq
if not v[4] then
  redis.call('DEL', w, h)
  spent, held, used, born, seq = tonumber(ARGV[7]), 0, 0, string.format('%.0f', now), 0
  redis.call('HSET', s, 'spent', ARGV[7], 'born', born)
else
  spent, held, used, born, seq = tonumber(v[1]), tonumber(v[2]) or 0, tonumber(v[3]) or 0, v[4], tonumber(v[5]) or 0
end
local horizon = string.format('%.0f', now - window)
local old = redis.call('ZRANGEBYSCORE', w, '-inf', horizon)
if #old > 0 then
  for i = 1, #old do used = used - tonumber(string.match(old[i], ':(%d+)$')) end
  redis.call('ZREMRANGEBYSCORE', w, '-inf', horizon)
end
local stamp = string.format('%.0f', now)
local lapsed = redis.call('ZRANGEBYSCORE', h, '-inf', stamp)
if #lapsed > 0 then
  for i = 1, #lapsed do held = held - tonumber(string.match(lapsed[i], ':(.+)$')) end
  redis.call('ZREMRANGEBYSCORE', h, '-inf', stamp)
  if held < 0 or redis.call('ZCARD', h) == 0 then held = 0 end
end
local function keep(reply)
  redis.call('HSET', s, 'held', string.format('%.17g', held), 'tokens', string.format('%.0f', used))
  return reply
end
local tokens = tonumber(ARGV[5])
local rpm = tonumber(ARGV[2])
if rpm and redis.call('ZCARD', w) >= rpm then
  local first = redis.call('ZRANGE', w, 0, 0, 'WITHSCORES')
  return keep({1, tonumber(first[2]) + window - now})
end
local tpm = tonumber(ARGV[3])
if tpm then
  if tokens > tpm then return keep({2}) end
  if used + tokens > tpm then
    local excess, wait = used + tokens - tpm, window
    local entries = redis.call('ZRANGE', w, 0, 999, 'WITHSCORES')
    for i = 1, #entries, 2 do
      excess = excess - tonumber(string.match(entries[i], ':(%d+)$'))
      if excess <= 0 then wait = tonumber(entries[i + 1]) + window - now; break end
    end
    return keep({3, wait})
  end
end
local cost = tonumber(ARGV[6])
local budget = tonumber(ARGV[4])
if budget and spent + held + cost > budget then
  return keep({4, string.format('%.17g', spent), string.format('%.17g', held)})
end
seq = seq + 1
redis.call('ZADD', w, stamp, seq .. ':' .. ARGV[5])
used = used + tokens
if cost > 0 then
  held = held + cost
  redis.call('ZADD', h, string.format('%.0f', now + tonumber(ARGV[8])), seq .. ':' .. ARGV[6])
end
redis.call('HSET', s, 'seq', seq)
keep(0)
local idle = tonumber(ARGV[9])
redis.call('PEXPIRE', w, idle)
redis.call('PEXPIRE', h, idle)
redis.call('PEXPIRE', s, idle)
return {0, seq, stamp, born}
"""

# KEYS: window, holds, state. ARGV: seq, booked at, booked tokens, tokens, booked cost,
# cost, born. A state born after the booking (Redis lost it) takes nothing: the key
# store's figure seeds the new one.
_SETTLE = """
local w, h, s = KEYS[1], KEYS[2], KEYS[3]
if redis.call('HGET', s, 'born') ~= ARGV[7] then return 0 end
local seq = ARGV[1]
if redis.call('ZREM', w, seq .. ':' .. ARGV[3]) == 1 then
  redis.call('ZADD', w, ARGV[2], seq .. ':' .. ARGV[4])
  redis.call('HINCRBY', s, 'tokens', tonumber(ARGV[4]) - tonumber(ARGV[3]))
end
if redis.call('ZREM', h, seq .. ':' .. ARGV[5]) == 1 then
  local held = tonumber(redis.call('HINCRBYFLOAT', s, 'held', '-' .. ARGV[5]))
  if held < 0 or redis.call('ZCARD', h) == 0 then redis.call('HSET', s, 'held', '0') end
end
if tonumber(ARGV[6]) ~= 0 then redis.call('HINCRBYFLOAT', s, 'spent', ARGV[6]) end
return 1
"""


_SCRIPTS = (_RESERVE, _SETTLE)
_SHAS = tuple(hashlib.sha1(source.encode()).hexdigest() for source in _SCRIPTS)


class RedisCounters(QueuedCounters):
    def __init__(self, url: str, *, window: float = WINDOW, hold_seconds: float = DEFAULT_HOLD_SECONDS,
                 timeout: float = TIMEOUT_SECONDS) -> None:
        super().__init__()
        self.url = url
        self.name = redact(url)
        self.window_us = round(window * 1e6)
        self.hold_us = round(hold_seconds * 1e6)
        self.idle_ms = round(max(IDLE_SECONDS, window, hold_seconds) * 1000)
        self.timeout = timeout
        self._client: Any = None
        # Settlements that could not be written yet (Redis away), oldest first.
        self._kept: deque[tuple[int, list[str], list[Any]]] = deque()
        self._down_until = 0.0

    def _connect(self) -> Any:
        if self._client is None:
            import redis.asyncio as redis
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff
            from redis.exceptions import ConnectionError

            # One retry, on a broken connection only (a pooled connection Redis closed when it
            # restarted: the command never ran); none on a timeout (it may have run), so a
            # request waits one timeout at most, then 503.
            self._client = redis.Redis.from_url(self.url, socket_timeout=self.timeout, socket_connect_timeout=self.timeout,
                                                retry=Retry(NoBackoff(), 1, (ConnectionError,)))
        return self._client

    @staticmethod
    def _keys(key_id: str) -> list[str]:
        base = f"{PREFIX}{{{key_id}}}:"
        return [base + "w", base + "h", base + "s"]

    def unavailable(self, exc: BaseException | None = None) -> StateUnavailableError:
        """The 503 for a Redis that does not answer."""
        why = f"{type(exc).__name__}: {exc}" if exc is not None else "it failed less than a second ago"
        return unavailable_error(f"Redis at {self.name} ([state] counters) is not answering ({why}); check that it runs and is "
                                 "reachable from here; the gateway reconnects by itself")

    async def _send(self, calls: list[tuple[int, list[str], list[Any]]]) -> list[Any]:
        """The calls as one pipeline of EVALSHAs."""
        from redis.exceptions import NoScriptError, RedisError

        if time.monotonic() < self._down_until:
            raise self.unavailable()
        client = self._connect()
        try:
            replies = await self._pipeline(client, calls)
            missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
            if missing:  # a Redis that restarted forgot the scripts (those calls did not run)
                for source in _SCRIPTS:
                    await client.script_load(source)
                for i, reply in zip(missing, await self._pipeline(client, [calls[i] for i in missing])):
                    replies[i] = reply
        except (RedisError, OSError, asyncio.TimeoutError) as exc:
            self._down_until = time.monotonic() + RETRY_SECONDS
            _failures.warning(self.name, "counters store %s failed: %s: %s", self.name, type(exc).__name__, exc)
            raise self.unavailable(exc) from None
        return [self.unavailable(reply) if isinstance(reply, Exception) else reply for reply in replies]

    @staticmethod
    async def _pipeline(client: Any, calls: list[tuple[int, list[str], list[Any]]]) -> list[Any]:
        if len(calls) == 1:  # alone (concurrency 1): a plain command costs less than a pipeline
            from redis.exceptions import ResponseError

            script, keys, args = calls[0]
            try:
                return [await client.evalsha(_SHAS[script], len(keys), *keys, *args)]
            except ResponseError as exc:
                return [exc]
        pipe = client.pipeline(transaction=False)
        for script, keys, args in calls:
            pipe.evalsha(_SHAS[script], len(keys), *keys, *args)
        return await pipe.execute(raise_on_error=False)

    def _unsent(self, settlements: list[Any]) -> None:
        self._kept.extend(settlements)
        if len(self._kept) > MAX_PENDING:
            log.error("counters store %s away too long: dropping the oldest of %d unwritten settlements", self.name, len(self._kept))
            while len(self._kept) > MAX_PENDING:
                self._kept.popleft()

    def _sent(self) -> None:
        while self._kept:  # Redis answers again: write what it missed
            self._submit(self._kept.popleft(), None)

    async def _reserve(self, key_id: str, limits: KeyLimits, tokens: int, cost: float) -> Booking:
        if time.monotonic() < self._down_until:
            raise self.unavailable()  # fail at once while Redis was just seen away
        args = [self.window_us, _arg(limits.rpm), _arg(limits.tpm), _arg(limits.budget), tokens, repr(cost),
                repr(self._seeds.get(key_id, 0.0)), self.hold_us, self.idle_ms]
        reply = await self._call((0, self._keys(key_id), args))
        code = int(reply[0])
        if code == 0:
            return Booking(key_id, tokens, cost, (int(reply[1]), _text(reply[2]), _text(reply[3])))
        if code == 1:
            raise rpm_error(limits.rpm or 0, float(reply[1]) / 1e6)
        if code == 2:
            raise too_many_tokens_error(tokens, limits.tpm or 0)
        if code == 3:
            raise tpm_error(limits.tpm or 0, float(reply[1]) / 1e6)
        raise budget_error(limits.budget or 0.0, float(reply[1]), float(reply[2]))

    async def _settle(self, booking: Booking, tokens: int, cost: float) -> None:
        seq, at, born = booking.ref
        call = (1, self._keys(booking.key_id), [seq, at, booking.tokens, tokens, repr(booking.cost), repr(cost), born])
        if time.monotonic() < self._down_until:
            self._unsent([call])
        else:
            self._submit(call, None)

    async def healthy(self) -> bool:
        try:
            await asyncio.wait_for(self._connect().ping(), self.timeout * 2)
        except Exception:  # noqa: BLE001 - any failure means "not answering"
            return False
        if self._down_until:
            self._down_until = 0.0  # it answers: no need to wait out the pause after a failure
            self._sent()
        return True

    async def close(self) -> None:
        """Write what is queued or kept (one try), then disconnect."""
        if self._client is None:
            return
        if time.monotonic() >= self._down_until:
            self._sent()
        await self._drain()
        await self._client.aclose()
        self._client = None


def _arg(value: float | None) -> Any:
    return "" if value is None else repr(value)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
