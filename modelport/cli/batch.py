"""`modelport batch`: run a prompt over a file of rows, resumably, and manage the jobs."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Any

import click

from .common import friendly_errors, option_option, output_option, print_rows

# Exit status of `batch run` and `batch resume` (documented in their --help): 0 the job
# reached its end (some rows may have failed: see the summary), 1 it failed (a fatal error,
# or every row failed), 2 bad arguments, 3 it stopped before its end and can be resumed
# (budget, cancel), 128+N stopped by signal N (130 Ctrl-C, 143 SIGTERM), resumable too.
EXIT_FAILED = 1
EXIT_INCOMPLETE = 3


@click.group()
def batch() -> None:
    """Run prompts over many rows at the provider's rate limit, resumably and exactly once.

    \b
      modelport batch run reviews.csv -m openai/gpt-4o-mini --prompt "Sentiment of: {text}"
      modelport batch run requests.jsonl -m local/smollm2          # OpenAI batch-format input
      modelport batch list
      modelport batch resume JOB --max-cost 5
    """


def _job_path(job: str) -> Path:
    from ..batch.spec import journal_path

    path = Path(job)
    if path.suffix == ".db" and path.exists():
        return path
    path = journal_path(job)
    if not path.exists():
        raise click.ClickException(f"no batch job {job!r}; see `modelport batch list`")
    return path


@batch.command("run")
@click.argument("input", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-m", "--model", help="provider/model; for OpenAI batch-format input, overrides each line's model")
@click.option("--prompt", help='template filled from each row\'s columns, e.g. "Summarise: {text}"')
@click.option("--system", help="system prompt for every row")
@click.option("--schema", "schema_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="JSON Schema file: structured output, parsed per row")
@output_option("output file (.jsonl, .csv, .parquet); default next to INPUT: INPUT.results.csv for a CSV, else INPUT.results.jsonl",
              type=click.Path(dir_okay=False, path_type=Path))
@click.option("--concurrency", type=click.IntRange(1), default=32, show_default=True, help="requests in flight at most")
@click.option("--rpm", type=click.FloatRange(min=0, min_open=True), help="requests per minute to stay under (else learned from the provider)")
@click.option("--tpm", type=click.FloatRange(min=0, min_open=True), help="tokens per minute to stay under")
@click.option("--max-cost", type=click.FloatRange(min=0), help="stop cleanly once this many USD are spent; resume with a higher one")
@click.option("--dry-run", is_flag=True, help="estimate tokens and cost; send nothing")
@click.option("--cache", is_flag=True, help="answer identical requests from the local response cache")
@click.option("--no-cache-prefix", is_flag=True,
              help="do not mark the prefix every row shares (tools, system prompt, the template's start) for the provider's prompt cache")
@click.option("--mode", type=click.Choice(["live", "native"]), default="live", show_default=True, help="native: the provider's own batch API (half price, slower)")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True, help="ray: spread the rows over a Ray cluster")
@option_option("request parameter, repeatable, e.g. -o temperature=0 -o max_tokens=200")
@click.option("--format", "input_format", type=click.Choice(["jsonl", "csv", "parquet", "openai"]), help="input format (default: from the file)")
@click.option("--max-retries", type=click.IntRange(0), default=6, show_default=True)
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=120.0, show_default=True, help="seconds per request")
@click.option("--job-id", help="name for the job (default: generated)")
@click.option("--quiet", is_flag=True, help="no progress bar")
@click.option("--json", "as_json", is_flag=True, help="print the final summary as JSON")
@friendly_errors
def run(input: Path, model: str | None, prompt: str | None, system: str | None, schema_file: Path | None, output: Path | None,
        concurrency: int, rpm: float | None, tpm: float | None, max_cost: float | None, dry_run: bool, cache: bool,
        no_cache_prefix: bool, mode: str, engine: str, options: tuple[str, ...], input_format: str | None, max_retries: int, timeout: float, job_id: str | None,
        quiet: bool, as_json: bool) -> None:
    """Run a job over INPUT (JSONL, CSV, Parquet, or OpenAI batch-format JSONL).

    \b
      modelport batch run reviews.csv -m openai/gpt-4o-mini --prompt "Sentiment of: {text}"
      modelport batch run reviews.csv -m local/smollm2 --prompt "{text}" -o max_tokens=5 --output out.jsonl

    The template's {fields} are checked against the input's columns, and the model and its
    key, before the job is created.

    \b
    Exit status:
      0    the job reached its end (rows that failed are counted in the summary)
      1    it failed: a fatal error (bad key, unknown model), or every row failed
      2    bad arguments; nothing was created
      3    it stopped before its end and can be resumed: --max-cost reached, or cancelled
      130  stopped by Ctrl-C (143: SIGTERM); resumable
    """
    from ..batch.readers import detect_format
    from ..batch.spec import JobSpec, journal_path, new_job_id
    from ..batch.writers import output_format
    from .common import parse_options

    try:
        fmt = input_format or detect_format(input)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="INPUT") from None
    if fmt != "openai" and not model:
        raise click.UsageError("give the model with -m provider/model")
    output = output or input.with_name(input.stem + ".results" + (".jsonl" if input.suffix.lower() != ".csv" else ".csv"))
    schema = json.loads(schema_file.read_text(encoding="utf-8")) if schema_file else None
    spec = JobSpec(
        job_id=job_id or new_job_id(), model=model, prompt=prompt, system=system, params=parse_options(options), schema=schema,
        input=str(input.resolve()), input_format=fmt, output=str(output.resolve()), output_format=output_format(output, fmt),
        concurrency=concurrency, rpm=rpm, tpm=tpm, max_cost=max_cost, cache=cache, max_retries=max_retries, timeout=timeout,
        mode=mode, cache_prefix=not no_cache_prefix,
    )
    if dry_run:
        _dry_run(spec, as_json)
        return
    path = journal_path(spec.job_id)
    if path.exists():
        raise click.ClickException(f"job {spec.job_id} exists already; `modelport batch resume {spec.job_id}` continues it")
    _preflight(spec, engine)
    from ..batch import open_job

    journal, spec = open_job(path, spec)
    click.echo(f"job {spec.job_id}: {input.name} -> {output}", err=True)
    _run(journal, spec, engine=engine, quiet=quiet, as_json=as_json)


@batch.command("resume")
@click.argument("job")
@click.option("--max-cost", type=click.FloatRange(min=0), help="a new budget in USD")
@click.option("--concurrency", type=click.IntRange(1))
@click.option("--rpm", type=click.FloatRange(min=0, min_open=True))
@click.option("--tpm", type=click.FloatRange(min=0, min_open=True))
@click.option("--retry-failed", is_flag=True, help="send the rows that failed again (the output is rebuilt)")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True)
@click.option("--quiet", is_flag=True)
@click.option("--json", "as_json", is_flag=True)
@friendly_errors
def resume(job: str, max_cost: float | None, concurrency: int | None, rpm: float | None, tpm: float | None, retry_failed: bool,
           engine: str, quiet: bool, as_json: bool) -> None:
    """Continue JOB: rows already answered are never sent again. Exits as `batch run` does."""
    from ..batch import open_job

    journal, spec = open_job(_job_path(job), max_cost=max_cost, concurrency=concurrency, rpm=rpm, tpm=tpm)
    if retry_failed and engine == "ray":
        journal.close()
        raise click.UsageError("--retry-failed runs with --engine local")
    try:
        _preflight(spec, engine, new=False)
    except BaseException:
        journal.close()
        raise
    if retry_failed:
        reopened = journal.reopen_failed()
        if reopened:
            # Failed rows are already in the output: rebuild it from the journal, in order.
            journal.set_written(0, 0)
        click.echo(f"{reopened} failed rows will be sent again", err=True)
    _run(journal, spec, engine=engine, quiet=quiet, as_json=as_json)


def _preflight(spec: Any, engine: str, *, new: bool = True) -> None:
    """Fail before the job is created or anything is sent if it cannot run to its end: a
    missing extra, a template the columns cannot fill, an unknown model, a missing key.
    ``new``: a job not yet ingested, whose input file is read for its first row."""
    from ..batch import make_client
    from ..batch.preflight import check, check_file_job

    check(spec, engine=engine)  # the extras first: reading a Parquet input needs one
    client = make_client(spec)
    first = _first_row(spec) if new else None
    check(spec, engine=engine, client=client, first_row=first)
    check_file_job(spec, client, first)


def _first_row(spec: Any) -> Any:
    from ..batch.readers import read_rows

    try:
        return next(iter(read_rows(spec.input, spec.input_format)), (None, None))[1]
    except ValueError as exc:  # a line that is not JSON, an OpenAI batch line without custom_id
        raise click.BadParameter(str(exc), param_hint="INPUT") from None


def _run(journal: Any, spec: Any, *, engine: str, quiet: bool, as_json: bool) -> None:
    from rich.console import Console

    from ..batch import arun
    from ..batch.engine import STOP_GRACE
    from ..batch.progress import ProgressReporter, summary_table

    reporter = None if quiet or as_json else ProgressReporter(description=spec.job_id)
    signals: list[int] = []

    async def main() -> Any:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()

        def on_signal(signum: int) -> None:
            # The first SIGTERM or Ctrl-C stops sending and lets the rows in flight finish and
            # be journaled (bounded); a second one stops at once. Either way the job is resumable.
            signals.append(signum)
            if stop.is_set():
                assert task is not None
                task.cancel()
                return
            stop.set()
            click.echo(f"\nstopping: waiting up to {STOP_GRACE:.0f}s for the rows in flight (again to stop now)", err=True)

        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, on_signal, signum)
        if engine == "ray":
            from ..batch import ray_engine

            return await ray_engine.run(journal, spec, on_progress=reporter.update if reporter else None, stop=stop, quiet=quiet)
        return await arun(journal, spec, on_progress=reporter.update if reporter else None, stop=stop)

    try:
        stats = asyncio.run(main())
    except (KeyboardInterrupt, asyncio.CancelledError):
        click.echo(f"\ninterrupted; `modelport batch resume {spec.job_id}` continues", err=True)
        sys.exit(128 + (signals[-1] if signals else signal.SIGINT))
    finally:
        if reporter is not None:
            reporter.close()
        journal.close()
    info = _describe(journal.path)
    status = _outcome(stats.status, stats.done, stats.failed)
    if as_json:
        # The shape of `batch status --json`, plus what this run did.
        run_counts = {k: v for k, v in stats.as_dict().items() if k in ("sent", "retries", "rate_limited", "elapsed")}
        summary = {**info, "status": status, "message": stats.message, **run_counts}
        if status in ("error", "failed"):
            # The error shape every --json command uses, beside the job's numbers.
            message = stats.message if status == "error" else f"every row failed: {info['common_error']['message']}"
            summary["error"] = {"type": "batch_" + status, "message": message,
                                "hint": f"fix the cause, then `modelport batch resume {spec.job_id}`"
                                        + (" --retry-failed" if status == "failed" else "")}
        click.echo(json.dumps(summary))
    else:
        stats.status = status
        Console(stderr=True).print(summary_table(stats, title=f"job {spec.job_id}"))
        if info["common_error"]:
            click.secho(f"{info['common_error']['rows']} of {stats.failed} failed rows: {info['common_error']['message']}", fg="red", err=True)
        if status in ("budget", "cancelled", "stopped", "interrupted"):
            if info["written"] < info["done"]:
                # The output is in input order, so it stops at the first row still open.
                click.echo(f"{info['written']} rows are in {info['output']} so far; the other {info['done'] - info['written']} "
                           f"answered rows are kept in the job's journal and written there on resume", err=True)
            click.echo(f"resume with: modelport batch resume {spec.job_id}" + (" --max-cost <more>" if status == "budget" else ""), err=True)
    if status == "error":
        click.secho(f"Error: {stats.message}", fg="red", err=True)
        sys.exit(EXIT_FAILED)
    if status == "failed":
        click.secho(f"every row failed; fix the cause above, then `modelport batch resume {spec.job_id} --retry-failed`",
                    fg="red", err=True)
        sys.exit(EXIT_FAILED)
    if status == "interrupted" and signals:
        sys.exit(128 + signals[0])
    if status != "completed":
        sys.exit(EXIT_INCOMPLETE)


def _outcome(status: str, done: int, failed: int) -> str:
    """The job's status for its user: a job that reached its end with no row answered has
    "failed", not "completed" (the engine and the gateway's Batches API, which follows
    OpenAI's, still call it completed, with every row counted as failed)."""
    return "failed" if status == "completed" and failed and not done else status


def _dry_run(spec: Any, as_json: bool) -> None:
    from ..batch import estimate, make_client
    from ..batch.preflight import check_prompt
    from ..batch.readers import read_rows

    if spec.input_format != "openai":
        check_prompt(spec, _first_row(spec))
    result = estimate(spec, read_rows(spec.input, spec.input_format), client=make_client(spec))
    if as_json:
        click.echo(json.dumps(result))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="dry run: nothing was sent", show_header=False)
    table.add_row("rows", f"{result['rows']:,}" + (f" ({result['unrenderable_rows']} cannot be built)" if result["unrenderable_rows"] else ""))
    if result["unrenderable_rows"]:
        table.add_row("why", result["unrenderable_reason"])
    table.add_row("input tokens", f"~{result['input_tokens']:,} (from characters)")
    table.add_row("output tokens", f"~{result['output_tokens']:,} ({result['output_estimate']})")
    cost = result["cost"]
    table.add_row("cost", "unknown: no price for " + ", ".join(result["unknown_price"]) if cost is None else f"~${cost:.4f}")
    if result["cached_prefix_tokens"]:
        # The prefix every row shares, written to the provider's cache once and read after.
        table.add_row("shared prefix", f"~{result['cached_prefix_tokens']:,} tokens per row, cached")
        uncached = result["cost_without_cache"]
        table.add_row("cost without the cache", "unknown" if uncached is None else f"~${uncached:.4f}")
    Console().print(table)


