"""Rate limits as arithmetic: token buckets and adaptive backoff per (provider, model).

Sans I/O. Nothing here sleeps or reads a clock of its own: the clock is injected, every
answer is a number of seconds to wait, and the engine does the waiting. That makes the
behaviour exact to test (a fake clock) and cheap to run (no tasks, no timers).

One ``RateLimiter`` paces one (provider, model):

* a request bucket (RPM) and a token bucket (TPM), refilled continuously. Providers enforce
  a per-minute limit over short windows, so the burst a bucket allows is ``burst`` seconds
  of rate, not a whole minute;
* seeded from configuration, then corrected by the provider's own rate-limit headers
  (limits, remaining, reset) as answers come back;
* on a 429 only this limiter pauses, for the provider's hint when it gave one, and its
  rate drops multiplicatively, then recovers linearly with time. Other models go on.

When no RPM is known (none configured, no headers), requests are not paced; the first 429
then sets the pace from the throughput actually achieved.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Callable, Iterator, Mapping

Clock = Callable[[], float]


@dataclass(slots=True)
class Bucket:
    """``rate`` units per second, holding at most ``capacity``; the level may go negative
    (a debt) when one debit is bigger than the bucket."""

    rate: float
    capacity: float
    level: float
    stamp: float

    @classmethod
    def full(cls, rate: float, burst: float, now: float) -> Bucket:
        capacity = max(1.0, rate * burst)
        return cls(rate, capacity, capacity, now)

    def refill(self, now: float) -> None:
        # A stamp in the future holds the bucket empty until then (a pause after a 429).
        if now > self.stamp:
            self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
            self.stamp = now

    def wait(self, amount: float, now: float) -> float:
        """Seconds until ``amount`` fits. Amounts above capacity wait for a full bucket."""
        self.refill(now)
        need = min(amount, self.capacity)
        # Within float rounding of enough is enough: else a wait of 1e-14 s could repeat forever.
        if self.level >= need - 1e-9:
            return 0.0
        return (need - self.level) / self.rate

    def resize(self, rate: float, burst: float, now: float) -> None:
        self.refill(now)
        self.rate = rate
        self.capacity = max(1.0, rate * burst)
        self.level = min(self.level, self.capacity)


class RateLimiter:
    """Pacing for one (provider, model). Call ``delay`` until it returns 0, then ``acquire``."""

    # After a 429 the rate is multiplied by this, and recovers by RECOVERY of the ceiling per
    # second. 429s within COALESCE seconds of a decrease answer requests sent before it, so
    # they pause but do not cut the rate again.
    DECREASE = 0.85
    RECOVERY = 0.1
    COALESCE = 1.0
    MIN_FACTOR = 0.05
    # Backoff for a 429 that came without a hint: doubles from BASE up to MAX.
    BASE_PAUSE = 0.5
    MAX_PAUSE = 30.0
    # Time constant of the observed-throughput estimate used when no limit is known.
    TAU = 5.0

    def __init__(self, rpm: float | None = None, tpm: float | None = None, *, clock: Clock = time.monotonic,
                 burst: float = 1.0) -> None:
        self.clock = clock
        self.burst = burst
        now = clock()
        self.rpm = rpm
        self.tpm = tpm
        self.requests = Bucket.full(rpm / 60, burst, now) if rpm else None
        self.tokens = Bucket.full(tpm / 60, burst, now) if tpm else None
        self.paused_until = -math.inf
        self.factor = 1.0
        self._factor_at = now
        self._decreased_at = -math.inf
        self._strikes = 0
        self._observed = 0.0
        self._observed_at = now
        self.rate_limited = 0

    # -- pacing --------------------------------------------------------------------------

    def current_factor(self, now: float | None = None) -> float:
        now = self.clock() if now is None else now
        return min(1.0, self.factor + max(0.0, now - self._factor_at) * self.RECOVERY)

    def delay(self, tokens: int = 0) -> float:
        """Seconds to wait before a request estimated at ``tokens`` may be sent."""
        now = self.clock()
        wait = self.paused_until - now
        if self.requests is not None:
            wait = max(wait, self.requests.wait(1, now))
        if self.tokens is not None and tokens:
            wait = max(wait, self.tokens.wait(tokens, now))
        return max(0.0, wait)

    def acquire(self, tokens: int = 0) -> None:
        """Debit one request of ``tokens`` (the caller has seen ``delay() == 0``).

        While recovering from a 429 the buckets refill at the reduced rate; the debit is
        scaled so the long-run pace is ``factor`` times the limit."""
        factor = self.current_factor()
        if self.requests is not None:
            self.requests.level -= 1 / factor
        if self.tokens is not None and tokens:
            self.tokens.level -= tokens / factor

    def settle(self, estimated: int, actual: int) -> None:
        """Correct the token bucket once the real usage of a request is known."""
        if self.tokens is not None:
            self.tokens.refill(self.clock())
            self.tokens.level = min(self.tokens.capacity, self.tokens.level + estimated - actual)

    # -- feedback ------------------------------------------------------------------------

    def on_success(self, headers: Mapping[str, str] | None = None) -> None:
        now = self.clock()
        self._strikes = 0
        decay = math.exp(-max(0.0, now - self._observed_at) / self.TAU)
        self._observed = self._observed * decay + 1 / self.TAU
        self._observed_at = now
        if headers:
            self.on_headers(headers)

    def on_rate_limited(self, retry_after: float | None = None) -> float:
        """A 429: pause this limiter and slow it down. Returns the pause in seconds."""
        now = self.clock()
        self.rate_limited += 1
        pause = retry_after if retry_after is not None and retry_after >= 0 else min(self.MAX_PAUSE, self.BASE_PAUSE * 2**self._strikes)
        self._strikes += 1
        self.paused_until = max(self.paused_until, now + pause)
        if now - self._decreased_at >= self.COALESCE:
            self.factor = max(self.MIN_FACTOR, self.current_factor(now) * self.DECREASE)
            self._factor_at = self._decreased_at = now
        if self.requests is None:
            # No limit known: pace at what the provider actually sustained, as requests per minute.
            observed = self._observed * math.exp(-max(0.0, now - self._observed_at) / self.TAU)
            if observed > 0:
                self.rpm = observed * 60
                self.requests = Bucket(observed, max(1.0, observed * self.burst), 0.0, now)
        for bucket in (self.requests, self.tokens):
            if bucket is not None:
                # Nothing banked during the pause may be spent in a burst right after it.
                bucket.refill(now)
                bucket.level = min(bucket.level, 0.0)
                bucket.stamp = max(now, self.paused_until)
        return pause

    def on_headers(self, headers: Mapping[str, str]) -> None:
        """Follow the provider's own counters (OpenAI-style and Anthropic-style headers)."""
        now = self.clock()
        for kind, attr in (("requests", "rpm"), ("tokens", "tpm")):
            limit = _number(_first(headers, f"x-ratelimit-limit-{kind}", f"anthropic-ratelimit-{kind}-limit"))
            remaining = _number(_first(headers, f"x-ratelimit-remaining-{kind}", f"anthropic-ratelimit-{kind}-remaining"))
            reset = parse_reset(_first(headers, f"x-ratelimit-reset-{kind}", f"anthropic-ratelimit-{kind}-reset"), now_wall=time.time())
            bucket: Bucket | None = getattr(self, kind)
            if limit and limit > 0:
                configured = getattr(self, attr)
                if configured is None or limit < configured or bucket is None:
                    setattr(self, attr, limit)
                    if bucket is None:
                        # Learned mid-run, after unpaced sending: assume nothing is left to burst.
                        bucket = Bucket.full(limit / 60, self.burst, now)
                        bucket.level = 0.0
                        setattr(self, kind, bucket)
                    else:
                        bucket.resize(limit / 60, self.burst, now)
            if bucket is None or remaining is None:
                continue
            bucket.refill(now)
            if remaining <= 0 and reset:
                self.paused_until = max(self.paused_until, now + reset)
            bucket.level = min(bucket.level, remaining)


