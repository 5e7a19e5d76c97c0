"""Debian's Chromium for the browser tests, driven by Playwright for Python.

Chromium comes from the system (`apt-get install -y chromium`), never `playwright install`:
``chromium_path`` installs it when missing, and fails with the instruction if it cannot.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def install_chromium() -> str:
    if not Path(CHROMIUM).exists():
        result = subprocess.run("apt-get update && apt-get install -y chromium", shell=True, capture_output=True, text=True, timeout=900)
        if result.returncode != 0 or not Path(CHROMIUM).exists():
            pytest.fail(f"Chromium is missing and could not be installed; run `apt-get update && apt-get install -y chromium` as root.\n{result.stderr[-2000:]}")
    return CHROMIUM
