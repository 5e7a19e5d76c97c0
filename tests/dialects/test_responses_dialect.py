"""The openai-responses dialect: round trips, stream == non-stream, and the wire rules of
OpenAI's Responses API that a round trip cannot see.

The expected values are the generated ones with exactly the losses written down in the
``expressible_*`` functions, never the encoder's output.
"""

from __future__ import annotations

import copy
import json

import pytest
from hypothesis import assume, given

from modelport.dialects import decode_sse
from modelport.dialects import openai_responses as R
from modelport.errors import BadRequestError, StreamError
from modelport.types import (
    ChatRequest,
    ChatResponse,
    ImagePart,
    Message,
    ReasoningPart,
    StreamAccumulator,
    StreamEvent,
    TextPart,
    ToolCall,
    Usage,
    accumulate,
)
from tests.dialects.test_dialect_roundtrip import SETTINGS, Fresh, requests, response_events, responses


def expressible_responses(request: ChatRequest) -> ChatRequest:
    """Client side: Responses has no top_k, stop, seed or penalties; reasoning is replayed
    only as a Responses server's own state (so generated signed reasoning is dropped, and an
    assistant turn left empty vanishes); call signatures and item ids are not sent; tool
    results carry no error flag and get their name from the call; images have no media type
    when given by URL and no "auto" detail; a nameless schema is called "response"; a tool
    without a strict flag is not strict."""
    request = copy.deepcopy(request)
    request.top_k = request.seed = request.presence_penalty = request.frequency_penalty = None
    request.stop = None
    for tool in request.tools:
        tool.strict = bool(tool.strict)
    names = {c.id: c.name for m in request.messages for c in m.tool_calls}
    kept = []
    for message in request.messages:
        message.content = [p for p in message.content if not isinstance(p, ReasoningPart)]
        for call in message.tool_calls:
            call.signature = None
            call.item_id = None
        if message.role == "tool":
            message.name = names[message.tool_call_id]
            message.is_error = False
        for part in message.content:
            if isinstance(part, ImagePart) and part.url is not None:
                part.media_type = None
        if message.role == "assistant" and not message.content and not message.tool_calls:
            continue
        kept.append(message)
    request.messages = kept
    fmt = request.response_format
    if fmt is not None and fmt.type == "json_schema" and fmt.name is None:
        fmt.name = "response"
    return request


def _fresh(prefix: str) -> Fresh:
    return Fresh(prefix + " id", lambda v: isinstance(v, str) and v.startswith(prefix) and len(v) > len(prefix))


def response_responses(response: ChatResponse) -> ChatResponse:
    """Server side: a foreign response id is replaced by a fresh resp_ one, item ids are made
    up where the answer had none, and a missing creation time becomes the current one."""
    response = copy.deepcopy(response)
    if not response.id.startswith("resp_"):
        response.id = _fresh("resp_")
    if not response.created:
        response.created = Fresh("creation time", lambda v: isinstance(v, int) and v > 0)
    for part in response.message.content:
        if isinstance(part, ReasoningPart) and part.id is None:
            part.id = _fresh("rs_")
    for call in response.message.tool_calls:
        call.item_id = call.item_id or _fresh("fc_")
    return response


@SETTINGS
@given(requests())
def test_request_round_trip(request):
    assert R.decode_request(R.encode_request(request, "m"), "m") == expressible_responses(request)


@SETTINGS
@given(requests())
def test_request_survives_a_second_trip_unchanged(request):
    once = R.decode_request(R.encode_request(request, "m"), "m")
    assert R.decode_request(R.encode_request(once, "m"), "m") == once


@SETTINGS
@given(responses())
def test_response_round_trip(response):
    assume(response.finish_reason != "error")
    assert R.decode_response(R.encode_response(response, "the-model"), "p") == response_responses(response)


def _normalise_ids(streamed: ChatResponse, whole: ChatResponse) -> None:
    """Each encoding makes up its own ids; they must be well-formed, not equal."""
    assert streamed.id.startswith("resp_") and whole.id.startswith("resp_")
    streamed.id = whole.id
    for a, b in zip(streamed.message.content, whole.message.content):
        if isinstance(a, ReasoningPart) and isinstance(b, ReasoningPart):
            assert a.id.startswith("rs_")
            a.id = b.id
    for a, b in zip(streamed.message.tool_calls, whole.message.tool_calls):
        assert a.item_id.startswith("fc_")
        a.item_id = b.item_id
    assert whole.created > 0
    streamed.created = whole.created


