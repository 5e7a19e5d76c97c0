"""What every subcommand shares: turning expected errors into a clear line, not a traceback,
reading ``-o key=value`` options, and printing rows for people and for pipes."""

from __future__ import annotations

import contextlib
import functools
import json
import sys
from typing import Any, Callable, Iterator, Sequence, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def friendly_errors(func: F) -> F:
    """Expected failures (bad config, missing key, provider errors) print a message and a hint
    and exit 1; Ctrl-C exits 130. Unexpected bugs still show their traceback.

    A command called with ``--json`` (its ``as_json`` argument) prints the error as JSON on
    stdout instead, ``{"error": {...}}``, with the same exit code, so scripts that parse
    stdout see what went wrong."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from ..errors import ModelportError

        as_json = bool(kwargs.get("as_json"))
        try:
            return func(*args, **kwargs)
        except ModelportError as exc:
            if as_json:
                # The status only when an upstream answered with one: a connection that
                # failed has none (its class's 502 is what a gateway would answer).
                _print_json_error({"type": exc.kind, "message": exc.message, "detail": exc.detail, "hint": exc.hint,
                                   "provider": exc.provider, "status": vars(exc).get("status"), "code": exc.code})
                sys.exit(1)
            print_error(exc)
            sys.exit(1)
        except click.ClickException as exc:
            if not as_json:
                raise
            _print_usage_error(exc)
        except KeyboardInterrupt:
            click.echo("", err=True)
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


def print_error(exc: Any) -> None:
    """A ModelportError for the person at the terminal, who owns this process: with its
    ``detail`` (the URL and the OS's words for a connection that failed), which a gateway
    never shows its callers."""
    where = f" ({exc.provider})" if exc.provider else ""
    click.secho(f"Error{where}: {exc.message}", fg="red", err=True)
    if exc.detail:
        click.secho(f"  {exc.detail}", fg="red", err=True)
    if exc.hint:
        click.secho(f"Hint: {exc.hint}", fg="yellow", err=True)


@contextlib.contextmanager
def usage_errors_as_json(args: Sequence[str]) -> Iterator[None]:
    """Arguments click refuses before a command runs (a bad --port, an unknown option) are
    printed as JSON when the command line asks for ``--json``, as its other errors are."""
    try:
        yield
    except click.UsageError as exc:
        if "--json" not in args:
            raise
        _print_usage_error(exc)


def _print_usage_error(exc: click.ClickException) -> None:
    _print_json_error({"type": "usage", "message": exc.format_message()})
    sys.exit(exc.exit_code)


def _print_json_error(error: dict[str, Any]) -> None:
    click.echo(json.dumps({"error": {k: v for k, v in error.items() if v is not None}}, ensure_ascii=False))


def parse_options(pairs: tuple[str, ...]) -> dict[str, Any]:
    """``-o temperature=0.2 -o stop='["\\n"]'``: values are JSON when they parse, else text.
    Names modelport has no parameter for go to the provider as they are, in ``extra``
    (``-o num_ctx=8192`` sets Ollama's context window)."""
    from ..client import REQUEST_PARAMS

    options: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        name = name.strip()
        if not sep or not name:
            raise click.BadParameter(f"{pair!r} is not key=value (e.g. -o temperature=0.2)", param_hint="-o")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        (options if name in REQUEST_PARAMS else extra)[name] = value
    for name in extra:
        _note_passed_through(name, REQUEST_PARAMS)
    if extra:
        given = options.get("extra", {})
        if not isinstance(given, dict):
            raise click.BadParameter("extra must be a JSON object, e.g. -o extra='{\"num_ctx\": 8192}'", param_hint="-o")
        options["extra"] = {**given, **extra}
    return options


def _note_passed_through(name: str, known: frozenset[str] | set[str]) -> None:
    """Say that ``-o name`` is not a modelport parameter and goes to the provider as it is:
    right for the provider's own options (``num_ctx``), a typo otherwise (``temprature``),
    which the closest known name makes plain."""
    import difflib

    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.75)
    if close:
        click.secho(f"warning: -o {name} is not a modelport parameter; did you mean {close[0]}? "
                    f"(passed through to the provider as it is)", fg="yellow", err=True)
    else:
        click.echo(f"note: -o {name} passed through to the provider as it is", err=True)


# `-o KEY=VALUE` is a request option in every command (as in `ask`), so an output file is
# always the long `--output` or `-O`: one letter never means two things.
OPTION_HELP = "A request parameter, repeatable: -o temperature=0.2 -o max_tokens=200 (names modelport does not know go to the provider as they are)"


def option_option(help: str = OPTION_HELP) -> Callable[[F], F]:
    """``-o/--option KEY=VALUE``, repeatable, read by :func:`parse_options`."""
    return click.option("-o", "--option", "options", multiple=True, metavar="KEY=VALUE", help=help)


def output_option(help: str, **kwargs: Any) -> Callable[[F], F]:
    """``-O/--output FILE``, refusing a value that is a ``KEY=VALUE`` option given where the
    file belongs (``--output max_tokens=5`` would write a file of that name)."""
    return click.option("-O", "--output", metavar="FILE", callback=_not_an_option, help=help, **kwargs)


def _not_an_option(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    import re

    text = str(value) if value is not None else ""
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*=[^/\\]*", text) and not re.search(r"\.(jsonl?|csv|parquet)$", text, re.I):
        raise click.BadParameter(f"{text!r} looks like a request option, not a file: request options are -o {text}; "
                                 "the output file is --output FILE", param_hint="--output")
    return value


def print_rows(columns: Sequence[str], rows: Sequence[Sequence[str]], *, title: str | None = None, caption: str | None = None,
               whole: Sequence[str] = (), styles: Sequence[str | None] | None = None) -> None:
    """Rows for a person at a terminal (a table) or for a pipe or file (tab-separated, header
    first, nothing cut: a pipe has no width, and ids are what the next command needs).

    On a terminal the ``whole`` columns (ids, model names) are never shortened with an
    ellipsis: they get their full width, and other columns wrap instead."""
    if not sys.stdout.isatty():
        click.echo("\t".join(columns))
        for row in rows:
            click.echo("\t".join(_tsv_cell(cell) for cell in row))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, caption=caption)
    for n, column in enumerate(columns):
        if column in whole:
            widest = max((len(row[n]) for row in rows), default=0)
            table.add_column(column, no_wrap=True, min_width=max(len(column), widest))
        else:
            table.add_column(column, overflow="fold")
    for k, row in enumerate(rows):
        table.add_row(*row, style=styles[k] if styles else None)
    Console().print(table)


def _tsv_cell(value: str) -> str:
    # One row per line and one cell per tab, whatever the value holds.
    return value.replace("\t", " ").replace("\r", " ").replace("\n", " ")
