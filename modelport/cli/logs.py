"""`modelport logs`, `modelport usage` and `modelport cache`: what was asked, what it cost,
and the response cache."""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click

from .common import friendly_errors, output_option

if TYPE_CHECKING:
    from ..calllog import CallLog, LoggedCall

MODEL_FILTER_HELP = "Only calls to this model: its id (gpt-4o-mini) or provider/model; * matches anything (gpt-4o*)."
SINCE_HELP = "Only calls newer than this: an age (30m, 2h, 3d, 1w) or a date (2025-06-01)."
SEARCH_HELP = "Only calls whose prompt or response contains all these words."

CSV_COLUMNS = (
    "id", "created_at", "source", "provider", "model", "conversation_id", "key_name", "finish_reason",
    "input_tokens", "output_tokens", "cached_tokens", "cache_write_tokens", "reasoning_tokens",
    "cost", "latency", "cached", "stream", "error_kind", "error", "prompt", "response_text",
)


def _open_log() -> CallLog:
    from ..calllog import CallLog

    return CallLog()


def _query(log: CallLog, **filters: Any) -> list[LoggedCall]:
    """Run a query, turning a bad --since or empty --search into a usage error."""
    try:
        return log.query(**filters)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


def _local_time(created_at: str) -> str:
    return datetime.fromisoformat(created_at.replace("Z", "+00:00")).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _money(cost: float | None) -> str:
    if cost is None:
        return "?"
    if cost == 0:
        return "$0"
    return f"${cost:.4f}" if cost >= 0.01 else f"${cost:.6f}"


def _one_line(text: str | None, width: int) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _cost_cell(call: LoggedCall) -> str:
    if call.cached:
        return "cached"
    if call.error is not None:
        return "-"
    return _money(call.cost)


# ---------------------------------------------------------------------------------------
# modelport logs


@click.group(invoke_without_command=True)
@click.option("-n", "--count", default=20, show_default=True, help="How many recent calls to show (0 shows all).")
@click.option("-m", "--model", help=MODEL_FILTER_HELP)
@click.option("--since", help=SINCE_HELP)
@click.option("-q", "--search", help=SEARCH_HELP)
@click.option("--cid", help="Only the calls of this conversation.")
@click.option("--json", "as_json", is_flag=True, help="Print the calls as JSON, full request and response included.")
@click.pass_context
@friendly_errors
def logs(ctx: click.Context, count: int, model: str | None, since: str | None, search: str | None,
         cid: str | None, as_json: bool) -> None:
    """List recent model calls from the log, oldest first, newest at the bottom.

    Every call made through the CLI and the gateway is logged (the SDK logs when asked to),
    with its prompt, answer, model, tokens, cost and time. MODELPORT_LOG=0 turns logging off.

    \b
    Examples:
      modelport logs                     the last 20 calls
      modelport logs -n 5 -m gpt-4o-mini
      modelport logs --since 2h -q "rest api"
      modelport logs show                the last call in full
      modelport logs export -o calls.csv
      modelport logs prune --max-age-days 30

    The log is a plain SQLite file (see `modelport logs path`): open it with sqlite3,
    datasette or pandas.
    """
    if ctx.invoked_subcommand is not None:
        return
    calls = _query(_open_log(), limit=count or None, model=model, since=since, search=search, conversation_id=cid)
    calls.reverse()
    if as_json:
        click.echo(json.dumps([c.to_dict() for c in calls], ensure_ascii=False, indent=2))
        return
    if not calls:
        click.echo("No calls logged" + (" match these filters." if model or since or search or cid else " yet."), err=True)
        return
    from rich.console import Console
    from rich.text import Text

    # Two lines per call instead of a table: ids stay whole and copyable at any width.
    console = Console()
    for call in calls:
        head = Text(call.id, style="cyan")
        head.append(f"  {_local_time(call.created_at)[:16]}  ")
        head.append(f"{call.provider}/{call.model}", style="bold")
        console.print(head, overflow="fold")
        line = Text(f"  {call.usage.input_tokens}→{call.usage.output_tokens} tokens  {_cost_cell(call)}")
        if call.latency is not None:
            line.append(f"  {call.latency:.2f}s")
        line.append("  " + _one_line(call.prompt, 200))
        line.append(" → ", style="dim")
        if call.error is not None:
            line.append(_one_line(f"{call.error_kind}: {call.error}", 200), style="red")
        else:
            line.append(_one_line(call.response_text, 200))
        console.print(line, no_wrap=True, overflow="ellipsis")


