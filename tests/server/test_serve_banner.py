"""`modelport serve` says what it serves and who can reach it: a few short lines naming
every wire format and the console, and, when it is open beyond loopback, a warning on
stderr, never a banner that calls a network-wide open gateway "loopback"."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from pathlib import Path

from tests.isolation import paths_under
from tests.servers import free_port

ROOT = Path(__file__).resolve().parents[2]


def serve(home: Path, *args: str) -> tuple[list[str], str]:
    """The banner's lines (what stdout shows within 30 s) and stderr, then the server is stopped."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "modelport", "serve", "--port", str(port), *args],
                               cwd=ROOT, env={**os.environ, **paths_under(home)},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out = b""
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 30
        # The banner is one write; whatever it holds once the gateway serves is all it says.
        while b"/ui" not in out and time.monotonic() < deadline and process.poll() is None:
            if select.select([process.stdout], [], [], 0.1)[0]:
                out += os.read(process.stdout.fileno(), 65536)
    finally:
        process.terminate()
        rest, err = process.communicate(timeout=30)
    lines = (out + rest).decode().splitlines()
    assert lines and f":{port}" in lines[0], (lines, err)
    return lines, err.decode()


def test_an_open_gateway_beyond_loopback_is_called_so_and_warned_about(tmp_path: Path) -> None:
    lines, err = serve(tmp_path, "--host", "0.0.0.0", "--no-auth")
    assert "(open: no key needed, reachable from the network)" in lines[0] and "loopback" not in lines[0]
    assert "warning: gateway keys are off" in err and "anyone who can" in err and "modelport keys create" in err
    banner = "\n".join(lines)
    for door in ("/v1", "Responses", "Anthropic", "Gemini", "Ollama", "/ui"):
        assert door in banner, door
    assert all(len(line) <= 100 for line in lines), lines

    lines, err = serve(tmp_path)
    assert "(open: no key needed, this machine only)" in lines[0] and "warning" not in err
