"""Optional dependencies: import one, or fail with the one line that installs it."""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import ConfigError


def require(module: str, extra: str) -> ModuleType:
    """``module`` imported, or a ConfigError whose one line names the install command."""
    try:
        return importlib.import_module(module)
    except ImportError:
        top = module.partition(".")[0]
        raise ConfigError(f"{top} is not installed; install it with: pip install 'modelport[{extra}]'") from None