@logs.command()
@click.argument("call_id", metavar="[ID]", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the call as JSON.")
@friendly_errors
def show(call_id: str | None, as_json: bool) -> None:
    """Show one call in full: parameters, messages, answer, usage and cost.

    ID is an id from `modelport logs`; without it, the most recent call is shown.
    """
    log = _open_log()
    call: LoggedCall | None
    if call_id is None:
        found = log.query(limit=1)
        if not found:
            raise click.ClickException("no calls have been logged yet")
        call = found[0]
    else:
        call = log.get(call_id)
        if call is None:
            raise click.ClickException(f"no call with id {call_id!r} in the log (`modelport logs` lists ids)")
    if as_json:
        click.echo(json.dumps(call.to_dict(), ensure_ascii=False, indent=2))
        return
    _print_call(call)


def _print_call(call: LoggedCall) -> None:
    from rich.console import Console
    from rich.markup import escape

    from ..serialize import request_to_dict

    console = Console()
    usage = call.usage
    facts = [
        ("id", call.id),
        ("time", f"{_local_time(call.created_at)} (via {call.source})"),
        ("model", f"{call.provider}/{call.model}"),
        ("conversation", call.conversation_id),
        ("gateway key", call.key_name),
        ("tokens", f"{usage.input_tokens} in ({usage.cached_tokens} cached), {usage.output_tokens} out "
                   f"({usage.reasoning_tokens} reasoning)"),
        ("cost", "served from the cache" if call.cached else _money(call.cost) + (" (price unknown)" if call.cost is None else "")),
        ("latency", None if call.latency is None else f"{call.latency:.3f}s" + (", streamed" if call.stream else "")),
        ("finish", call.response.finish_reason if call.response is not None else None),
    ]
    for label, value in facts:
        if value is not None:
            console.print(f"[bold]{label:>13}[/bold]  {escape(str(value))}")
    params = {k: v for k, v in request_to_dict(call.request).items() if k not in ("model", "messages", "tools", "stream")}
    if params:
        console.print(f"[bold]{'parameters':>13}[/bold]  {escape(json.dumps(params, ensure_ascii=False))}")
    if call.request.tools:
        console.print(f"[bold]{'tools':>13}[/bold]  {escape(', '.join(t.name for t in call.request.tools))}")
    for message in call.request.messages:
        _print_message(console, message)
    if call.response is not None:
        _print_message(console, call.response.message)
    if call.error is not None:
        console.print(f"\n[bold red]error ({escape(call.error_kind or 'error')})[/bold red]\n{escape(call.error)}")


def _print_message(console: Any, message: Any) -> None:
    from rich.markup import escape

    from ..types import ImagePart, ReasoningPart, TextPart

    title = message.role + (f" ({message.name})" if message.name else "")
    if message.tool_call_id:
        title += f" → call {message.tool_call_id}" + (" [failed]" if message.is_error else "")
    console.print(f"\n[bold magenta]{escape(title)}[/bold magenta]")
    for part in message.content:
        if isinstance(part, ReasoningPart):
            console.print(escape(part.text), style="dim italic")
        elif isinstance(part, TextPart):
            console.print(escape(part.text))
        elif isinstance(part, ImagePart):
            console.print(f"[image: {escape(part.url or (part.media_type or 'inline data'))}]", style="dim")
    for call in message.tool_calls:
        console.print(f"[yellow]tool call {escape(call.name)}[/yellow] ({escape(call.id)}): {escape(call.arguments)}")


@logs.command()
def path() -> None:
    """Print where the log file is (it need not exist yet).

    Set MODELPORT_LOG_PATH to keep the log somewhere else.
    """
    from ..calllog import default_log_path

    click.echo(str(default_log_path()))


@logs.command()
@click.option("--max-age-days", type=click.FloatRange(min=0, min_open=True), metavar="DAYS",
              help="Remove calls older than this many days. Default: [log] max_age_days in the config.")
@click.option("--max-mb", type=click.FloatRange(min=0, min_open=True), metavar="MB",
              help="Then remove the oldest calls until the log's calls take at most this many MB. Default: [log] max_mb.")
@click.option("--vacuum", is_flag=True, help="Also shrink the file to what it holds (rewrites it: slow on a big log).")
@friendly_errors
def prune(max_age_days: float | None, max_mb: float | None, vacuum: bool) -> None:
    """Remove old calls from the log, oldest first.

    A gateway does this by itself every few minutes when [log] max_age_days or max_mb is
    set in the config; this command does it now, with those settings unless told others.

    \b
    Examples:
      modelport logs prune --max-age-days 30    keep the last 30 days
      modelport logs prune --max-mb 500         keep about the newest 500 MB of calls
      modelport logs prune --vacuum             the config's bounds, then shrink the file

    MB counts the space the calls (and their search index) take inside the file. The space
    of removed calls is reused by new ones, so the file stops growing but keeps its size;
    --vacuum gives that space back to the disk.
    """
    from dataclasses import replace

    from ..calllog import Retention, default_log_path

    retention = Retention.from_config()
    retention = replace(retention, max_age_days=max_age_days or retention.max_age_days, max_mb=max_mb or retention.max_mb)
    if not retention.bounded and not vacuum:
        raise click.UsageError("nothing to prune by: give --max-age-days or --max-mb, or set max_age_days or max_mb under [log] "
                               "in the config")
    path = default_log_path()
    if not path.exists():
        click.echo(f"No call log yet at {path}: nothing to prune.", err=True)
        return
    done = _open_log().prune(retention, vacuum=vacuum)
    click.echo(f"Removed {done.removed} call(s) from {path}: its calls took {done.mb_before:.1f} MB, now {done.mb_after:.1f} MB "
               f"(the file is {done.file_mb:.1f} MB" + (")." if vacuum else "; --vacuum shrinks it)."))


@logs.command()
@output_option("Where to write; - is standard output.", default="-", show_default=True)
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]),
              help="jsonl (one call per line, full request and response) or csv (one row per call, "
                   "flat columns). Default: from the file name, else jsonl.")