@SETTINGS
@given(responses())
def test_streamed_equals_non_streamed(response):
    assume(response.finish_reason != "error")
    encoder = R.StreamEncoder("the-model")
    raw = b"".join(encoder.encode(e) for e in response_events(response)) + encoder.close()
    streamed = accumulate(decode_sse(R, raw))
    whole = R.decode_response(R.encode_response(response, "the-model"), "")
    whole.raw = None
    _normalise_ids(streamed, whole)
    assert streamed == whole
    # The terminal event's response is the non-streamed object, item for item.
    assert [i["type"] for i in encoder.response["output"]] == [i["type"] for i in R.encode_response(response, "m")["output"]]


@SETTINGS
@given(responses())
def test_replayed_stream_equals_the_stored_response(response):
    assume(response.finish_reason != "error")
    stored = R.encode_response(response, "the-model")
    replayed = accumulate(decode_sse(R, R.replay(stored)))
    whole = R.decode_response(stored, "")
    whole.raw = None
    replayed.created = whole.created
    assert replayed == whole


# -- wire rules ---------------------------------------------------------------------------------


def _events(raw: bytes) -> list[dict]:
    from modelport.sse import SSEParser

    parser = SSEParser()
    out = []
    for name, data in parser.feed(raw) + parser.close():
        event = json.loads(data)
        assert name == event["type"], "the event: line names the JSON type"
        out.append(event)
    return out


def test_stream_framing_and_lifecycle_order():
    encoder = R.StreamEncoder("m")
    raw = b"".join(encoder.encode(e) for e in [
        StreamEvent("start"), StreamEvent("text", text="Hi"), StreamEvent("text", text=" there"),
        StreamEvent("tool_call", index=0, id="call_1", name="f", arguments='{"a"'), StreamEvent("tool_call", index=0, arguments=":1}"),
        StreamEvent("finish", finish_reason="tool_calls"), StreamEvent("usage", usage=Usage(3, 4)),
    ]) + encoder.close()
    assert b"[DONE]" not in raw
    events = _events(raw)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert [e["type"] for e in events] == [
        "response.created", "response.in_progress",
        "response.output_item.added", "response.content_part.added", "response.output_text.delta", "response.output_text.delta",
        "response.output_text.done", "response.content_part.done", "response.output_item.done",
        "response.output_item.added", "response.function_call_arguments.delta", "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "response.output_item.done", "response.completed",
    ]
    final = events[-1]["response"]
    assert final["usage"] == {"input_tokens": 3, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0}, "output_tokens": 4,
                              "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 7}
    call = final["output"][1]
    assert call["arguments"] == '{"a":1}' and call["call_id"] == "call_1" and call["id"].startswith("fc_") and call["id"] != call["call_id"]
    # Each item's output_item.done equals the item in the completed response.
    assert [e["item"] for e in events if e["type"] == "response.output_item.done"] == final["output"]
    assert final["output"][0]["content"][0] == {"type": "output_text", "annotations": [], "logprobs": [], "text": "Hi there"}


def test_parallel_calls_are_sent_one_after_another():
    encoder = R.StreamEncoder("m")
    fragments = [StreamEvent("tool_call", index=0, id="call_a", name="f", arguments='{"x":'),
                 StreamEvent("tool_call", index=1, id="call_b", name="g", arguments='{"y":'),
                 StreamEvent("tool_call", index=0, arguments="1}"), StreamEvent("tool_call", index=1, arguments="2}")]
    events = _events(b"".join(encoder.encode(e) for e in fragments) + encoder.close())
    done = [e["item"] for e in events if e["type"] == "response.output_item.done"]
    assert [(i["call_id"], i["arguments"]) for i in done] == [("call_a", '{"x":1}'), ("call_b", '{"y":2}')]
    added = [e["output_index"] for e in events if e["type"] == "response.output_item.added"]
    finished = [e["output_index"] for e in events if e["type"] == "response.output_item.done"]
    assert added == finished == [0, 1]


