"""Run one prompt template over many rows: resumable, exactly once, in input order.

    import modelport
    df = modelport.batch(df, model="openai/gpt-4o-mini", prompt="Summarise: {text}")
    # df gains: answer, parsed, input_tokens, output_tokens, cost, cached, finish_reason, error

    async for record in modelport.batch.abatch(rows, model=..., prompt=...):
        ...  # records arrive in input order as soon as they and all before them are final

Every job keeps a journal (SQLite). Pass ``journal="job.db"`` to make a Python-side job
resumable: calling again with the same journal picks up where it stopped. The CLI
(``modelport batch run``) always keeps one, under the data directory.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable

from .engine import Engine, Stats
from .journal import Journal
from .writers import record_for
from .spec import DEFAULT_OUTPUT_ESTIMATE, JobSpec, Renderer, cached_prefix_tokens, estimate_input_tokens, new_job_id

if TYPE_CHECKING:
    from ..client import AsyncClient
    from .seams import BatchClient

__all__ = ["batch", "abatch", "arun", "run_job", "estimate", "open_job", "JobSpec", "Stats"]

# Spec fields a resume may change; everything else is fixed by the first run.
RESUMABLE_FIELDS = ("max_cost", "concurrency", "rpm", "tpm", "max_retries", "timeout", "cache")


class _BatchModule(type(sys)):  # type: ignore[misc]
    """``modelport.batch`` is both this package and the function: ``modelport.batch(rows, ...)``."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return batch(*args, **kwargs)


def open_job(path: str | Path, spec: JobSpec | None = None, **changes: Any) -> tuple[Journal, JobSpec]:
    """The journal at ``path`` and its spec: stored on first open, then read back, with
    only ``RESUMABLE_FIELDS`` taken from ``changes``."""
    journal = Journal(path)
    if spec is None and journal.get("spec") is None:
        journal.close()
        raise FileNotFoundError(f"no batch job in {path}")
    return with_spec(journal, spec, **changes)


def with_spec(journal: Journal, spec: JobSpec | None, **changes: Any) -> tuple[Journal, JobSpec]:
    """``journal`` (of any kind) and its job's spec: ``spec``, stored if the journal has none
    yet, else the stored one with only ``RESUMABLE_FIELDS`` taken from ``changes``."""
    stored = journal.get("spec")
    if stored is None:
        assert spec is not None, "a new journal needs its spec"
        journal.set("spec", spec.to_dict())
        return journal, spec
    current = JobSpec.from_dict(stored)
    updates = {k: v for k, v in changes.items() if k in RESUMABLE_FIELDS and v is not None}
    if updates:
        for k, v in updates.items():
            setattr(current, k, v)
        journal.set("spec", current.to_dict())
    return journal, current


def make_client(spec: JobSpec, **options: Any) -> AsyncClient:
    from ..client import AsyncClient
    from ..transport import Timeouts

    options.setdefault("source", "batch")  # every row's call goes to the call log, as batch calls
    return AsyncClient(max_retries=0, timeout=Timeouts(connect=min(5.0, spec.timeout), read=spec.timeout, total=spec.timeout), **options)


def ingest(journal: Journal, spec: JobSpec, rows: Any = None) -> None:
    if journal.ingest_done:
        return
    from .readers import iter_records, read_rows

    skip = journal.ingested
    if rows is None:
        if spec.input is None:
            raise ValueError("the job has neither an input file nor rows")
        source = read_rows(spec.input, spec.input_format, skip=skip)
    else:
        import itertools

        source = itertools.islice(iter_records(rows), skip, None)
    journal.ingest(source, start=skip)


async def arun(journal: Journal, spec: JobSpec, *, rows: Any = None, client: BatchClient | None = None,
               on_progress: Callable[[Stats], None] | None = None,
               on_records: Callable[[list[dict[str, Any]]], Any] | None = None, limits: Any = None,
               stop: asyncio.Event | None = None, cancel: threading.Event | None = None) -> Stats:
    """Run (or resume) the job in ``journal`` to its end, the budget, a cancel (``cancel``
    set, or the journal's flag) or a fatal error. Setting ``stop`` (e.g. from a signal
    handler) ends it early and resumably: "interrupted"."""
    from .preflight import check

    own_client = client is None
    client = client or make_client(spec)
    try:
        # Before the first request: a job that cannot be written or run fails now, not at its end.
        check(spec, client=client, first_row=rows[0] if isinstance(rows, (list, tuple)) and rows else None)
        ingest(journal, spec, rows)
        engine: type[Engine] = Engine
        if spec.mode == "native":
            from .native import NativeEngine

            engine = NativeEngine
        elif spec.mode != "live":
            from ..errors import ConfigError

            raise ConfigError(f"unknown batch mode {spec.mode!r}", hint="use --mode live (the default) or native")
        cache = None
        if spec.cache and spec.mode == "live":
            from ..cache import ResponseCache

            cache = ResponseCache()
        runner = engine(journal, spec, client, cache=cache, on_progress=on_progress, on_records=on_records, limits=limits,
                        stop=stop, cancel=cancel)
        stats = await runner.run()
        if spec.output and spec.output_format == "parquet":
            from .writers import write_parquet

            write_parquet(spec.output, _final_batches(journal, runner))
        return stats
    finally:
        if own_client:
            await client.aclose()


