"""The gateway: ``modelport serve``. See ``app`` for the ASGI application."""

from __future__ import annotations

import logging
import sys
from dataclasses import fields, replace
from typing import Any

from .app import Gateway
from .settings import LOOPBACK_HOSTS, Settings

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
    if settings.auth_required:
        auth = "gateway keys required"
    elif settings.host in LOOPBACK_HOSTS:
        auth = "open: no key needed, this machine only"
    else:
        auth = "open: no key needed, reachable from the network"
        # On stderr, where problems go (a service manager logs it as one), not only in the banner.
        print(f"warning: gateway keys are off (--no-auth, or [server] auth = false) and the gateway\n"
              f"  listens on {settings.host}: anyone who can reach this port can call every model with\n"
              "  your provider keys, read the call log and make gateway keys in the console.\n"
              "  fix: create a key (modelport keys create NAME) and serve without --no-auth,\n"
              "  or listen on 127.0.0.1 only.", file=sys.stderr, flush=True)

    def banner(where: str, extra: str = "") -> None:
        print(f"modelport gateway on {where}  ({auth}{extra})\n"
              f"  OpenAI (chat, Responses)  {where}/v1\n"
              f"  Anthropic, Gemini, Groq   {where}\n"
              f"  Ollama                    {where}  (OLLAMA_HOST)\n"
              f"  web console               {where}/ui", flush=True)

    if workers == 1:
        sockets, port = listen(settings, 1)
        settings = replace(settings, port=port)
        banner(f"http://{settings.host}:{port}")
        return serve_worker(settings, config_path, sockets[0], None)
    supervisor = Supervisor(settings, config_path, workers)
    return supervisor.run(on_ready=lambda s: banner(f"http://{settings.host}:{s.settings.port}", f", {workers} workers"))
