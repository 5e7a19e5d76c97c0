"""The Ollama dialect: round trips and stream == non-stream as properties (with the losses of
this wire written down in ``expressible_*``), NDJSON framing, and the decoders' edges."""

from __future__ import annotations

import copy
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelport import errors
from modelport.dialects import ollama as OL
from modelport.ndjson import NDJSONParser
from modelport.types import (
    ChatRequest,
    ChatResponse,
    ImagePart,
    Message,
    ReasoningPart,
    ResponseFormat,
    StreamAccumulator,
    TextPart,
    ToolCall,
    Usage,
)
from tests.dialects.test_dialect_roundtrip import SETTINGS, Fresh, requests, response_events, responses

# What the leading base64 characters of an image say its type is (independent of the dialect's table).
SNIFFED = {"iVBORw0KGgo": "image/png", "/9j/": "image/jpeg", "R0lGOD": "image/gif", "UklGR": "image/webp"}


def _sniffed(data: str) -> str:
    return next((kind for prefix, kind in SNIFFED.items() if data.startswith(prefix)), "image/png")


def inline_only(request: ChatRequest) -> ChatRequest:
    """Images by URL cannot go to Ollama (the dialect does no I/O); they have their own test."""
    request = copy.deepcopy(request)
    for message in request.messages:
        message.content = [p for p in message.content if not (isinstance(p, ImagePart) and p.data is None)]
    return request


def expressible_ollama(request: ChatRequest) -> ChatRequest:
    """Ollama: one content string per message (text parts joined, first), images as raw base64
    (detail and media type lost, the type sniffed back), reasoning as ``thinking`` without its
    signature; tool calls lose their ids (numbered call_0, call_1... in order) and
    signatures, tool results their ``is_error``, and they are paired by tool name; no
    tool_choice (``none`` sends no tools), parallel_tool_calls, metadata or tool strict; a
    format has no name or strict flag and "text" is the default; minimal effort is "low"."""
    request = copy.deepcopy(request)
    renamed: dict[str, str] = {}
    for message in request.messages:
        for call in message.tool_calls:
            renamed[call.id] = call.id = f"call_{len(renamed)}"
            call.signature = None
    names = {c.id: c.name for m in request.messages for c in m.tool_calls}
    for message in request.messages:
        text = "".join(p.text for p in message.content if isinstance(p, TextPart))
        reasoning = "".join(p.text for p in message.content if isinstance(p, ReasoningPart))
        content: list = [ReasoningPart(reasoning)] if reasoning and message.role == "assistant" else []
        content += [TextPart(text)] if text else []
        content += [ImagePart(data=p.data, media_type=_sniffed(p.data)) for p in message.content if isinstance(p, ImagePart)]
        message.content = content
        if message.role == "tool":
            message.tool_call_id = renamed[message.tool_call_id]
            message.name = names[message.tool_call_id]
            message.is_error = False
    if request.tool_choice is not None and request.tool_choice.mode == "none":
        request.tools = []
    for tool in request.tools:
        tool.strict = None
    request.tool_choice = request.parallel_tool_calls = request.metadata = None
    fmt = request.response_format
    if fmt is not None:
        request.response_format = None if fmt.type == "text" else ResponseFormat(fmt.type, fmt.schema)
    if request.reasoning_effort == "minimal":
        request.reasoning_effort = "low"
    return request


def response_ollama(response: ChatResponse) -> ChatResponse:
    """Ollama answers carry no id, creation time, cached or reasoning counts, reasoning
    signature, or tool-call ids and signatures (fresh ones are made); content_filter and
    error go out as stop."""
    response = copy.deepcopy(response)
    response.id = ""
    response.usage = Usage(response.usage.input_tokens, response.usage.output_tokens)
    if response.finish_reason in ("content_filter", "error"):
        response.finish_reason = "stop"
    for part in response.message.content:
        if isinstance(part, ReasoningPart):
            part.signature = None
    for call in response.message.tool_calls:
        call.id = Fresh("call_ id", lambda v: isinstance(v, str) and v.startswith("call_") and len(v) > 10)
        call.signature = None
    return response


