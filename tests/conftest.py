"""Shared fixtures: every test runs in an isolated home, and can have a fake OpenAI upstream.

Isolation is by environment only (no patching of modelport): the config dir, the keys file,
the call log, the response cache and the data dir (gateway keys, batch jobs) point into the
test's tmp dir, and every variable that could route a call elsewhere or supply a key is
removed. Only the embedded model's weights stay where the machine keeps them
(``MODELPORT_MODELS_DIR``): a fresh copy per test would fetch 93 MB each time.
"""

from __future__ import annotations

import os
import re
from typing import Iterator

import pytest

from modelport.local_model import data_dir as models_dir
from tests.fakes.openai_upstream import OpenAIUpstream

# Resolved once, from the machine's own settings, before any test moves the data dir.
MODELS_DIR = str(models_dir())

# Variables that carry a provider key or a base URL, read by modelport or by the official SDKs.
_ROUTING_ENV = re.compile(
    r"^(MODELPORT_.*_(API_KEY|BASE_URL)|[A-Z0-9_]*_API_KEY|[A-Z0-9_]*_BASE_URL|LM_API_TOKEN|"
    r"ANTHROPIC_AUTH_TOKEN|OLLAMA_HOST|OPENAI_(ORG_ID|PROJECT_ID|ADMIN_KEY))$"
)
# modelport settings that must come from the test, not from the machine.
_SETTINGS_ENV = ("MODELPORT_CONFIG", "MODELPORT_MODEL", "MODELPORT_LOG", "MODELPORT_CACHE", "MODELPORT_CACHE_PATH",
                 "MODELPORT_GATEWAY_KEYS")


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[os.PathLike[str]]:
    """A private config dir, keys file, call log and data dir; no provider keys or base URLs
    from the machine."""
    home = tmp_path_factory.mktemp("home")
    for name in list(os.environ):
        if _ROUTING_ENV.match(name) or name in _SETTINGS_ENV:
            monkeypatch.delenv(name)
    monkeypatch.setenv("MODELPORT_CONFIG_DIR", str(home / "config"))
    monkeypatch.setenv("MODELPORT_KEYS_PATH", str(home / "config" / "keys.json"))
    monkeypatch.setenv("MODELPORT_LOG_PATH", str(home / "logs.db"))
    monkeypatch.setenv("MODELPORT_CACHE_PATH", str(home / "cache.db"))
    monkeypatch.setenv("MODELPORT_DATA_DIR", str(home / "data"))
    monkeypatch.setenv("MODELPORT_MODELS_DIR", MODELS_DIR)
    yield home


@pytest.fixture()
def openai_upstream() -> Iterator[OpenAIUpstream]:
    """A fake OpenAI-compatible server on 127.0.0.1; point a client at ``.base_url``."""
    with OpenAIUpstream() as upstream:
        yield upstream
