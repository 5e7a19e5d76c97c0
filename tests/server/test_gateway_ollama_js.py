"""The official ``ollama`` npm package against a live gateway (tests/node/ollama).

npm installs the pinned package into that directory's gitignored node_modules the first
time; the test skips, saying so, only when ``node`` is absent.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from modelport.server import Settings
from modelport.server.testing import GatewayThread
from tests.fakes import openai_upstream
from tests.fakes.openai_upstream import Answer, OpenAIUpstream
from tests.paths import TESTS

NODE_DIR = TESTS / "node" / "ollama"
UPSTREAM_KEY = "sk-upstream-openai"


@pytest.fixture(scope="module")
def node_client() -> Path:
    if shutil.which("node") is None:
        pytest.skip("node is not installed: the ollama JS client cannot run")
    if not (NODE_DIR / "node_modules" / "ollama").is_dir():
        npm = shutil.which("npm")
        if npm is None:
            pytest.skip("npm is not installed: the ollama JS client cannot be installed")
        done = subprocess.run([npm, "install", "--no-audit", "--no-fund"], cwd=NODE_DIR, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
    return NODE_DIR / "client.mjs"


@pytest.fixture(scope="module")
def upstream() -> Iterator[OpenAIUpstream]:
    with OpenAIUpstream(api_key=UPSTREAM_KEY) as server:
        yield server


def test_the_ollama_js_client(node_client: Path, upstream: OpenAIUpstream, tmp_path: Path) -> None:
    config = {"aliases": {"llama3.2": "openai/gpt-fake"}, "providers": {"openai": {"base_url": upstream.base_url}}}
    # The calls, in the script's order: chat, stream, (local), generate, tools, structured.
    upstream.script("echo: hello there", "echo: a b c", "echo: tell me",
                    Answer(tool_calls=[("call_js", "get_weather", '{"city":"Paris"}')]), '{"n": 3}')
    settings = Settings(log_calls=False, keys_path=str(tmp_path / "gateway.db"), max_tokens=64)
    with GatewayThread(settings, config=config, api_keys={"openai": UPSTREAM_KEY}) as gw:
        run = subprocess.run(["node", str(node_client), gw.url], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["chat"] == {"content": "echo: hello there", "done": True, "done_reason": "stop", "eval_count": 3}
    assert out["stream"] == {"content": "echo: a b c", "done": True, "eval_count": 4}
    assert out["local"]["content"] and 0 < out["local"]["eval_count"] <= 5
    assert out["generate"] == {"response": "echo: tell me", "done": True}
    assert out["tools"] == [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]
    assert json.loads(out["structured"]) == {"n": 3}
    assert out["embed"][1] == pytest.approx(openai_upstream.fake_vector("two"), rel=1e-6)
    assert {"llama3.2", "local/smollm2"} <= set(out["list"]) and "completion" in out["show"]
    assert out["error"]["status"] == 404 and "mystery:7b" in out["error"]["message"]
