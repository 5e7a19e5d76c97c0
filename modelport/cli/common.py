"""What every subcommand shares: turning expected errors into a clear line, not a traceback,
and reading ``-o key=value`` options."""

from __future__ import annotations

import functools
import json
import sys
from typing import Any, Callable, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def friendly_errors(func: F) -> F:
    """Expected failures (bad config, missing key, provider errors) print a message and a hint
    and exit 1; Ctrl-C exits 130. Unexpected bugs still show their traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from ..errors import ModelportError

        try:
            return func(*args, **kwargs)
        except ModelportError as exc:
            where = f" ({exc.provider})" if exc.provider else ""
            click.secho(f"Error{where}: {exc.message}", fg="red", err=True)
            if exc.hint:
                click.secho(f"Hint: {exc.hint}", fg="yellow", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("", err=True)
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


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
    if extra:
        given = options.get("extra", {})
        if not isinstance(given, dict):
            raise click.BadParameter("extra must be a JSON object, e.g. -o extra='{\"num_ctx\": 8192}'", param_hint="-o")
        options["extra"] = {**given, **extra}
    return options
