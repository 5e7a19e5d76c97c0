"""A modelport gateway on LM Studio's or Ollama's port (1234 is the gateway's default) is not
LM Studio or Ollama: every gateway answer carries ``x-modelport``, `modelport models` says
"modelport gateway" instead of "yes", and a call to lmstudio/... that the gateway answers
says which server that was and how to untangle the ports. Ollama programs still get the
exact "Ollama is running" from ``GET /``; a browser also reads what answers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from modelport import __version__
from modelport.server import Settings
from modelport.server.testing import GatewayThread

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def gateway(tmp_path):
    with GatewayThread(Settings(keys_path=str(tmp_path / "gateway-keys.db"), log_calls=False)) as gw:
        yield gw


def modelport(tmp_path: Path, gateway: GatewayThread, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.update(MODELPORT_CONFIG_DIR=str(tmp_path / "config"), MODELPORT_LOG_PATH=str(tmp_path / "log.db"),
               PYTHONPATH=str(ROOT), MODELPORT_LMSTUDIO_BASE_URL=gateway.url + "/v1", MODELPORT_OLLAMA_BASE_URL=gateway.url)
    return subprocess.run([sys.executable, "-m", "modelport", *args], env=env, capture_output=True, text=True, timeout=60)


def test_a_gateway_on_lm_studios_or_ollamas_port_is_named_as_one(tmp_path, gateway):
    for response in (httpx.get(gateway.url + "/v1/models"), httpx.get(gateway.url + "/nowhere"),
                     httpx.post(gateway.url + "/v1/chat/completions", json={"model": "nothing/here", "messages": []})):
        assert response.headers["x-modelport"] == __version__, response.url

    listed = modelport(tmp_path, gateway, "models", "--json")
    ready = {p["provider"]: p["ready"] for p in json.loads(listed.stdout)["providers"]}
    assert ready["lmstudio"] == ready["ollama"] == "modelport gateway"
    assert f"{gateway.url}/v1 is a modelport gateway, not lmstudio" in listed.stderr

    asked = modelport(tmp_path, gateway, "ask", "-m", "lmstudio/qwen", "hi")
    assert asked.returncode != 0
    assert "is a modelport gateway, not lmstudio" in asked.stderr and "modelport serve --port" in asked.stderr

    # Ollama programs compare the body; a person's browser learns what it is talking to.
    plain = httpx.get(gateway.url + "/")
    assert (plain.status_code, plain.text) == (200, "Ollama is running")
    browser = httpx.get(gateway.url + "/", headers={"accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
    assert browser.status_code == 200 and browser.text.startswith("Ollama is running") and "modelport gateway" in browser.text
