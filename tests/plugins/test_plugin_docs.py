"""The examples of docs/plugins.md work as written: the provider plugin (both forms) answers
through a fake OpenAI-compatible server, and the hook changes, refuses and redacts."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from modelport.calllog import CallLog
from modelport.client import Client
from modelport.errors import PermissionDeniedError
from modelport.types import ChatRequest, ChatResponse, Message

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

DOCS = (Path(__file__).parents[2] / "docs" / "plugins.md").read_text(encoding="utf-8")
DOCS_URL = "http://10.0.0.5:8080/v1"


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


def test_the_hook_example_changes_refuses_and_redacts(install_plugin, tmp_path):
    example = section("Example 3")
    (toml,) = blocks(example, "toml")
    (source,) = blocks(example, "python")
    install_plugin("modelport-guard", entry_points(toml), {"modelport_guard.py": source})
    from modelport import plugins

    guard = plugins.hooks()["guard"]()
    request = ChatRequest("openai/gpt-4o-mini", [Message.user("What is a REST API?")])
    changed = asyncio.run(guard.before_request(None, request))
    assert changed.metadata == {"team": "research"} and changed.messages == request.messages
    with pytest.raises(PermissionDeniedError, match="does not send that topic"):
        asyncio.run(guard.before_request(None, ChatRequest("openai/gpt-4o-mini", [Message.user("news of Project-X?")])))

    log = CallLog(tmp_path / "log.db")
    log.record(request, ChatResponse("r1", "gpt-4o-mini", Message.assistant("An API over HTTP.")), provider="openai",
               model="gpt-4o-mini", source="gateway")
    log.flush()
    (call,) = log.query(limit=None)
    stored = guard.log_view(call)
    assert (stored.prompt, stored.response_text, stored.response, stored.request.messages) == ("[redacted]", None, None, [])
    assert (stored.provider, stored.usage) == (call.provider, call.usage)
