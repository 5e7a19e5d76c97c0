"""The plain-dict form of canonical types: lossless both ways, JSON-able, and canonical."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from modelport.serialize import (
    message_from_dict,
    message_to_dict,
    request_from_dict,
    request_to_dict,
    response_from_dict,
    response_to_dict,
)
from modelport.types import (
    ChatRequest,
    ChatResponse,
    ImagePart,
    Message,
    ReasoningPart,
    ResponseFormat,
    TextPart,
    Tool,
    ToolCall,
    ToolChoice,
    Usage,
)


def full_request() -> ChatRequest:
    return ChatRequest(
        model="groq/openai/gpt-oss-120b",
        messages=[
            Message.system("Be brief."),
            Message.user("What is in this picture?", ImagePart.from_url("data:image/png;base64,iVBORw0KGgo="),
                         ImagePart(url="https://example.com/cat.jpg", detail="low")),
            Message("assistant", [ReasoningPart("look first", signature="sig-1"), TextPart("Let me check.")],
                    [ToolCall("call_1", "lookup", '{"q": "cat"}', signature="gsig")]),
            Message.tool("call_1", "a cat", name="lookup", is_error=True),
        ],
        temperature=0.2,
        top_p=0.9,
        top_k=40,
        max_tokens=256,
        stop=["\n\n", "END"],
        seed=7,
        presence_penalty=0.1,
        frequency_penalty=-0.1,
        response_format=ResponseFormat("json_schema", {"type": "object"}, "answer", True),
        tools=[Tool("lookup", "Look a thing up", {"type": "object", "properties": {"q": {"type": "string"}}}, strict=True)],
        tool_choice=ToolChoice("required", "lookup"),
        parallel_tool_calls=False,
        reasoning_effort="low",
        metadata={"user": "u1"},
        stream=True,
        extra={"logprobs": True, "nested": {"a": [1, 2]}},
    )


def full_response() -> ChatResponse:
    return ChatResponse(
        id="resp_1",
        model="gpt-oss-120b",
        message=Message("assistant", [ReasoningPart("thinking", "s"), TextPart("Hello")], [ToolCall("c1", "f", "{not json")]),
        finish_reason="tool_calls",
        usage=Usage(100, 50, 30, 5, 20),
        provider="groq",
        created=1_700_000_000,
        latency=0.25,
        raw={"provider": "body"},
        parsed={"x": 1},
    )


def test_request_round_trips_every_field() -> None:
    request = full_request()
    data = request_to_dict(request)
    assert request_from_dict(json.loads(json.dumps(data))) == request


def test_response_round_trips_and_leaves_out_raw_and_parsed() -> None:
    response = full_response()
    data = json.loads(json.dumps(response_to_dict(response)))
    assert "raw" not in data and "parsed" not in data
    back = response_from_dict(data)
    assert back == response
    assert back.raw is None and back.parsed is None


def test_minimal_request_is_small_and_omits_defaults() -> None:
    data = request_to_dict(ChatRequest("openai/gpt-4o-mini", [Message.user("hi")]))
    assert data == {"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}
    assert request_from_dict(data) == ChatRequest("openai/gpt-4o-mini", [Message.user("hi")])


def test_stream_flag_can_be_left_out_for_cache_keys() -> None:
    request = full_request()
    assert "stream" not in request_to_dict(request, include_stream=False)
    assert request_to_dict(request)["stream"] is True


def test_integer_sampling_parameters_serialize_like_floats() -> None:
    one = request_to_dict(ChatRequest("m", [Message.user("x")], temperature=1))
    other = request_to_dict(ChatRequest("m", [Message.user("x")], temperature=1.0))
    assert json.dumps(one) == json.dumps(other)


def test_serialized_dicts_do_not_share_mutable_state_with_the_request() -> None:
    request = full_request()
    data = request_to_dict(request)
    request.messages.append(Message.user("later"))
    request.extra["added"] = 1
    request.stop.append("X")
    assert len(data["messages"]) == 4 and "added" not in data["extra"] and data["stop"] == ["\n\n", "END"]


texts = st.text(max_size=20)
parts = st.one_of(
    st.builds(TextPart, texts),
    st.builds(ReasoningPart, texts, st.none() | texts),
    st.builds(ImagePart, st.none() | texts, st.none() | texts, st.none() | texts, st.none() | texts),
)
calls = st.builds(ToolCall, texts, texts, texts, st.none() | texts)
messages = st.builds(
    Message,
    st.sampled_from(["system", "user", "assistant", "tool"]),
    st.lists(parts, max_size=4),
    st.lists(calls, max_size=3),
    st.none() | texts,
    st.none() | texts,
    st.booleans(),
)


@given(messages)
def test_any_message_round_trips_through_json(message: Message) -> None:
    assert message_from_dict(json.loads(json.dumps(message_to_dict(message)))) == message


@given(st.lists(messages, min_size=1, max_size=4), st.none() | st.floats(0, 2), st.none() | st.integers(1, 10_000),
       st.dictionaries(st.text(max_size=8), st.integers() | st.text(max_size=8), max_size=3))
def test_any_request_round_trips_through_json(msgs: list[Message], temperature: float | None, max_tokens: int | None,
                                              extra: dict) -> None:
    request = ChatRequest("p/m", msgs, temperature=temperature, max_tokens=max_tokens, extra=extra)
    assert request_from_dict(json.loads(json.dumps(request_to_dict(request)))) == request
