"""Prompt-cache breakpoints in the canonical request and every dialect (issue 21): Anthropic
keeps them both ways, the other wire formats drop them without complaint, OpenAI's cache key
travels, automatic placement marks the stable prefix only, and the SDK exposes both."""

from __future__ import annotations

import pytest

import modelport
from modelport import dialects
from modelport.errors import BadRequestError
from modelport.prompt_cache import has_breakpoints, mark_stable_prefix
from modelport.serialize import request_from_dict, request_to_dict
from modelport.types import ChatRequest, ImagePart, Message, TextPart, Tool, ToolCall, validate_request
from tests.fakes.anthropic_upstream import AnthropicUpstream

A = dialects.get("anthropic")
MARK = {"type": "ephemeral"}


def marked_body() -> dict:
    return {
        "model": "claude-x",
        "max_tokens": 100,
        "system": [{"type": "text", "text": "rules", "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
        "tools": [{"name": "f", "input_schema": {"type": "object", "properties": {}}, "cache_control": MARK}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "doc", "cache_control": MARK},
                                         {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}, "cache_control": MARK}]},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}, "cache_control": MARK}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "ok", "cache_control": {"type": "ephemeral", "ttl": "5m"}}]},
        ],
        "cache_control": MARK,
    }


def test_anthropic_markers_decode_and_encode_to_the_same_body() -> None:
    body = marked_body()
    request = A.decode_request(body)
    assert request.messages[0].content[0].cache == "1h" and request.tools[0].cache is True and request.cache is True
    assert request.messages[3].role == "tool" and request.messages[3].cache == "5m"
    encoded = A.encode_request(request, "claude-x")
    for key in ("system", "tools", "messages", "cache_control"):
        assert encoded[key] == body[key], key


def test_a_marked_single_text_is_not_shortened_to_a_string() -> None:
    request = ChatRequest("m", [Message("system", [TextPart("s", cache=True)]), Message("user", [TextPart("u", cache=True)]),
                                Message("tool", [TextPart("r")], tool_call_id="t1", cache=True)])
    body = A.encode_request(request, "m")
    assert body["system"] == [{"type": "text", "text": "s", "cache_control": MARK}]
    assert body["messages"][0]["content"] == [{"type": "text", "text": "u", "cache_control": MARK}]
    assert body["messages"][1]["content"][0] == {"type": "tool_result", "tool_use_id": "t1", "content": "r", "cache_control": MARK}
    # Without markers the shorthand stays.
    plain = A.encode_request(ChatRequest("m", [Message.system("s"), Message.user("u")]), "m")
    assert plain["system"] == "s" and plain["messages"][0]["content"] == "u" and "cache_control" not in plain


@pytest.mark.parametrize("mark,param", [({"type": "persistent"}, "system[0].cache_control"), ("yes", "system[0].cache_control"),
                                        ({"type": "ephemeral", "ttl": "2h"}, "system[0].cache_control.ttl")])
def test_a_malformed_anthropic_marker_is_a_400_naming_it(mark, param) -> None:
    body = {"model": "m", "max_tokens": 5, "system": [{"type": "text", "text": "s", "cache_control": mark}],
            "messages": [{"role": "user", "content": "hi"}]}
    with pytest.raises(BadRequestError) as caught:
        A.decode_request(body)
    assert caught.value.param == param


@pytest.mark.parametrize("name", ["openai", "openai-responses", "gemini", "ollama"])
def test_other_dialects_drop_markers_silently(name: str) -> None:
    request = A.decode_request(marked_body())
    body = dialects.get(name).encode_request(request, "m")
    assert "cache_control" not in repr(body)


@pytest.mark.parametrize("name", ["openai", "openai-responses"])
def test_openai_cache_key_and_retention_both_ways(name: str) -> None:
    dialect = dialects.get(name)
    wire = {"model": "m", "prompt_cache_key": "k1", "prompt_cache_retention": "24h",
            **({"messages": [{"role": "user", "content": "hi"}]} if name == "openai" else {"input": "hi"})}
    request = dialect.decode_request(wire)
    assert (request.cache_key, request.cache_retention) == ("k1", "24h")
    body = dialect.encode_request(request, "m")
    assert body["prompt_cache_key"] == "k1" and body["prompt_cache_retention"] == "24h"
    assert "prompt_cache_key" not in dialect.encode_request(ChatRequest("m", [Message.user("hi")]), "m")
    with pytest.raises(BadRequestError):
        dialect.decode_request({**wire, "prompt_cache_key": 5})


def test_canonical_checks_refuse_a_bad_mark() -> None:
    with pytest.raises(BadRequestError, match="cache"):
        validate_request(ChatRequest("m", [Message("user", [TextPart("x", cache="forever")])]))
    with pytest.raises(BadRequestError, match="tools"):
        validate_request(ChatRequest("m", [Message.user("x")], tools=[Tool("f", cache=3)]))


def test_markers_survive_serialization() -> None:
    request = A.decode_request(marked_body())
    request.cache_key = "k"
    assert request_from_dict(request_to_dict(request)) == request
    plain = ChatRequest("m", [Message.user("x")])
    assert "cache" not in repr(request_to_dict(plain))


def test_automatic_placement_marks_tools_system_and_the_turns_before_the_newest() -> None:
    request = ChatRequest("m", [Message.system("s"), Message.user("q1"), Message.assistant("", [ToolCall("c1", "f")]),
                                Message.tool("c1", "r"), Message("user", [ImagePart(url="https://x/y.png")])],
                          tools=[Tool("f"), Tool("g")])
    marked = mark_stable_prefix(request, 4)
    assert [t.cache for t in marked.tools] == [False, True]
    assert marked.messages[0].content[0].cache is True
    assert marked.messages[3].cache is True  # the tool result before the newest message
    assert not marked.messages[4].content[0].cache and not marked.messages[2].tool_calls[0].cache
    assert not has_breakpoints(request)  # the caller's request is untouched
    assert sum(1 for _ in filter(None, [marked.tools[1].cache, marked.messages[0].content[0].cache, marked.messages[3].cache])) == 3
    assert len([t for t in mark_stable_prefix(request, 1).tools if t.cache]) == 1
    assert not mark_stable_prefix(request, 1).messages[0].content[0].cache


def test_sdk_cache_prompt_and_cache_parts_reach_anthropic() -> None:
    with AnthropicUpstream() as upstream:
        client = modelport.Client(config={"providers": {"anthropic": {"base_url": upstream.base_url}}}, api_keys={"anthropic": "k"},
                                  log=False, cache=False)
        long_system = " ".join(f"s{i}" for i in range(500))
        client.chat("anthropic/claude-x", "hi", system=long_system, cache_prompt=True)
        assert upstream.last_request.body["system"][0]["cache_control"] == MARK
        again = client.chat("anthropic/claude-x", "hi", system=long_system, cache_prompt=True)
        assert again.usage.cached_tokens == 500
        client.chat("anthropic/claude-x", [Message("user", [TextPart("a long document", cache="1h"), TextPart("question")])])
        content = upstream.last_request.body["messages"][0]["content"]
        assert content[0]["cache_control"] == {"type": "ephemeral", "ttl": "1h"} and "cache_control" not in content[1]
        client.chat("anthropic/claude-x", "hi", system=long_system)
        assert "cache_control" not in repr(upstream.last_request.body)
