"""`modelport state`: where the gateway keeps what several instances must share, and moving
a single machine's SQLite state into PostgreSQL (`state migrate`)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import click

from .common import friendly_errors

# The word `state status` prints for a store that does not answer; any of them makes it exit 1.
UNREACHABLE = "UNREACHABLE"

_config_option = click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
                              help="The config file whose [state] and data dir to use  [default: modelport's config file]")


@click.group("state")
def state() -> None:
    """Where the gateway keeps its shared state, and moving it.

    \b
    A gateway keeps two kinds of state, each chosen by one URL under [state] in the config:
      counters  per-key rpm/tpm windows and budget reservations
                (default: in the process; redis://host:6379/0 to share them between machines)
      records   gateway keys with their usage and spend, stored Responses, the response
                cache, Files and Batches (default: SQLite files in the data dir;
                postgresql://user@host:5432/db to share them between gateway instances)

    \b
    Moving one gateway onto PostgreSQL:
      modelport state migrate --to postgresql://modelport@db:5432/modelport
      then set  [state] records = "postgresql://modelport@db:5432/modelport"  in the config
      and start every gateway with that config. `modelport state status` checks the result.
    """


def _source_url(config: dict[str, Any]) -> str | None:
    """The records URL the stores are read from: the config's, when it is a SQLite one."""
    from ..state import configured, scheme

    url = configured("records", config)
    return url if url is not None and scheme(url) == "sqlite" else None


@state.command("migrate")
@click.option("--to", "target", metavar="URL", default=None,
              help="The PostgreSQL database to copy into  [default: [state] records of the config, when it names one]")
@_config_option
@friendly_errors
def migrate(target: str | None, config_path: str | None) -> None:
    """Copy this machine's SQLite records into a PostgreSQL database.

    Copies the gateway keys (with their usage and spend so far), the stored Responses and
    the response cache from the SQLite files in the data dir (or the [state] records
    sqlite: file) into the database at --to, creating its tables. Rows already there are
    left as they are, so running it again copies nothing twice and an interrupted run can
    simply be repeated. The SQLite files stay (an old one is brought up to this version's
    schema first, as a gateway would).
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from ..config import load_config, use_config
    from ..errors import ConfigError
    from ..state import check_url, configured, redact, scheme
    from ..state.copy import CustomCopy, copy_table, count, stores
    from ..state.records import open_records, records_exist

    config = load_config(use_config(config_path) if config_path else None)
    target = target or configured("records", config)
    if target is None or scheme(check_url("records", target)) == "sqlite":
        raise ConfigError("state migrate needs a PostgreSQL database to copy into",
                          hint="pass --to postgresql://user@host:5432/db (the database must exist; its tables are made here)")
    source_url = _source_url(config)
    console = Console(stderr=True)
    totals: list[tuple[str, int, int | None]] = []  # (what, rows added, rows already there when known)
    with Progress(TextColumn("{task.description:36}"), BarColumn(), MofNCompleteColumn(), console=console, transient=True) as progress:
        for store in stores():
            if isinstance(store, CustomCopy):
                task = progress.add_task(store.name, total=None)
                into = open_records(target, Path(store.name))  # a server URL: the path is never used
                try:
                    totals.extend((f"{store.name}: {what}", added, None) for what, added in store.run(config, into).items())
                finally:
                    into.close()
                progress.update(task, total=1, completed=1)
                continue
            path = store.default_path(config)
            if not records_exist(source_url, path):
                totals.extend((f"{store.name}: {table.name}", 0, 0) for table in store.tables)
                continue
            source, into = store.open(source_url, path), store.open(target, path)
            try:
                for table in store.tables:
                    label = f"{store.name}: {table.name}"
                    rows = count(source, table)
                    task = progress.add_task(label, total=rows)
                    added = copy_table(source, into, table, functools.partial(progress.advance, task))
                    totals.append((label, added, rows - added))
            finally:
                source.close()
                into.close()
    click.echo(f"copied into {redact(target)}:")
    for name, added, there in totals:
        click.echo(f"  {name:36} {added:>8} new" + ("" if there is None else f"  {there:>8} already there"))
    click.echo(f'next: set [state] records = "{redact(target)}" in the config of every gateway')


@state.command("status")
@_config_option
@friendly_errors
def status(config_path: str | None) -> None:
    """Which URLs the gateway's state lives at, whether they answer, and the schema
    version of each record store.

    Exits 0 when every store answers and 1 when one is UNREACHABLE, so a deploy script or
    health check can run it as it is."""
    import sys

    from ..config import load_config, use_config
    from ..state import configured, redact

    config = load_config(use_config(config_path) if config_path else None)
    counters = configured("counters", config)
    # Without [state] counters, one gateway process counts in memory, but `serve --workers N`
    # must share the counts between its workers and keeps them in counters.db.
    where = redact(counters) if counters else "memory: in the gateway process; with serve --workers, sqlite: counters.db in the data dir"
    reachable = _counters_reachable(counters)
    click.echo(f"counters  {where}  {reachable}")
    records = configured("records", config)
    click.echo(f"records   {redact(records) if records else 'sqlite: files in the data dir'}")
    answers = [reachable]
    for where, answer in _record_versions(records, config):
        click.echo(f"  {where}  {answer}")
        answers.append(answer)
    if any(answer.startswith(UNREACHABLE) for answer in answers):
        click.secho("a store is unreachable: gateways using it refuse requests that need it (503)", fg="red", err=True)
        sys.exit(1)


def _counters_reachable(url: str | None) -> str:
    from ..state import scheme

    if url is None or scheme(url) in ("memory", "sqlite"):
        return "(local)"
    from ..extras import require

    require("redis", "Redis counters ([state] counters = redis://...)")
    import redis

    client = redis.Redis.from_url(url, socket_timeout=3, socket_connect_timeout=3)
    try:
        client.ping()
        return "reachable"
    except redis.RedisError as exc:
        return f"{UNREACHABLE} ({type(exc).__name__})"
    finally:
        client.close()


def _record_versions(url: str | None, config: dict[str, Any]) -> list[tuple[str, str]]:
    """(database, what it holds) for each database the record stores use: reachable or not,
    and the schema version of each store in it."""
    from ..errors import StateUnavailableError
    from ..state.copy import StoreCopy, stores
    from ..state.records import open_records, records_exist

    seen: dict[str, str] = {}
    for store in stores():
        if not isinstance(store, StoreCopy):
            continue  # a custom copy names no database of its own
        path = store.default_path(config)
        if not records_exist(url, path):
            seen.setdefault(str(path), "not made yet")
            continue
        db = open_records(url, path)
        try:
            if db.url in seen:
                continue
            rows = db.execute("SELECT component, version FROM modelport_schema ORDER BY component").fetchall() \
                if db.columns("modelport_schema") else []
            versions = ", ".join(f"{component} v{version}" for component, version in rows)
            seen[db.url] = f"reachable; schema: {versions or 'none yet (made by an older modelport: upgraded on first use)'}"
        except StateUnavailableError as exc:
            seen[db.url] = f"{UNREACHABLE} ({exc.message})"
        finally:
            db.close()
    return list(seen.items())
