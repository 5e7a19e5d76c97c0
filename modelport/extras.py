"""Optional packages. A missing one is one clear error that names the pip command, in the
CLI and the SDK alike, never an ImportError traceback from deep inside modelport."""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import ConfigError

# Top-level module -> the extra of pyproject.toml that installs it.
EXTRA_OF = {"pandas": "pandas", "pyarrow": "pandas", "pydantic": "structured", "jsonschema": "structured", "ray": "ray"}


class MissingExtraError(ConfigError):
    """An optional package is not installed; the message itself carries the fix, so the CLI
    prints one line."""


def require(module: str, purpose: str) -> ModuleType:
    """Import ``module`` (e.g. ``"pyarrow.parquet"``) for ``purpose`` ("writing Parquet")."""
    try:
        return importlib.import_module(module)
    except ImportError:
        top = module.partition(".")[0]
        raise MissingExtraError(f'{purpose} needs {top}: pip install "modelport[{EXTRA_OF[top]}]"') from None
