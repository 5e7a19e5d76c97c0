"""Gemini dialect: worked examples of its wire format and of modelport's policies, both directions."""

from __future__ import annotations

import json

import pytest

from modelport.dialects import gemini as G
from modelport.errors import AuthenticationError, BadRequestError, OverloadedError, QuotaExceededError, RateLimitError, StreamError
from modelport.dialects import decode_sse
from modelport.sse import SSEParser
from modelport.types import (
    accumulate,
    ChatRequest,
    ChatResponse,
    Embedding,
    EmbeddingResponse,
    ImagePart,
    Message,
    ModelInfo,
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


def worked_example(signature: str | None = "CiQB0e2Kb") -> ChatRequest:
    return ChatRequest(
        "gemini-3.1-flash",
        [
            Message.system("You are a shop assistant."),
            Message.user("Where is order A-118?"),
            Message.assistant(tool_calls=[ToolCall("call_k3J9", "lookup_order", '{"order_no":"A-118"}', signature)]),
            Message.tool("call_k3J9", '{"status":"shipped"}', name="lookup_order"),
        ],
        tools=[Tool("lookup_order", parameters=SCHEMA)],
        max_tokens=300,
    )


def test_worked_example_matches_the_documented_wire_body():
    assert G.encode_request(worked_example(), "gemini-3.1-flash") == {
        "systemInstruction": {"parts": [{"text": "You are a shop assistant."}]},
        "contents": [
            {"role": "user", "parts": [{"text": "Where is order A-118?"}]},
            {"role": "model", "parts": [{"functionCall": {"id": "call_k3J9", "name": "lookup_order", "args": {"order_no": "A-118"}}, "thoughtSignature": "CiQB0e2Kb"}]},
            {"role": "user", "parts": [{"functionResponse": {"id": "call_k3J9", "name": "lookup_order", "response": {"status": "shipped"}}}]},
        ],
        "tools": [{"functionDeclarations": [{"name": "lookup_order", "description": "", "parametersJsonSchema": SCHEMA}]}],
        "generationConfig": {"maxOutputTokens": 300},
    }


def test_worked_example_decodes_back():
    assert G.decode_request(G.encode_request(worked_example(), "x"), "gemini-3.1-flash") == worked_example()


def test_tool_result_name_is_recovered_from_the_call_and_missing_name_is_a_400():
    request = worked_example()
    request.messages[3].name = None
    part = G.encode_request(request)["contents"][2]["parts"][0]
    assert part["functionResponse"]["name"] == "lookup_order"
    with pytest.raises(BadRequestError):
        G.encode_request(ChatRequest("m", [Message.tool("call_x", "ok")]))


@pytest.mark.parametrize(
    "text,is_error,response",
    [
        ('{"status":"shipped"}', False, {"status": "shipped"}),
        ("shipped", False, {"result": "shipped"}),
        ("[1,2]", False, {"result": "[1,2]"}),
        ("no such order", True, {"error": "no such order"}),
    ],
)
def test_tool_result_objects(text, is_error, response):
    request = ChatRequest("m", [Message.assistant(tool_calls=[ToolCall("c1", "f")]), Message.tool("c1", text, is_error=is_error)])
    wire = G.encode_request(request)["contents"][1]["parts"][0]["functionResponse"]
    assert wire["response"] == response
    assert G.decode_request(G.encode_request(request), "m").messages[1] == Message.tool("c1", text, name="f", is_error=is_error)


def test_paths():
    assert G.chat_path("gemini-2.5-flash", False) == "/models/gemini-2.5-flash:generateContent"
    assert G.chat_path("models/gemini-2.5-flash", True) == "/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    assert G.chat_path("tunedModels/t1", False) == "/tunedModels/t1:generateContent"


def test_generation_config_and_structured_output_and_thinking():
    schema = {"type": "object", "properties": {"colour": {"type": "string"}}, "required": ["colour"]}
    request = ChatRequest(
        "m",
        [Message.user("x")],
        temperature=0.4,
        top_p=0.95,
        top_k=40,
        max_tokens=512,
        stop=["\n\n"],
        seed=7,
        presence_penalty=0.1,
        frequency_penalty=0.2,
        response_format=ResponseFormat("json_schema", schema),
        reasoning_effort="medium",
    )
    assert G.encode_request(request)["generationConfig"] == {
        "temperature": 0.4,
        "topP": 0.95,
        "topK": 40,
        "maxOutputTokens": 512,
        "seed": 7,
        "presencePenalty": 0.1,
        "frequencyPenalty": 0.2,
        "stopSequences": ["\n\n"],
        "responseMimeType": "application/json",
        "responseJsonSchema": schema,
        "thinkingConfig": {"includeThoughts": True, "thinkingBudget": 8192},
    }
    assert G.decode_request(G.encode_request(request), "m") == request
    json_object = ChatRequest("m", [Message.user("x")], response_format=ResponseFormat("json_object"), reasoning_effort="none")
    assert G.encode_request(json_object)["generationConfig"] == {"responseMimeType": "application/json", "thinkingConfig": {"thinkingBudget": 0}}
    assert G.decode_request(G.encode_request(json_object), "m") == json_object


@pytest.mark.parametrize(
    "choice,wire",
    [
        (ToolChoice("auto"), {"mode": "AUTO"}),
        (ToolChoice("required"), {"mode": "ANY"}),
        (ToolChoice("required", "lookup"), {"mode": "ANY", "allowedFunctionNames": ["lookup"]}),
        (ToolChoice("none"), {"mode": "NONE"}),
    ],
)
def test_tool_config(choice, wire):
    body = G.encode_request(ChatRequest("m", [Message.user("x")], tool_choice=choice))
    assert body["toolConfig"] == {"functionCallingConfig": wire}
    assert G.decode_request(body, "m").tool_choice == choice


def test_images_inline_and_file_data():
    request = ChatRequest("m", [Message.user("what?", ImagePart(data="iVBOR", media_type="image/png"), ImagePart(url="https://x/a.jpg"), ImagePart(url="data:image/webp;base64,UklG"))])
    assert G.encode_request(request)["contents"][0]["parts"] == [
        {"text": "what?"},
        {"inlineData": {"mimeType": "image/png", "data": "iVBOR"}},
        {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://x/a.jpg"}},
        {"inlineData": {"mimeType": "image/webp", "data": "UklG"}},
    ]


def test_tool_result_images_go_in_function_response_parts():
    request = ChatRequest("m", [Message.assistant(tool_calls=[ToolCall("c1", "plot")]), Message("tool", [TextPart("done"), ImagePart(data="AAA", media_type="image/png")], tool_call_id="c1")])
    wire = G.encode_request(request)["contents"][1]["parts"][0]["functionResponse"]
    assert wire["parts"] == [{"inlineData": {"mimeType": "image/png", "data": "AAA"}}]
    assert G.decode_request(G.encode_request(request), "m").messages[1].content[1] == ImagePart(data="AAA", media_type="image/png")


def test_synthetic_ids_are_not_sent_back_and_pair_by_name_and_order():
    calls = [ToolCall("mpgm_abc_0", "f", '{"n":1}'), ToolCall("mpgm_abc_1", "f", '{"n":2}')]
    request = ChatRequest("m", [Message.user("x"), Message.assistant(tool_calls=calls), Message.tool("mpgm_abc_0", "one"), Message.tool("mpgm_abc_1", "two")])
    body = G.encode_request(request)
    assert all("id" not in p["functionCall"] for p in body["contents"][1]["parts"])
    assert all("id" not in p["functionResponse"] for p in body["contents"][2]["parts"])
    decoded = G.decode_request(body, "m").messages
    assert [c.id for c in decoded[1].tool_calls] == [m.tool_call_id for m in decoded[2:]]
    assert [m.text for m in decoded[2:]] == ["one", "two"]


# -- responses ------------------------------------------------------------------------------------

RESPONSE = {
    "candidates": [
        {
            "index": 0,
            "content": {"role": "model", "parts": [{"text": "thinking...", "thought": True}, {"functionCall": {"name": "lookup_order", "args": {"order_no": "A-118"}}, "thoughtSignature": "CiQB0e2Kb"}]},
            "finishReason": "STOP",
            "safetyRatings": [{"category": "HARM_CATEGORY_HARASSMENT", "probability": "NEGLIGIBLE"}],
        }
    ],
    "usageMetadata": {"promptTokenCount": "96", "candidatesTokenCount": 14, "thoughtsTokenCount": 120, "cachedContentTokenCount": 50, "totalTokenCount": 230},
    "modelVersion": "gemini-3.1-pro-preview",
    "responseId": "mW2nab3XLpqf1e8P",
}


def test_decode_response_section_4_4():
    response = G.decode_response(RESPONSE, "gemini")
    assert response.id == "mW2nab3XLpqf1e8P" and response.model == "gemini-3.1-pro-preview"
    assert response.message.content == [ReasoningPart("thinking...")]
    (call,) = response.tool_calls
    assert call.id.startswith(G.SYNTHETIC_ID_PREFIX) and call.name == "lookup_order" and call.args == {"order_no": "A-118"}
    assert call.signature == "CiQB0e2Kb"
    assert response.finish_reason == "tool_calls"  # decided from content: finishReason says STOP
    assert response.usage == Usage(input_tokens=96, output_tokens=134, cached_tokens=50, reasoning_tokens=120)
    assert G.decode_response(RESPONSE).tool_calls[0].id == call.id  # stable


@pytest.mark.parametrize(
    "reason,finish",
    [("STOP", "stop"), ("MAX_TOKENS", "length"), ("SAFETY", "content_filter"), ("RECITATION", "content_filter"), ("MALFORMED_FUNCTION_CALL", "error"), ("MISSING_THOUGHT_SIGNATURE", "error"), ("OTHER", "stop"), (None, "stop")],
)
def test_finish_reason_mapping(reason, finish):
    body = {"candidates": [{"content": {"role": "model", "parts": [{"text": "x"}]}, "finishReason": reason}]}
    assert G.decode_response(body).finish_reason == finish


def test_blocked_prompt_and_candidate_without_content():
    blocked = G.decode_response({"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 3}})
    assert blocked.finish_reason == "content_filter" and blocked.message.content == [] and blocked.usage.input_tokens == 3
    empty = G.decode_response({"candidates": [{"finishReason": "SAFETY"}]})
    assert empty.finish_reason == "content_filter" and empty.message.content == []


def test_signature_on_a_text_part_is_kept_as_a_bare_reasoning_signature():
    body = {"candidates": [{"content": {"role": "model", "parts": [{"text": "Paris.", "thoughtSignature": "S"}]}, "finishReason": "STOP"}]}
    content = G.decode_response(body).message.content
    assert content == [TextPart("Paris."), ReasoningPart("", "S")]
    replay = G.encode_request(ChatRequest("m", [Message("assistant", content)]))["contents"][0]["parts"]
    assert replay == [{"text": "Paris."}, {"text": "", "thoughtSignature": "S"}]


def test_encode_response_round_trips():
    response = ChatResponse(
        "r1",
        "gemini-x",
        Message("assistant", [ReasoningPart("hm", "S0"), TextPart("Hello")], [ToolCall("call_1", "f", '{"a":1}', "SIG")]),
        "tool_calls",
        Usage(10, 9, 4, 0, 3),
        provider="gemini",
    )
    wire = G.encode_response(response, "gemini-x")
    assert wire["usageMetadata"] == {"promptTokenCount": 10, "candidatesTokenCount": 6, "thoughtsTokenCount": 3, "cachedContentTokenCount": 4, "totalTokenCount": 19}
    assert wire["candidates"][0]["finishReason"] == "STOP"
    assert G.decode_response(wire, "gemini") == response


# -- streams ---------------------------------------------------------------------------------------

STREAM = """data: {"candidates":[{"content":{"role":"model","parts":[{"text":"The capital"}]},"index":0}],"usageMetadata":{"promptTokenCount":9,"totalTokenCount":9},"modelVersion":"gemini-3.1-flash","responseId":"r1"}

data: {"candidates":[{"content":{"role":"model","parts":[{"text":" is Paris."}]},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":9,"candidatesTokenCount":5,"totalTokenCount":14},"modelVersion":"gemini-3.1-flash","responseId":"r1"}

"""


def decode_stream(raw: bytes) -> list[StreamEvent]:
    return decode_sse(G, raw)


def test_stream_decoder_section_4_5():
    events = decode_stream(STREAM.encode())
    assert events[0] == StreamEvent("start", id="r1", model="gemini-3.1-flash")
    response = accumulate(events)
    assert response.text == "The capital is Paris." and response.finish_reason == "stop"
    assert response.usage == Usage(9, 5)


def test_stream_function_calls_arrive_whole_with_signature():
    chunk = {"candidates": [{"content": {"role": "model", "parts": [{"functionCall": {"id": "fc_1", "name": "f", "args": {"x": 1}}, "thoughtSignature": "SIG"}]}, "finishReason": "STOP"}], "responseId": "r2"}
    events = decode_stream(b"data: " + json.dumps(chunk).encode() + b"\n\n")
    assert StreamEvent("tool_call", index=0, id="fc_1", name="f", arguments='{"x":1}', signature="SIG") in events
    assert events[-1].kind == "finish" and events[-1].finish_reason == "tool_calls"


def test_stream_error_objects_raise_even_outside_sse_framing():
    with pytest.raises(StreamError) as info:
        G.StreamDecoder().feed(None, '{"error":{"code":503,"message":"overloaded","status":"UNAVAILABLE"}}')
    assert info.value.code == "UNAVAILABLE"
    parser, decoder = SSEParser(), G.StreamDecoder()
    with pytest.raises(StreamError):
        for name, data in parser.feed(b'{\n"error": {"code": 500, "message": "boom", "status": "INTERNAL"}\n}\n'):
            decoder.feed(name, data)


def test_stream_encoder_one_chunk_per_delta_buffered_calls_and_final_usage():
    encoder = G.StreamEncoder("gemini-x")
    events = [
        StreamEvent("start", id="r7"),
        StreamEvent("text", text="Hi"),
        StreamEvent("tool_call", index=0, id="call_1", name="f", arguments='{"a":'),
        StreamEvent("tool_call", index=0, arguments="1}"),
        StreamEvent("finish", finish_reason="tool_calls"),
        StreamEvent("usage", usage=Usage(5, 2)),
    ]
    raw = b"".join(encoder.encode(e) for e in events) + encoder.close()
    chunks = [json.loads(data) for name, data in SSEParser().feed(raw)]
    assert b"[DONE]" not in raw and b"event:" not in raw
    assert len(chunks) == 2
    assert chunks[0]["candidates"][0]["content"]["parts"] == [{"text": "Hi"}]
    last = chunks[1]
    assert last["candidates"][0]["content"]["parts"] == [{"functionCall": {"id": "call_1", "name": "f", "args": {"a": 1}}}]
    assert last["candidates"][0]["finishReason"] == "STOP" and last["usageMetadata"]["totalTokenCount"] == 7
    assert all(c["responseId"] == "r7" and c["modelVersion"] == "gemini-x" for c in chunks)
    response = accumulate(decode_stream(raw))
    assert response.tool_calls == [ToolCall("call_1", "f", '{"a":1}')] and response.usage == Usage(5, 2)


# -- server side ------------------------------------------------------------------------------------


def test_decode_request_tolerates_int64_strings_snake_case_and_openapi_schemas():
    body = {
        "contents": [{"parts": [{"text": "hi"}]}],
        "system_instruction": {"parts": [{"text": "terse"}]},
        "generationConfig": {"maxOutputTokens": "512", "topK": "40", "seed": "7", "thinkingConfig": {"thinkingLevel": "HIGH"}, "responseMimeType": "application/json", "responseSchema": {"type": "OBJECT", "properties": {"a": {"type": "STRING", "nullable": True}}}},
        "tools": [{"functionDeclarations": [{"name": "f", "description": "d", "parameters": {"type": "OBJECT", "properties": {"n": {"type": "INTEGER"}}}}]}],
        "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_ONLY_HIGH"}],
    }
    request = G.decode_request(body, "models/gemini-x")
    assert request.model == "gemini-x"
    assert request.messages == [Message.system("terse"), Message.user("hi")]
    assert (request.max_tokens, request.top_k, request.seed, request.reasoning_effort) == (512, 40, 7, "high")
    assert request.response_format == ResponseFormat("json_schema", {"type": "object", "properties": {"a": {"type": ["string", "null"]}}})
    assert request.tools == [Tool("f", "d", {"type": "object", "properties": {"n": {"type": "integer"}}})]


@pytest.mark.parametrize(
    "body,param",
    [
        ({}, "contents"),
        ({"contents": [{"role": "assistant", "parts": []}]}, "contents[0].role"),
        ({"contents": [{"role": "user"}]}, "contents[0].parts"),
        ({"contents": [], "generationConfig": {"maxOutputTokens": "lots"}}, "generationConfig.maxOutputTokens"),
        ({"contents": [], "generationConfig": {"candidateCount": 2}}, "generationConfig.candidateCount"),
        ({"contents": [], "tools": [{"googleSearch": {}}]}, "tools[0].googleSearch"),
        ({"contents": [{"parts": [{"functionResponse": {"name": "f", "response": {}}}]}]}, "contents[0].parts[0].functionResponse"),
    ],
)
def test_decode_request_names_the_bad_field(body, param):
    with pytest.raises(BadRequestError) as info:
        G.decode_request(body, "m")
    assert info.value.param == param


def test_thinking_budget_decoding():
    def effort(config):
        return G.decode_request({"contents": [], "generationConfig": {"thinkingConfig": config}}, "m").reasoning_effort

    assert effort({"thinkingBudget": 0}) == "none"
    assert effort({"thinkingBudget": -1}) is None
    assert effort({"thinkingBudget": "2048"}) == "low"
    assert effort({"thinkingBudget": 30000}) == "high"


# -- errors -----------------------------------------------------------------------------------------

RATE_LIMITED = {
    "error": {
        "code": 429,
        "message": "You exceeded your current quota ... Please retry in 37.4s.",
        "status": "RESOURCE_EXHAUSTED",
        "details": [
            {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [{"quotaMetric": "m", "quotaId": "GenerateRequestsPerMinutePerProject"}]},
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37.4s"},
        ],
    }
}


def test_retry_after_from_retry_info():
    assert G.retry_after({}, RATE_LIMITED) == 37.4
    assert G.retry_after({}, [RATE_LIMITED]) == 37.4  # one-element array wrapping
    assert G.retry_after({"retry-after": "3"}, {"error": {}}) == 3.0


def test_decode_error_kinds():
    err = G.decode_error(429, RATE_LIMITED, {}, "gemini")
    assert type(err) is RateLimitError and err.retry_after == 37.4 and err.code == "RESOURCE_EXHAUSTED"
    per_day = json.loads(json.dumps(RATE_LIMITED).replace("PerMinute", "PerDay"))
    assert type(G.decode_error(429, per_day, {}, "gemini")) is QuotaExceededError
    bad_key = {"error": {"code": 400, "message": "API key not valid.", "status": "INVALID_ARGUMENT", "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}]}}
    assert type(G.decode_error(400, bad_key, {}, "gemini")) is AuthenticationError
    assert type(G.decode_error(503, {"error": {"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}}, {}, "gemini")) is OverloadedError


@pytest.mark.parametrize(
    "exc,status,name",
    [
        (BadRequestError("bad"), 400, "INVALID_ARGUMENT"),
        (AuthenticationError("key"), 401, "UNAUTHENTICATED"),
        (RateLimitError("slow", retry_after=37.4), 429, "RESOURCE_EXHAUSTED"),
        (OverloadedError("busy"), 503, "UNAVAILABLE"),
        (RuntimeError("oops"), 500, "INTERNAL"),
    ],
)
def test_encode_error(exc, status, name):
    got, body, headers = G.encode_error(exc)
    assert got == status and body["error"]["code"] == status and body["error"]["status"] == name
    if status == 429:
        assert body["error"]["details"] == [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37.4s"}]
        assert headers == {"retry-after": "38"}
        assert G.retry_after({}, body) == 37.4


# -- gateway helpers ----------------------------------------------------------------------------------


def test_models_count_tokens_and_embeddings():
    listing = G.encode_models([ModelInfo("gemini-x", "gemini", context_length=1000)])
    assert listing["models"][0]["name"] == "models/gemini-x" and listing["models"][0]["inputTokenLimit"] == 1000
    assert G.encode_count_tokens_response(12) == {"totalTokens": 12}
    wrapped = {"generateContentRequest": {"model": "models/x", "contents": [{"role": "user", "parts": [{"text": "hi"}]}]}}
    assert G.decode_count_tokens_request(wrapped, "x").messages == [Message.user("hi")]
    path, body = G.encode_embeddings_request(["a", "b"], "text-embedding-004")
    assert path == "/models/text-embedding-004:batchEmbedContents"
    assert G.decode_embeddings_request(body) == ["a", "b"]
    assert G.decode_embeddings_request({"content": {"parts": [{"text": "one"}]}}) == ["one"]
    response = EmbeddingResponse("", [Embedding(0, [0.5]), Embedding(1, [0.25])], provider="gemini")
    assert G.decode_embeddings_response(G.encode_embeddings_response(response), "gemini") == response
    assert G.encode_embeddings_response(response, batch=False) == {"embedding": {"values": [0.5]}}


# -- against the fake upstream ---------------------------------------------------------------------

httpx = pytest.importorskip("httpx")


@pytest.fixture(scope="module")
def upstream():
    from tests.fakes.gemini_upstream import GeminiUpstream

    with GeminiUpstream(api_key="g-key") as server:
        yield server


def _post(upstream, body: dict, stream: bool = False, version: str = "v1beta") -> httpx.Response:
    return httpx.post(upstream.base_url_for(version) + G.chat_path("gemini-fake", stream), json=body, headers={"x-goog-api-key": "g-key"})


def test_fake_upstream_chat_and_forced_call_with_signature_round_trip(upstream):
    from tests.fakes.gemini_upstream import fake_signature

    body = G.encode_request(ChatRequest("m", [Message.user("Where is A-118?")]))
    assert G.decode_response(_post(upstream, body, version="v1").json()).text == "echo: Where is A-118?"
    forced = ChatRequest("m", [Message.user("x")], tools=[Tool("lookup_order", parameters=SCHEMA)], tool_choice=ToolChoice("required"))
    response = G.decode_response(_post(upstream, G.encode_request(forced)).json())
    (call,) = response.tool_calls
    assert response.finish_reason == "tool_calls" and call.signature == fake_signature(0) and call.args == {"echo": "x"}
    follow_up = ChatRequest("m", [*forced.messages, response.message, Message.tool(call.id, "shipped")], tools=forced.tools)
    _post(upstream, G.encode_request(follow_up))
    sent = upstream.last_request.body["contents"]
    assert sent[1]["parts"][0] == {"functionCall": {"name": "lookup_order", "args": {"echo": "x"}}, "thoughtSignature": fake_signature(0)}
    assert sent[2]["parts"][0] == {"functionResponse": {"name": "lookup_order", "response": {"result": "shipped"}}}


def test_fake_upstream_stream_equals_non_stream(upstream):
    from tests.fakes.gemini_upstream import Answer

    answer = Answer(text="Hello there you", tool_calls=[("", "f", '{"a":1}')], reasoning="think", reasoning_tokens=4)
    body = G.encode_request(ChatRequest("m", [Message.user("one two three")]))
    upstream.script(answer, answer)
    whole = G.decode_response(_post(upstream, body).json(), "")
    streamed = accumulate(decode_stream(_post(upstream, body, stream=True).content))
    whole.raw = None
    assert streamed == whole and whole.usage.reasoning_tokens == 4


def test_fake_upstream_errors(upstream):
    from tests.fakes.gemini_upstream import gemini_error, rate_limited

    body = G.encode_request(ChatRequest("m", [Message.user("x")]))
    upstream.inject(rate_limited("37.4s"))
    r = _post(upstream, body)
    assert "retry-after" not in r.headers
    err = G.decode_error(r.status_code, r.json(), {}, "gemini")
    assert isinstance(err, RateLimitError) and err.retry_after == 37.4
    upstream.inject(rate_limited(per_day=True))
    r = _post(upstream, body)
    assert isinstance(G.decode_error(r.status_code, r.json(), {}, "gemini"), QuotaExceededError)
    upstream.inject(gemini_error(503, "The model is overloaded."))
    r = _post(upstream, body)
    assert isinstance(G.decode_error(r.status_code, r.json(), {}, "gemini"), OverloadedError)
    r = httpx.post(upstream.base_url_for() + G.chat_path("gemini-fake"), json=body, headers={"x-goog-api-key": "bad"})
    assert isinstance(G.decode_error(r.status_code, r.json(), {}, "gemini"), AuthenticationError)
