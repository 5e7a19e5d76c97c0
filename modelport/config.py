"""The user's config file (TOML) and where modelport keeps its files.

Every setting can also come from an environment variable, which wins:

    default_model = "openai/gpt-4o-mini"     # MODELPORT_MODEL
    [aliases]
    fast = "groq/llama-3.1-8b-instant"
    [providers.mybox]                        # any OpenAI-compatible server
    base_url = "http://10.0.0.5:8080/v1"
"""

from __future__ import annotations

import os
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

from .errors import ConfigError

DEFAULT_MODEL = "local/smollm2"


def config_dir() -> Path:
    env = os.environ.get("MODELPORT_CONFIG_DIR")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_config_dir("modelport"))


def data_dir() -> Path:
    env = os.environ.get("MODELPORT_DATA_DIR")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_data_dir("modelport"))


def config_path() -> Path:
    env = os.environ.get("MODELPORT_CONFIG")
    return Path(env) if env else config_dir() / "config.toml"


def use_config(path: str | Path) -> str:
    """Make ``path`` the config file of this process and of the processes it starts, as
    ``MODELPORT_CONFIG`` does, and return it absolute. An entry point given ``--config``
    calls this first, so every part that reads the config (providers, aliases, prices,
    limits, [log], [cache], [server]) reads the same file, loaded once."""
    file = Path(path).expanduser().resolve()
    if not file.is_file():
        raise ConfigError(f"config file {file} does not exist", hint="check the --config path")
    os.environ["MODELPORT_CONFIG"] = str(file)
    return str(file)


def load_config(path: str | Path | None = None) -> dict[str, Any]:
    """The parsed config file, or {} when there is none. Cached per path."""
    return _load(str(path or config_path()))


@lru_cache(maxsize=8)
def _load(path: str) -> dict[str, Any]:
    file = Path(path)
    if not file.exists():
        return {}
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - 3.10 only
        import tomli as tomllib
    try:
        return tomllib.loads(file.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {file} is not valid TOML: {exc}", hint=f"fix or remove {file}") from None


def section(name: str, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """One ``[table]`` of a loaded config (by default the process's config file), or {} when
    absent or not a table."""
    value = (load_config() if config is None else config).get(name, {})
    return value if isinstance(value, dict) else {}


def default_model(config: dict[str, Any]) -> str:
    return os.environ.get("MODELPORT_MODEL") or config.get("default_model") or DEFAULT_MODEL
