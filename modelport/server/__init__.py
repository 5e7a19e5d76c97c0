"""The gateway: ``modelport serve``. See ``app`` for the ASGI application."""

from __future__ import annotations

import logging
from dataclasses import fields, replace
from typing import Any

from .app import Gateway
from .settings import Settings

__all__ = ["Gateway", "Settings", "build_settings", "run"]


def build_settings(config_path: str | None = None, **overrides: Any) -> Settings:
    """Settings from the config's ``[server]`` table, overridden by non-None arguments."""
    from ..config import load_config
    from ..errors import ConfigError
    from ..state import STATE_PARTS, check_url

    config = load_config(config_path)
    section = config.get("server") or {}
    state = config.get("state") or {}
    known = {f.name for f in fields(Settings)} - set(STATE_PARTS)
    values = {k: v for k, v in section.items() if k in known}
    unknown = sorted(set(section) - known - {"models"})
    if unknown:
        raise ConfigError(f"unknown setting(s) in [server]: {', '.join(unknown)}", hint=f"known: {', '.join(sorted(known | {'models'}))}")
    unknown = sorted(set(state) - set(STATE_PARTS))
    if unknown:
        raise ConfigError(f"unknown setting(s) in [state]: {', '.join(unknown)}", hint=f"known: {', '.join(STATE_PARTS)}")
    values.update({part: check_url(part, url) for part, url in state.items()})
    values.update({k: check_url(k, v) if k in STATE_PARTS else v for k, v in overrides.items() if v is not None})
    return Settings(**values)


def run(settings: Settings, config_path: str | None = None, workers: int = 1) -> int:
    """Serve until SIGTERM or Ctrl-C, which let in-flight streams finish first; the exit code.

    ``workers`` > 1: that many gateway processes on the one port, under a supervisor (see
    ``workers``), sharing keys, limits, cache and stored state through the state layer."""
    from .workers import Supervisor, listen, serve_worker

    logging.basicConfig(level=logging.INFO if settings.access_log else logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    auth = "gateway keys required" if settings.auth_required else "open (loopback)"

    def banner(where: str, extra: str = "") -> None:
        print(f"modelport gateway on {where}  [{auth}{extra}]  OpenAI: {where}/v1  Anthropic/Gemini/Groq: {where}", flush=True)

    if workers == 1:
        sockets, port = listen(settings, 1)
        settings = replace(settings, port=port)
        banner(f"http://{settings.host}:{port}")
        return serve_worker(settings, config_path, sockets[0], None)
    supervisor = Supervisor(settings, config_path, workers)
    return supervisor.run(on_ready=lambda s: banner(f"http://{settings.host}:{s.settings.port}", f", {workers} workers"))