class Limits:
    """The limiters of one job (or one gateway), one per (provider, model), made on first use.

    ``seeds`` maps ``"provider/model"`` or ``"provider/*"`` to ``{"rpm": .., "tpm": ..}``
    (the config's ``[limits]`` table, see ``limit_seeds``); ``rpm``/``tpm``, when given,
    apply to every key and win over the seeds.
    """

    def __init__(self, rpm: float | None = None, tpm: float | None = None, *,
                 seeds: Mapping[str, Mapping[str, float]] | None = None, clock: Clock = time.monotonic,
                 burst: float = 1.0) -> None:
        self.rpm, self.tpm, self.seeds, self.clock, self.burst = rpm, tpm, dict(seeds or {}), clock, burst
        self._limiters: dict[tuple[str, str], RateLimiter] = {}

    def get(self, provider: str, model: str) -> RateLimiter:
        key = (provider, model)
        limiter = self._limiters.get(key)
        if limiter is None:
            seed = self.seeds.get(f"{provider}/{model}") or self.seeds.get(f"{provider}/*") or {}
            limiter = self._limiters[key] = RateLimiter(
                self.rpm if self.rpm is not None else seed.get("rpm"),
                self.tpm if self.tpm is not None else seed.get("tpm"),
                clock=self.clock, burst=self.burst,
            )
        return limiter

    def __iter__(self) -> Iterator[tuple[tuple[str, str], RateLimiter]]:
        return iter(self._limiters.items())