@SETTINGS
@given(requests())
def test_request_round_trip(request):
    request = inline_only(request)
    assert OL.decode_request(OL.encode_request(request, "m")) == expressible_ollama(request)


@SETTINGS
@given(requests())
def test_requests_survive_a_second_trip_unchanged(request):
    once = OL.decode_request(OL.encode_request(inline_only(request), "m"))
    assert OL.decode_request(OL.encode_request(once, "m")) == once


@SETTINGS
@given(responses())
def test_response_round_trip(response):
    assert OL.decode_response(OL.encode_response(response, "the-model"), "p") == response_ollama(response)


def _ndjson_events(raw: bytes, cuts: list[int]) -> list:
    parser, decoder, events = NDJSONParser(), OL.StreamDecoder(), []
    pieces = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)])]
    for piece in pieces:
        for name, data in parser.feed(piece):
            events.extend(decoder.feed(name, data))
    for name, data in parser.close():
        events.extend(decoder.feed(name, data))
    return events


@SETTINGS
@given(responses(), st.lists(st.integers(0, 4000), max_size=6))
def test_streamed_equals_non_streamed(response, cuts):
    """The NDJSON stream, cut anywhere, folds into what decode_response makes of the whole answer."""
    encoder = OL.StreamEncoder("the-model")
    raw = b"".join(encoder.encode(e) for e in response_events(response)) + encoder.close()
    lines = [json.loads(line) for line in raw.splitlines()]
    assert [line["done"] for line in lines] == [False] * (len(lines) - 1) + [True]
    acc = StreamAccumulator()
    for event in _ndjson_events(raw, sorted(c for c in cuts if c <= len(raw))):
        acc.add(event)
    streamed = acc.response()
    whole = OL.decode_response(OL.encode_response(response, "the-model"), "")
    assert [c.name for c in streamed.tool_calls] == [c.name for c in whole.tool_calls]
    for a, b in zip(streamed.tool_calls, whole.tool_calls):
        a.id = b.id  # fresh on each decode
    assert streamed == whole


def test_url_images_are_refused_with_a_hint():
    request = ChatRequest("m", [Message("user", [ImagePart(url="https://example.com/a.png")])])
    with pytest.raises(errors.BadRequestError) as caught:
        OL.encode_request(request, "m")
    assert "base64" in caught.value.hint


def test_extra_goes_to_options_or_the_top_of_the_body():
    request = ChatRequest("m", [Message.user("x")], temperature=0.5, stream=True,
                          extra={"num_ctx": 8192, "keep_alive": "5m", "options": {"min_p": 0.1}, "logprobs": True})
    body = OL.encode_request(request, "llama3.2")
    assert body["options"] == {"temperature": 0.5, "num_ctx": 8192, "min_p": 0.1}
    assert (body["keep_alive"], body["logprobs"], body["stream"]) == ("5m", True, True)
    assert OL.encode_request(ChatRequest("m", [Message.user("x")], extra={"think": "low"}), "m")["think"] == "low"
    decoded = OL.decode_request(body)
    assert decoded.extra == {"num_ctx": 8192, "min_p": 0.1, "keep_alive": "5m", "logprobs": True}
    assert decoded.temperature == 0.5


def test_incoming_defaults_and_spellings():
    request = OL.decode_request({"model": "llama3.2", "messages": [{"role": "user", "content": "x"}],
                                 "options": {"stop": "END", "num_predict": -1}, "think": "max", "format": "json"})
    assert request.stream is True  # Ollama streams unless told not to
    assert (request.stop, request.max_tokens, request.reasoning_effort) == (["END"], None, "high")
    assert request.response_format == ResponseFormat("json_object")


def test_tool_results_pair_with_calls_by_name_and_order():
    body = {"model": "m", "messages": [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "a", "arguments": {"x": 1}}},
                                                             {"function": {"name": "b", "arguments": {}}}]},
        {"role": "tool", "tool_name": "b", "content": "B"},
        {"role": "tool", "content": "A"},
    ]}
    messages = OL.decode_request(body).messages
    assert [c.id for c in messages[1].tool_calls] == ["call_0", "call_1"]
    assert (messages[2].tool_call_id, messages[2].name) == ("call_1", "b")
    assert (messages[3].tool_call_id, messages[3].name) == ("call_0", "a")


