"""Shared fixtures: the whole run is isolated from the machine's modelport files, every test
gets its own home on top, and a guard fails the run if the tests wrote into the user's real
files (and names, without failing, what other processes changed there meanwhile).

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
import sys
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import pytest

# First: moves HOME, XDG and MODELPORT_* paths away from the user's files for the whole run.
from tests.isolation import (REAL_BEFORE, REAL_DIRS, ROUTING_ENV, SESSION_ROOT, SETTINGS_ENV, WRITTEN, changes, paths_under,
                             snapshot)
from tests.fakes.openai_upstream import OpenAIUpstream


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if the tests wrote into the user's real modelport dirs; only name what
    other processes changed there meanwhile (see isolation.WRITTEN for how they differ)."""
    changed = changes(REAL_BEFORE, snapshot(REAL_DIRS))
    ours = [path for path in changed if _written_here(path)]
    theirs = [path for path in changed if path not in ours]
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and (ours or theirs):
        reporter.write("\n")  # the progress line ("...[100%]") is still open: end it first
    if ours:
        _report(reporter, "the tests wrote into the user's real modelport files (an isolation leak: a path "
                "resolved before tests/isolation.py moved HOME, or a test writing there on purpose):", ours, red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if theirs:
        _report(reporter, "changed in the user's real modelport dirs during the run, not by this test process "
                "(another modelport process, e.g. your gateway or CLI; or a test's subprocess that ignored the "
                "isolated environment, if the name is a test's):", theirs, yellow=True)


def _written_here(path: str) -> bool:
    """Whether this process wrote ``path``: itself, the database whose -wal/-shm/-journal it is
    (SQLite creates those in C, unseen by the audit hook), or in a directory it removed whole."""
    base = re.sub(r"-(wal|shm|journal)$", "", path)
    return any(p in WRITTEN for p in (path, base, *map(str, Path(path).parents)))


def _report(reporter: Any, message: str, paths: list[str], **markup: bool) -> None:
    lines = [message, *(f"  {path}" for path in paths[:20])]
    if reporter is None:
        print("\n".join(lines), file=sys.stderr)
        return
    for line in lines:
        reporter.write_line(line, **markup)


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(SESSION_ROOT, ignore_errors=True)


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[os.PathLike[str]]:
    """A private config dir, keys file, call log and data dir; no provider keys or base URLs
    from the machine."""
    home = tmp_path_factory.mktemp("home")
    for name in list(os.environ):
        if ROUTING_ENV.match(name) or name in SETTINGS_ENV:
            monkeypatch.delenv(name)
    for name, value in paths_under(home).items():
        monkeypatch.setenv(name, value)
    yield home


@pytest.fixture()
def install_plugin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Path]]:
    """``install_plugin(name, entry_points, modules)`` makes a plugin distribution without
    installing it (tests/plugins/helpers.py) and puts it on sys.path for this test only."""
    from tests.plugins.helpers import install, make_plugin, uninstall

    made: list[Path] = []

    def make_and_install(name: str, entry_points: Mapping[str, Mapping[str, str]], modules: Mapping[str, str]) -> Path:
        path = make_plugin(tmp_path_factory.mktemp("plugin"), name, entry_points, modules)
        made.append(path)
        install(path)
        return path

    yield make_and_install
    for path in made:
        uninstall(path)


@pytest.fixture()
def openai_upstream() -> Iterator[OpenAIUpstream]:
    """A fake OpenAI-compatible server on 127.0.0.1; point a client at ``.base_url``."""
    with OpenAIUpstream() as upstream:
        yield upstream



# Real Redis and PostgreSQL, for the shared-state tests (installed by apt-get when missing).
from tests.servers import postgres_server, postgres_url, redis_server, redis_url  # noqa: E402,F401