@batch.command("status")
@click.argument("job", required=False)
@click.option("--json", "as_json", is_flag=True, help="print as JSON, the same shape as `batch run --json`")
@friendly_errors
def status(job: str | None, as_json: bool) -> None:
    """Where JOB stands (default: the most recent job)."""
    path = _job_path(job) if job else _latest()
    info = _describe(path)
    if as_json:
        click.echo(json.dumps(info))
        return
    common = info["common_error"]
    shown = {**info, "tokens": f"{info['input_tokens']:,} in, {info['output_tokens']:,} out", "spend": _spend(info),
             "most common error": f"{common['message']} ({common['rows']} rows)" if common else None}
    rows = [(key, str(shown[key])) for key in ("status", "model", "input", "output", "rows", "done", "failed", "most common error",
                                               "pending", "inflight", "written", "tokens", "spend", "message")
            if shown.get(key) not in (None, "")]
    print_rows(("field", "value"), rows, title=f"job {info['job']}")


@batch.command("cancel")
@click.argument("job")
@friendly_errors
def cancel(job: str) -> None:
    """Stop JOB: a running job stops sending, finishes what is in flight, and can be resumed."""
    from ..batch.journal import Journal

    journal = Journal(_job_path(job))
    try:
        journal.set("cancel", True)
        if journal.status != "running":
            journal.set("status", "cancelled")
        for remote in journal.remotes():
            if remote["status"] not in ("ended", "collected"):
                click.echo(f"note: provider batch {remote['remote_id']} keeps running remotely until cancelled with the provider", err=True)
        running = journal.status == "running"
    finally:
        journal.close()
    if running:
        # The job's process sees the flag between rows; those in flight are still answered.
        click.echo(f"job {job} cancelling: it sends nothing more and stops once the rows in flight are answered; "
                   f"`modelport batch resume {job}` continues it", err=True)
    else:
        click.echo(f"job {job} cancelled; `modelport batch resume {job}` continues it", err=True)


