"""The batch engine: asyncio tasks on one AsyncClient, paced per (provider, model), with
every row's fate committed to the journal and the output extended in input order.

Shape of a run:

1. Ingest: the input is streamed into the journal (once; resumable mid-way).
2. Dispatch: open rows are read from the journal page by page, each started as a task
   when a concurrency slot is free and the budget allows. A task waits at its limiter's
   gate (FIFO per (provider, model), so a 429 on one model pauses only that model), sends,
   and on failure retries with backoff or records the error.
3. Write: a writer tick (every few ms) commits finished rows, appends every row whose
   predecessors are all final to the output, flushes it, and records the output's valid
   length in the journal.

The client is built with ``max_retries=0``: retrying is the engine's job here, because a
429 must reach the limiter rather than be slept through inside the backend.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from ..errors import ConfigError, ModelportError
from ..prompt_cache import has_breakpoints
from ..serialize import response_to_dict
from ..types import ChatRequest, ChatResponse, Usage
from .ratelimit import Limits, RateLimiter, limit_seeds
from .seams import BatchClient, BatchJournal
from .spec import DEFAULT_OUTPUT_ESTIMATE, JobSpec, Renderer, estimate_input_tokens
from .writers import AppendWriter, open_output, output_intact, record_for, rewrite_output

if TYPE_CHECKING:
    from ..cache import ResponseCache
    from ..prices import Price

log = logging.getLogger("modelport.batch")

# Error kinds worth another attempt; anything else is the row's final answer.
RETRYABLE_KINDS = frozenset({"server", "overloaded", "timeout", "connection", "rate_limit"})
# Error kinds that every other row would hit too: the job stops (rows stay open for resume).
FATAL_KINDS = frozenset({"authentication", "permission", "quota"})
WRITE_INTERVAL = 0.05
PAGE = 512
# Seconds an interrupted job (SIGTERM, Ctrl-C) waits for rows in flight to be answered and
# journaled; rows still out then are left open and sent again on resume.
STOP_GRACE = 10.0


class JobAborted(Exception):
    """The job cannot go on (bad key, exhausted quota, unknown model): nothing more is sent."""

    def __init__(self, error: ModelportError) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass
class Stats:
    """Running totals of a job, for progress bars and the final summary."""

    total: int = 0
    done: int = 0
    failed: int = 0
    cached: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0
    unknown_cost_rows: int = 0
    rate_limited: int = 0
    retries: int = 0
    sent: int = 0
    written: int = 0
    started: float = field(default_factory=time.monotonic)
    finished_at_start: int = 0
    status: str = "running"
    message: str = ""

    @property
    def finished(self) -> int:
        return self.done + self.failed

    @property
    def cost_known(self) -> bool:
        return self.unknown_cost_rows == 0

    def as_dict(self) -> dict[str, Any]:
        elapsed = time.monotonic() - self.started
        return {
            "status": self.status, "message": self.message, "total": self.total, "done": self.done, "failed": self.failed,
            "cached": self.cached, "input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
            "cost": self.cost, "unknown_cost_rows": self.unknown_cost_rows, "rate_limited": self.rate_limited,
            "retries": self.retries, "sent": self.sent, "elapsed": elapsed,
        }


def error_info(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, ModelportError):
        return {"type": exc.kind, "status": exc.status, "code": exc.code, "message": exc.message}
    return {"type": "error", "status": 500, "code": None, "message": f"{type(exc).__name__}: {exc}"}


class Engine:
    def __init__(self, journal: BatchJournal, spec: JobSpec, client: BatchClient, *, limits: Limits | None = None,
                 cache: ResponseCache | None = None, on_progress: Callable[[Stats], None] | None = None,
                 on_records: Callable[[list[dict[str, Any]]], Awaitable[None] | None] | None = None,
                 stop: asyncio.Event | None = None, stop_grace: float = STOP_GRACE,
                 cancel: threading.Event | None = None) -> None:
        self.journal = journal
        self.spec = spec
        self.client = client
        self.limits = limits or Limits(spec.rpm, spec.tpm, seeds=config_seeds(client))
        self.cache = cache
        self.on_progress = on_progress
        self.on_records = on_records
        # A cancel from this process (the gateway's Batches API): no journal write needed.
        self.cancel = cancel
        self.renderer = Renderer(spec, client)
        self.stats = Stats()
        self._gates: dict[int, asyncio.Lock] = {}
        self._prices: dict[tuple[str, str], Price | None] = {}
        self._reserved = 0.0
        self._dirty = False
        self._wake = asyncio.Event()
        self._stop = False
        self._fatal: JobAborted | None = None
        # What killed a row's task other than the row's own answer (see _row_ended).
        self._crash: BaseException | None = None
        self._writer: AppendWriter | None = None
        # Set (by a signal handler) to stop gracefully: see _dispatch_until_stopped.
        self.stop = stop or asyncio.Event()
        self.stop_grace = stop_grace

    # -- the run -------------------------------------------------------------------------

    async def run(self) -> Stats:
        journal, spec, stats = self.journal, self.spec, self.stats
        self._load_totals()
        self._check_budget_possible()
        if journal.get("cancel"):
            journal.set("cancel", False)
        journal.claim()
        journal.set("status", "running")
        appends = bool(spec.output) and spec.output_format != "parquet"
        if appends:
            self._writer = open_output(journal, spec)
        writer_task = asyncio.create_task(self._write_loop())
        try:
            await self._dispatch_until_stopped()
            stats.status = self._end_status()
        except JobAborted as exc:
            stats.status, stats.message = "error", str(exc.error)
        except asyncio.CancelledError:
            stats.status = "interrupted"
            raise
        finally:
            self._stop = True
            self._wake.set()
            await asyncio.shield(writer_task)
            # Rows still marked in flight were abandoned: they are open, and sent on resume.
            journal.release_inflight()
            journal.set("status", stats.status)
            journal.set("message", stats.message)
            journal.release()
            if self._writer is not None:
                self._writer.close()
            self._progress()
        if appends and not output_intact(journal, spec):
            # Something else wrote to or truncated the output during the run.
            log.warning("job %s: the output %s changed under the job; rewriting it from the journal", spec.job_id, spec.output)
            rewrite_output(journal, spec)
        return stats

    async def _dispatch_until_stopped(self) -> None:
        """Dispatch to the end; once ``self.stop`` is set, send nothing more, give the rows
        in flight ``stop_grace`` seconds to be answered (and journaled), then abandon the
        rest: they stay open, so a resume sends them, and the job ends "interrupted"."""
        dispatcher = asyncio.create_task(self._dispatch())
        stopping = asyncio.create_task(self.stop.wait())
        try:
            await asyncio.wait({dispatcher, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not dispatcher.done():
                self.stats.status, self.stats.message = "interrupted", "stopped by a signal; resume continues"
                self._stop = True
                await asyncio.wait({dispatcher}, timeout=self.stop_grace)
                if not dispatcher.done():
                    dispatcher.cancel()
                    await asyncio.wait({dispatcher})
                    return
            dispatcher.result()
        except asyncio.CancelledError:
            dispatcher.cancel()
            raise
        finally:
            stopping.cancel()

    def _end_status(self) -> str:
        if self._crash is not None:
            raise self._crash
        if self._fatal is not None:
            raise self._fatal
        if self.stats.status == "interrupted" and self.stats.finished >= self.stats.total:
            return "completed"  # the signal came after the last row
        if self.stats.status in ("budget", "cancelled", "interrupted"):
            return self.stats.status
        return "completed" if self.stats.finished >= self.stats.total else "stopped"

    def _load_totals(self) -> None:
        t = self.journal.totals()
        s = self.stats
        s.total, s.done, s.failed, s.cached = t["rows"], t["done"], t["failed"], t["cached"]
        s.input_tokens, s.output_tokens, s.cost, s.unknown_cost_rows = t["input_tokens"], t["output_tokens"], t["cost"], t["unknown_cost_rows"]
        s.finished_at_start = s.finished
        s.written = self.journal.written[0]

    def _check_budget_possible(self) -> None:
        if self.spec.max_cost is None or self.spec.model is None:
            return
        provider, model_id = self.client.resolve(self.spec.model)
        if self._price(provider.name, model_id) is None:
            raise ConfigError(
                f"--max-cost needs a price for {self.spec.model}, and it is unknown",
                hint=f'add it to the config: [prices] "{provider.name}/{model_id}" = {{ input = 0.15, output = 0.6 }} (USD per million tokens)',
            )

    async def _dispatch(self) -> None:
        sem = asyncio.Semaphore(max(1, self.spec.concurrency))
        tasks: set[asyncio.Task[None]] = set()
        cursor = -1

        def ended(task: asyncio.Task[None]) -> None:
            tasks.discard(task)
            sem.release()
            self._row_ended(task)

        warming = True
        try:
            while not self._stop:
                page = self.journal.open_rows(after=cursor, limit=PAGE)
                if not page:
                    break
                for idx, key, data in page:
                    await sem.acquire()
                    if self._stop or self._fatal is not None:
                        sem.release()
                        break
                    if self._cancel_requested():
                        self.stats.status = "cancelled"
                        self._stop = True
                        sem.release()
                        break
                    cursor = idx
                    try:
                        request = self.renderer(data)
                    except ModelportError as exc:
                        self._finish(idx, key, data, error=exc)
                        sem.release()
                        continue
                    if not self._within_budget(request):
                        self.stats.status = "budget"
                        self.stats.message = f"stopped at the budget of ${self.spec.max_cost:.4f}; resume with a higher --max-cost"
                        self._stop = True
                        sem.release()
                        break
                    task = asyncio.create_task(self._row(idx, key, data, request))
                    tasks.add(task)
                    task.add_done_callback(ended)
                    if warming and has_breakpoints(request):
                        # Rows sent together would each write the shared prefix to the
                        # provider's cache; one row first, and the rest read it.
                        await asyncio.wait({task})
                    warming = False
                if self._fatal is not None:
                    break
            if tasks:
                await asyncio.gather(*tasks)
        except asyncio.CancelledError:
            for task in tasks:
                task.cancel()
            raise

    def _cancel_requested(self) -> bool:
        if self.cancel is not None and self.cancel.is_set():
            return True
        # Read at most every so often: `batch cancel` from another process sets the flag.
        now = time.monotonic()
        if now - getattr(self, "_cancel_checked", 0.0) < 0.5:
            return False
        self._cancel_checked = now
        return bool(self.journal.get("cancel"))

    # -- one row -------------------------------------------------------------------------

    def _row_ended(self, task: asyncio.Task[None]) -> None:
        """A row's task that died of an error (its journal write failed: a full disk, a
        records database gone) ends the job with that error, raised by ``run``: the row stays
        open, to be sent again on resume, instead of the job ending "stopped" as if nothing
        had happened."""
        if not task.cancelled() and task.exception() is not None and self._crash is None:
            self._crash = task.exception()
            self._stop = True

    async def _row(self, idx: int, key: str | None, data: Any, request: ChatRequest) -> None:
        try:
            provider, model_id = self.client.resolve(request.model)
        except ModelportError as exc:
            self._finish(idx, key, data, error=exc)
            return
        price = self._price(provider.name, model_id)
        if self.cache is not None:
            hit = self.cache.get(request)
            if hit is not None:
                self._finish(idx, key, data, response=hit, price=price, cached=True)
                return
        limiter = self.limits.get(provider.name, model_id)
        estimate = estimate_input_tokens(request) + (request.max_tokens or self._output_estimate())
        reserve = self._cost_of(price, request, estimate)
        self._reserved += reserve
        attempt = 0
        try:
            while True:
                await self._admit(limiter, estimate)
                if self._fatal is not None or self.stop.is_set():
                    return  # the job stops: nothing more is sent, the row stays open
                if attempt == 0:
                    self.journal.mark_inflight(idx)
                self.stats.sent += 1
                try:
                    response = await self.client.send(request)
                except ModelportError as exc:
                    delay = self._retry_delay(exc, limiter, attempt)
                    limiter.settle(estimate, 0)
                    if delay is None:
                        if exc.kind in FATAL_KINDS or isinstance(exc, ConfigError):
                            self._fatal = self._fatal or JobAborted(exc)
                            return
                        self._finish(idx, key, data, error=exc)
                        return
                    attempt += 1
                    self.stats.retries += 1
                    if delay:
                        await asyncio.sleep(delay)
                    continue
                limiter.on_success(response.rate_limits)
                limiter.settle(estimate, response.usage.total_tokens)
                self._finish(idx, key, data, response=response, price=price)
                if self.cache is not None:
                    self.cache.put(request, response)
                return
        finally:
            self._reserved -= reserve

    def _retry_delay(self, exc: ModelportError, limiter: RateLimiter, attempt: int) -> float | None:
        """Seconds before the next attempt, or None when this error is the row's answer."""
        if exc.kind not in RETRYABLE_KINDS or attempt >= self.spec.max_retries:
            return None
        if exc.kind == "rate_limit":
            self.stats.rate_limited += 1
            limiter.on_rate_limited(exc.retry_after)
            return 0.0  # the limiter's gate does the waiting, for this model only
        if exc.retry_after is not None:
            return min(exc.retry_after, 60.0)
        return min(0.25 * 2**attempt, 10.0) * (0.5 + random.random() / 2)

    async def _admit(self, limiter: RateLimiter, tokens: int) -> None:
        gate = self._gates.get(id(limiter))
        if gate is None:
            gate = self._gates[id(limiter)] = asyncio.Lock()
        async with gate:
            while (wait := limiter.delay(tokens)) > 0:
                await asyncio.sleep(wait)
            limiter.acquire(tokens)

    def _finish(self, idx: int, key: str | None, data: Any, *, response: ChatResponse | None = None,
                error: BaseException | None = None, price: Price | None = None, cached: bool = False) -> None:
        stats = self.stats
        if response is None:
            assert error is not None
            if self.journal.finish(idx, error=error_info(error), commit=False):
                stats.failed += 1
        else:
            # The output is re-made from the journal (resume, the end-of-run check), so what
            # an encoder would otherwise fill with "now" is fixed here, once.
            response.created = response.created or int(time.time())
            result: dict[str, Any] = {"response": response_to_dict(response)}
            if self.spec.schema is not None:
                result.update(_parse(response.text, self.spec.schema))
            usage = response.usage
            from ..prices import cost

            row_cost = 0.0 if cached else cost(usage, price, batch_discount=self._discount())
            if self.journal.finish(idx, result=result, input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
                                   cost=row_cost, cached=cached, commit=False):
                stats.done += 1
                stats.cached += cached
                stats.input_tokens += usage.input_tokens
                stats.output_tokens += usage.output_tokens
                if row_cost is None:
                    stats.unknown_cost_rows += 1
                else:
                    stats.cost += row_cost
        self._dirty = True

    def _discount(self) -> float:
        return 0.0

    # -- cost ----------------------------------------------------------------------------

    def _price(self, provider: str, model_id: str) -> Price | None:
        key = (provider, model_id)
        if key not in self._prices:
            from ..prices import config_prices, price_for

            # The client's own config (the gateway's --config file, say) over the default file.
            config = self.client.config
            overrides = None if config is None else config_prices(config)
            self._prices[key] = price_for(provider, model_id, overrides=overrides)
        return self._prices[key]

    def _output_estimate(self) -> int:
        answered = self.stats.done - self.stats.cached
        if answered > 0 and self.stats.output_tokens:
            return max(1, self.stats.output_tokens // max(1, self.stats.done))
        return DEFAULT_OUTPUT_ESTIMATE

    def _cost_of(self, price: Price | None, request: ChatRequest, estimate: int) -> float:
        if price is None:
            return 0.0
        from ..prices import cost

        input_tokens = estimate_input_tokens(request)
        return cost(Usage(input_tokens, max(0, estimate - input_tokens)), price, batch_discount=self._discount()) or 0.0

    def _within_budget(self, request: ChatRequest) -> bool:
        if self.spec.max_cost is None:
            return True
        try:
            provider, model_id = self.client.resolve(request.model)
        except ModelportError:
            return True
        price = self._price(provider.name, model_id)
        estimate = estimate_input_tokens(request) + (request.max_tokens or self._output_estimate())
        return self.stats.cost + self._reserved + self._cost_of(price, request, estimate) <= self.spec.max_cost

    # -- output --------------------------------------------------------------------------

    async def _write_loop(self) -> None:
        while True:
            stopping = self._stop
            try:
                await asyncio.wait_for(self._wake.wait(), WRITE_INTERVAL)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            await self.flush()
            self._progress()
            if stopping:
                return

    async def flush(self) -> None:
        """Commit finished rows and append every newly contiguous final row to the output."""
        journal = self.journal
        if self._dirty:
            journal.commit()
            self._dirty = False
        start, size = journal.written
        while True:
            batch = journal.final_rows(start, 2000)
            if not batch:
                break
            records = [record_for(self.spec, *row) for row in batch]
            if self._writer is not None:
                self._writer.write(records)
                size = self._writer.flush()
            start = batch[-1][0] + 1
            journal.set_written(start, size)
            self.stats.written = start
            if self.on_records is not None:
                pending = self.on_records(records)
                if pending is not None:
                    await pending

    def _progress(self) -> None:
        if self.on_progress is not None:
            self.on_progress(self.stats)


def config_seeds(client: BatchClient) -> dict[str, dict[str, float]]:
    """The config's ``[limits]`` for the limiters, keyed as the client routes the names."""

    def resolve(name: str) -> tuple[str, str]:
        try:
            provider, model_id = client.resolve(name)
        except ModelportError:
            # A name this client cannot route paces nothing; it is not worth failing the job.
            provider_name, _, model_id = name.partition("/")
            return provider_name, model_id
        return provider.name, model_id

    return limit_seeds(client.config, resolve)


def _parse(text: str, schema: dict[str, Any]) -> dict[str, Any]:
    """The structured answer, or why there is none (the row still counts as answered)."""
    import json

    try:
        value = json.loads(text)
    except ValueError as exc:
        return {"parsed": None, "parse_error": f"the answer is not JSON: {exc}"}
    try:
        import jsonschema
    except ImportError:
        return {"parsed": value}
    try:
        jsonschema.validate(value, schema)
    except jsonschema.ValidationError as exc:
        return {"parsed": value, "parse_error": f"the answer does not match the schema: {exc.message}"}
    return {"parsed": value}
