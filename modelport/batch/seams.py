"""The batch engine's seams, as types: the client its rows are sent through and the journal
that keeps every row's fate.

The client is an ``AsyncClient`` in the SDK and the CLI; in the gateway it is
``batches_door.GatewayBatchClient`` (each row through the call pipeline, for the key that
made the batch), seen from the batch's own thread through ``files_api._LoopBridge``. The
journal is ``journal.Journal``, a job's SQLite file, or ``records_journal.RecordsJournal``,
the job's rows in the shared records database.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ..client import Prompt
    from ..providers import Provider
    from ..types import ChatRequest, ChatResponse

# A row not yet final: (index, custom_id or None, the input row).
OpenRow = tuple[int, str | None, Any]
# A final row: (index, custom_id, input row, state, result, error, cost or None, cached).
FinalRow = tuple[int, str | None, Any, int, Any, Any, float | None, bool]


class BatchClient(Protocol):
    """What the engine asks of its client: route a model, build and send a request."""

    @property
    def config(self) -> dict[str, Any] | None:
        """The loaded config, for its ``[prices]`` and ``[limits]``; None: the defaults."""

    def resolve(self, model: str | None) -> tuple[Provider, str]:
        """The provider and its model id for a name (``provider/model``, an alias, None for
        the default); ConfigError for one that cannot be routed."""

    def request(self, model: str | None, prompt: Prompt = None, **params: Any) -> ChatRequest:
        """The canonical request these arguments describe (nothing is sent)."""

    async def send(self, request: ChatRequest) -> ChatResponse: ...

    async def aclose(self) -> None: ...


class BatchJournal(Protocol):
    """What the engine and the output writers use of a job's journal (see journal.py for the
    guarantees): a row becomes final only in the transaction that stores its answer, and the
    output is derived from the final rows in input order."""

    def get(self, key: str, default: Any = None) -> Any: ...

    def set(self, key: str, value: Any, *, commit: bool = True) -> None: ...

    def claim(self) -> None:
        """Take the job for this process (a job is never run twice at once)."""

    def release(self) -> None: ...

    def commit(self) -> None: ...

    def open_rows(self, after: int = -1, limit: int = 1000, upto: int | None = None) -> list[OpenRow]: ...

    def mark_inflight(self, idx: int) -> None: ...

    def release_inflight(self) -> int: ...

    def finish(self, idx: int, *, result: Any = None, error: Any = None, input_tokens: int = 0, output_tokens: int = 0,
               cost: float | None = None, cached: bool = False, commit: bool = True) -> bool:
        """Make a row final with its answer or error; False if it already was."""

    def final_rows(self, start: int, limit: int = 2000) -> list[FinalRow]:
        """Contiguous final rows from ``start``, up to the first row still open."""

    @property
    def written(self) -> tuple[int, int]:
        """(rows written to the output, valid output bytes)."""

    def set_written(self, rows: int, size: int) -> None: ...

    def totals(self) -> dict[str, Any]: ...
