"""`modelport keys set` fed from a pipe, as in `echo KEY | modelport keys set groq`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_keys_set_reads_a_piped_key_quietly(tmp_path: Path) -> None:
    env = {**os.environ, "MODELPORT_KEYS_PATH": str(tmp_path / "keys.json"), "MODELPORT_CONFIG_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "modelport", "keys", "set", "groq"], input="gsk-piped-0123456789\n",
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "GetPassWarning" not in result.stderr and "echoed" not in result.stderr
    assert "gsk-piped-0123456789" in (tmp_path / "keys.json").read_text()
