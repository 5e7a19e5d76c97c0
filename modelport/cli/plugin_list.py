"""`modelport plugins`: what the installed distributions add to modelport, and from where.

(Not named plugins.py: a submodule of that name would replace ``modelport.plugins`` as the
``plugins`` name the ``modelport.cli`` package imports.)"""

from __future__ import annotations

import json
import warnings

import click

from .. import plugins as registry
from .common import friendly_errors, print_rows


@click.command()
@click.option("-g", "--group", "groups", multiple=True, metavar="GROUP",
              help="Only this group, repeatable: providers, dialects, backends, doors, commands, hooks, tools, stores.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON: one object per plugin, with its error if it failed.")
@friendly_errors
def plugins(groups: tuple[str, ...], as_json: bool) -> None:
    """List installed plugins: what each adds, and which package it came from.

    modelport finds providers, dialects (wire formats), backends, gateway doors (routes),
    CLI commands, gateway hooks, tools and record stores through Python entry points, so
    installing a package that declares some is all it takes. modelport's own pieces are
    registered the same way and show as "modelport (built-in)".

    \b
      pip install modelport-mybox              # a plugin package
      modelport plugins                        # now lists what it added
      modelport plugins -g providers --json

    Each plugin is loaded to build the list, so one that cannot be used says why in its
    status column. docs/plugins.md shows how to write one.
    """
    wanted = [_group(g) for g in groups] or list(registry.GROUPS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", registry.PluginWarning)  # the table says it, in its row
        _load_everything()
    failed = {f.entry: f.reason for f in registry.failures()}
    listed = [e for g in wanted for e in registry.entries(g)]
    listed += [e for e in failed if e.group in wanted and e not in listed]
    listed.sort(key=lambda e: (wanted.index(e.group), not e.builtin, e.dist, e.name))
    if as_json:
        click.echo(json.dumps([{"group": e.group, "name": e.name, "object": e.value, "distribution": e.dist,
                                "version": e.version, "builtin": e.builtin, "error": failed.get(e)} for e in listed],
                              ensure_ascii=False, indent=2))
        return
    print_rows(("group", "name", "points to", "from", "status"),
               [(e.group, e.name, e.value, e.origin, f"failed: {failed[e]}" if e in failed else "ok") for e in listed],
               whole=("name",), styles=["red" if e in failed else None for e in listed])


def _group(name: str) -> str:
    group = name if name.startswith("modelport.") else f"modelport.{name}"
    if group not in registry.GROUPS:
        raise click.BadParameter(f"{name!r} is not a plugin group; the groups are "
                                 f"{', '.join(g.removeprefix('modelport.') for g in registry.GROUPS)}", param_hint="--group")
    return group


def _load_everything() -> None:
    """Load every entry as the code that uses its group does, so each failure is known."""
    from ..providers import installed_providers
    from ..state.copy import stores
    from . import as_command

    installed_providers()
    registry.load_all(registry.DIALECTS)
    registry.load_all(registry.BACKENDS)
    registry.load_all(registry.COMMANDS, as_command)
    registry.doors()
    registry.hooks()
    registry.tools()
    stores()
