"""modelport type-checks clean: mypy over the package, as configured in pyproject.toml
([tool.mypy]), finds nothing. Protocols at the seams (dialects, backends, the batch engine's
client and journal, the records database) only hold if something checks them."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(660)  # a first run, with no cache, checks every module
def test_mypy_finds_no_error_in_the_package():
    result = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
