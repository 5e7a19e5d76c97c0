"""The contract tests say where they expect the provider specs when they skip (issue #14)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _contract_run(specs_dir: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, MODELPORT_SPECS_DIR=str(specs_dir), PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-k", "anthropic",
                           "tests/dialects/test_contract_anthropic_gemini.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_a_skipped_contract_test_names_the_directory_it_looked_in_and_the_variable(tmp_path: Path) -> None:
    result = _contract_run(tmp_path / "no-specs-here")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "skipped" in result.stdout
    assert f"expected in {tmp_path / 'no-specs-here'}" in result.stdout
    assert "MODELPORT_SPECS_DIR" in result.stdout
