"""The OpenAI dialect: what goes on the wire, what comes back, and that both directions agree.

The round-trip properties at the end are the heart of it: the gateway decodes exactly what
the client encodes, and a streamed answer folds into the same response as the whole one.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import struct
from email.utils import format_datetime
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelport import errors
from modelport.dialects import openai as oa
from modelport.dialects import decode_sse
from modelport.sse import SSEParser
from modelport.types import (
    accumulate as fold,
    ChatRequest,
    ChatResponse,
    Embedding,
    EmbeddingResponse,
    ImagePart,
    Message,
    ModelInfo,
    ReasoningPart,
    ResponseFormat,
    StreamAccumulator,
    StreamEvent,
    TextPart,
    Tool,
    ToolCall,
    ToolChoice,
    Usage,
    dump_json,
)

WEATHER = Tool("get_weather", "Weather for a city.", {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})


def sse_to_events(stream: bytes, decoder: oa.StreamDecoder | None = None) -> list[StreamEvent]:
    if decoder is None:
        return decode_sse(oa, stream, "openai")
    parser, events = SSEParser(), []
    for name, data in parser.feed(stream) + parser.close():
        events += decoder.feed(name, data)
    return events


def accumulate(events: list[StreamEvent], provider: str = "openai") -> ChatResponse:
    return fold(events, provider=provider)


# ---------------------------------------------------------------------------------------
# encode_request: the body modelport sends to an OpenAI-compatible provider
# ---------------------------------------------------------------------------------------


def test_chat_path_is_the_same_for_streams():
    assert oa.chat_path("gpt-4o", stream=False) == oa.chat_path("gpt-4o", stream=True) == "/chat/completions"


def test_minimal_request_is_model_and_messages_only():
    body = oa.encode_request(ChatRequest("ignored", [Message.user("Hi")]), "gpt-4o-mini")
    assert body == {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}


def test_sampling_parameters_go_out_under_their_openai_names():
    req = ChatRequest(
        "m", [Message.user("Hi")], temperature=0.2, top_p=0.9, max_tokens=50, stop=["END"], seed=7,
        presence_penalty=0.5, frequency_penalty=-0.5, parallel_tool_calls=False, reasoning_effort="low",
        metadata={"job": "nightly"},
    )
    body = oa.encode_request(req, "m")
    assert body["max_tokens"] == 50 and "max_completion_tokens" not in body
    assert {k: body[k] for k in ("temperature", "top_p", "stop", "seed", "presence_penalty", "frequency_penalty")} == {
        "temperature": 0.2, "top_p": 0.9, "stop": ["END"], "seed": 7, "presence_penalty": 0.5, "frequency_penalty": -0.5,
    }
    assert body["parallel_tool_calls"] is False
    assert body["reasoning_effort"] == "low"
    assert body["metadata"] == {"job": "nightly"}


def test_streaming_asks_for_the_usage_chunk():
    body = oa.encode_request(ChatRequest("m", [Message.user("Hi")], stream=True), "m")
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


def test_extra_is_merged_last_and_wins():
    req = ChatRequest("m", [Message.user("Hi")], max_tokens=10, extra={"max_tokens": None, "max_completion_tokens": 10, "user": "u1"})
    body = oa.encode_request(req, "m")
    assert body["max_completion_tokens"] == 10 and body["max_tokens"] is None and body["user"] == "u1"


def test_tools_and_a_named_tool_choice():
    req = ChatRequest("m", [Message.user("Weather in Oslo?")], tools=[WEATHER, Tool("noop")], tool_choice=ToolChoice("required", "get_weather"))
    body = oa.encode_request(req, "m")
    assert body["tools"][0] == {
        "type": "function",
        "function": {"name": "get_weather", "description": "Weather for a city.", "parameters": WEATHER.parameters},
    }
    assert body["tools"][1] == {"type": "function", "function": {"name": "noop", "parameters": {"type": "object", "properties": {}}}}
    assert body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}


@pytest.mark.parametrize("mode", ["auto", "none", "required"])
def test_tool_choice_modes_are_plain_strings(mode):
    body = oa.encode_request(ChatRequest("m", [Message.user("x")], tools=[WEATHER], tool_choice=ToolChoice(mode)), "m")
    assert body["tool_choice"] == mode


def test_structured_output_with_a_schema():
    schema = {"type": "object", "properties": {"total": {"type": "number"}}, "required": ["total"]}
    body = oa.encode_request(ChatRequest("m", [Message.user("x")], response_format=ResponseFormat("json_schema", schema, "order", True)), "m")
    assert body["response_format"] == {"type": "json_schema", "json_schema": {"name": "order", "schema": schema, "strict": True}}


def test_structured_output_without_a_name_gets_one_because_openai_requires_it():
    body = oa.encode_request(ChatRequest("m", [Message.user("x")], response_format=ResponseFormat(schema={"type": "object"})), "m")
    assert body["response_format"]["json_schema"]["name"] == "response"


def test_json_mode():
    body = oa.encode_request(ChatRequest("m", [Message.user("x")], response_format=ResponseFormat("json_object")), "m")
    assert body["response_format"] == {"type": "json_object"}


def test_images_inline_as_data_urls_and_remote_by_url():
    msg = Message.user("What is this?", ImagePart(data="iVBORw0KGgo=", media_type="image/png"), ImagePart(url="https://example.com/cat.jpg", detail="low"))
    assert oa.encode_request(ChatRequest("m", [msg]), "m")["messages"][0]["content"] == [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "low"}},
    ]


def test_a_tool_round_trip_conversation_matches_the_protocol_reference():
    call = ToolCall("call_k3J9", "lookup_order", '{"order_no":"A-118"}')
    req = ChatRequest("m", [
        Message.system("You are a shop assistant."),
        Message.user("Where is order A-118?"),
        Message.assistant(tool_calls=[call]),
        Message.tool("call_k3J9", '{"status":"shipped"}', name="lookup_order"),
    ])
    assert oa.encode_request(req, "gpt-5.5-mini")["messages"] == [
        {"role": "system", "content": "You are a shop assistant."},
        {"role": "user", "content": "Where is order A-118?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_k3J9", "type": "function", "function": {"name": "lookup_order", "arguments": '{"order_no":"A-118"}'}}]},
        {"role": "tool", "tool_call_id": "call_k3J9", "content": '{"status":"shipped"}'},
    ]


def test_reasoning_in_history_is_dropped_because_chat_completions_has_no_slot_for_it():
    msg = Message("assistant", [ReasoningPart("thinking...", "sig"), TextPart("Answer.")])
    assert oa.encode_request(ChatRequest("m", [msg]), "m")["messages"][0] == {"role": "assistant", "content": "Answer."}


# ---------------------------------------------------------------------------------------
# decode_response
# ---------------------------------------------------------------------------------------

COMPLETION = {
    "id": "chatcmpl-9x8y7z",
    "object": "chat.completion",
    "created": 1767225600,
    "model": "gpt-5.5-2026-03-01",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello!", "refusal": None, "annotations": []}, "logprobs": None, "finish_reason": "stop"}],
    "usage": {
        "prompt_tokens": 12, "completion_tokens": 30, "total_tokens": 42,
        "prompt_tokens_details": {"cached_tokens": 8, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 20, "audio_tokens": 0},
    },
}


def test_decode_a_text_completion_with_usage_details():
    resp = oa.decode_response(COMPLETION, "openai")
    assert resp.text == "Hello!"
    assert (resp.id, resp.model, resp.created, resp.provider, resp.finish_reason) == ("chatcmpl-9x8y7z", "gpt-5.5-2026-03-01", 1767225600, "openai", "stop")
    assert resp.usage == Usage(input_tokens=12, output_tokens=30, cached_tokens=8, reasoning_tokens=20)
    assert resp.raw is COMPLETION


def test_decode_tool_calls():
    body = {**COMPLETION, "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}},
        {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": ""}},
    ]}}]}
    resp = oa.decode_response(body, "openai")
    assert resp.text == "" and resp.message.content == []
    assert resp.tool_calls == [ToolCall("call_1", "get_weather", '{"city":"Oslo"}'), ToolCall("call_2", "get_time", "{}")]
    assert resp.tool_calls[0].args == {"city": "Oslo"}
    assert resp.finish_reason == "tool_calls"


def test_tool_arguments_sent_as_an_object_become_json_text():
    body = {"id": "x", "model": "llama3.2", "choices": [{"index": 0, "finish_reason": "stop", "message": {
        "role": "assistant", "content": "", "tool_calls": [{"id": "call_0", "function": {"name": "f", "arguments": {"a": 1}}}]}}]}
    resp = oa.decode_response(body, "ollama")
    assert resp.tool_calls[0].arguments == '{"a":1}'
    # Ollama says "stop" after tool calls; the content decides.
    assert resp.finish_reason == "tool_calls"


@pytest.mark.parametrize(
    "wire, canonical",
    [("stop", "stop"), ("length", "length"), ("content_filter", "content_filter"), ("function_call", "tool_calls"), (None, "stop"), ("eos", "stop")],
)
def test_finish_reasons_map_to_the_canonical_vocabulary(wire, canonical):
    body = {**COMPLETION, "choices": [{**COMPLETION["choices"][0], "finish_reason": wire}]}
    assert oa.decode_response(body, "openai").finish_reason == canonical


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_reasoning_text_from_compatible_servers_is_kept(field):
    body = {**COMPLETION, "choices": [{**COMPLETION["choices"][0], "message": {"role": "assistant", "content": "42", field: "Let me think."}}]}
    resp = oa.decode_response(body, "deepseek")
    assert resp.message.reasoning == "Let me think." and resp.text == "42"


def test_a_refusal_is_readable_as_the_text():
    body = {**COMPLETION, "choices": [{**COMPLETION["choices"][0], "message": {"role": "assistant", "content": None, "refusal": "I can't help with that."}}]}
    assert oa.decode_response(body, "openai").text == "I can't help with that."


def test_an_error_body_with_status_200_raises():
    with pytest.raises(errors.StreamError, match="model crashed"):
        oa.decode_response({"error": {"message": "model crashed", "type": "server_error"}}, "vllm")


# ---------------------------------------------------------------------------------------
# StreamDecoder
# ---------------------------------------------------------------------------------------

TEXT_STREAM = b"""data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1767225600,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}

