"""Anthropic dialect: worked examples of its wire format and of modelport's policies, both directions."""

from __future__ import annotations

import json

import pytest

from modelport.dialects import anthropic as A
from modelport.errors import (
    AuthenticationError,
    BadRequestError,
    ContextLengthError,
    OverloadedError,
    QuotaExceededError,
    RateLimitError,
    ServerError,
    StreamError,
)
from modelport.dialects import decode_sse
from modelport.sse import SSEParser
from modelport.types import (
    accumulate,
    ChatRequest,
    ChatResponse,
    ImagePart,
    Message,
    ReasoningPart,
    ResponseFormat,
    StreamEvent,
    TextPart,
    Tool,
    ToolCall,
    ToolChoice,
    Usage,
)

SCHEMA = {"type": "object", "properties": {"order_no": {"type": "string"}}, "required": ["order_no"]}


def worked_example() -> ChatRequest:
    """A worked example: system, question, tool call, tool result."""
    return ChatRequest(
        "claude-sonnet-4-6",
        [
            Message.system("You are a shop assistant."),
            Message.user("Where is order A-118?"),
            Message.assistant(tool_calls=[ToolCall("call_k3J9", "lookup_order", '{"order_no":"A-118"}')]),
            Message.tool("call_k3J9", '{"status":"shipped"}', name="lookup_order"),
        ],
        tools=[Tool("lookup_order", parameters=SCHEMA)],
        max_tokens=300,
    )


def test_worked_example_matches_the_documented_wire_body():
    assert A.encode_request(worked_example(), "claude-sonnet-4-6") == {
        "model": "claude-sonnet-4-6",
        "max_tokens": 300,
        "system": "You are a shop assistant.",
        "messages": [
            {"role": "user", "content": "Where is order A-118?"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "call_k3J9", "name": "lookup_order", "input": {"order_no": "A-118"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_k3J9", "content": '{"status":"shipped"}'}]},
        ],
        "tools": [{"name": "lookup_order", "input_schema": SCHEMA}],
    }


def test_worked_example_decodes_back_with_the_tool_name_recovered():
    assert A.decode_request(A.encode_request(worked_example(), "claude-sonnet-4-6")) == worked_example()


def test_chat_path_has_v1_because_the_base_url_has_not():
    assert A.chat_path("claude-x", False) == A.chat_path("claude-x", True) == "/v1/messages"


def test_max_tokens_defaults_and_temperature_clamps():
    body = A.encode_request(ChatRequest("m", [Message.user("hi")], temperature=1.7, top_p=0.9, top_k=5, stop=["END"]), "m")
    assert body["max_tokens"] == A.DEFAULT_MAX_TOKENS == 4096
    assert body["temperature"] == 1.0
    assert (body["top_p"], body["top_k"], body["stop_sequences"]) == (0.9, 5, ["END"])
    assert "stream" not in body
    assert A.encode_request(ChatRequest("m", [Message.user("hi")], stream=True), "m")["stream"] is True


def test_unexpressible_sampling_fields_are_dropped_and_extra_passes_verbatim():
    request = ChatRequest("m", [Message.user("hi")], seed=3, presence_penalty=0.5, frequency_penalty=0.1, extra={"service_tier": "auto"})
    body = A.encode_request(request, "m")
    assert "seed" not in body and "presence_penalty" not in body and "frequency_penalty" not in body
    assert body["service_tier"] == "auto"


def test_consecutive_tool_results_share_one_user_turn_with_following_text_after_them():
    calls = [ToolCall("toolu_1", "a", "{}"), ToolCall("toolu_2", "b", '{"x":1}')]
    request = ChatRequest(
        "m",
        [
            Message.user("go"),
            Message.assistant("Working.", calls),
            Message.tool("toolu_1", "one"),
            Message.tool("toolu_2", "boom", is_error=True),
            Message.user("and now?"),
        ],
    )
    messages = A.encode_request(request, "m")["messages"]
    assert len(messages) == 3
    assert messages[1]["content"][0] == {"type": "text", "text": "Working."}
    assert messages[2] == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "one"},
            {"type": "tool_result", "tool_use_id": "toolu_2", "content": "boom", "is_error": True},
            {"type": "text", "text": "and now?"},
        ],
    }
    decoded = A.decode_request({**A.encode_request(request, "m"), "model": "m"})
    assert [m.role for m in decoded.messages] == ["user", "assistant", "tool", "tool", "user"]
    assert decoded.messages[3].is_error and decoded.messages[3].name == "b"


