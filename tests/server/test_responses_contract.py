"""Contract tests: what the openai-responses dialect puts on the wire validates against
OpenAI's OpenAPI spec (``Response``, ``ResponseStreamEvent``, ``CreateResponse``), for the
gateway's answers, its stream events (failures and replays included) and the client's
requests. The spec is read as tests/dialects/test_contract_openai.py reads it; absent, these skip.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given

from modelport import errors
from modelport.dialects import openai_responses as R
from modelport.sse import SSEParser
from modelport.types import ChatRequest, ChatResponse, Message, ReasoningPart, StreamEvent, ToolCall
from tests.dialects.test_contract_openai import assert_valid, needs_spec
from tests.dialects.test_dialect_roundtrip import SETTINGS, requests, response_events, responses

ECHO = R.echo_fields({
    "model": "m", "input": "x", "instructions": "be brief", "metadata": {"k": "v"}, "temperature": 0.5, "max_output_tokens": 64,
    "tools": [{"type": "function", "name": "f", "parameters": {"type": "object", "properties": {}}}, {"type": "web_search"}],
    "tool_choice": "required", "text": {"format": {"type": "json_schema", "name": "a", "schema": {"type": "object"}, "strict": True}},
    "reasoning": {"effort": "low"}, "user": "u", "prompt_cache_key": "k", "safety_identifier": "s", "store": False,
})


def events_of(raw: bytes) -> list[dict]:
    parser = SSEParser()
    return [json.loads(data) for _, data in parser.feed(raw) + parser.close()]


@needs_spec
def test_the_validator_rejects_what_the_spec_forbids():
    with pytest.raises(AssertionError):
        assert_valid({"id": "resp_1", "object": "response"}, "Response")
    with pytest.raises(AssertionError):
        assert_valid({"type": "response.output_text.delta", "sequence_number": 1}, "ResponseStreamEvent")


@needs_spec
@SETTINGS
@given(responses())
def test_responses_follow_the_spec(response):
    for echo in (None, ECHO):
        assert_valid(R.encode_response(response, "gateway/model", echo), "Response")


@needs_spec
@SETTINGS
@given(responses())
def test_stream_events_and_replays_follow_the_spec(response):
    encoder = R.StreamEncoder("gateway/model", True, ECHO)
    raw = b"".join(encoder.encode(e) for e in response_events(response)) + encoder.close()
    for event in events_of(raw) + events_of(R.replay(encoder.response)):
        assert_valid(event, "ResponseStreamEvent")


@needs_spec
@pytest.mark.parametrize("exc", [errors.OverloadedError("busy"), errors.RateLimitError("slow down"), errors.StreamError("cut"), ValueError("bug")])
def test_failure_events_follow_the_spec(exc):
    encoder = R.StreamEncoder("m")
    raw = encoder.encode(StreamEvent("text", text="partial")) + encoder.error(exc)
    for event in events_of(raw):
        assert_valid(event, "ResponseStreamEvent")
    assert_valid(R.encode_error(exc)[1], "ErrorResponse")


@needs_spec
def test_incomplete_and_failed_responses_follow_the_spec():
    for finish in ("length", "content_filter", "error"):
        assert_valid(R.encode_response(ChatResponse("x", "m", Message.assistant("t"), finish), "m"), "Response")


def assert_valid_input_item(item: dict) -> None:
    """``InputItem`` is a oneOf that only its discriminator makes unambiguous (a user message
    with a part list is both an EasyInputMessage and an InputMessage), which JSON Schema
    validators do not apply: an item is valid when one of the alternatives accepts it."""
    problems = []
    for name in ("EasyInputMessage", "Item", "ItemReferenceParam"):
        try:
            return assert_valid(item, name)
        except AssertionError as exc:
            problems.append(str(exc))
    raise AssertionError("; ".join(problems))


@needs_spec
@SETTINGS
@given(requests())
def test_client_requests_follow_the_spec(request):
    body = R.encode_request(request, "gpt-5")
    assert_valid({**body, "input": []}, "CreateResponse")
    for item in body["input"]:
        assert_valid_input_item(item)


@needs_spec
def test_replayed_reasoning_follows_the_spec():
    part = ReasoningPart("t", id="rs_1", encrypted_content="gAAAA")
    body = R.encode_request(ChatRequest("m", [Message.user("q"), Message("assistant", [part], [ToolCall("call_1", "f")])]), "gpt-5")
    for item in body["input"]:
        assert_valid_input_item(item)
