"""``--engine ray``: the same job spread over a Ray cluster (``pip install 'modelport[ray]'``).

* The driver ingests the input into the job's journal as usual, then cuts the rows into
  contiguous partitions, fixed in the journal on the first run so a resume sees the same.
* Each partition has a journal of its own (``<job>.part-<k>.db`` beside the job's) and runs
  the ordinary engine in a Ray task, so every partition keeps the engine's exactly-once
  guarantee. The journals must be on storage every node sees (one machine, or a shared
  filesystem on a cluster).
* One Ray actor holds the token buckets of every (provider, model) for all partitions, so
  the job as a whole stays under the provider's limits and a 429 slows every worker.
* The driver copies each partition's contiguous final rows into the job's journal and
  extends the output from it in input order: the output is exactly what a local run writes.

A budget (``max_cost``) is shared out: each partition may spend an equal share of what is
left. ``resume --retry-failed`` re-sends failed rows with the local engine only.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any, Callable

from .engine import Engine, Stats
from .journal import Journal
from .ratelimit import Limits
from .spec import JobSpec
from .writers import open_output, record_for

MERGE_INTERVAL = 0.25


class LimitsActor:
    """The shared rate limiter (run as a Ray actor): the sans-I/O ``Limits`` behind calls."""

    def __init__(self, rpm: float | None, tpm: float | None, seeds: dict[str, Any] | None) -> None:
        self.limits = Limits(rpm, tpm, seeds=seeds)

    def take(self, provider: str, model: str, tokens: int) -> float:
        """0 after debiting a request of ``tokens``, else the seconds to wait first."""
        limiter = self.limits.get(provider, model)
        wait = limiter.delay(tokens)
        if wait <= 0:
            limiter.acquire(tokens)
        return wait

    def settle(self, provider: str, model: str, estimated: int, actual: int) -> None:
        self.limits.get(provider, model).settle(estimated, actual)

    def success(self, provider: str, model: str, headers: dict[str, str] | None) -> None:
        self.limits.get(provider, model).on_success(headers)

    def rate_limited(self, provider: str, model: str, retry_after: float | None) -> None:
        self.limits.get(provider, model).on_rate_limited(retry_after)


class _SharedLimiter:
    """One (provider, model) of the actor, with the ``RateLimiter`` calls the engine makes.
    Feedback is sent without waiting; admission (``RayEngine._admit``) waits for the actor."""

    def __init__(self, actor: Any, provider: str, model: str) -> None:
        self.actor, self.key = actor, (provider, model)

    def settle(self, estimated: int, actual: int) -> None:
        self.actor.settle.remote(*self.key, estimated, actual)

    def on_success(self, headers: Any = None) -> None:
        self.actor.success.remote(*self.key, dict(headers) if headers else None)

    def on_rate_limited(self, retry_after: float | None = None) -> None:
        self.actor.rate_limited.remote(*self.key, retry_after)


class _SharedLimits:
    def __init__(self, actor: Any) -> None:
        self.actor = actor
        self._limiters: dict[tuple[str, str], _SharedLimiter] = {}

    def get(self, provider: str, model: str) -> _SharedLimiter:
        limiter = self._limiters.get((provider, model))
        if limiter is None:
            limiter = self._limiters[(provider, model)] = _SharedLimiter(self.actor, provider, model)
        return limiter


class RayEngine(Engine):
    """The engine of one partition: admission goes through the shared actor."""

    async def _admit(self, limiter: Any, tokens: int) -> None:
        while (wait := await limiter.actor.take.remote(*limiter.key, tokens)) > 0:
            await asyncio.sleep(wait)


def run_partition(path: str, spec: dict[str, Any], actor: Any, client_options: dict[str, Any]) -> dict[str, Any]:
    """One partition to its end, in a Ray worker. Returns its stats."""
    from . import make_client

    job = JobSpec.from_dict(spec)
    journal = Journal(path)
    client = make_client(job, **client_options)

    async def main() -> Stats:
        try:
            return await RayEngine(journal, job, client, limits=_SharedLimits(actor)).run()  # type: ignore[arg-type]
        finally:
            await client.aclose()

    try:
        return asyncio.run(main()).as_dict()
    finally:
        journal.close()


def partition_paths(journal_path: Path, count: int) -> list[Path]:
    return [journal_path.with_name(f"{journal_path.stem}.part-{k}.db") for k in range(count)]


async def run(journal: Journal, spec: JobSpec, *, rows: Any = None, on_progress: Callable[[Stats], None] | None = None,
              client_options: dict[str, Any] | None = None, partitions: int | None = None,
              seeds: dict[str, Any] | None = None, stop: asyncio.Event | None = None, quiet: bool = False) -> Stats:
    """Run (or resume) the job in ``journal`` on Ray. Connects to ``RAY_ADDRESS`` (else
    starts a local instance) unless Ray is initialised already. ``seeds``: per-model
    limits (default: the config's ``[limits]``). Setting ``stop`` stops the partitions like a
    cancel (they finish the rows in flight) and the job ends "interrupted"."""
    from . import ingest
    from .preflight import check

    check(spec, engine="ray")
    import ray

    ingest(journal, spec, rows)
    if not ray.is_initialized():
        import logging

        # quiet (`batch run --quiet`): Ray's own notices and warnings stay out of the user's terminal too.
        ray.init(address=os.environ.get("RAY_ADDRESS"), include_dashboard=False, log_to_driver=False,
                 logging_level=logging.ERROR if quiet else logging.INFO)
    bounds = _partitions(journal, partitions or max(1, int(ray.cluster_resources().get("CPU", 1))))
    if journal.path is None:
        raise ValueError("the Ray engine splits a job's journal file into partitions; this job is journaled in shared records")
    paths = partition_paths(journal.path, len(bounds))
    for (first, end), path in zip(bounds, paths):
        _prepare_partition(journal, path, first, end)
    shares = _budgets(journal, spec, paths)
    if seeds is None:
        from ..client import AsyncClient
        from .engine import config_seeds

        seeds = config_seeds(AsyncClient(max_retries=0, **(client_options or {})))
    actor = ray.remote(LimitsActor).remote(spec.rpm, spec.tpm, seeds)
    task = ray.remote(run_partition)
    if journal.get("cancel"):
        journal.set("cancel", False)
    journal.claim()
    journal.set("status", "running")
    refs = [task.remote(str(path), {**spec.to_dict(), "output": None, "max_cost": share}, actor, client_options or {})
            for path, share in zip(paths, shares)]
    merger = _Merger(journal, spec, bounds, paths)
    stats = Stats()
    forwarded = False
    try:
        pending = list(refs)
        while pending:
            _, pending = ray.wait(pending, num_returns=len(pending), timeout=0)
            if journal.get("cancel") or (stop is not None and stop.is_set() and not forwarded):
                _forward_cancel(paths)
                forwarded = stop is not None and stop.is_set()
            merger.merge(stats)
            if on_progress is not None:
                on_progress(stats)
            if pending:
                await asyncio.sleep(MERGE_INTERVAL)
        results = ray.get(refs)
    except asyncio.CancelledError:
        # Ctrl-C: the partitions stop like a cancel, keep what they finished, and resume later.
        _forward_cancel(paths)
        ray.get(refs)
        merger.merge(stats)
        journal.set("status", "interrupted")
        journal.release()
        merger.close()
        raise
    merger.merge(stats)
    merger.close()
    for name in ("rate_limited", "retries", "sent"):
        setattr(stats, name, sum(r[name] for r in results))
    stats.status, stats.message = _overall(results, stats)
    if forwarded and stats.status == "cancelled":
        stats.status, stats.message = "interrupted", "stopped by a signal; resume continues"
    journal.set("status", stats.status)
    journal.set("message", stats.message)
    journal.release()
    if on_progress is not None:
        on_progress(stats)
    if spec.output and spec.output_format == "parquet":
        from . import _final_batches
        from .writers import write_parquet

        write_parquet(spec.output, _final_batches(journal, merger))
    return stats


def _partitions(journal: Journal, count: int) -> list[tuple[int, int]]:
    """Row ranges ``[first, end)``, chosen once per job."""
    stored = journal.get("ray_partitions")
    if stored:
        return [(int(a), int(b)) for a, b in stored]
    total = journal.ingested
    count = max(1, min(count, total))
    size = -(-total // count)
    bounds = [(a, min(a + size, total)) for a in range(0, total, size)] or [(0, 0)]
    journal.set("ray_partitions", bounds)
    return bounds


def _prepare_partition(journal: Journal, path: Path, first: int, end: int) -> None:
    """The partition's journal holds its rows under their job-wide indexes."""
    part = Journal(path)
    try:
        if part.ingest_done:
            return
        start = max(first, part.ingested)
        part.ingest(((key, data) for _, key, data, _ in journal.rows_between(start, end - 1)), start=start)
    finally:
        part.close()


def _budgets(journal: Journal, spec: JobSpec, paths: list[Path]) -> list[float | None]:
    if spec.max_cost is None:
        return [None] * len(paths)
    spent = []
    for path in paths:
        part = Journal(path)
        try:
            spent.append(part.totals()["cost"])
        finally:
            part.close()
    left = max(0.0, spec.max_cost - sum(spent)) / len(paths)
    return [s + left for s in spent]


def _forward_cancel(paths: list[Path]) -> None:
    for path in paths:
        part = Journal(path)
        try:
            part.set("cancel", True)
        finally:
            part.close()


def _overall(results: list[dict[str, Any]], stats: Stats) -> tuple[str, str]:
    for status in ("error", "budget", "cancelled"):
        for result in results:
            if result["status"] == status:
                return status, result["message"]
    return ("completed" if stats.finished >= stats.total else "stopped"), ""


class _Merger:
    """Copies partitions' final rows into the job's journal and extends the output from it."""

    def __init__(self, journal: Journal, spec: JobSpec, bounds: list[tuple[int, int]], paths: list[Path]) -> None:
        self.journal, self.spec, self.bounds = journal, spec, bounds
        self.parts = [Journal(p) for p in paths]
        written, _ = journal.written
        # Where each partition's contiguous final rows are known to be copied up to.
        self.marks = [max(first, min(written, end)) for first, end in bounds]
        self.writer = None
        if spec.output and spec.output_format != "parquet":
            self.writer = open_output(journal, spec)

    def merge(self, stats: Stats) -> None:
        for k, (part, (_, end)) in enumerate(zip(self.parts, self.bounds)):
            while self.marks[k] < end:
                upto = self.journal.copy_final_rows(part, self.marks[k])
                if upto == self.marks[k]:
                    break
                self.marks[k] = upto
        start, size = self.journal.written
        while True:
            batch = self.journal.final_rows(start, 2000)
            if not batch:
                break
            if self.writer is not None:
                self.writer.write([record_for(self.spec, *row) for row in batch])
                size = self.writer.flush()
            start = batch[-1][0] + 1
            self.journal.set_written(start, size)
        totals = [p.totals() for p in self.parts]
        stats.total = self.journal.ingested
        for name in ("done", "failed", "cached", "input_tokens", "output_tokens", "cost", "unknown_cost_rows"):
            setattr(stats, name, sum(t[name] for t in totals))
        stats.written = start

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        for part in self.parts:
            part.close()
