"""The retry policy is arithmetic, so it is tested as arithmetic: no server, no sleeping.

It follows the official OpenAI and Anthropic SDKs: at most ``max_retries`` retries, backoff
``min(0.5 × 2^n, 8)`` seconds less up to 25 % jitter, the provider's ``retry-after`` when it
is within ``max_retry_after`` (and no retry at all beyond it), and ``x-should-retry``
overriding the status rules.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest

from modelport.retry import RetryPolicy, is_retryable_status, parse_retry_after


# -- backoff -------------------------------------------------------------------------------


@pytest.mark.parametrize("attempt, ceiling", [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 8.0), (9, 8.0)])
def test_backoff_doubles_from_half_a_second_up_to_eight_with_at_most_25_percent_jitter(attempt, ceiling):
    policy = RetryPolicy(max_retries=20)
    delays = [policy.delay(attempt) for _ in range(300)]
    assert all(0.75 * ceiling <= d <= ceiling for d in delays)
    # Jitter really varies the wait, so many clients do not retry in lockstep.
    assert len(set(delays)) > 1


def test_base_and_max_delay_are_settings():
    policy = RetryPolicy(max_retries=10, base_delay=0.1, max_delay=0.3)
    assert 0.075 <= policy.delay(0) <= 0.1
    assert 0.15 <= policy.delay(1) <= 0.2
    assert 0.225 <= policy.delay(5) <= 0.3


def test_max_retries_counts_retries_not_attempts():
    policy = RetryPolicy(max_retries=2)
    assert policy.delay(0) is not None  # first retry
    assert policy.delay(1) is not None  # second retry
    assert policy.delay(2) is None  # a third attempt would be the fourth request: give up
    assert RetryPolicy().max_retries == 2  # the SDKs' default: three attempts in all


def test_zero_max_retries_never_retries():
    assert RetryPolicy(max_retries=0).delay(0) is None
    assert RetryPolicy(max_retries=0).delay(0, retry_after=1.0) is None


# -- retry-after ---------------------------------------------------------------------------


def test_retry_after_within_the_limit_is_waited_exactly_without_jitter():
    policy = RetryPolicy(max_retries=5, max_retry_after=60)
    assert policy.delay(0, retry_after=1.5) == 1.5
    assert policy.delay(1, retry_after=60.0) == 60.0
    # The provider knows better than backoff, even when backoff would wait longer.
    assert policy.delay(4, retry_after=0.25) == 0.25


def test_retry_after_beyond_the_limit_is_not_waited_for_and_not_retried():
    policy = RetryPolicy(max_retry_after=60)
    assert policy.delay(0, retry_after=60.5) is None
    assert policy.delay(0, retry_after=3600) is None
    assert RetryPolicy(max_retry_after=120).delay(0, retry_after=90) == 90


def test_retry_after_does_not_extend_the_number_of_retries():
    assert RetryPolicy(max_retries=1).delay(1, retry_after=0.1) is None


def test_a_negative_retry_after_falls_back_to_backoff():
    delay = RetryPolicy().delay(0, retry_after=-1)
    assert 0.375 <= delay <= 0.5


# -- which statuses are retried ------------------------------------------------------------


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504, 529])
def test_retryable_statuses(status):
    assert is_retryable_status(status)
    assert is_retryable_status(status, {})


@pytest.mark.parametrize("status", [400, 401, 402, 403, 404, 413, 422])
def test_client_errors_are_final(status):
    assert not is_retryable_status(status)


def test_x_should_retry_overrides_the_status_rules_both_ways():
    assert not is_retryable_status(503, {"x-should-retry": "false"})
    assert not is_retryable_status(429, {"x-should-retry": "false"})
    assert is_retryable_status(400, {"x-should-retry": "true"})
    # Anything but the two literal values leaves the status rules in charge.
    assert is_retryable_status(503, {"x-should-retry": "maybe"})
    assert not is_retryable_status(400, {"x-should-retry": "maybe"})


# -- parse_retry_after ---------------------------------------------------------------------


def test_retry_after_ms_is_milliseconds_and_wins_over_retry_after():
    assert parse_retry_after({"retry-after-ms": "1500"}) == 1.5
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "30"}) == 0.25


def test_retry_after_seconds_integer_and_float():
    assert parse_retry_after({"retry-after": "30"}) == 30.0
    assert parse_retry_after({"retry-after": "0.5"}) == 0.5


def test_retry_after_http_date_is_seconds_from_now():
    when = datetime.now(timezone.utc) + timedelta(seconds=30)
    delay = parse_retry_after({"retry-after": format_datetime(when, usegmt=True)})
    # HTTP dates have whole seconds, so up to one second is lost to rounding.
    assert 28.0 <= delay <= 30.0


def test_retry_after_date_in_the_past_means_now():
    assert parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"retry-after": ""},
        {"retry-after": "soon"},
        {"retry-after": "Wed, 99 Oct 2015 07:28:00 GMT"},
        {"retry-after": "1 2 3"},
        {"retry-after-ms": "soon"},
        {"x-ratelimit-reset-requests": "12ms"},
    ],
)
def test_junk_retry_after_is_no_hint(headers):
    assert parse_retry_after(headers) is None


def test_junk_retry_after_ms_falls_back_to_retry_after():
    assert parse_retry_after({"retry-after-ms": "soon", "retry-after": "2"}) == 2.0

