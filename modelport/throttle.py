"""Log lines for a condition that repeats, such as every request refused while a store is
down: the first one at once, then one line with a count each ``every`` seconds while it
lasts, instead of a line per request (a Redis outage wrote 911 lines in 10 s)."""

from __future__ import annotations

import logging
import time

# Conditions are keyed by their message, which callers do not choose; keep a bounded few.
_KEPT = 256


class ThrottledLog:
    def __init__(self, logger: logging.Logger, every: float = 30.0) -> None:
        self.logger = logger
        self.every = every
        self._seen: dict[str, tuple[float, int]] = {}  # key -> (last logged, suppressed since)

    def warning(self, key: str, message: str, *args: object) -> None:
        now = time.monotonic()
        seen = self._seen.get(key)
        if seen is not None and now - seen[0] < self.every:
            self._seen[key] = (seen[0], seen[1] + 1)
            return
        if len(self._seen) >= _KEPT:
            self._seen.clear()
        self._seen[key] = (now, 0)
        if seen is not None and seen[1]:
            message += f" (and {seen[1]} more like it in the last {now - seen[0]:.0f} s)"
        self.logger.warning(message, *args)
