"""Progress bar and final summary for batch jobs (rich, written to stderr)."""

from __future__ import annotations

import time
from typing import Any

from .engine import Stats


def spend_text(cost: float, unknown_rows: int, answered: int) -> str:
    """Known spend, and honesty about rows whose price is unknown (never counted as zero)."""
    if unknown_rows and unknown_rows >= answered:
        return "unknown"
    text = f"${cost:.4f}"
    return f"{text} + unknown ({unknown_rows} rows)" if unknown_rows else text


def rates(stats: Stats) -> tuple[float, float, float | None]:
    """rows/s and tokens/s of this run, and the ETA in seconds (None while unknown)."""
    elapsed = max(1e-6, time.monotonic() - stats.started)
    rows = stats.finished - stats.finished_at_start
    row_rate = rows / elapsed
    token_rate = (stats.input_tokens + stats.output_tokens) / elapsed if rows else 0.0
    left = stats.total - stats.finished
    eta = left / row_rate if row_rate > 0 else None
    return row_rate, token_rate, eta


class ProgressReporter:
    def __init__(self, console: Any = None, description: str = "batch") -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self.console = console or Console(stderr=True)
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rows_s]} rows/s  {task.fields[tok_s]} tok/s  errors {task.fields[errors]}  "
                       "429s {task.fields[limited]}  spend {task.fields[spend]}  ETA {task.fields[eta]}  {task.fields[note]}"),
            console=self.console,
            transient=False,
        )
        self.task = self.progress.add_task(description, total=None, rows_s="-", tok_s="-", errors=0, limited=0, spend="$0", eta="-", note="")
        self.progress.start()
        self._last = 0.0

    def update(self, stats: Stats) -> None:
        now = time.monotonic()
        if now - self._last < 0.1 and stats.status == "running":
            return
        self._last = now
        row_rate, token_rate, eta = rates(stats)
        self.progress.update(
            self.task, total=stats.total or None, completed=stats.finished, rows_s=f"{row_rate:,.1f}", tok_s=f"{token_rate:,.0f}",
            errors=stats.failed, limited=stats.rate_limited, spend=spend_text(stats.cost, stats.unknown_cost_rows, stats.done),
            eta="-" if eta is None else _duration(eta),
            # What a native job's provider batches are doing while no row is final yet.
            note=stats.message if stats.status == "running" else "",
        )

    def close(self) -> None:
        self.progress.stop()


def summary_table(stats: Stats, title: str = "batch summary") -> Any:
    from rich.table import Table

    row_rate, token_rate, _ = rates(stats)
    table = Table(title=title, show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    for name, value in (
        ("status", stats.status + (f" ({stats.message})" if stats.message else "")),
        ("rows", f"{stats.finished:,} of {stats.total:,} final"),
        ("answered", f"{stats.done:,}" + (f" ({stats.cached:,} from cache)" if stats.cached else "")),
        ("failed", f"{stats.failed:,}"),
        ("tokens", f"{stats.input_tokens:,} in, {stats.output_tokens:,} out"),
        ("spend", spend_text(stats.cost, stats.unknown_cost_rows, stats.done)),
        ("throughput", f"{row_rate:,.1f} rows/s, {token_rate:,.0f} tokens/s"),
        ("rate limited", f"{stats.rate_limited:,} (429s), {stats.retries:,} retries"),
        ("elapsed", _duration(time.monotonic() - stats.started)),
    ):
        table.add_row(name, value)
    return table


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
