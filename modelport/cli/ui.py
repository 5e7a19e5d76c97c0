"""`modelport ui`: the gateway with its web console, opened in the browser."""

from __future__ import annotations

import click

from .common import friendly_errors


@click.command("ui")
@click.option("--host", default=None, help="Address to listen on  [default: 127.0.0.1; anything else turns --auth on]")
@click.option("--port", type=click.IntRange(0, 65535), default=None, help="Port; 0 picks a free one  [default: 1234]")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None, help="TOML config: aliases, fallbacks, [server] settings.")
@click.option("--auth/--no-auth", default=None, help="Require a gateway key; the console then asks for an admin key  [default: on unless bound to loopback]")
@click.option("--open/--no-open", "open_browser", default=True, help="Open the console in the browser  [default: open]")
@friendly_errors
def ui(host: str | None, port: int | None, config_path: str | None, auth: bool | None, open_browser: bool) -> None:
    """Serve the gateway and open its web console (/ui): playground, compare, logs,
    usage, batches and keys. `modelport serve` serves the same console."""
    import threading
    import webbrowser

    from ..server import build_settings, run

    settings = build_settings(config_path, host=host, port=port, auth=auth)
    shown = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    url = f"http://{shown}:{settings.port}/ui"
    click.echo(f"console: {url}")
    if open_browser:
        # After a moment, so the server is listening when the browser asks.
        threading.Timer(1.0, webbrowser.open, (url,)).start()
    run(settings, config_path)
