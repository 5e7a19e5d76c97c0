"""Provider API keys: explicit argument, then the provider's environment variable, then the
user's keys file (JSON, mode 0600). Keys are only ever shown masked."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .config import config_dir, private_dir
from .errors import ConfigError, mask
from .providers import Provider, env_name


def keys_path() -> Path:
    env = os.environ.get("MODELPORT_KEYS_PATH")
    return Path(env) if env else config_dir() / "keys.json"


def _read() -> dict[str, str]:
    path = keys_path()
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ConfigError(f"keys file {path} is not valid JSON", hint=f"fix it or delete {path} and set keys again") from None
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _write(keys: dict[str, str]) -> None:
    path = keys_path()
    private_dir(path.parent)
    tmp = path.with_suffix(".tmp")
    # Create with 0600 from the start so the key is never readable by others, even briefly.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(keys, fh, indent=2, sort_keys=True)
    os.replace(tmp, path)
    os.chmod(path, 0o600)


def resolve_key(provider: Provider, explicit: str | None = None) -> str | None:
    if explicit:
        return explicit
    for var in (*provider.key_env, f"MODELPORT_{env_name(provider.name)}_API_KEY"):
        value = os.environ.get(var)
        if value:
            return value
    return _read().get(provider.name)


def set_key(provider: str, key: str) -> None:
    keys = _read()
    keys[provider] = key
    _write(keys)


def remove_key(provider: str) -> bool:
    keys = _read()
    if keys.pop(provider, None) is None:
        return False
    _write(keys)
    return True


def stored_keys() -> dict[str, str]:
    """Provider -> masked key, for display."""
    return {name: mask(key) for name, key in sorted(_read().items())}