def _final_batches(journal: Journal, runner: Any) -> Any:
    start = 0
    while True:
        rows = journal.final_rows(start, 5000)
        if not rows:
            return
        yield [record_for(runner.spec, *row) for row in rows]
        start = rows[-1][0] + 1


def run_job(journal: Journal, spec: JobSpec, **kwargs: Any) -> Stats:
    return _run_sync(arun(journal, spec, **kwargs))


def _run_sync(coro: Any) -> Any:
    """Run a coroutine to completion from sync code, also where a loop is already running
    (Jupyter): then on a fresh loop in a worker thread, which the engine never shares."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, name="modelport-batch")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def _spec_for(model: str | None, prompt: str | None, system: str | None, schema: Any, params: dict[str, Any],
              options: dict[str, Any], rows: Any) -> JobSpec:
    from .readers import is_openai_batch_line

    first = None
    if isinstance(rows, (list, tuple)) and rows:
        first = rows[0]
    fmt = "openai" if is_openai_batch_line(first) else "rows"
    return JobSpec(job_id=new_job_id(), model=model, prompt=prompt, system=system, params=params,
                   schema=_schema_dict(schema), input_format=fmt, **options)


def _schema_dict(schema: Any) -> dict[str, Any] | None:
    """A JSON Schema from a dict or a pydantic model class."""
    if schema is None or isinstance(schema, dict):
        return schema
    to_schema = getattr(schema, "model_json_schema", None)
    if callable(to_schema):
        return to_schema()
    raise TypeError("schema must be a JSON Schema dict or a pydantic model class")


_OPTIONS = ("concurrency", "rpm", "tpm", "max_cost", "cache", "cache_prefix", "max_retries", "timeout")


def _split(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    options = {k: kwargs.pop(k) for k in _OPTIONS if k in kwargs}
    return options, kwargs


async def abatch(rows: Any, model: str | None = None, prompt: str | None = None, *, system: str | None = None,
                 schema: Any = None, journal: str | Path | None = None, client: BatchClient | None = None,
                 on_progress: Callable[[Stats], None] | None = None, **kwargs: Any) -> AsyncIterator[dict[str, Any]]:
    """Results as an async iterator, in input order, each as soon as it and all before it are final.

    Options: concurrency, rpm, tpm, max_cost, cache, cache_prefix, max_retries, timeout; every other
    keyword is a request parameter (temperature, max_tokens, ...)."""
    options, params = _split(kwargs)
    spec = _spec_for(model, prompt, system, schema, params, options, rows)
    queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=4)
    done = object()

    async def push(records: list[dict[str, Any]]) -> None:
        await queue.put(records)

    with _job_journal(journal) as path:
        journal_, spec = open_job(path, spec, **options)
        async def produce() -> None:
            try:
                await arun(journal_, spec, rows=rows, client=client, on_progress=on_progress, on_records=push)
            finally:
                await queue.put(done)

        task = asyncio.create_task(produce())
        try:
            while True:
                item = await queue.get()
                if item is done:
                    break
                for record in item:
                    yield record
            await task
        finally:
            if not task.done():
                task.cancel()
            journal_.close()


def batch(rows: Any, model: str | None = None, prompt: str | None = None, *, system: str | None = None,
          schema: Any = None, journal: str | Path | None = None, client: BatchClient | None = None, progress: bool = False,
          **kwargs: Any) -> Any:
    """Run ``prompt`` (a template such as ``"Summarise: {text}"``) over ``rows``.

    ``rows``: a pandas DataFrame (a DataFrame comes back, with result columns added), or a
    list of dicts, strings or OpenAI batch lines (a list of records comes back). Results
    are in input order.
    """
    options, params = _split(kwargs)
    is_frame = hasattr(rows, "columns") and hasattr(rows, "itertuples")
    if not is_frame and not isinstance(rows, (list, tuple)):
        rows = list(rows)
    spec = _spec_for(model, prompt, system, schema, params, options, rows)

    async def main() -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []

        def keep(records: list[dict[str, Any]]) -> None:
            out.extend(records)

        with _job_journal(journal) as path:
            journal_, spec_ = open_job(path, spec, **options)
            try:
                reporter = _progress_reporter() if progress else None
                try:
                    stats = await arun(journal_, spec_, rows=rows, client=client, on_records=keep,
                                       on_progress=reporter.update if reporter else None)
                finally:
                    if reporter:
                        reporter.close()
                if stats.status == "error":
                    from ..errors import ModelportError

                    raise ModelportError(f"batch stopped: {stats.message}")
                # A resumed job wrote its earlier records in a previous call: read them all back.
                out = [record_for(spec_, *row) for row in _all_final(journal_)]
            finally:
                journal_.close()
                if client is not None:
                    # The loop this ran on ends here; the client's sessions must not outlive it.
                    await client.aclose()
        return out

    records = _run_sync(main())
    if is_frame:
        return _to_frame(rows, records)
    if spec.input_format == "openai":
        return records
    from .writers import flat_record

    return [flat_record(r) for r in records]


def _all_final(journal: Journal) -> Any:
    start = 0
    while True:
        rows = journal.final_rows(start, 5000)
        if not rows:
            return
        yield from rows
        start = rows[-1][0] + 1


def _to_frame(frame: Any, records: list[dict[str, Any]]) -> Any:
    import pandas as pd

    from .writers import RESULT_COLUMNS, flat_record

    flat = [flat_record(r) for r in records]
    results = pd.DataFrame([{c: f.get(c) for c in RESULT_COLUMNS} for f in flat], columns=list(RESULT_COLUMNS))
    if len(results) < len(frame):
        # Rows never answered (budget reached) keep empty result columns.
        results = results.reindex(range(len(frame)))
    results.index = frame.index
    out = frame.copy()
    for column in RESULT_COLUMNS:
        out[column] = results[column]
    return out


class _job_journal:
    """The given journal path, or a temporary one removed afterwards."""

    def __init__(self, path: str | Path | None) -> None:
        self.path = path
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    def __enter__(self) -> Path:
        if self.path is not None:
            return Path(self.path)
        self._tmp = tempfile.TemporaryDirectory(prefix="modelport-batch-")
        return Path(self._tmp.name) / "journal.db"

    def __exit__(self, *exc: object) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()


def _progress_reporter() -> Any:
    from .progress import ProgressReporter

    return ProgressReporter()


def estimate(spec: JobSpec, rows: Any, client: BatchClient | None = None) -> dict[str, Any]:
    """Dry run: tokens and cost of the job, estimated before anything is sent.

    Input tokens are estimated from characters; output tokens are ``max_tokens`` per row
    when set (an upper bound), else an assumed average. A model with no known price is
    reported with ``cost: None``, never as free.
    """
    from ..prices import NATIVE_BATCH_DISCOUNT, cost, price_for
    from ..types import Usage

    client = client or make_client(spec)
    renderer = Renderer(spec, client)
    n = input_tokens = output_tokens = prefix_tokens = 0
    errors: Counter[str] = Counter()
    total_cost: float | None = 0.0
    uncached_cost: float | None = 0.0
    prices: dict[str, Any] = {}
    discount = NATIVE_BATCH_DISCOUNT if spec.mode == "native" else 0.0
    for _, data in rows:
        n += 1
        try:
            request = renderer(data)
            provider, model_id = client.resolve(request.model)
        except Exception as exc:  # noqa: BLE001 - a row that cannot be built is counted, not fatal to the estimate
            errors[getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"] += 1
            continue
        tin = estimate_input_tokens(request)
        tout = request.max_tokens or DEFAULT_OUTPUT_ESTIMATE
        input_tokens += tin
        output_tokens += tout
        key = f"{provider.name}/{model_id}"
        if key not in prices:
            prices[key] = price_for(provider.name, model_id)
        # The first row with a marked prefix writes it to the provider's cache, the rest read it.
        shared = cached_prefix_tokens(request)
        prefix_tokens = prefix_tokens or shared
        usage = Usage(tin, tout, *((0, shared) if n == 1 else (shared, 0)))
        row_cost = cost(usage, prices[key], batch_discount=discount)
        total_cost = None if row_cost is None or total_cost is None else total_cost + row_cost
        plain = cost(Usage(tin, tout), prices[key], batch_discount=discount)
        uncached_cost = None if plain is None or uncached_cost is None else uncached_cost + plain
    return {
        "rows": n, "unrenderable_rows": sum(errors.values()),
        # The reason most of them cannot be built, so a dry run says why and not only how many.
        "unrenderable_reason": errors.most_common(1)[0][0] if errors else None, "input_tokens": input_tokens, "output_tokens": output_tokens,
        "output_estimate": "max_tokens per row (upper bound)" if spec.params.get("max_tokens") else f"{DEFAULT_OUTPUT_ESTIMATE} per row (assumed)",
        "cost": total_cost, "unknown_price": sorted(k for k, v in prices.items() if v is None),
        "cached_prefix_tokens": prefix_tokens, "cost_without_cache": uncached_cost,
    }


# ``modelport.batch`` is both this package and its main function: after ``import
# modelport.batch`` the attribute is the module, so the module itself must be callable.
sys.modules[__name__].__class__ = _BatchModule
