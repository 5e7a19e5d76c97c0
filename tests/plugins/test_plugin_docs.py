"""The examples of docs/plugins.md work as written: the provider plugin (both forms) answers
through a fake OpenAI-compatible server, and the hook changes, refuses and redacts."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

import httpx

from modelport.calllog import CallLog, default_log_path
from modelport.client import Client
from modelport.server import Settings
from modelport.server.testing import GatewayThread

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

DOCS = (Path(__file__).parents[2] / "docs" / "plugins.md").read_text(encoding="utf-8")
DOCS_URL = "http://mybox.example:8080/v1"


def section(title: str) -> str:
    return DOCS.split(f"## {title}", 1)[1].split("\n## ", 1)[0]


def blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, re.S)


def entry_points(toml: str) -> dict[str, dict[str, str]]:
    return tomllib.loads(toml)["project"]["entry-points"]


@pytest.mark.parametrize("form", [0, 1], ids=["dict", "Provider"])
def test_the_provider_example_answers(form, install_plugin, openai_upstream, monkeypatch):
    monkeypatch.setenv("MYBOX_API_KEY", "sk-mybox")  # the Provider form needs one
    example = section("Example 1")
    toml = next(b for b in blocks(example, "toml") if "[project.entry-points" in b)
    source = blocks(example, "python")[form].replace(DOCS_URL, openai_upstream.base_url)
    install_plugin("modelport-mybox", entry_points(toml), {"modelport_mybox.py": source})
    assert Client().chat("mybox/llama-3.1-8b", "Hello").text == "echo: Hello"


def test_the_door_example_answers_on_the_gateway(install_plugin, openai_upstream, tmp_path):
    example = section("Example 2")
    (toml,) = blocks(example, "toml")
    (source,) = [b for b in blocks(example, "python") if "class PingDoor" in b]
    install_plugin("modelport-ping", entry_points(toml), {"modelport_ping.py": source})
    with GatewayThread(Settings(auth=True, log_calls=False, keys_path=str(tmp_path / "keys.db"))) as gw:
        answer = httpx.get(gw.url + "/v1/ping")  # public: no key needed even with auth on
    assert answer.status_code == 200 and answer.json()["ok"] is True


def test_the_hook_example_changes_refuses_and_redacts(install_plugin, openai_upstream, tmp_path):
    example = section("Example 3")
    (toml,) = blocks(example, "toml")
    (source,) = blocks(example, "python")
    install_plugin("modelport-guard", entry_points(toml), {"modelport_guard.py": source})
    config = {"aliases": {"fake": "openai/gpt-fake"}, "providers": {"openai": {"base_url": openai_upstream.base_url}}}
    with GatewayThread(Settings(log_calls=True, keys_path=str(tmp_path / "keys.db")), config=config, api_keys={"openai": "sk-x"}) as gw:
        answer = httpx.post(gw.url + "/v1/chat/completions", json={"model": "fake", "messages": [{"role": "user", "content": "What is REST?"}]})
        assert answer.status_code == 200
        assert openai_upstream.last_request.body["metadata"] == {"team": "research"}
        refused = httpx.post(gw.url + "/v1/chat/completions", json={"model": "fake", "messages": [{"role": "user", "content": "news of Project-X?"}]})
        assert refused.status_code == 403 and "does not send that topic" in refused.json()["error"]["message"]
    log = CallLog(default_log_path())
    deadline = time.monotonic() + 10
    while len(log.query(limit=None)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    stored = {call.error_kind: call for call in log.query(limit=None)}
    assert stored[None].request.messages == [] and stored[None].response is None  # nothing said is kept