def test_generate_is_a_system_and_user_turn():
    request = OL.decode_generate_request({"model": "m", "prompt": "hi", "system": "be brief", "images": ["/9j/abc"],
                                          "raw": True, "context": [1, 2], "stream": False, "options": {"num_ctx": 4096}})
    assert request.messages == [Message.system("be brief"), Message("user", [TextPart("hi"), ImagePart(data="/9j/abc", media_type="image/jpeg")])]
    assert (request.stream, request.extra) == (False, {"num_ctx": 4096})
    with pytest.raises(errors.BadRequestError, match="suffix"):
        OL.decode_generate_request({"model": "m", "prompt": "def f(", "suffix": "return 1"})


def test_generate_answers_and_stream_lines():
    response = ChatResponse("", "m", Message("assistant", [ReasoningPart("hmm"), TextPart("hello")]), "length", Usage(3, 2), latency=0.5)
    body = OL.encode_generate_response(response, "llama3.2")
    assert (body["response"], body["thinking"], body["done_reason"], body["eval_count"]) == ("hello", "hmm", "length", 2)
    assert body["total_duration"] == 500_000_000 and body["prompt_eval_duration"] + body["eval_duration"] == body["total_duration"]
    encoder = OL.GenerateStreamEncoder("llama3.2")
    from modelport.types import StreamEvent

    raw = encoder.encode(StreamEvent("text", text="he")) + encoder.close()
    first, last = (json.loads(line) for line in raw.splitlines())
    assert first["response"] == "he" and not first["done"] and "message" not in first
    assert last["done"] and last["response"] == ""
    assert OL.decode_response(body, "ollama").text == "hello"


def test_errors_both_ways():
    assert isinstance(OL.decode_error(404, {"error": "model 'x' not found"}, {}, "ollama"), errors.NotFoundError)
    assert isinstance(OL.decode_error(400, {"error": "model \"x\" not found, try pulling it first"}, {}, "ollama"), errors.NotFoundError)
    limited = OL.decode_error(429, {"error": "busy"}, {"retry-after": "2"}, "ollama")
    assert isinstance(limited, errors.RateLimitError) and limited.retry_after == 2
    assert isinstance(OL.decode_error(502, "<html>bad gateway</html>", {}, "ollama"), errors.ServerError)
    assert OL.encode_error(errors.NotFoundError("no model", hint="pull it")) == (404, {"error": "no model (hint: pull it)"}, {})
    status, body, headers = OL.encode_error(errors.QuotaExceededError("spent", retry_after=1.5))
    assert (status, body) == (429, {"error": "spent"})
    assert (headers["retry-after"], headers["x-should-retry"]) == ("2", "false")
    assert OL.encode_error(ValueError("boom"))[0] == 500
    with pytest.raises(errors.StreamError, match="runner died"):
        OL.StreamDecoder("ollama").feed(None, '{"error": "runner died"}')


def test_ndjson_parser_joins_split_lines_and_skips_blanks():
    parser = NDJSONParser()
    assert parser.feed(b'{"a"') == []
    assert parser.feed(b': 1}\n\n{"b": 2}\r\n{"c"') == [(None, '{"a": 1}'), (None, '{"b": 2}')]
    assert parser.close() == [(None, '{"c"')]
    parser = NDJSONParser()
    parser.feed(b'{"c": 3}')
    assert parser.close() == [(None, '{"c": 3}')]
    assert parser.close() == []


def test_tool_call_arguments_go_out_as_objects():
    request = ChatRequest("m", [Message.user("x"), Message.assistant("", [ToolCall("c1", "f", '{"a": 1}'), ToolCall("c2", "g", "not json")])])
    calls = OL.encode_request(request, "m")["messages"][1]["tool_calls"]
    assert calls == [{"function": {"name": "f", "arguments": {"a": 1}}}, {"function": {"name": "g", "arguments": {"_raw": "not json"}}}]