@click.option("-n", "--count", default=0, help="Only the most recent N calls (default: all).")
@click.option("-m", "--model", help=MODEL_FILTER_HELP)
@click.option("--since", help=SINCE_HELP)
@click.option("-q", "--search", help=SEARCH_HELP)
@friendly_errors
def export(output: str, fmt: str | None, count: int, model: str | None, since: str | None, search: str | None) -> None:
    """Write logged calls to a JSONL or CSV file, oldest first.

    \b
    Examples:
      modelport logs export --output calls.jsonl
      modelport logs export --output week.csv --since 7d
      modelport logs export | jq .cost
    """
    fmt = fmt or ("csv" if output.lower().endswith(".csv") else "jsonl")
    calls = _query(_open_log(), limit=count or None, model=model, since=since, search=search)
    calls.reverse()
    with click.open_file(output, "w", encoding="utf-8") as out:
        if fmt == "jsonl":
            for call in calls:
                out.write(json.dumps(call.to_dict(), ensure_ascii=False) + "\n")
        else:
            import csv

            writer = csv.writer(out, lineterminator="\n")
            writer.writerow(CSV_COLUMNS)
            for call in calls:
                flat = call.to_dict()
                flat.update(flat.pop("usage"))
                flat["finish_reason"] = call.response.finish_reason if call.response is not None else None
                writer.writerow(["" if flat[c] is None else flat[c] for c in CSV_COLUMNS])
    if output != "-":
        click.echo(f"Exported {len(calls)} call(s) to {output}", err=True)


# ---------------------------------------------------------------------------------------
# modelport usage


@click.command()
@click.option("--by", type=click.Choice(["day", "model", "provider", "key", "source"]), default="day", show_default=True,
              help="Group by day, model, provider, gateway key name, or source (sdk, cli, batch, gateway).")
