"""Session-wide isolation of the test run from the machine's modelport files, applied at
import (see tests/conftest.py). A module of its own so that it runs once: pytest imports the
conftest as ``conftest``, and a test importing ``tests.conftest`` would import (and isolate) again.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from pathlib import Path

import platformdirs

from modelport.local_model import data_dir as models_dir

# Resolved from the machine's own settings, before anything below moves them.
MODELS_DIR = str(models_dir())
REAL_DIRS = tuple(Path(d) for d in {platformdirs.user_data_dir("modelport"), platformdirs.user_config_dir("modelport"),
                                    platformdirs.user_cache_dir("modelport")})

# Variables that carry a provider key or a base URL, read by modelport or by the official SDKs.
ROUTING_ENV = re.compile(
    r"^(MODELPORT_.*_(API_KEY|BASE_URL)|[A-Z0-9_]*_API_KEY|[A-Z0-9_]*_BASE_URL|LM_API_TOKEN|"
    r"ANTHROPIC_AUTH_TOKEN|OLLAMA_HOST|OPENAI_(ORG_ID|PROJECT_ID|ADMIN_KEY))$"
)
# modelport settings that must come from the test, not from the machine.
SETTINGS_ENV = ("MODELPORT_CONFIG", "MODELPORT_MODEL", "MODELPORT_LOG", "MODELPORT_CACHE", "MODELPORT_CACHE_PATH",
                 "MODELPORT_GATEWAY_KEYS")


def paths_under(home: Path) -> dict[str, str]:
    """Every modelport path under ``home``."""
    return {
        "MODELPORT_CONFIG_DIR": str(home / "config"),
        "MODELPORT_KEYS_PATH": str(home / "config" / "keys.json"),
        "MODELPORT_LOG_PATH": str(home / "logs.db"),
        "MODELPORT_CACHE_PATH": str(home / "cache.db"),
        "MODELPORT_DATA_DIR": str(home / "data"),
        "MODELPORT_MODELS_DIR": MODELS_DIR,
    }


def snapshot(dirs: tuple[Path, ...]) -> dict[str, tuple[int, int]]:
    """(mtime_ns, size) of every file under ``dirs``, except the shared model weights."""
    skip = Path(MODELS_DIR).resolve()
    files: dict[str, tuple[int, int]] = {}
    for top in dirs:
        for root, subdirs, names in os.walk(top):
            subdirs[:] = [d for d in subdirs if Path(root, d).resolve() != skip]
            for name in names:
                try:
                    st = os.stat(os.path.join(root, name))
                except FileNotFoundError:
                    continue
                files[os.path.join(root, name)] = (st.st_mtime_ns, st.st_size)
    return files


def changes(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> list[str]:
    return sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p))


# Files under the real dirs that this test process opened for writing, removed or
# renamed: the changes the tests themselves made. A file that changed without appearing here
# was written by another process: the user's gateway or CLI running meanwhile (which the
# guard must not blame on the tests) or, rarely, a subprocess a test started; see
# tests/conftest.py for how each is reported.
WRITTEN: set[str] = set()
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_PATH_EVENTS = frozenset({"open", "sqlite3.connect", "os.remove", "os.rename", "shutil.rmtree"})


def _record_writes(event: str, args: tuple) -> None:
    # Called for every audited event of the process: the name check comes first and is cheap.
    if event not in _PATH_EVENTS or not args or not isinstance(args[0], (str, bytes, os.PathLike)):
        return
    if event == "open":
        mode, flags = args[1], args[2]
        if not (any(c in mode for c in "wax+") if isinstance(mode, str) else flags & _WRITE_FLAGS):
            return
    targets = [args[0], args[1]] if event == "os.rename" else [args[0]]
    for target in targets:
        path = os.path.abspath(os.fsdecode(target))
        if any(path == str(top) or path.startswith(f"{top}{os.sep}") for top in REAL_DIRS):
            WRITTEN.add(path)


def _isolate_session() -> Path:
    # Short and under /tmp: Ray puts Unix sockets in its temp dir (path length limit ~107).
    root = Path(tempfile.mkdtemp(prefix="mp-tests-"))
    for name in list(os.environ):
        if ROUTING_ENV.match(name) or name in SETTINGS_ENV:
            del os.environ[name]
    os.environ.update({
        "HOME": str(root / "home"),
        "XDG_CONFIG_HOME": str(root / "home" / ".config"),
        "XDG_DATA_HOME": str(root / "home" / ".local" / "share"),
        "XDG_CACHE_HOME": str(root / "home" / ".cache"),
        "XDG_STATE_HOME": str(root / "home" / ".local" / "state"),
        "RAY_TMPDIR": str(root / "ray"),
        **paths_under(root / "session"),
    })
    return root


REAL_BEFORE = snapshot(REAL_DIRS)
SESSION_ROOT = _isolate_session()
sys.addaudithook(_record_writes)


