"""Retry policy, sans I/O: given what happened, how long to wait before the next attempt.

Retried: 408, 409, 429, every 5xx and connection errors; never a quota 429; never once a
stream has delivered its first byte (the caller would see text twice). A ``retry-after``
hint from the provider wins over backoff when it fits in ``max_retry_after``.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Mapping

RETRY_STATUSES = frozenset({408, 409, 429})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_retries: int = 2
    base_delay: float = 0.5
    max_delay: float = 8.0
    # A hint longer than this is not waited for: the error goes to the caller, who knows better.
    max_retry_after: float = 60.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float | None:
        """Seconds to wait before retry number ``attempt + 1``, or None to give up."""
        if attempt >= self.max_retries:
            return None
        if retry_after is not None and retry_after >= 0:
            return retry_after if retry_after <= self.max_retry_after else None
        backoff = min(self.base_delay * 2**attempt, self.max_delay)
        return backoff * (1 - 0.25 * random.random())


def is_retryable_status(status: int, headers: Mapping[str, str] | None = None) -> bool:
    forced = (headers or {}).get("x-should-retry")
    if forced == "true":
        return True
    if forced == "false":
        return False
    return status in RETRY_STATUSES or status >= 500


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """``retry-after-ms`` first, then ``retry-after`` as seconds or an HTTP date."""
    value = _header(headers, "retry-after-ms")
    if value:
        try:
            return max(float(value) / 1000, 0.0)
        except ValueError:
            pass
    value = _header(headers, "retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None and isinstance(headers, dict):
        # A plain dict is case-sensitive, unlike the header maps of httpx and aiohttp.
        value = next((v for k, v in headers.items() if k.lower() == name), None)
    return value
