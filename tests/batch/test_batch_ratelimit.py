"""The rate limiter is arithmetic on an injected clock: every case here is exact and instant."""

from __future__ import annotations

import pytest

from modelport.batch.ratelimit import Bucket, Limits, RateLimiter, parse_reset


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def drain(limiter: RateLimiter, clock: Clock, n: int, tokens: int = 0) -> float:
    """Send n requests as fast as allowed; returns the time it took on the fake clock."""
    start = clock.now
    for _ in range(n):
        while (wait := limiter.delay(tokens)) > 0:
            clock.advance(wait)
        limiter.acquire(tokens)
    return clock.now - start


def test_rpm_paces_at_the_limit_after_the_burst() -> None:
    clock = Clock()
    limiter = RateLimiter(rpm=600, clock=clock)  # 10 per second, 1 s of burst
    assert drain(limiter, clock, 10) == 0
    assert drain(limiter, clock, 100) == pytest.approx(10.0)


def test_no_limit_known_means_no_pacing() -> None:
    clock = Clock()
    limiter = RateLimiter(clock=clock)
    assert drain(limiter, clock, 10_000) == 0


def test_tpm_bucket_paces_by_tokens_and_settles_to_actual_usage() -> None:
    clock = Clock()
    limiter = RateLimiter(tpm=6000, clock=clock)  # 100 tokens per second
    assert drain(limiter, clock, 1, tokens=100) == 0
    assert limiter.delay(100) == pytest.approx(1.0)
    limiter.settle(estimated=100, actual=20)  # the request used less than estimated: refund
    assert limiter.delay(100) == pytest.approx(0.2)


def test_request_bigger_than_the_bucket_waits_for_a_full_bucket_then_goes() -> None:
    clock = Clock()
    limiter = RateLimiter(tpm=600, clock=clock)  # capacity 10 tokens
    assert limiter.delay(500) == 0
    limiter.acquire(500)
    assert limiter.delay(5) == pytest.approx(49.5)


def test_429_pauses_for_the_hint_then_resumes_slower_and_recovers() -> None:
    clock = Clock()
    limiter = RateLimiter(rpm=600, clock=clock)
    drain(limiter, clock, 10)
    pause = limiter.on_rate_limited(retry_after=2.0)
    assert pause == 2.0
    assert limiter.delay() == pytest.approx(2.0 + 1 / 10 / 1, rel=0.5)
    assert limiter.current_factor() == pytest.approx(RateLimiter.DECREASE)
    limiter.on_rate_limited(retry_after=2.0)  # from a request sent before the first: no second cut
    assert limiter.current_factor() == pytest.approx(RateLimiter.DECREASE)
    clock.advance(2.0)
    # Paced below the limit for a while, then back at it.
    assert drain(limiter, clock, 8) == pytest.approx(0.8 / RateLimiter.DECREASE, rel=0.25)
    clock.advance(10.0)
    assert limiter.current_factor() == 1.0


def test_429_without_hint_backs_off_exponentially() -> None:
    clock = Clock()
    limiter = RateLimiter(rpm=60, clock=clock)
    assert limiter.on_rate_limited() == 0.5
    assert limiter.on_rate_limited() == 1.0
    assert limiter.on_rate_limited() == 2.0
    limiter.on_success()
    assert limiter.on_rate_limited() == 0.5


def test_first_429_with_no_known_limit_paces_at_the_observed_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(clock=clock)
    for _ in range(200):  # 20 per second for 10 s
        clock.advance(0.05)
        limiter.on_success()
    limiter.on_rate_limited(retry_after=0)
    assert limiter.requests is not None
    assert limiter.rpm == pytest.approx(20 * 60, rel=0.2)


def test_a_429_on_one_model_does_not_slow_another() -> None:
    clock = Clock()
    limits = Limits(rpm=600, clock=clock)
    limits.get("openai", "a").on_rate_limited(retry_after=30)
    assert limits.get("openai", "a").delay() >= 30
    assert limits.get("openai", "b").delay() == 0
    assert limits.get("anthropic", "a").delay() == 0


def test_headers_set_the_limit_when_none_was_configured_and_lower_a_configured_one() -> None:
    clock = Clock()
    limiter = RateLimiter(clock=clock)
    limiter.on_headers({"x-ratelimit-limit-requests": "3000", "x-ratelimit-remaining-requests": "2999", "x-ratelimit-reset-requests": "20ms"})
    assert limiter.rpm == 3000
    assert limiter.requests is not None and limiter.requests.rate == 50
    configured = RateLimiter(rpm=10_000, clock=clock)
    configured.on_headers({"x-ratelimit-limit-requests": "500"})
    assert configured.rpm == 500


def test_remaining_zero_pauses_until_the_reset() -> None:
    clock = Clock()
    limiter = RateLimiter(rpm=600, clock=clock)
    limiter.on_headers({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1.5s"})
    assert limiter.delay() == pytest.approx(1.5)


def test_anthropic_headers_are_read_too() -> None:
    clock = Clock()
    limiter = RateLimiter(clock=clock)
    limiter.on_headers({"anthropic-ratelimit-requests-limit": "50", "anthropic-ratelimit-tokens-limit": "40000"})
    assert limiter.rpm == 50 and limiter.tpm == 40000


def test_seeds_from_config_per_model_and_provider_wildcard() -> None:
    limits = Limits(seeds={"openai/gpt-4o": {"rpm": 100}, "groq/*": {"rpm": 30, "tpm": 6000}})
    assert limits.get("openai", "gpt-4o").rpm == 100
    assert limits.get("groq", "llama").tpm == 6000
    assert limits.get("openai", "other").rpm is None


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("12ms", 0.012), ("1s", 1.0), ("6m0s", 360.0), ("1h2m3s", 3723.0), ("2.5", 2.5), ("1.5s", 1.5)],
)
def test_parse_reset_durations(value: str, seconds: float) -> None:
    assert parse_reset(value, now_wall=0) == pytest.approx(seconds)


def test_parse_reset_rfc3339_timestamp() -> None:
    assert parse_reset("2026-03-01T10:00:59Z", now_wall=1772359249.0) == pytest.approx(10.0)
    assert parse_reset("garbage", now_wall=0) is None


def test_bucket_never_exceeds_capacity() -> None:
    bucket = Bucket.full(10, 1.0, 0.0)
    bucket.refill(100.0)
    assert bucket.level == bucket.capacity == 10
