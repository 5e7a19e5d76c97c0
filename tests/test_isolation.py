"""The test suite never touches the user's own modelport files (issue #14 item 3)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import platformdirs

from tests import isolation

ROOT = Path(__file__).resolve().parent.parent

LEAK = """
from tests import isolation

def test_writes_where_the_user_keeps_the_log():
    real = isolation.REAL_DIRS[0]
    real.mkdir(parents=True, exist_ok=True)
    (real / "logs.db").write_bytes(b"fake call")
"""
ANOTHER_PROCESS = """
import subprocess, sys
from tests import isolation

def test_another_modelport_process_writes_meanwhile():
    real = isolation.REAL_DIRS[0]
    real.mkdir(parents=True, exist_ok=True)
    # Not this process: as the user's own gateway writing its call log during the run.
    subprocess.run([sys.executable, "-c", f"open({str(real / 'logs.db')!r}, 'wb').write(b'a real call')"], check=True)
"""
CLEAN = """
def test_writes_nothing():
    pass
"""


def _inner_run(tmp_path: Path, body: str) -> subprocess.CompletedProcess[str]:
    """A pytest run with the suite's conftest, in a fake machine home whose 'real' dirs are ours."""
    (tmp_path / "test_inner.py").write_text(body)
    home = tmp_path / "machine-home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "MODELPORT_"))}
    env.update(HOME=str(home), PYTHONPATH=str(ROOT), MODELPORT_MODELS_DIR=isolation.MODELS_DIR)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.conftest", "test_inner.py"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_a_run_that_writes_into_the_real_data_dir_fails(tmp_path: Path) -> None:
    result = _inner_run(tmp_path, LEAK)
    assert result.returncode == 1, result.stdout + result.stderr
    # On a line of its own, not glued to the progress line.
    assert "\nthe tests wrote into the user's real modelport files" in result.stdout
    assert "logs.db" in result.stdout


def test_what_another_process_writes_meanwhile_is_named_not_blamed_on_the_tests(tmp_path: Path) -> None:
    result = _inner_run(tmp_path, ANOTHER_PROCESS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "\nchanged in the user's real modelport dirs during the run, not by this test process" in result.stdout
    assert "logs.db" in result.stdout


def test_a_run_that_stays_isolated_passes(tmp_path: Path) -> None:
    result = _inner_run(tmp_path, CLEAN)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_session_environment_points_away_from_the_real_dirs() -> None:
    # Anything a module- or session-scoped fixture starts sees these, not the user's dirs.
    for resolved in (platformdirs.user_data_dir("modelport"), platformdirs.user_config_dir("modelport"),
                     platformdirs.user_cache_dir("modelport"), os.environ["RAY_TMPDIR"]):
        assert Path(resolved).is_relative_to(isolation.SESSION_ROOT)
        assert not any(Path(resolved).is_relative_to(real) for real in isolation.REAL_DIRS)