def test_max_output_tokens_ends_incomplete():
    encoder = R.StreamEncoder("m")
    events = _events(encoder.encode(StreamEvent("text", text="Hello,")) + encoder.encode(StreamEvent("finish", finish_reason="length")) + encoder.close())
    assert events[-1]["type"] == "response.incomplete"
    assert events[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert events[-2]["item"]["status"] == "incomplete"
    whole = R.encode_response(ChatResponse("x", "m", Message.assistant("Hello,"), "length"), "m")
    assert whole["status"] == "incomplete" and whole["output"][0]["status"] == "incomplete"


def test_failure_mid_stream_ends_with_error_and_failed():
    encoder = R.StreamEncoder("m")
    raw = encoder.encode(StreamEvent("text", text="partial")) + encoder.error(StreamError("Overloaded", code="overloaded"))
    events = _events(raw)
    assert [e["type"] for e in events[-2:]] == ["error", "response.failed"]
    assert events[-2]["message"] == "Overloaded" and events[-2]["error"]["message"] == "Overloaded"
    failed = events[-1]["response"]
    assert failed["status"] == "failed" and failed["error"]["code"] == "server_error"
    assert failed["output"][0]["status"] == "incomplete" and failed["output"][0]["content"][0]["text"] == "partial"
    assert encoder.close() == b"", "exactly one terminal event"
    with pytest.raises(StreamError, match="Overloaded"):
        decode_sse(R, raw)


def test_error_finish_is_a_failed_response_that_reads_back_as_an_error():
    body = R.encode_response(ChatResponse("x", "m", Message.assistant("so far"), "error"), "m")
    assert body["status"] == "failed" and body["error"]["code"] == "server_error"
    with pytest.raises(StreamError):
        R.decode_response(body, "p")


def test_signatures_travel_in_encrypted_content():
    """Anthropic thinking signatures and Gemini call signatures come back on the next turn."""
    answer = ChatResponse("x", "m", Message("assistant", [ReasoningPart("hmm", "anthropic-sig"), TextPart("ok")],
                                            [ToolCall("call_1", "f", "{}", "gemini-sig")]), "tool_calls")
    output = R.encode_response(answer, "m")["output"]
    assert all(i["encrypted_content"].startswith("mp1:") for i in output if i["type"] == "reasoning")
    replayed = R.decode_request({"model": "m", "input": [{"role": "user", "content": "q"}, *output,
                                                         {"type": "function_call_output", "call_id": "call_1", "output": "r"}]})
    turn = replayed.messages[1]
    assert turn.content[0].signature == "anthropic-sig" and turn.content[0].text == "hmm"
    assert turn.tool_calls[0].signature == "gemini-sig"
    assert replayed.messages[2].name == "f"


def test_foreign_encrypted_content_is_carried_opaque_and_only_replayed_to_responses():
    blob = "gAAAAABpPDIV-opaque"
    request = R.decode_request({"model": "m", "input": [
        {"role": "user", "content": "q"},
        {"type": "reasoning", "summary": [{"type": "summary_text", "text": "t"}], "content": None, "encrypted_content": blob},
        {"type": "function_call", "name": "shell", "arguments": "{}", "call_id": "call_1"},
        {"type": "function_call_output", "call_id": "call_1", "output": "done"}]})
    part = request.messages[1].content[0]
    assert part.encrypted_content == blob and part.signature is None
    sent = R.encode_request(request, "m")["input"]
    assert sent[1] == {"type": "reasoning", "summary": [{"type": "summary_text", "text": "t"}], "encrypted_content": blob}
    # Another provider's reasoning is never sent to a Responses server.
    request.messages[1].content[0] = ReasoningPart("t", "anthropic-sig")
    assert all(i.get("type") != "reasoning" for i in R.encode_request(request, "m")["input"])


def test_every_input_shape_is_accepted():
    request = R.decode_request({"model": "m", "instructions": "be brief", "input": [
        {"role": "developer", "content": "dev"},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "a"}, {"type": "input_image", "image_url": "data:image/png;base64,AAAA"}]},
        {"id": "msg_1", "type": "message", "status": "completed", "role": "assistant",
         "content": [{"type": "output_text", "text": "b", "annotations": [], "logprobs": []}], "phase": None},
        {"type": "reasoning", "summary": [], "encrypted_content": None, "id": None},
        {"role": "user", "content": "c"}]})
    assert [m.role for m in request.messages] == ["system", "system", "user", "assistant", "user"]
    assert request.messages[0].text == "be brief"
    assert isinstance(request.messages[2].content[1], ImagePart) and request.messages[2].content[1].data == "AAAA"
    assert R.decode_request({"model": "m", "input": "hi"}).messages == [Message.user("hi")]


