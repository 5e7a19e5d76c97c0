"""Opening the counters a URL names: the one place that knows every counters store, so that
``counters`` (the interface) imports none of its implementations."""

from __future__ import annotations

from . import check_url, scheme
from .counters import DEFAULT_HOLD_SECONDS, WINDOW, Counters, MemoryCounters


def open_counters(url: str | None, *, window: float = WINDOW, hold_seconds: float = DEFAULT_HOLD_SECONDS) -> Counters:
    """The counters at ``url`` (None: ``memory:``). Nothing is connected or imported beyond
    the implementation's module until the first call that needs the store.

    ``window`` is the rpm/tpm window in seconds (60; shorter only for tests);
    ``hold_seconds`` bounds how long a shared store holds a booked cost that is never
    settled (give it more than the gateway's request timeout)."""
    if url is None:
        return MemoryCounters(window=window)
    kind = scheme(check_url("counters", url))
    if kind == "memory":
        return MemoryCounters(window=window)
    if kind == "sqlite":
        from .sqlite_counters import SQLiteCounters

        return SQLiteCounters(url, window=window, hold_seconds=hold_seconds)
    from .redis_counters import RedisCounters

    return RedisCounters(url, window=window, hold_seconds=hold_seconds)