def test_images_base64_and_url_and_data_urls():
    request = ChatRequest(
        "m",
        [Message.user("look", ImagePart(data="iVBOR", media_type="image/png"), ImagePart(url="https://x/cat.jpg", detail="high"), ImagePart(url="data:image/gif;base64,R0lG"))],
    )
    content = A.encode_request(request, "m")["messages"][0]["content"]
    assert content[1:] == [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}},
        {"type": "image", "source": {"type": "url", "url": "https://x/cat.jpg"}},
        {"type": "image", "source": {"type": "base64", "media_type": "image/gif", "data": "R0lG"}},
    ]


def test_tool_result_with_an_image_uses_blocks():
    request = ChatRequest("m", [Message("tool", [TextPart("chart"), ImagePart(data="AAA", media_type="image/png")], tool_call_id="toolu_1")])
    block = A.encode_request(request, "m")["messages"][0]["content"][0]
    assert block["content"] == [{"type": "text", "text": "chart"}, {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAA"}}]


def test_several_system_messages_are_hoisted_as_blocks():
    request = ChatRequest("m", [Message.system("one"), Message.user("hi"), Message.system("two")])
    body = A.encode_request(request, "m")
    assert body["system"] == [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]
    assert body["messages"] == [{"role": "user", "content": "hi"}]


def test_tool_choice_and_parallel_calls():
    def wire(choice, parallel=None):
        return A.encode_request(ChatRequest("m", [Message.user("x")], tool_choice=choice, parallel_tool_calls=parallel), "m").get("tool_choice")

    assert wire(ToolChoice("auto")) == {"type": "auto"}
    assert wire(ToolChoice("required")) == {"type": "any"}
    assert wire(ToolChoice("required", "lookup")) == {"type": "tool", "name": "lookup"}
    assert wire(ToolChoice("none")) == {"type": "none"}
    assert wire(None, False) == {"type": "auto", "disable_parallel_tool_use": True}
    assert wire(ToolChoice("required"), False) == {"type": "any", "disable_parallel_tool_use": True}
    assert wire(None, True) is None


def test_structured_output_and_json_object_instruction():
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    body = A.encode_request(ChatRequest("m", [Message.user("x")], response_format=ResponseFormat("json_schema", schema, name="r")), "m")
    assert body["output_config"] == {"format": {"type": "json_schema", "schema": schema}}
    body = A.encode_request(ChatRequest("m", [Message.system("S"), Message.user("x")], response_format=ResponseFormat("json_object")), "m")
    assert "output_config" not in body
    assert body["system"][-1] == {"type": "text", "text": A.JSON_OBJECT_INSTRUCTION}


@pytest.mark.parametrize(
    "effort,max_tokens,expected_max,thinking",
    [
        ("low", None, 2048 + 4096, {"type": "enabled", "budget_tokens": 2048}),
        ("medium", 20000, 20000, {"type": "enabled", "budget_tokens": 8192}),
        ("high", 10000, 10000, {"type": "enabled", "budget_tokens": 9999}),
        ("none", None, 4096, {"type": "disabled"}),
    ],
)
def test_reasoning_effort_budget_stays_below_max_tokens(effort, max_tokens, expected_max, thinking):
    body = A.encode_request(ChatRequest("m", [Message.user("x")], reasoning_effort=effort, max_tokens=max_tokens), "m")
    assert (body["max_tokens"], body["thinking"]) == (expected_max, thinking)
    assert body["thinking"].get("budget_tokens", 0) < body["max_tokens"]


def test_reasoning_effort_without_room_or_unknown_is_a_bad_request():
    with pytest.raises(BadRequestError) as info:
        A.encode_request(ChatRequest("m", [Message.user("x")], reasoning_effort="low", max_tokens=500), "m")
    assert info.value.param == "max_tokens"
    with pytest.raises(BadRequestError):
        A.encode_request(ChatRequest("m", [Message.user("x")], reasoning_effort="galaxy"), "m")


def test_thinking_replay_keeps_signed_blocks_before_tool_use_and_drops_unsigned_ones():
    message = Message("assistant", [ReasoningPart("hmm", "sig1"), ReasoningPart("unsigned")], [ToolCall("toolu_1", "f", "{}")])
    content = A.encode_request(ChatRequest("m", [Message.user("x"), message]), "m")["messages"][1]["content"]
    assert content == [{"type": "thinking", "thinking": "hmm", "signature": "sig1"}, {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}]


def test_foreign_tool_ids_are_rewritten_deterministically_and_pairs_survive():
    request = ChatRequest("m", [Message.assistant(tool_calls=[ToolCall("fc:1.a", "f", "{}")]), Message.tool("fc:1.a", "ok")])
    messages = A.encode_request(request, "m")["messages"]
    call_id = messages[0]["content"][0]["id"]
    assert call_id.startswith("toolu_") and call_id == messages[1]["content"][0]["tool_use_id"]
    assert call_id == A.encode_request(request, "m")["messages"][0]["content"][0]["id"]


def test_invalid_tool_arguments_travel_as_raw():
    request = ChatRequest("m", [Message.assistant(tool_calls=[ToolCall("toolu_1", "f", "{not json")])])
    assert A.encode_request(request, "m")["messages"][0]["content"][0]["input"] == {"_raw": "{not json"}


# -- responses -----------------------------------------------------------------------------------

RESPONSE = {
    "id": "msg_01XyZ",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-6",
    "content": [
        {"type": "thinking", "thinking": "Need the order.", "signature": "EqQB"},
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "toolu_01AbC", "name": "lookup_order", "input": {"order_no": "A-118"}},
        {"type": "server_tool_use", "id": "srv_1", "name": "web_search", "input": {}},
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {"input_tokens": 412, "output_tokens": 61, "cache_creation_input_tokens": 10, "cache_read_input_tokens": 100, "output_tokens_details": {"thinking_tokens": 20}},
}


def test_decode_response_section_3_5():
    response = A.decode_response(RESPONSE, "anthropic")
    assert response.id == "msg_01XyZ" and response.model == "claude-sonnet-4-6" and response.provider == "anthropic"
    assert response.message.content == [ReasoningPart("Need the order.", "EqQB"), TextPart("Let me check.")]
    assert response.tool_calls == [ToolCall("toolu_01AbC", "lookup_order", '{"order_no":"A-118"}')]
    assert response.finish_reason == "tool_calls"
    # input includes cache reads and writes in the canonical convention
    assert response.usage == Usage(input_tokens=522, output_tokens=61, cached_tokens=100, cache_write_tokens=10, reasoning_tokens=20)
    assert response.raw is RESPONSE


@pytest.mark.parametrize(
    "stop,finish",
    [("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"), ("model_context_window_exceeded", "length"), ("refusal", "content_filter"), ("pause_turn", "stop"), ("new_reason", "stop")],
)
def test_stop_reason_mapping(stop, finish):
    assert A.decode_response({"content": [], "stop_reason": stop}).finish_reason == finish


def test_encode_response_round_trips():
    response = ChatResponse(
        "msg_1",
        "claude-x",
        Message("assistant", [ReasoningPart("think", "sig"), TextPart("hi")], [ToolCall("toolu_1", "f", '{"a":[1,2]}')]),
        "tool_calls",
        Usage(100, 30, 40, 5, 7),
        provider="anthropic",
    )
    wire = A.encode_response(response, "claude-x")
    assert wire["usage"] == {
        "input_tokens": 55,
        "output_tokens": 30,
        "cache_creation_input_tokens": 5,
        "cache_read_input_tokens": 40,
        "output_tokens_details": {"thinking_tokens": 7},
        "cache_creation": None,
        "server_tool_use": None,
        "service_tier": None,
    }
    assert wire["stop_reason"] == "tool_use" and wire["type"] == "message"
    assert A.decode_response(wire, "anthropic") == response


def test_encode_response_keeps_unsigned_reasoning_for_the_caller():
    response = ChatResponse("msg_1", "m", Message("assistant", [ReasoningPart("from gemini"), TextPart("x")]))
    assert A.encode_response(response, "m")["content"][0] == {"type": "thinking", "thinking": "from gemini", "signature": ""}
    assert A.decode_response(A.encode_response(response, "m")).message == response.message


# -- streams ------------------------------------------------------------------------------------

TEXT_STREAM = """event: message_start
data: {"type":"message_start","message":{"id":"msg_01XyZ","type":"message","role":"assistant","model":"claude-sonnet-4-6","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":21,"output_tokens":1,"cache_read_input_tokens":4}}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":"","signature":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"Hmm."}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"SIG"}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: content_block_start
data: {"type":"content_block_start","index":1,"content_block":{"type":"text","text":""}}

event: ping
data: {"type":"ping"}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"Hello"}}

event: content_block_stop
data: {"type":"content_block_stop","index":1}

event: content_block_start
data: {"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"toolu_01AbC","name":"lookup_order","input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"{\\"order_no\\": \\"A-"}}

event: content_block_delta
data: {"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"118\\"}"}}

event: content_block_stop
data: {"type":"content_block_stop","index":2}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":57}}

event: message_stop
data: {"type":"message_stop"}

"""


def decode_stream(raw: bytes) -> list[StreamEvent]:
    return decode_sse(A, raw)


def test_stream_decoder_full_state_machine():
    events = decode_stream(TEXT_STREAM.encode())
    assert events[0] == StreamEvent("start", id="msg_01XyZ", model="claude-sonnet-4-6")
    assert StreamEvent("reasoning", signature="SIG") in events
    assert [e.arguments for e in events if e.kind == "tool_call"] == ["", '{"order_no": "A-', '118"}']
    assert {e.index for e in events if e.kind == "tool_call"} == {0}
    response = accumulate(events)
    assert response.message.content == [ReasoningPart("Hmm.", "SIG"), TextPart("Hello")]
    assert response.tool_calls == [ToolCall("toolu_01AbC", "lookup_order", '{"order_no": "A-118"}')]
    assert response.finish_reason == "tool_calls"
    assert response.usage == Usage(input_tokens=25, output_tokens=57, cached_tokens=4)


def test_stream_error_event_raises_stream_error():
    decoder = A.StreamDecoder("anthropic")
    with pytest.raises(StreamError) as info:
        decoder.feed("error", '{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}')
    assert info.value.code == "overloaded_error" and info.value.message == "Overloaded"


def test_stream_encoder_sets_event_lines_on_every_event_and_round_trips():
    encoder = A.StreamEncoder("claude-x")
    events = [
        StreamEvent("start", id="msg_9", model="up"),
        StreamEvent("reasoning", text="Let me"),
        StreamEvent("reasoning", signature="S1"),
        StreamEvent("text", text="Hi "),
        StreamEvent("text", text="there"),
        StreamEvent("tool_call", index=0, id="call_1", name="f", arguments='{"a":'),
        StreamEvent("tool_call", index=0, arguments="1}"),
        StreamEvent("tool_call", index=1, id="call_2", name="g"),
        StreamEvent("finish", finish_reason="tool_calls"),
        StreamEvent("usage", usage=Usage(50, 20, 10, 0, 3)),
    ]
    raw = b"".join(encoder.encode(e) for e in events) + encoder.close()
    parsed = SSEParser().feed(raw)
    assert all(name == json.loads(data)["type"] for name, data in parsed)
    assert [name for name, _ in parsed][-2:] == ["message_delta", "message_stop"]
    response = accumulate(decode_stream(raw))
    assert response.id == "msg_9" and response.model == "claude-x"
    assert response.message.content == [ReasoningPart("Let me", "S1"), TextPart("Hi there")]
    assert response.tool_calls == [ToolCall("call_1", "f", '{"a":1}'), ToolCall("call_2", "g", "{}")]
    assert response.usage == Usage(50, 20, 10, 0, 3) and response.finish_reason == "tool_calls"


def test_stream_encoder_error_event():
    raw = A.StreamEncoder("m").error(OverloadedError("busy"))
    (name, data), = SSEParser().feed(raw)
    assert name == "error" and json.loads(data) == {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}


# -- server side --------------------------------------------------------------------------------


def test_decode_request_accepts_system_blocks_string_content_keeps_cache_markers_and_ignores_unknown_fields():
    body = {
        "model": "claude-x",
        "max_tokens": 100,
        "system": [{"type": "text", "text": "A", "cache_control": {"type": "ephemeral"}}, {"type": "text", "text": "B"}],
        "messages": [{"role": "user", "content": "hi"}, {"role": "system", "content": "mid"}],
        "stop_sequences": ["X"],
        "thinking": {"type": "enabled", "budget_tokens": 8192},
        "tool_choice": {"type": "tool", "name": "f", "disable_parallel_tool_use": True},
        "output_config": {"format": {"type": "json_schema", "schema": {"type": "object"}}},
        "metadata": {"user_id": "u1"},
        "service_tier": "auto",
        "brand_new_field": 1,
    }
    request = A.decode_request(body)
    # The system block's cache_control is a breakpoint of the canonical request, not dropped.
    assert request.messages == [Message("system", [TextPart("A", cache=True), TextPart("B")]), Message.user("hi"), Message.system("mid")]
    assert request.max_tokens == 100 and request.stop == ["X"] and request.reasoning_effort == "medium"
    assert request.tool_choice == ToolChoice("required", "f") and request.parallel_tool_calls is False
    assert request.response_format == ResponseFormat("json_schema", {"type": "object"})
    assert request.metadata == {"user_id": "u1"}


@pytest.mark.parametrize(
    "body,param",
    [
        ({"model": "m", "messages": []}, "max_tokens"),
        ({"model": "m", "max_tokens": "10", "messages": []}, "max_tokens"),
        ({"model": "m", "max_tokens": 10}, "messages"),
        ({"max_tokens": 10, "messages": []}, "model"),
        ({"model": "m", "max_tokens": 10, "messages": [{"role": "bot", "content": "x"}]}, "messages[0].role"),
        ({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]}, "messages[0].content[0].type"),
        ({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "file", "file_id": "f"}}]}]}, "messages[0].content[0].source.type"),
        ({"model": "m", "max_tokens": 10, "messages": [], "tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools[0].type"),
        ({"model": "m", "max_tokens": 10, "messages": [], "tool_choice": {"type": "sometimes"}}, "tool_choice.type"),
    ],
)
def test_decode_request_names_the_bad_field(body, param):
    with pytest.raises(BadRequestError) as info:
        A.decode_request(body)
    assert info.value.param == param and param in info.value.message


