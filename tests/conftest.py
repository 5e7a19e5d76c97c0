"""Shared fixtures: the whole run is isolated from the machine's modelport files, every test
gets its own home on top, and a guard fails the run if the user's real files changed.

Isolation is by environment only (no patching of modelport), in two layers:

* Session-wide and first, at conftest import, before any fixture or worker starts:
  HOME, the XDG dirs, every ``MODELPORT_*`` path and Ray's temp dir point into one
  temporary directory. Processes started by module- or session-scoped fixtures (a Ray
  cluster, whose workers copy the environment once at start) inherit this, not the
  user's files: before, Ray workers wrote each run's fake calls into the real call log.
* Per test (``isolated_home``): a fresh config dir, keys file, call log, cache and data dir,
  and no variable that could route a call elsewhere or supply a key.

Only the embedded model's weights stay where the machine keeps them
(``MODELPORT_MODELS_DIR``): a fresh copy per test would fetch 98 MB each time.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import platformdirs
import pytest

from modelport.local_model import data_dir as models_dir
from tests.fakes.openai_upstream import OpenAIUpstream

# Resolved from the machine's own settings, before anything below moves them.
MODELS_DIR = str(models_dir())
REAL_DIRS = tuple(Path(d) for d in {platformdirs.user_data_dir("modelport"), platformdirs.user_config_dir("modelport"),
                                    platformdirs.user_cache_dir("modelport")})

# Variables that carry a provider key or a base URL, read by modelport or by the official SDKs.
_ROUTING_ENV = re.compile(
    r"^(MODELPORT_.*_(API_KEY|BASE_URL)|[A-Z0-9_]*_API_KEY|[A-Z0-9_]*_BASE_URL|LM_API_TOKEN|"
    r"ANTHROPIC_AUTH_TOKEN|OLLAMA_HOST|OPENAI_(ORG_ID|PROJECT_ID|ADMIN_KEY))$"
)
# modelport settings that must come from the test, not from the machine.
_SETTINGS_ENV = ("MODELPORT_CONFIG", "MODELPORT_MODEL", "MODELPORT_LOG", "MODELPORT_CACHE", "MODELPORT_CACHE_PATH",
                 "MODELPORT_GATEWAY_KEYS")


def _paths_under(home: Path) -> dict[str, str]:
    """Every modelport path under ``home``."""
    return {
        "MODELPORT_CONFIG_DIR": str(home / "config"),
        "MODELPORT_KEYS_PATH": str(home / "config" / "keys.json"),
        "MODELPORT_LOG_PATH": str(home / "logs.db"),
        "MODELPORT_CACHE_PATH": str(home / "cache.db"),
        "MODELPORT_DATA_DIR": str(home / "data"),
        "MODELPORT_MODELS_DIR": MODELS_DIR,
    }


def _snapshot(dirs: tuple[Path, ...]) -> dict[str, tuple[int, int]]:
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


def _changes(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> list[str]:
    return sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p))


def _isolate_session() -> Path:
    # Short and under /tmp: Ray puts Unix sockets in its temp dir (path length limit ~107).
    root = Path(tempfile.mkdtemp(prefix="mp-tests-"))
    for name in list(os.environ):
        if _ROUTING_ENV.match(name) or name in _SETTINGS_ENV:
            del os.environ[name]
    os.environ.update({
        "HOME": str(root / "home"),
        "XDG_CONFIG_HOME": str(root / "home" / ".config"),
        "XDG_DATA_HOME": str(root / "home" / ".local" / "share"),
        "XDG_CACHE_HOME": str(root / "home" / ".cache"),
        "XDG_STATE_HOME": str(root / "home" / ".local" / "state"),
        "RAY_TMPDIR": str(root / "ray"),
        **_paths_under(root / "session"),
    })
    return root


_REAL_BEFORE = _snapshot(REAL_DIRS)
SESSION_ROOT = _isolate_session()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if any file of the user's real modelport dirs changed while it ran."""
    changed = _changes(_REAL_BEFORE, _snapshot(REAL_DIRS))
    if changed:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        message = ("the tests changed the user's real modelport files (isolation leak; "
                   "or another process used modelport meanwhile):\n  " + "\n  ".join(changed[:20]))
        if reporter is not None:
            reporter.write_line(message, red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(SESSION_ROOT, ignore_errors=True)


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[os.PathLike[str]]:
    """A private config dir, keys file, call log and data dir; no provider keys or base URLs
    from the machine."""
    home = tmp_path_factory.mktemp("home")
    for name in list(os.environ):
        if _ROUTING_ENV.match(name) or name in _SETTINGS_ENV:
            monkeypatch.delenv(name)
    for name, value in _paths_under(home).items():
        monkeypatch.setenv(name, value)
    yield home


@pytest.fixture()
def openai_upstream() -> Iterator[OpenAIUpstream]:
    """A fake OpenAI-compatible server on 127.0.0.1; point a client at ``.base_url``."""
    with OpenAIUpstream() as upstream:
        yield upstream