@click.option("--since", default="30d", show_default=True, help="Only calls newer than this: an age (2h, 3d, 1w), a date (2025-06-01), or 'all'.")
@click.option("-m", "--model", help=MODEL_FILTER_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the totals as JSON.")
@friendly_errors
def usage(by: str, since: str, model: str | None, as_json: bool) -> None:
    """Show tokens and cost from the call log, grouped by day, model, provider or key.

    Cost counts only calls that were billed: failed calls and cache hits are free. Calls
    to a model whose price modelport does not know are counted as "unpriced" and left out
    of the cost; add their prices under [prices] in the config file.

    \b
    Examples:
      modelport usage                    the last 30 days, day by day
      modelport usage --by model --since 7d
      modelport usage --by key --json    per gateway key, for a script
    """
    bound = None if since.strip().lower() == "all" else since
    try:
        rows = _open_log().usage(by, since=bound, model=model)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    fields = ("calls", "errors", "cache_hits", "input_tokens", "output_tokens", "cached_tokens", "cache_write_tokens",
              "reasoning_tokens", "cost", "unpriced_calls", "cache_saved")
    total = {name: sum(getattr(row, name) for row in rows) for name in fields}
    if as_json:
        click.echo(json.dumps({"by": by, "since": bound, "rows": [r.to_dict() for r in rows], "total": total}, indent=2))
        return
    if not rows:
        click.echo(f"No calls logged{'' if bound is None else ' since ' + bound}.", err=True)
        return
    from rich import box
    from rich.bar import Bar
    from rich.console import Console
    from rich.table import Table

    # Chart cost when any is known; a log of free local models charts tokens instead.
    by_cost = total["cost"] > 0

    def measure(row: Any) -> float:
        return row.cost if by_cost else row.input_tokens + row.output_tokens

    top = max(measure(row) for row in rows) or 1
    title = f"usage by {by}" + ("" if bound is None else f", since {bound}")
    table = Table(title=title, show_footer=True, box=box.SIMPLE_HEAD, pad_edge=False)
    # Columns that would only hold zeros are left out so the table fits a narrow terminal.
    columns: list[tuple[str, Any]] = [("calls", lambda r: str(r.calls))]
    if total["errors"]:
        columns.append(("errors", lambda r: str(r.errors)))
    if total["cache_hits"]:
        columns.append(("cache hits", lambda r: str(r.cache_hits)))
    columns.append(("tokens in", lambda r: f"{r.input_tokens:,}"))
    if total["cached_tokens"] or total["cache_write_tokens"]:
        # Prompt caching: tokens read from the provider's cache, and what that saved.
        columns.append(("cached in", lambda r: f"{r.cached_tokens:,}"))
        columns.append(("cache saved", lambda r: _money(r.cache_saved)))
    columns += [
        ("tokens out", lambda r: f"{r.output_tokens:,}"),
        ("cost", lambda r: _cost_with_unpriced(r.cost, r.unpriced_calls)),
    ]
    table.add_column(by, footer="total", min_width=min(30, max(len(row.group) for row in rows)), overflow="fold")
    footer = UsageTotal(total)
    for name, cell in columns:
        table.add_column(name, justify="right", no_wrap=True, footer=cell(footer))
    # The bar's header says what it measures: the one column a header would otherwise not explain.
    table.add_column("share of cost" if by_cost else "share of tokens", width=16, no_wrap=True)
    for row in rows:
        table.add_row(row.group, *(cell(row) for _, cell in columns), Bar(size=top, begin=0, end=measure(row), width=16, color="cyan"))
    console = Console()
    console.print(table)
    if total["unpriced_calls"]:
        console.print(f"{total['unpriced_calls']} call(s) to models with unknown prices are not in the cost; "
                      "add them under [prices] in the config file.", style="yellow")


class UsageTotal:
    """The total row, shaped like a UsageRow so the same cell functions render it."""

    def __init__(self, total: dict[str, Any]) -> None:
        self.__dict__.update(total)


def _cost_with_unpriced(cost: float, unpriced: int) -> str:
    return _money(cost) + (f" + {unpriced} unpriced" if unpriced else "")


# ---------------------------------------------------------------------------------------
# modelport cache


@click.group()
def cache() -> None:
    """Manage the response cache.

    When the cache is on, a request identical to an earlier one (same model, messages and
    parameters) is answered from disk at once and costs nothing. It is off unless you turn
    it on: MODELPORT_CACHE=1 (or a lifetime in seconds, e.g. MODELPORT_CACHE=3600), or
    [cache] enabled = true in the config file, or Client(cache=True) in Python.
    """


@cache.command()
@friendly_errors
def clear() -> None:
    """Delete every cached response."""
    from ..cache import ResponseCache

    store = ResponseCache()
    removed = store.clear()
    store.close()
    click.echo(f"Removed {removed} cached response(s) from {store.path}")


@cache.command()
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@friendly_errors
def stats(as_json: bool) -> None:
    """Show how many responses are cached and how often they were reused."""
    from ..cache import ResponseCache

    store = ResponseCache()
    numbers = store.stats()
    store.close()
    if as_json:
        click.echo(json.dumps(numbers, indent=2))
        return
    click.echo(f"cache file   {numbers['path']}")
    click.echo(f"responses    {numbers['entries']}")
    click.echo(f"reused       {numbers['hits']} time(s)")
    if numbers["bytes"] is not None:  # a database server's size is its own business
        click.echo(f"size         {numbers['bytes'] / 1e6:.2f} MB")  # MB = 10^6 bytes, as everywhere in modelport
    if numbers["oldest"] is not None:
        click.echo(f"oldest       {datetime.fromtimestamp(numbers['oldest']).strftime('%Y-%m-%d %H:%M:%S')}")
        click.echo(f"newest       {datetime.fromtimestamp(numbers['newest']).strftime('%Y-%m-%d %H:%M:%S')}")
