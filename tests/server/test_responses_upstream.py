"""modelport as a client of a server that speaks Responses: the provider table chooses the
dialect per provider row and per model (data, no if-chains), and Client calls go to
``/v1/responses`` with the openai-responses dialect."""

from __future__ import annotations

import pytest

from modelport import Client
from modelport.errors import ConfigError
from modelport.providers import provider_table
from tests.fakes.openai_upstream import Answer
from tests.fakes.responses_upstream import ResponsesUpstream


def test_openai_models_that_exist_only_on_responses_are_routed_there() -> None:
    openai = provider_table({})["openai"]
    assert openai.dialect_for("gpt-5-codex") == openai.dialect_for("o3-pro-2025-06-10") == "openai-responses"
    assert openai.dialect_for("gpt-4o-mini") == openai.dialect_for("gpt-5") == "openai"
    assert provider_table({})["anthropic"].dialect_for("claude-sonnet-4-5") == "anthropic"


def test_config_chooses_the_dialect_per_model_and_per_provider() -> None:
    table = provider_table({"providers": {
        "box": {"base_url": "http://127.0.0.1:9/v1", "model_dialects": {"big-*": "openai-responses"}},
        "openai": {"model_dialects": {"my-tuned": "openai-responses"}},
        "resp": {"base_url": "http://127.0.0.1:9/v1", "dialect": "openai-responses"},
    }})
    assert table["box"].dialect_for("big-1") == "openai-responses" and table["box"].dialect_for("small") == "openai"
    assert table["openai"].dialect_for("my-tuned") == "openai-responses" and table["openai"].dialect_for("gpt-5-codex") == "openai-responses"
    assert table["resp"].dialect_for("anything") == "openai-responses"
    with pytest.raises(ConfigError, match="unknown dialect 'responses'"):
        provider_table({"providers": {"box": {"base_url": "http://x/v1", "model_dialects": {"*": "responses"}}}})


def test_client_chat_stream_and_tools_over_a_responses_upstream() -> None:
    with ResponsesUpstream() as upstream:
        client = Client(config={"providers": {"box": {"base_url": upstream.base_url, "model_dialects": {"big-*": "openai-responses"}}}})
        assert client.chat("box/big-1", "hello there", system="be brief").text == "echo: hello there"
        sent = upstream.last_request
        assert sent.path == "/v1/responses" and sent.body["instructions"] == "be brief" and sent.body["store"] is False
        assert "".join(client.stream("box/big-1", "a b c").text_stream()) == "echo: a b c"
        upstream.script(Answer(tool_calls=[("call_1", "add", '{"a": 1}')], reasoning="sum it"))
        answer = client.chat("box/big-1", "add", tools=[{"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}])
        assert answer.finish_reason == "tool_calls" and answer.tool_calls[0].args == {"a": 1}
        assert answer.message.content[0].encrypted_content.startswith("gAAAA-fake")
        upstream.script(Answer(text="cut", finish_reason="max_output_tokens"))
        assert client.chat("box/big-1", "long", max_tokens=16).finish_reason == "length"