@batch.command("list")
@click.option("--json", "as_json", is_flag=True)
@friendly_errors
def list_jobs(as_json: bool) -> None:
    """Every batch job on this machine, newest first."""
    from ..batch.spec import jobs_dir

    paths = sorted(jobs_dir().glob("*.db"), key=lambda p: p.stat().st_mtime, reverse=True) if jobs_dir().exists() else []
    infos = [_describe(p) for p in paths]
    if as_json:
        click.echo(json.dumps(infos))
        return
    if not infos:
        click.echo("no batch jobs yet; start one with `modelport batch run INPUT -m MODEL`", err=True)
        return
    rows = [(info["job"], info["status"], str(info["model"] or "(per line)"), str(info["rows"]), str(info["done"]),
             str(info["failed"]), _spend(info), Path(info["input"] or "-").name) for info in infos]
    print_rows(("job", "status", "model", "rows", "done", "failed", "spend", "input"), rows, whole=("job", "model"))


def _latest() -> Path:
    from ..batch.spec import jobs_dir

    paths = sorted(jobs_dir().glob("*.db"), key=lambda p: p.stat().st_mtime) if jobs_dir().exists() else []
    if not paths:
        raise click.ClickException("no batch jobs yet")
    return paths[-1]


def _describe(path: Path) -> dict[str, Any]:
    """The job's machine-readable state: counts, tokens and spend as numbers; ``cost`` is
    the known spend, null while no answered row has a known price (``unknown_cost_rows``
    counts the rows whose price is unknown)."""
    from ..batch.journal import Journal

    journal = Journal(path)
    try:
        spec = journal.get("spec") or {}
        totals = journal.totals()
        unknown = totals["unknown_cost_rows"]
        return {
            "job": spec.get("job_id", path.stem), "status": _outcome(journal.status, totals["done"], totals["failed"]), "message": journal.get("message", ""),
            "model": spec.get("model"), "input": spec.get("input"), "output": spec.get("output"), "mode": spec.get("mode"),
            "rows": totals["rows"], "done": totals["done"], "failed": totals["failed"], "pending": totals["pending"],
            "inflight": totals["inflight"], "written": journal.written[0], "cached": totals["cached"],
            "input_tokens": totals["input_tokens"], "output_tokens": totals["output_tokens"],
            "cost": None if unknown and unknown >= totals["done"] else totals["cost"], "unknown_cost_rows": unknown,
            "journal": str(path), "common_error": _common_error(journal) if totals["failed"] else None,
        }
    finally:
        journal.close()


def _common_error(journal: Any) -> dict[str, Any] | None:
    common = journal.common_error()
    if common is None:
        return None
    error, rows = common
    message = error.get("message") if isinstance(error, dict) else None
    return {"message": message or str(error), "type": error.get("type") if isinstance(error, dict) else None, "rows": rows}


def _spend(info: dict[str, Any]) -> str:
    from ..batch.progress import spend_text

    return spend_text(info["cost"] or 0.0, info["unknown_cost_rows"], info["done"])