@pytest.mark.parametrize("tool", ["file_search", "code_interpreter", "computer_use_preview", "image_generation", "mcp"])
def test_hosted_tools_are_refused_by_name(tool):
    with pytest.raises(BadRequestError, match=tool) as refused:
        R.decode_request({"model": "m", "input": "hi", "tools": [{"type": "function", "name": "f"}, {"type": tool}]})
    assert refused.value.param == "tools[1].type" and refused.value.code == "unsupported_parameter"


def test_web_search_is_dropped_as_codex_sends_it():
    request = R.decode_request({"model": "m", "input": "hi", "tools": [{"type": "web_search"}, {"type": "function", "name": "f", "strict": False}]})
    assert [t.name for t in request.tools] == ["f"]
    assert [t["type"] for t in R.echo_fields({"tools": [{"type": "web_search"}, {"type": "function", "name": "f"}]})["tools"]] == ["function"]


@pytest.mark.parametrize("body, param", [
    ({"model": "m"}, "input"),
    ({"model": "m", "input": 3}, "input"),
    ({"model": "m", "input": "x", "background": True}, "background"),
    ({"model": "m", "input": "x", "previous_response_id": "resp_1"}, "previous_response_id"),
    ({"model": "m", "input": "x", "conversation": "conv_1"}, "conversation"),
    ({"model": "m", "input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].id"),
    ({"model": "m", "input": [{"type": "function_call_output", "output": "x"}]}, "input[0].call_id"),
    ({"model": "m", "input": "x", "text": {"format": {"type": "yaml"}}}, "text.format.type"),
    ({"model": "m", "input": "x", "max_output_tokens": "lots"}, "max_output_tokens"),
    ({"model": "m", "input": "x", "tool_choice": {"type": "file_search"}}, "tool_choice"),
])
def test_bad_requests_name_the_field(body, param):
    with pytest.raises(BadRequestError) as bad:
        R.decode_request(body)
    assert bad.value.param == param and bad.value.status == 400


def test_echo_defaults_follow_the_reference():
    echo = R.echo_fields({"model": "m", "input": "x"})
    assert echo["store"] is True and echo["temperature"] == 1 and echo["top_p"] == 1 and echo["tool_choice"] == "auto"
    assert echo["text"] == {"format": {"type": "text"}, "verbosity": "medium"} and echo["metadata"] == {} and echo["truncation"] == "disabled"
    assert echo["parallel_tool_calls"] is True and echo["reasoning"] == {"effort": None, "summary": None}


def test_decoder_takes_arguments_and_text_from_done_events_when_deltas_are_absent():
    """LiteLLM #27144: some servers send only function_call_arguments.done; others skip text deltas."""
    def ev(**e):
        return f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode()

    raw = b"".join([
        ev(type="response.created", sequence_number=0, response={"id": "resp_1", "model": "m"}),
        ev(type="response.output_item.added", sequence_number=1, output_index=0, item={"id": "fc_1", "type": "function_call", "call_id": "call_1", "name": "f", "arguments": ""}),
        ev(type="response.function_call_arguments.done", sequence_number=2, output_index=0, item_id="fc_1", arguments='{"a":1}'),
        ev(type="response.output_item.done", sequence_number=3, output_index=0, item={"id": "fc_1", "type": "function_call", "call_id": "call_1", "name": "f", "arguments": '{"a":1}'}),
        ev(type="response.output_item.done", sequence_number=4, output_index=1, item={"id": "msg_1", "type": "message", "content": [{"type": "output_text", "text": "hi"}]}),
        ev(type="response.completed", sequence_number=5, response={"id": "resp_1", "status": "completed", "usage": {"input_tokens": 1, "output_tokens": 2}}),
    ])
    acc = StreamAccumulator()
    for event in decode_sse(R, raw):
        acc.add(event)
    answer = acc.response()
    assert answer.tool_calls[0].arguments == '{"a":1}' and answer.text == "hi" and answer.finish_reason == "tool_calls"
    assert answer.usage.output_tokens == 2


def test_replay_resumes_after_a_sequence_number():
    stored = R.encode_response(ChatResponse("x", "m", Message("assistant", [ReasoningPart("r", "s"), TextPart("hi")], [ToolCall("call_1", "f", "{}")]), "tool_calls"), "m")
    whole = _events(R.replay(stored))
    assert [e["sequence_number"] for e in whole] == list(range(len(whole))) and whole[-1]["response"] == stored
    resumed = _events(R.replay(stored, 5))
    assert resumed == whole[6:]
