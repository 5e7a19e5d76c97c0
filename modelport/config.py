"""The user's config file (TOML) and where modelport keeps its files.

Every setting can also come from an environment variable, which wins:

    default_model = "openai/gpt-4o-mini"     # MODELPORT_MODEL
    [aliases]
    fast = "groq/llama-3.1-8b-instant"
    [providers.mybox]                        # any OpenAI-compatible server
    base_url = "http://localhost:8080/v1"
"""

from __future__ import annotations

import logging
import os
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

from .errors import ConfigError

DEFAULT_MODEL = "local/smollm2"

_log = logging.getLogger("modelport")


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


# What modelport keeps (prompts and answers, uploads, batch results, keys) is nobody else's
# business: the directories it creates are 0700 and the files 0600, whatever the umask.
PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


def private_dir(path: Path) -> Path:
    """Make ``path`` and each missing parent, 0700. Directories that exist are left alone
    (they may be the user's own, as the parent of a ``MODELPORT_LOG_PATH``)."""
    target, missing = path, []
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=PRIVATE_DIR_MODE)
        except FileExistsError:  # made meanwhile by another process
            continue
        os.chmod(directory, PRIVATE_DIR_MODE)  # mkdir's mode passes through the umask
    return target


def private_file(path: Path) -> Path:
    """Make ``path`` an empty 0600 file (its directory as ``private_dir``) unless it exists,
    and narrow an existing one to 0600. Done before SQLite opens a database: the -wal and
    -shm files SQLite adds copy the database file's mode."""
    private_dir(path.parent)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, PRIVATE_FILE_MODE))
    if os.stat(path).st_mode & 0o077:
        os.chmod(path, PRIVATE_FILE_MODE)
    return path


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to a new file at ``path``, 0600 from its first byte."""
    private_dir(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE_MODE)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


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
        config = tomllib.loads(file.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {file} is not valid TOML: {exc}", hint=f"fix or remove {file}") from None
    for warning in unknown_names(config):
        _log.warning("modelport: %s: %s", file, warning)
    return config


# What modelport reads from the config, so that a typo (`[aliasses]`, `thread = 2`) is
# named with the closest known name instead of being ignored without a word. The keys of
# [server] and [state] are checked by the gateway (modelport.server.build_settings), which
# refuses unknown ones; [aliases], [fallbacks], [prices] and [limits] are keyed by the
# user's own names.
KNOWN_KEYS: dict[str, tuple[str, ...]] = {
    "": ("default_model", "aliases", "fallbacks", "providers", "local", "limits", "prices", "log", "cache", "server", "state"),
    "local": ("threads", "n_ctx"),
    "log": ("enabled", "path", "redact", "max_age_days", "max_mb"),
    "cache": ("enabled", "ttl"),
    "providers.*": ("base_url", "dialect", "auth_header", "key_required", "signup", "key_env", "models", "headers", "extra",
                    "model_dialects"),
}


def unknown_names(config: dict[str, Any]) -> list[str]:
    """One line for each name in ``config`` that modelport does not read, with the closest
    known name when there is one."""
    import difflib

    tables: list[tuple[str, str, dict[str, Any]]] = [("", "", config)]
    tables += [(name, name, value) for name, value in config.items() if name in KNOWN_KEYS and isinstance(value, dict)]
    providers = config.get("providers")
    if isinstance(providers, dict):
        tables += [(f"providers.{name}", "providers.*", value) for name, value in providers.items() if isinstance(value, dict)]
    found = []
    for where, kind, table in tables:
        known = KNOWN_KEYS[kind]
        for key in table:
            if key in known:
                continue
            close = difflib.get_close_matches(key, known, n=1, cutoff=0.7)
            if not where and isinstance(table[key], dict):
                what, suggestion = f"section [{key}]", close and f"[{close[0]}]"
            else:
                what, suggestion = f"setting {key}" + (f" in [{where}]" if where else ""), close and close[0]
            found.append(f"unknown {what}, ignored; " + (f"did you mean {suggestion}?" if suggestion else f"known: {', '.join(known)}"))
    return found


def section(name: str, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """One ``[table]`` of a loaded config (by default the process's config file), or {} when
    absent or not a table."""
    value = (load_config() if config is None else config).get(name, {})
    return value if isinstance(value, dict) else {}


def default_model(config: dict[str, Any]) -> str:
    return os.environ.get("MODELPORT_MODEL") or config.get("default_model") or DEFAULT_MODEL
