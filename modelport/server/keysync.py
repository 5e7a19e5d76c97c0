"""Keeping the gateway's view of its keys current: usage written back, every key read again
about once a second (a revoke on any instance is seen within that), and fail-closed when the
key store cannot be read for longer than ``keys_max_stale``.

Every key-store call runs on the store's one thread (``KeyRing.run``), never on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from ..errors import ModelportError, StateUnavailableError
from .auth import KeyRing, KeyStore

log = logging.getLogger("modelport.server")
KEY_SYNC_SECONDS = 1.0


class KeySync:
    def __init__(self, keys: KeyRing, max_stale: float) -> None:
        self.keys = keys
        self.max_stale = max_stale
        self._lock: asyncio.Lock | None = None
        self._task: asyncio.Task[None] | None = None
        self._synced_at = 0.0
        # Why the last read of the key store failed; None once one works again.
        self.error: BaseException | None = None

    async def sync(self, unless_since: float | None = None) -> None:
        """Save unsaved usage, then reload every key row (one worker-thread job, in order,
        so the reloaded totals already include what was just saved). One sync at a time:
        a flood of unknown keys queues here instead of on the database."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if unless_since is not None and self._synced_at >= unless_since:
                return
            self._synced_at = time.perf_counter()
            usage = self.keys.take_usage()

            def save_and_read(store: KeyStore) -> list[Any]:
                try:
                    store.add_usage(usage)
                except StateUnavailableError:
                    raise  # reported once below, not with a traceback every second
                except Exception:
                    log.exception("could not save gateway key usage; keeping it for the next try")
                    raise
                return store.records()

            try:
                records = await self.keys.run(save_and_read)
            except Exception as exc:
                self.keys.give_back_usage(usage)
                if self.error is None:
                    log.warning("cannot read the gateway keys (%s); serving the last ones read for up to %g s", exc, self.max_stale)
                self.error = exc
                return
            if self.error is not None:
                log.warning("the gateway keys can be read again")
                self.error = None
            self.keys.load(records)

    def check_fresh(self, key: str | None) -> None:
        """Fail closed while the key store cannot be read: the keys last read stay good for
        ``max_stale`` seconds (a brief outage or failover costs nothing), then every key is
        refused with a 503, so a key revoked meanwhile is not honoured for long (a read that
        hangs counts as failing); a well-formed key the last read did not have is refused
        with a 503 at once, since it may be new."""
        age = time.monotonic() - self.keys.loaded_at
        error = self.error
        if not key or (error is None and age <= self.max_stale):
            return
        key_id, caller = self.keys.lookup(key)
        if age > self.max_stale or (key_id is not None and caller is None):
            # A records error's message (never its detail, which names the database); anything else only its type.
            reason = (error.message if isinstance(error, ModelportError) else type(error).__name__) if error is not None \
                else f"no read has finished for {age:.0f} s"
            raise StateUnavailableError(f"the gateway cannot read its keys ({reason}), so it cannot check this key",
                                        hint="check the records database ([state] records); the gateway reconnects by itself")

    async def _forever(self) -> None:
        while True:
            await asyncio.sleep(KEY_SYNC_SECONDS)
            await self.sync()

    async def start(self) -> None:
        await self.sync()
        self._task = asyncio.get_running_loop().create_task(self._forever())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
            await self.sync()