def test_count_tokens_helpers():
    request = A.decode_count_tokens_request({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    assert request.messages == [Message.user("hi")]
    assert A.encode_count_tokens_response(2095) == {"input_tokens": 2095}


# -- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "exc,status,kind",
    [
        (BadRequestError("bad"), 400, "invalid_request_error"),
        (AuthenticationError("key"), 401, "authentication_error"),
        (RateLimitError("slow", retry_after=2.5), 429, "rate_limit_error"),
        (OverloadedError("busy"), 529, "overloaded_error"),
        (ServerError("oops"), 500, "api_error"),
        (ValueError("plain"), 500, "api_error"),
    ],
)
def test_encode_error_shapes(exc, status, kind):
    got_status, body, headers = A.encode_error(exc)
    assert got_status == status and body["type"] == "error" and body["error"]["type"] == kind
    assert body["request_id"].startswith("req_")
    if status == 429:
        assert headers == {"retry-after": "3", "retry-after-ms": "2500"}


def test_quota_errors_tell_sdks_not_to_retry():
    _, _, headers = A.encode_error(QuotaExceededError("billing"))
    assert headers["x-should-retry"] == "false"


@pytest.mark.parametrize(
    "status,error_type,cls",
    [
        (429, "rate_limit_error", RateLimitError),
        (529, "overloaded_error", OverloadedError),
        (402, "billing_error", QuotaExceededError),
        (401, "authentication_error", AuthenticationError),
        (400, "invalid_request_error", BadRequestError),
    ],
)
def test_decode_error(status, error_type, cls):
    body = {"type": "error", "error": {"type": error_type, "message": "m"}, "request_id": "req_1"}
    err = A.decode_error(status, body, {"retry-after": "7"}, "anthropic")
    assert type(err) is cls and err.code == error_type and err.retry_after == 7.0 and err.provider == "anthropic"


def test_decode_error_context_length_and_non_json_body():
    body = {"type": "error", "error": {"type": "invalid_request_error", "message": "prompt is too long: 210000 tokens > 200000 maximum"}}
    assert isinstance(A.decode_error(400, body, {}, "anthropic"), ContextLengthError)
    err = A.decode_error(502, "<html>bad gateway</html>", {}, "anthropic")
    assert isinstance(err, ServerError) and "bad gateway" in err.message


def test_retry_after_reads_ms_first():
    assert A.retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert A.retry_after({}) is None


# -- against the fake upstream ---------------------------------------------------------------------

httpx = pytest.importorskip("httpx")


@pytest.fixture(scope="module")
def upstream():
    from tests.fakes.anthropic_upstream import AnthropicUpstream

    with AnthropicUpstream(api_key="sk-ant-test") as server:
        yield server


def _post(upstream, body: dict) -> httpx.Response:
    return httpx.post(upstream.base_url + A.chat_path("claude-fake", bool(body.get("stream"))), json=body, headers={"x-api-key": "sk-ant-test", "anthropic-version": "2023-06-01"})


def test_fake_upstream_chat_and_forced_tool(upstream):
    body = A.encode_request(ChatRequest("m", [Message.user("Where is A-118?")]), "claude-fake")
    assert A.decode_response(_post(upstream, body).json(), "anthropic").text == "echo: Where is A-118?"
    forced = ChatRequest("m", [Message.user("x")], tools=[Tool("lookup_order", parameters=SCHEMA)], tool_choice=ToolChoice("required", "lookup_order"))
    response = A.decode_response(_post(upstream, A.encode_request(forced, "claude-fake")).json(), "anthropic")
    assert response.finish_reason == "tool_calls" and response.tool_calls[0].args == {"echo": "x"}


def test_fake_upstream_stream_equals_non_stream(upstream):
    from tests.fakes.anthropic_upstream import Answer

    answer = Answer(text="Hello there you", tool_calls=[("toolu_9", "f", '{"a":1}')], reasoning="think", cached_tokens=2)
    request = ChatRequest("m", [Message.user("one two three")])
    upstream.script(answer, answer)
    whole = A.decode_response(_post(upstream, A.encode_request(request, "claude-fake")).json())
    request.stream = True
    streamed = accumulate(decode_stream(_post(upstream, A.encode_request(request, "claude-fake")).content))
    whole.provider, whole.raw = "", None
    assert streamed == whole and whole.usage.cached_tokens == 2


def test_fake_upstream_errors(upstream):
    from tests.fakes.anthropic_upstream import error_mid_stream, overloaded, rate_limited

    body = A.encode_request(ChatRequest("m", [Message.user("x")]), "claude-fake")
    upstream.inject(rate_limited(3))
    r = _post(upstream, body)
    err = A.decode_error(r.status_code, r.json(), {k.lower(): v for k, v in r.headers.items()}, "anthropic")
    assert isinstance(err, RateLimitError) and err.retry_after == 3.0
    upstream.inject(overloaded())
    r = _post(upstream, body)
    assert isinstance(A.decode_error(r.status_code, r.json(), {}, "anthropic"), OverloadedError)
    upstream.inject(error_mid_stream())
    with pytest.raises(StreamError):
        decode_stream(_post(upstream, {**body, "stream": True}).content)
    r = httpx.post(upstream.base_url + "/v1/messages", json=body, headers={"authorization": "Bearer wrong"})
    assert isinstance(A.decode_error(r.status_code, r.json(), {}, "anthropic"), AuthenticationError)
