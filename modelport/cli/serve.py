"""`modelport serve`: the gateway on uvicorn (httptools + uvloop when installed)."""

from __future__ import annotations

import click

from .common import friendly_errors


@click.command("serve")
@click.option("--host", default=None, help="Address to listen on  [default: 127.0.0.1; anything else turns --auth on]")
@click.option("--port", type=click.IntRange(0, 65535), default=None, help="Port; 0 picks a free one  [default: 1234, LM Studio's, so its examples run unchanged]")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None, help="TOML config: aliases, fallbacks, [server] settings.")
@click.option("--auth/--no-auth", default=None, help="Require a gateway key (`modelport keys create`)  [default: on unless bound to loopback]")
@click.option("--max-body", "max_body_mb", type=float, default=None, help="Largest request body, MiB  [default: 16]")
@click.option("--max-tokens", type=int, default=None, help="Upper bound of max_tokens, also the default  [default: 16384]")
@click.option("--timeout", type=float, default=None, help="Per-request limit, seconds  [default: 600]")
@click.option("--graceful-timeout", type=float, default=None, help="On shutdown, how long in-flight streams may finish  [default: 30]")
@click.option("--log/--no-log", "log_calls", default=None, help="Record calls in the call log  [default: on]")
@click.option("--access-log", is_flag=True, default=False, help="One log line per request, with its id.")
@click.option("--workers", default="1", show_default=True, metavar="N|auto",
              help="Gateway processes sharing the port, to use more than one core; auto: one per CPU this process may use. "
                   "They share keys, limits, cache and stored responses (see below).")
@click.option("--counters", metavar="URL", default=None,
              help="Where per-key limit counters live, e.g. redis://host:6379/0  [default: [state] counters, else this process]")
@click.option("--records", metavar="URL", default=None,
              help="Where keys, usage, stored responses, cache and batches live, e.g. postgresql://user@host/db  "
                   "[default: [state] records, else SQLite files in the data dir]")
@friendly_errors
def serve(host: str | None, port: int | None, config_path: str | None, auth: bool | None, max_body_mb: float | None,
          max_tokens: int | None, timeout: float | None, graceful_timeout: float | None, log_calls: bool | None, access_log: bool,
          workers: str, counters: str | None, records: str | None) -> None:
    """Serve the OpenAI, Anthropic and Gemini APIs on one port, routing any of them to any
    model: remote providers with the keys you set, or the embedded model.

    \b
    OpenAI / LM Studio code:  OpenAI(base_url="http://localhost:1234/v1", api_key="lm-studio")
    Anthropic:                Anthropic(base_url="http://localhost:1234", api_key="...")
    Gemini:                   genai.Client(http_options={"base_url": "http://localhost:1234"})
    Groq:                     Groq(base_url="http://localhost:1234")

    \b
    --workers N runs N gateway processes on the one port (one Python process
    uses one core). A supervisor process holds the port and starts them; the
    kernel spreads connections over them. A worker that crashes is started
    again; SIGTERM or Ctrl-C lets every worker finish its requests and streams
    (--graceful-timeout), and the workers never outlive the supervisor.
    Without a [state] table the workers share key limits through a SQLite
    file in the data dir (counters.db) and keys, cache and stored responses
    through the SQLite files they already use; for several machines, set
    [state] counters = "redis://..." and records = "postgresql://...".
    GET /metrics on any worker shows every worker's series (label worker="i");
    GET /ready answers 503 while a shared store is unreachable.
    """
    import sys

    from ..config import use_config
    from ..server import build_settings, run
    from ..server.workers import resolve_workers

    if config_path is not None:
        # The one config of this process: prices, limits and logging read it too, not only the gateway.
        config_path = use_config(config_path)
    settings = build_settings(
        config_path, host=host, port=port, auth=auth,
        max_body_bytes=int(max_body_mb * 1024 * 1024) if max_body_mb is not None else None,
        max_tokens=max_tokens, request_timeout=timeout, graceful_timeout=graceful_timeout,
        log_calls=log_calls, access_log=access_log or None, counters=counters, records=records,
    )
    sys.exit(run(settings, config_path, resolve_workers(workers)))