def limit_seeds(config: Mapping[str, object] | None, resolve: Callable[[str], tuple[str, str]] | None = None) -> dict[str, dict[str, float]]:
    """The config's known limits, checked::

        [limits."openai/gpt-4o-mini"]
        rpm = 500
        tpm = 200000
        [limits."groq/*"]          # every Groq model not named on its own
        rpm = 30

    ``resolve`` turns a name (an alias too) into ``(provider, model_id)``, so seeds key on
    what the engine paces by.
    """
    from ..errors import ConfigError

    table = (config or {}).get("limits") or {}
    if not isinstance(table, Mapping):
        raise ConfigError("config [limits] must be a table of models", hint='e.g. [limits."openai/gpt-4o-mini"] rpm = 500')
    seeds: dict[str, dict[str, float]] = {}
    for name, values in table.items():
        if not isinstance(values, Mapping) or not values or set(values) - {"rpm", "tpm"}:
            raise ConfigError(f"config [limits.{name!r}] takes rpm and tpm only", hint=f'[limits."{name}"] rpm = 500')
        for kind, value in values.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ConfigError(f"config [limits.{name!r}] {kind} must be a positive number, not {value!r}")
        key = str(name)
        if resolve is not None and not key.endswith("/*"):
            provider, model_id = resolve(key)
            key = f"{provider}/{model_id}"
        seeds[key] = {k: float(v) for k, v in values.items()}
    return seeds


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_reset(value: str | None, *, now_wall: float) -> float | None:
    """Seconds until a reset: OpenAI's durations (``12ms``, ``1s``, ``6m0s``), Anthropic's
    RFC 3339 timestamps, or plain seconds."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    parts = _DURATION.findall(value)
    if parts and "".join(n + u for n, u in parts) == value:
        return sum(float(n) * _UNIT[u] for n, u in parts)
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return max(0.0, when.timestamp() - now_wall)


def _first(headers: Mapping[str, str], *names: str) -> str | None:
    for name in names:
        value = headers.get(name)
        if value is not None:
            return value
    return None


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None
