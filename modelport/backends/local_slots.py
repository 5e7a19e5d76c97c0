"""Fair use of the embedded engine's decoding slots between gateway callers.

The engine decodes ``n_parallel`` sequences together and queues the rest in arrival order,
so one gateway key sending many long requests would hold every slot and make everyone else
wait for its generations to end. Callers named by the gateway go through a
:class:`FairSlots` first:

* one caller holds at most ``slots - 1`` slots, so a slot is always free, or about to be,
  for somebody else;
* when slots are short, the next freed slot goes to the waiting caller that holds the fewest
  (ties: the earliest), not to whoever queued the most requests.

Calls without a caller (the SDK and CLI in their own process) are not gated: there is no one
to share with.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

class FairSlots:
    """Admission to ``slots`` engine slots, fair between callers (see the module doc)."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self.cap = max(1, slots - 1)
        self.active: Counter[str] = Counter()
        self._waiting: dict[int, tuple[str, asyncio.Future[None]]] = {}
        self._order = itertools.count()

    @property
    def in_use(self) -> int:
        return sum(self.active.values())

    def _may_start(self, caller: str) -> bool:
        return self.in_use < self.slots and self.active[caller] < self.cap

    @asynccontextmanager
    async def slot(self, caller: str) -> AsyncIterator[None]:
        if not self._waiting and self._may_start(caller):
            self.active[caller] += 1
        else:
            ticket = next(self._order)
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiting[ticket] = (caller, future)
            self._grant()  # others may be waiting only for their own cap, not for a free slot
            try:
                await future  # granted: the slot is already counted as ours
            except BaseException:
                del self._waiting[ticket]
                if future.done() and not future.cancelled():
                    self._release(caller)  # granted and cancelled at the same moment
                raise
            del self._waiting[ticket]
        try:
            yield
        finally:
            self._release(caller)

    def _release(self, caller: str) -> None:
        self.active[caller] -= 1
        if self.active[caller] <= 0:
            del self.active[caller]
        self._grant()

    def _grant(self) -> None:
        while True:
            pending = [(self.active[c], t, c, f) for t, (c, f) in self._waiting.items() if not f.done() and self._may_start(c)]
            if not pending:
                return
            _, _, caller, future = min(pending)
            self.active[caller] += 1
            future.set_result(None)
