"""The official ``openai`` npm package (``responses.create`` and ``responses.stream``) against
a live gateway, answered by a fake Anthropic upstream.

The package is installed with npm into ``tests/node/node_modules`` (gitignored) on first
run; the test skips only when ``node`` is absent, and says so.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from modelport.server.testing import GatewayThread
from tests.server.test_responses_gateway import Upstreams, _fresh_upstreams, gateway, upstreams  # noqa: F401
from tests.paths import TESTS

NODE_DIR = TESTS / "node"
pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed, so the openai npm package cannot be tested")


@pytest.fixture(scope="module")
def node_openai() -> Path:
    if not (NODE_DIR / "node_modules" / "openai").is_dir():
        npm = shutil.which("npm")
        if npm is None:
            pytest.fail("node is installed but npm is not: install npm to fetch the openai package")
        subprocess.run([npm, "install", "--prefix", str(NODE_DIR), "--no-audit", "--no-fund"], check=True, timeout=300, capture_output=True)
    return NODE_DIR


def test_node_sdk_create_stream_and_retrieve(gateway: GatewayThread, node_openai: Path) -> None:
    run = subprocess.run(["node", str(node_openai / "responses.mjs"), gateway.url + "/v1", "claude-fake"],
                         capture_output=True, text=True, timeout=120, cwd=node_openai)
    assert run.returncode == 0, run.stderr
    seen = json.loads(run.stdout)
    created = seen["created"]
    assert created["id"].startswith("resp_") and created["status"] == "completed"
    assert created["output_text"] == "echo: hello from node" and created["usage"]["total_tokens"] > 0
    stream = seen["stream"]
    assert stream["events"][:2] == ["response.created", "response.in_progress"] and stream["events"][-1] == "response.completed"
    assert stream["deltas"] == stream["final_text"] == "echo: streamed words" and stream["final_status"] == "completed"
    assert seen["retrieved_text"] == "echo: hello from node"
