"""Gateway keys for `modelport serve`: `keys create`, `keys revoke`, `keys usage`.

``cli/keys.py`` adds them to the `keys` group beside the provider-key commands. The store holds only salted
hashes; a key's secret is printed once, at creation.
"""

from __future__ import annotations

import re
import time
from datetime import datetime, timezone

import click

from .common import friendly_errors

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([mhdw])$")
_UNIT_SECONDS = {"m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_expiry(value: str, now: float | None = None) -> float:
    """``30d``, ``12h``, ``90m``, ``2w`` from now, or an ISO date/time (UTC unless it says)."""
    now = time.time() if now is None else now
    match = _DURATION.match(value.strip())
    if match:
        return now + float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        raise click.BadParameter(f"{value!r} is neither a duration (30d, 12h) nor a date (2027-01-31)", param_hint="--expires") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    if when.timestamp() <= now:
        raise click.BadParameter(f"{value!r} is in the past", param_hint="--expires")
    return when.timestamp()


def _store(path: str | None):
    """The keys the gateway of this config reads: ``[state] records`` when it names a
    database, else the SQLite file ``path``."""
    from ..server.auth import KeyStore
    from ..state import configured

    return KeyStore(path, url=configured("records"))


_store_option = click.option("--store", "store_path", type=click.Path(dir_okay=False), default=None, envvar="MODELPORT_GATEWAY_KEYS",
                             help="Key store file, unless the config's [state] records names a PostgreSQL database"
                                  "  [default: gateway.db in the data dir]")


@click.command("create")
@click.argument("name")
@click.option("--rpm", type=click.IntRange(min=1), help="Requests per minute.")
@click.option("--tpm", type=click.IntRange(min=1), help="Tokens per minute (prompt + max_tokens are booked up front).")
@click.option("--budget", type=click.FloatRange(min=0), help="Spending limit in USD, at list prices.")
@click.option("--models", multiple=True, help="Models this key may use; repeat or comma-separate; globs work (openai/*).")
@click.option("--expires", help="30d, 12h, 2w, or a date such as 2027-01-31.")
@click.option("--admin", is_flag=True, help="Sees every key's files and batches, not only its own.")
@_store_option
@friendly_errors
def create(name: str, rpm: int | None, tpm: int | None, budget: float | None, models: tuple[str, ...], expires: str | None,
           admin: bool, store_path: str | None) -> None:
    """Create a gateway key NAME and print it (the only time it is shown)."""
    allowed = [m.strip() for group in models for m in group.split(",") if m.strip()]
    store = _store(store_path)
    key = store.create(name, rpm=rpm, tpm=tpm, budget=budget, models=allowed, expires=parse_expiry(expires) if expires else None,
                       admin=admin)
    click.echo(key)
    click.echo(f"created gateway key {name!r} in {store.where}; it is shown only now, so store it safely", err=True)


@click.command("revoke")
@click.argument("name")
@_store_option
@friendly_errors
def revoke(name: str, store_path: str | None) -> None:
    """Revoke the gateway key NAME; a running gateway refuses it within a second."""
    if not _store(store_path).revoke(name):
        raise click.ClickException(f"no live gateway key named {name!r} (see `modelport keys usage`)")
    click.echo(f"revoked gateway key {name!r}")


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M") if ts else "-"


@click.command("usage")
@click.option("--all", "include_revoked", is_flag=True, help="Include revoked keys.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_store_option
@friendly_errors
def usage(include_revoked: bool, as_json: bool, store_path: str | None) -> None:
    """Requests, tokens and spend of each gateway key, with its limits."""
    from ..server.auth import printable

    records = _store(store_path).records(include_revoked=include_revoked)
    if as_json:
        import json

        click.echo(json.dumps([
            {"name": r.name, "requests": r.requests, "input_tokens": r.input_tokens, "output_tokens": r.output_tokens,
             "cost_usd": round(r.cost, 6), "rpm": r.limits.rpm, "tpm": r.limits.tpm, "budget_usd": r.limits.budget,
             "models": list(r.models), "admin": r.admin, "expires": r.expires, "revoked": r.revoked, "last_used": r.last_used}
            for r in records
        ], indent=2))
        return
    if not records:
        click.echo("no gateway keys yet: create one with `modelport keys create NAME`")
        return
    click.echo(f"{'name':20} {'requests':>9} {'in tok':>10} {'out tok':>10} {'spent $':>10}  {'limits':28} last used")
    for r in records:
        limits = ", ".join(part for part in (
            "admin" if r.admin else "",
            f"{r.limits.rpm} rpm" if r.limits.rpm else "",
            f"{r.limits.tpm} tpm" if r.limits.tpm else "",
            f"${r.limits.budget:g}" if r.limits.budget is not None else "",
            "expired" if r.expires and r.expires <= time.time() else (f"until {_when(r.expires)}" if r.expires else ""),
            "revoked" if r.revoked else "",
        ) if part) or "-"
        click.echo(f"{printable(r.name)[:20]:20} {r.requests:>9} {r.input_tokens:>10} {r.output_tokens:>10} {r.cost:>10.4f}  {limits:28} {_when(r.last_used)}")
        if r.models:
            click.echo(f"{'':20} models: {printable(', '.join(r.models))}")