data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1767225600,"model":"m","choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}]}

data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1767225600,"model":"m","choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":null}]}

data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1767225600,"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}

data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1767225600,"model":"m","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}

data: [DONE]

"""


def test_decode_the_reference_text_stream():
    decoder = oa.StreamDecoder("openai")
    events = sse_to_events(TEXT_STREAM, decoder)
    assert [e.kind for e in events] == ["start", "text", "text", "finish", "usage"]
    assert events[0].id == "chatcmpl-1" and events[0].model == "m"
    assert decoder.done
    resp = accumulate(events)
    assert (resp.text, resp.finish_reason, resp.usage) == ("Hello", "stop", Usage(9, 2))


def test_tool_call_fragments_are_keyed_by_index_and_may_interleave():
    chunks = [
        {"id": "c", "model": "m", "choices": [{"index": 0, "delta": {"role": "assistant", "content": None, "tool_calls": [
            {"index": 0, "id": "call_a", "type": "function", "function": {"name": "f", "arguments": ""}}]}, "finish_reason": None}]},
        {"id": "c", "model": "m", "choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 1, "id": "call_b", "type": "function", "function": {"name": "g", "arguments": '{"y":'}}]}, "finish_reason": None}]},
        {"id": "c", "model": "m", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '{"x":1}'}}]}, "finish_reason": None}]},
        {"id": "c", "model": "m", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 1, "function": {"arguments": "2}"}}]}, "finish_reason": None}]},
        {"id": "c", "model": "m", "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
    ]
    decoder = oa.StreamDecoder("openai")
    events = [e for chunk in chunks for e in decoder.feed_json(chunk)]
    assert accumulate(events).tool_calls == [ToolCall("call_a", "f", '{"x":1}'), ToolCall("call_b", "g", '{"y":2}')]


def test_feed_parses_and_hands_over_to_feed_json():
    chunk = {"id": "c", "model": "m", "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}]}
    assert oa.StreamDecoder().feed(None, json.dumps(chunk)) == oa.StreamDecoder().feed_json(chunk)


def test_whole_tool_calls_without_an_index_are_told_apart_by_id():
    decoder = oa.StreamDecoder("ollama")
    events = decoder.feed_json({"id": "c", "model": "m", "choices": [{"index": 0, "delta": {"tool_calls": [
        {"id": "call_1", "function": {"name": "a", "arguments": {"k": 1}}}, {"id": "call_2", "function": {"name": "b", "arguments": {}}}]}, "finish_reason": "stop"}]})
    resp = accumulate(events)
    assert resp.tool_calls == [ToolCall("call_1", "a", '{"k":1}'), ToolCall("call_2", "b", "{}")]
    assert resp.finish_reason == "tool_calls"


def test_an_in_stream_error_raises_stream_error():
    decoder = oa.StreamDecoder("openai")
    decoder.feed(None, json.dumps({"id": "c", "model": "m", "choices": [{"index": 0, "delta": {"content": "par"}}]}))
    with pytest.raises(errors.StreamError) as caught:
        decoder.feed(None, '{"error": {"message": "The server had an error", "type": "server_error", "param": null, "code": null}}')
    assert caught.value.message == "The server had an error" and caught.value.provider == "openai"


def test_a_groq_early_stop_error_raises_stream_error():
    with pytest.raises(errors.StreamError, match="over capacity"):
        oa.StreamDecoder("groq").feed_json({"id": "c", "model": "m", "choices": [], "x_groq": {"error": "over capacity"}})


def test_a_bare_json_error_body_in_the_stream_raises():
    with pytest.raises(errors.StreamError, match="boom"):
        sse_to_events(b'data: {"id":"c","model":"m","choices":[]}\n\n{\n  "error": {"message": "boom"}\n}\n')


def test_a_malformed_chunk_raises_stream_error():
    with pytest.raises(errors.StreamError, match="malformed"):
        oa.StreamDecoder().feed(None, '{"id": "c", "choices": [')


def test_role_only_and_empty_chunks_yield_nothing_but_the_start():
    decoder = oa.StreamDecoder()
    assert [e.kind for e in decoder.feed_json({"id": "c", "model": "m", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})] == ["start"]
    assert decoder.feed_json({"id": "c", "model": "m", "choices": [{"index": 0, "delta": {}}], "usage": None}) == []


# ---------------------------------------------------------------------------------------
# decode_error and retry_after
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "status, error, expected",
    [
        (400, {"message": "Bad param", "type": "invalid_request_error", "param": "temperature", "code": "invalid_value"}, errors.BadRequestError),
        (400, {"message": "This model's maximum context length is 128000 tokens.", "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}, errors.ContextLengthError),
        (401, {"message": "Incorrect API key provided.", "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}, errors.AuthenticationError),
        (403, {"message": "Country not supported", "type": "invalid_request_error", "param": None, "code": "unsupported_country_region_territory"}, errors.PermissionDeniedError),
        (404, {"message": "The model 'gpt-9' does not exist", "type": "invalid_request_error", "param": None, "code": "model_not_found"}, errors.NotFoundError),
        (429, {"message": "Rate limit reached", "type": "requests", "param": None, "code": "rate_limit_exceeded"}, errors.RateLimitError),
        (429, {"message": "You exceeded your current quota", "type": "insufficient_quota", "param": None, "code": None}, errors.QuotaExceededError),
        (500, {"message": "The server had an error", "type": "server_error", "param": None, "code": None}, errors.ServerError),
        (503, {"message": "Overloaded", "type": "server_error", "param": None, "code": None}, errors.OverloadedError),
    ],
)
def test_openai_error_bodies_map_to_the_error_hierarchy(status, error, expected):
    exc = oa.decode_error(status, json.dumps({"error": error}).encode(), {}, "openai")
    assert type(exc) is expected
    assert (exc.message, exc.code, exc.param, exc.status, exc.provider) == (error["message"], error["code"], error["param"], status, "openai")


def test_plain_text_and_malformed_bodies_still_give_a_useful_error():
    assert oa.decode_error(502, b"<html>Bad Gateway</html>", {}, "vllm").message == "<html>Bad Gateway</html>"
    assert oa.decode_error(500, b'{"error": {"mess', {}, "vllm").message == '{"error": {"mess'
    assert oa.decode_error(503, b"", {}, "vllm").message == "HTTP 503"
    assert isinstance(oa.decode_error(503, None, None, "vllm"), errors.OverloadedError)


def test_error_shapes_of_compatible_servers():
    ollama = oa.decode_error(404, {"error": "model 'llama9' not found"}, {}, "ollama")
    assert isinstance(ollama, errors.NotFoundError) and ollama.message == "model 'llama9' not found"
    vllm = oa.decode_error(400, {"object": "error", "message": "max_tokens is too large", "type": "BadRequestError", "param": None, "code": 400}, {}, "vllm")
    assert vllm.message == "max_tokens is too large" and vllm.code is None


def test_decode_error_reads_the_retry_hint():
    exc = oa.decode_error(429, {"error": {"message": "slow down", "type": "requests", "code": "rate_limit_exceeded"}}, {"Retry-After": "3"}, "openai")
    assert exc.retry_after == 3.0


def test_retry_after_prefers_milliseconds():
    assert oa.retry_after({"retry-after-ms": "1500", "retry-after": "9"}, None) == 1.5


def test_retry_after_seconds_and_http_dates():
    assert oa.retry_after({"retry-after": "2.5"}, None) == 2.5
    later = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=30), usegmt=True)
    assert 25 <= oa.retry_after({"retry-after": later}, None) <= 30
    assert oa.retry_after({"retry-after": "soon"}, None) is None
    assert oa.retry_after(None, None) is None


def test_retry_after_falls_back_to_the_message():
    body = {"error": {"message": "Rate limit reached for gpt-4o. Please try again in 1m2.5s. Visit ..."}}
    assert oa.retry_after({}, body) == 62.5
    assert oa.retry_after({}, {"error": {"message": "Please try again in 20ms."}}) == 0.02


# ---------------------------------------------------------------------------------------
# decode_request: the gateway reading what OpenAI clients send
# ---------------------------------------------------------------------------------------


def test_decode_a_typical_sdk_request():
    body = {
        "model": "gpt-4o",
        "messages": [
            {"role": "developer", "content": [{"type": "text", "text": "Be brief."}]},
            {"role": "user", "content": [{"type": "text", "text": "What's this?"}, {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ", "detail": "high"}}]},
        ],
        "max_completion_tokens": 100, "max_tokens": 5, "stop": "\n\n", "stream": True,
        "stream_options": {"include_usage": True}, "user": "someone", "logprobs": False, "n": 1,
    }
    req = oa.decode_request(body)
    assert req.messages == [
        Message.system("Be brief."),
        Message.user("What's this?", ImagePart(data="/9j/4AAQ", media_type="image/jpeg", detail="high")),
    ]
    assert (req.max_tokens, req.stop, req.stream) == (100, ["\n\n"], True)
    assert oa.stream_include_usage(body)


def test_the_model_from_the_route_wins():
    assert oa.decode_request({"messages": [{"role": "user", "content": "x"}]}, model="gpt-4o").model == "gpt-4o"


def test_tool_messages_learn_the_tool_name_from_the_call_they_answer():
    req = oa.decode_request({"model": "m", "messages": [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]})
    assert req.messages[2] == Message.tool("call_1", "sunny", name="get_weather")


def test_allowed_tools_choice_keeps_its_mode():
    choice = {"type": "allowed_tools", "allowed_tools": {"mode": "required", "tools": [{"type": "function", "function": {"name": "f"}}]}}
    assert oa.decode_request({"model": "m", "messages": [{"role": "user", "content": "x"}], "tool_choice": choice}).tool_choice == ToolChoice("required")


@pytest.mark.parametrize(
    "body, param, message",
    [
        ([], "body", "body: expected a JSON object"),
        ({"messages": [{"role": "user", "content": "x"}]}, "model", "model: required"),
        ({"model": "m"}, "messages", "messages: required"),
        ({"model": "m", "messages": []}, "messages", "messages: expected a non-empty array"),
        ({"model": "m", "messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}, {"role": "robot", "content": "c"}]},
         "messages[2].role", "messages[2].role: expected one of system, user, assistant, tool, developer"),
        ({"model": "m", "messages": [{"role": "user", "content": 5}]}, "messages[0].content", "messages[0].content: expected a string or an array of content parts"),
        ({"model": "m", "messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]},
         "messages[0].content[0].type", "messages[0].content[0].type: unsupported content part 'input_audio'; expected text or image_url"),
        ({"model": "m", "messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id", None),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}, "temperature", "temperature: expected a number"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": True}, "max_tokens", "max_tokens: expected an integer"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}, "stream", "stream: expected a boolean"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "stop": [1]}, "stop", None),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function", "function": {}}]}, "tools[0].function.name", None),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "tool_choice": "always"}, "tool_choice", None),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "response_format": {"type": "yaml"}}, "response_format.type", None),
    ],
)
def test_bad_requests_name_the_field(body, param, message):
    with pytest.raises(errors.BadRequestError) as caught:
        oa.decode_request(body)
    assert caught.value.param == param
    assert str(caught.value).startswith(f"{param}: ")
    if message:
        assert caught.value.message == message


# ---------------------------------------------------------------------------------------
# encode_response and StreamEncoder: what the gateway answers
# ---------------------------------------------------------------------------------------

ANSWER = ChatResponse(
    "msg_01Anthropic", "claude-x", Message("assistant", [TextPart("Checking.")], [ToolCall("toolu_1", "get_weather", '{"city":"Oslo"}')]),
    "tool_calls", Usage(100, 20, cached_tokens=60, reasoning_tokens=5), "anthropic", 1767225600,
)


def test_encode_response_is_a_chat_completion():
    body = oa.encode_response(ANSWER, "anthropic/claude-x")
    assert body["id"].startswith("chatcmpl-") and "msg_01Anthropic" not in body["id"]
    assert (body["object"], body["created"], body["model"]) == ("chat.completion", 1767225600, "anthropic/claude-x")
    assert body["choices"] == [{"index": 0, "logprobs": None, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": "Checking.", "refusal": None,
        "tool_calls": [{"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}}]}}]
    assert body["usage"] == {
        "prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120,
        "prompt_tokens_details": {"cached_tokens": 60, "cache_write_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 5},
    }


def test_content_is_null_when_the_answer_is_only_tool_calls():
    resp = dataclasses.replace(ANSWER, message=Message.assistant(tool_calls=[ToolCall("c", "f")]))
    assert oa.encode_response(resp, "m")["choices"][0]["message"]["content"] is None


def test_the_canonical_error_finish_goes_out_as_stop():
    resp = dataclasses.replace(ANSWER, message=Message.assistant("partial"), finish_reason="error")
    assert oa.encode_response(resp, "m")["choices"][0]["finish_reason"] == "stop"


def chunks_of(stream: bytes) -> list[dict | str]:
    return [data if data == "[DONE]" else json.loads(data) for _, data in SSEParser().feed(stream)]


def test_stream_encoder_text_stream_with_usage():
    enc = oa.StreamEncoder("m", include_usage=True)
    out = b"".join(enc.encode(e) for e in [
        StreamEvent("start", id="msg_1", model="claude"), StreamEvent("text", text="Hel"), StreamEvent("text", text="lo"),
        StreamEvent("usage", usage=Usage(9, 2)), StreamEvent("finish", finish_reason="stop"),
    ]) + enc.close()
    chunks = chunks_of(out)
    assert [c["choices"][0]["delta"] if c != "[DONE]" and c["choices"] else c for c in chunks[:4]] == [
        {"role": "assistant", "content": ""}, {"content": "Hel"}, {"content": "lo"}, {}]
    assert chunks[3]["choices"][0]["finish_reason"] == "stop"
    assert chunks[4]["choices"] == [] and chunks[4]["usage"]["total_tokens"] == 11
    assert chunks[5] == "[DONE]"
    assert {c["id"] for c in chunks[:5]} == {enc.id} and enc.id.startswith("chatcmpl-")
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "m" for c in chunks[:5])


def test_without_include_usage_the_stream_carries_no_usage():
    enc = oa.StreamEncoder("m")
    out = enc.encode(StreamEvent("text", text="hi")) + enc.encode(StreamEvent("finish", finish_reason="stop", usage=Usage(1, 1))) + enc.close()
    assert all("usage" not in c for c in chunks_of(out) if c != "[DONE]")


def test_tool_call_fragments_carry_id_type_and_name_only_first():
    enc = oa.StreamEncoder("m")
    out = b"".join(enc.encode(e) for e in [
        StreamEvent("tool_call", index=1, id="toolu_a", name="f", arguments=""),  # Anthropic block 1
        StreamEvent("tool_call", index=1, arguments='{"x":'),
        StreamEvent("tool_call", index=3, name="g", arguments="{}"),  # Gemini: no id
        StreamEvent("tool_call", index=1, arguments="1}"),
    ]) + enc.close()
    calls = [c["choices"][0]["delta"]["tool_calls"][0] for c in chunks_of(out)[1:5]]
    assert calls[0] == {"index": 0, "id": "toolu_a", "type": "function", "function": {"name": "f", "arguments": ""}}
    assert calls[1] == {"index": 0, "function": {"arguments": '{"x":'}}
    assert calls[2]["index"] == 1 and calls[2]["id"].startswith("call_") and len(calls[2]["id"]) <= 40
    assert calls[3] == {"index": 0, "function": {"arguments": "1}"}}
    assert chunks_of(out)[5]["choices"][0]["finish_reason"] == "tool_calls"


def test_close_sends_the_missing_finish_and_then_nothing_more():
    enc = oa.StreamEncoder("m")
    enc.encode(StreamEvent("text", text="cut short"))
    tail = chunks_of(enc.close())
    assert tail[0]["choices"][0]["finish_reason"] == "stop" and tail[1] == "[DONE]"
    assert enc.close() == b"" and enc.encode(StreamEvent("text", text="late")) == b""


def test_an_error_mid_stream_is_an_error_event_and_ends_the_stream():
    enc = oa.StreamEncoder("m", include_usage=True)
    enc.encode(StreamEvent("text", text="par"))
    out = enc.error(errors.OverloadedError("upstream overloaded", retry_after=2))
    assert out.startswith(b"data: ")
    assert json.loads(out[6:]) == {"error": {"message": "upstream overloaded", "type": "server_error", "param": None, "code": "overloaded"}}
    assert enc.close() == b""
    with pytest.raises(errors.StreamError, match="upstream overloaded"):
        sse_to_events(out)


# ---------------------------------------------------------------------------------------
# encode_error
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "exc, status, err_type, code",
    [
        (errors.BadRequestError("bad"), 400, "invalid_request_error", None),
        (errors.BadRequestError("bad", status=422), 422, "invalid_request_error", None),
        (errors.ConfigError("unknown model"), 400, "invalid_request_error", None),
        (errors.ContextLengthError("too long"), 400, "invalid_request_error", "context_length_exceeded"),
        (errors.AuthenticationError("no key"), 401, "invalid_request_error", "invalid_api_key"),
        (errors.PermissionDeniedError("no"), 403, "permission_error", None),
        (errors.NotFoundError("no such model"), 404, "invalid_request_error", "model_not_found"),
        (errors.RequestTooLargeError("big"), 413, "invalid_request_error", "request_too_large"),
        (errors.RateLimitError("slow"), 429, "requests", "rate_limit_exceeded"),
        (errors.QuotaExceededError("pay"), 429, "insufficient_quota", "insufficient_quota"),
        (errors.ServerError("oops"), 500, "server_error", None),
        (errors.ServerError("bad gateway", status=502), 502, "server_error", None),
        (errors.OverloadedError("busy", status=529), 503, "server_error", "overloaded"),
        (errors.TimeoutError("slow upstream"), 504, "server_error", "timeout"),
        (errors.ConnectionError("refused"), 502, "server_error", "upstream_unreachable"),
        (errors.StreamError("broke"), 500, "server_error", None),
    ],
)
def test_error_kinds_map_to_openai_statuses_types_and_codes(exc, status, err_type, code):
    got_status, body, _ = oa.encode_error(exc)
    assert got_status == status
    assert body == {"error": {"message": exc.message, "type": err_type, "param": None, "code": code}}


def test_encode_error_keeps_the_callers_code_and_param_and_names_the_fix():
    exc = errors.BadRequestError("bad temperature", code="invalid_value", param="temperature", hint="use 0..2")
    _, body, _ = oa.encode_error(exc)
    assert body["error"] == {"message": "bad temperature (hint: use 0..2)", "type": "invalid_request_error", "param": "temperature", "code": "invalid_value"}


def test_retry_headers_and_the_no_retry_signal_for_quota():
    assert oa.encode_error(errors.RateLimitError("slow", retry_after=1.25))[2] == {"retry-after": "2", "retry-after-ms": "1250"}
    assert oa.encode_error(errors.QuotaExceededError("pay"))[2] == {"x-should-retry": "false"}


def test_unexpected_exceptions_are_server_errors():
    status, body, _ = oa.encode_error(KeyError("x"))
    assert status == 500 and body["error"]["type"] == "server_error" and "KeyError" in body["error"]["message"]


@pytest.mark.parametrize(
    "exc",
    [
        errors.BadRequestError("bad"), errors.ContextLengthError("too long"), errors.AuthenticationError("no key"),
        errors.PermissionDeniedError("no"), errors.NotFoundError("gone"), errors.RequestTooLargeError("big"),
        errors.RateLimitError("slow", retry_after=1.5), errors.QuotaExceededError("pay"), errors.ServerError("oops"),
        errors.OverloadedError("busy", retry_after=30), errors.TimeoutError("slow"),
    ],
)
def test_errors_survive_the_gateway_and_come_back_as_themselves(exc):
    status, body, headers = oa.encode_error(exc)
    back = oa.decode_error(status, json.dumps(body).encode(), headers, "gateway")
    assert type(back) is type(exc)
    assert (back.message, back.retry_after) == (exc.message, exc.retry_after)


def test_a_connection_failure_comes_back_from_a_gateway_as_a_server_error():
    status, body, headers = oa.encode_error(errors.ConnectionError("refused"))
    assert type(oa.decode_error(status, body, headers, "gateway")) is errors.ServerError


# ---------------------------------------------------------------------------------------
# Models and embeddings
# ---------------------------------------------------------------------------------------


def test_models_list():
    body = oa.encode_models([ModelInfo("openai/gpt-4o", "openai", "openai"), ModelInfo("local/smollm2", "local", context_length=8192)])
    assert body == {"object": "list", "data": [
        {"id": "openai/gpt-4o", "object": "model", "created": 0, "owned_by": "openai"},
        {"id": "local/smollm2", "object": "model", "created": 0, "owned_by": "local", "context_length": 8192},
    ]}
    assert oa.decode_models(body, "gateway")[1] == ModelInfo("local/smollm2", "gateway", "local", 8192)


def test_embeddings_request_both_ways():
    path, body = oa.encode_embeddings_request(["a", "b"], "text-embedding-3-small", dimensions=256)
    assert path == "/embeddings"
    assert body == {"model": "text-embedding-3-small", "input": ["a", "b"], "encoding_format": "float", "dimensions": 256}
    assert oa.decode_embeddings_request(body) == ("text-embedding-3-small", ["a", "b"], "float")
    assert oa.decode_embeddings_request({"model": "e", "input": "one"}) == ("e", ["one"], "float")


@pytest.mark.parametrize("body, param", [({"input": "x"}, "model"), ({"model": "e", "input": [[1, 2]]}, "input"), ({"model": "e", "input": "x", "encoding_format": "int8"}, "encoding_format")])
def test_bad_embeddings_requests_name_the_field(body, param):
    with pytest.raises(errors.BadRequestError) as caught:
        oa.decode_embeddings_request(body)
    assert caught.value.param == param


def test_base64_embeddings_are_little_endian_float32():
    resp = EmbeddingResponse("e", [Embedding(0, [0.5, -1.0, 0.25])], Usage(input_tokens=3))
    body = oa.encode_embeddings_response(resp, "base64")
    assert base64.b64decode(body["data"][0]["embedding"]) == struct.pack("<3f", 0.5, -1.0, 0.25)
    assert body["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
    assert oa.decode_embeddings_response(body, "gateway") == dataclasses.replace(resp, provider="gateway")


def test_embeddings_come_back_in_input_order():
    body = {"data": [{"index": 1, "embedding": [2.0]}, {"index": 0, "embedding": [1.0]}], "model": "e", "usage": {"prompt_tokens": 2}}
    assert [e.vector for e in oa.decode_embeddings_response(body, "openai").data] == [[1.0], [2.0]]


# ---------------------------------------------------------------------------------------
# Round trips over generated conversations
# ---------------------------------------------------------------------------------------

texts = st.text(min_size=1, max_size=30)
names = st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_-]{0,20}", fullmatch=True)
call_ids = st.from_regex(r"call_[A-Za-z0-9]{1,24}", fullmatch=True)
json_values = st.recursive(st.none() | st.booleans() | st.integers(-1000, 1000) | texts, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(names, inner, max_size=3), max_leaves=6)
arguments = st.dictionaries(names, json_values, max_size=4).map(dump_json)
images = st.one_of(
    st.builds(ImagePart, url=st.sampled_from(["https://example.com/cat.png", "https://example.com/a/b.jpg?x=1"]), detail=st.sampled_from([None, "low", "high", "auto"])),
    st.builds(ImagePart, data=st.from_regex(r"[A-Za-z0-9+/]{4,40}={0,2}", fullmatch=True), media_type=st.sampled_from(["image/png", "image/jpeg", "image/webp"]), detail=st.sampled_from([None, "low"])),
)
tool_calls = st.builds(ToolCall, id=call_ids, name=names, arguments=arguments)


@st.composite
def conversations(draw) -> list[Message]:
    """Turns as OpenAI allows them: every tool call answered by a tool message naming it."""
    messages = []
    if draw(st.booleans()):
        messages.append(Message("system", draw(st.lists(texts.map(TextPart), min_size=1, max_size=2))))
    for _ in range(draw(st.integers(1, 3))):
        messages.append(Message("user", draw(st.lists(texts.map(TextPart) | images, min_size=1, max_size=3))))
        calls = draw(st.lists(tool_calls, max_size=2, unique_by=lambda c: c.id))
        messages.append(Message("assistant", draw(st.lists(texts.map(TextPart), max_size=2 if not calls else 1)), calls))
        messages += [Message.tool(c.id, draw(texts), name=c.name) for c in calls]
    return messages


tools = st.builds(Tool, name=names, description=st.sampled_from(["", "Does a thing."]), parameters=st.just({"type": "object", "properties": {"q": {"type": "string"}}}), strict=st.sampled_from([None, True]))
response_formats = st.one_of(
    st.builds(ResponseFormat, type=st.sampled_from(["text", "json_object"]), schema=st.none()),
    st.builds(ResponseFormat, type=st.just("json_schema"), schema=st.just({"type": "object", "properties": {"total": {"type": "number"}}}), name=names, strict=st.sampled_from([None, True, False])),
)


def maybe(strategy):
    return st.none() | strategy


chat_requests = st.builds(
    ChatRequest,
    model=st.sampled_from(["gpt-4o-mini", "openai/gpt-oss-120b", "llama3.2:3b"]),
    messages=conversations(),
    temperature=maybe(st.floats(0, 2)),
    top_p=maybe(st.floats(0, 1)),
    top_k=maybe(st.integers(1, 100)),
    max_tokens=maybe(st.integers(1, 100_000)),
    stop=maybe(st.lists(texts, min_size=1, max_size=4)),
    seed=maybe(st.integers(-(2**63), 2**63 - 1)),
    presence_penalty=maybe(st.floats(-2, 2)),
    frequency_penalty=maybe(st.floats(-2, 2)),
    response_format=maybe(response_formats),
    tools=st.lists(tools, max_size=2),
    tool_choice=maybe(st.builds(ToolChoice, mode=st.sampled_from(["auto", "none", "required"])) | names.map(lambda n: ToolChoice("required", n))),
    parallel_tool_calls=maybe(st.booleans()),
    reasoning_effort=maybe(st.sampled_from(["none", "minimal", "low", "medium", "high"])),
    metadata=maybe(st.dictionaries(names, texts, min_size=1, max_size=3)),
    stream=st.booleans(),
)


@st.composite
def chat_responses(draw) -> ChatResponse:
    calls = draw(st.lists(tool_calls, max_size=3, unique_by=lambda c: c.id))
    content = []
    if draw(st.booleans()):
        content.append(ReasoningPart(draw(texts)))
    if not calls or draw(st.booleans()):
        content.append(TextPart(draw(texts)))
    finish = draw(st.sampled_from(["stop", "length", "content_filter"] if not calls else ["tool_calls", "length"]))
    usage = draw(st.builds(Usage, *[st.integers(0, 10**6)] * 5))
    return ChatResponse(
        id="chatcmpl-" + draw(st.from_regex(r"[A-Za-z0-9]{6,20}", fullmatch=True)), model=draw(st.sampled_from(["gpt-4o", "m"])),
        message=Message("assistant", content, calls), finish_reason=finish, usage=usage, provider="openai",
        created=draw(st.integers(1, 2**31)),
    )


def as_stream_events(resp: ChatResponse, draw) -> list[StreamEvent]:
    """The events a backend would emit for resp: text in pieces, arguments in fragments."""
    def pieces(text: str) -> list[str]:
        cuts = sorted(set(draw(st.lists(st.integers(1, max(len(text) - 1, 1)), max_size=3))))
        return [p for p in (text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])) if p]

    events = [StreamEvent("start", id=resp.id, model=resp.model)]
    events += [StreamEvent("reasoning", text=p) for p in pieces(resp.message.reasoning)]
    events += [StreamEvent("text", text=p) for p in pieces(resp.text)]
    for index, call in enumerate(resp.tool_calls):
        first, *rest = pieces(call.arguments)
        events.append(StreamEvent("tool_call", index=index, id=call.id, name=call.name, arguments=first))
        events += [StreamEvent("tool_call", index=index, arguments=p) for p in rest]
    return events + [StreamEvent("usage", usage=resp.usage), StreamEvent("finish", finish_reason=resp.finish_reason)]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chat_requests)
def test_the_gateway_decodes_exactly_what_the_client_encodes(req):
    wire = json.loads(json.dumps(oa.encode_request(req, req.model)))
    assert oa.decode_request(wire) == req


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chat_responses())
def test_the_client_decodes_exactly_what_the_gateway_encodes(resp):
    wire = json.loads(json.dumps(oa.encode_response(resp, resp.model)))
    assert oa.decode_response(wire, "openai") == resp


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chat_responses(), st.data())
def test_a_streamed_answer_folds_into_the_same_response_as_the_whole_one(resp, data):
    encoder = oa.StreamEncoder(resp.model, include_usage=True)
    stream = b"".join(encoder.encode(e) for e in as_stream_events(resp, data.draw)) + encoder.close()
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=5)))
    parser, decoder, acc = SSEParser(), oa.StreamDecoder("openai"), StreamAccumulator(provider="openai")
    for a, b in zip([0, *cuts], [*cuts, len(stream)]):
        for name, payload in parser.feed(stream[a:b]):
            for event in decoder.feed(name, payload):
                acc.add(event)
    acc.created = encoder.created
    assert decoder.done
    assert acc.response() == dataclasses.replace(resp, created=encoder.created)
    whole = oa.decode_response(oa.encode_response(resp, resp.model), "openai")
    assert acc.response() == dataclasses.replace(whole, created=encoder.created)


def test_gemini_thought_signatures_travel_through_the_openai_door():
    """A Gemini tool call served to an OpenAI caller keeps its thoughtSignature in
    extra_content, and comes back with it when the caller replays the assistant turn."""
    call = ToolCall("call_1", "lookup_order", '{"order_no":"A-118"}', signature="c2lnbmF0dXJl")
    served = oa.encode_response(ChatResponse("chatcmpl-1", "m", Message.assistant(tool_calls=[call]), "tool_calls"), "m")
    wire_call = served["choices"][0]["message"]["tool_calls"][0]
    assert wire_call["extra_content"] == {"google": {"thought_signature": "c2lnbmF0dXJl"}}
    replay = oa.decode_request({"model": "m", "messages": [{"role": "user", "content": "hi"}, served["choices"][0]["message"]]})
    assert replay.messages[1].tool_calls == [call]
    # The client side never sends it to a real OpenAI-compatible upstream, which would reject it.
    assert "extra_content" not in oa.encode_request(replay, "m")["messages"][1]["tool_calls"][0]
