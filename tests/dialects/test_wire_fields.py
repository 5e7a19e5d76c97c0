"""Every door sends the fields the real APIs send, and no ``"field": null`` the real APIs
leave out (a strict client such as the Vercel AI SDK rejects a whole answer for one).

The references are response bodies recorded from the real APIs (tests/data/real_responses).
Our answers come from the gateway running the
embedded model, and from the encoders for tool calls, which that model does not make on demand.
"""

from __future__ import annotations

import json
from typing import Any, Iterator

import httpx
import pytest

from modelport.dialects import anthropic as A
from modelport.dialects import gemini as G
from modelport.dialects import openai as O
from modelport.server import Settings
from modelport.server.testing import GatewayThread
from modelport.types import ChatResponse, Message, StreamEvent, TextPart, ToolCall, Usage
from tests.paths import TESTS

REAL = TESTS / "data" / "real_responses"


def real(name: str) -> list[Any]:
    text = (REAL / name).read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()] if name.endswith(".jsonl") else [json.loads(text)]


def field_differences(ours: Any, reals: list[Any], path: str = "$") -> list[str]:
    """Where ``ours`` sends null for a key no real sample has, or leaves out a key a real
    sample sends as null (a required, nullable field). Lists match elements by ``type``."""
    problems: list[str] = []
    if isinstance(ours, dict):
        samples = [r for r in reals if isinstance(r, dict)]
        known = {k for r in samples for k in r}
        for key, value in ours.items():
            if value is None and key not in known:
                problems.append(f"{path}.{key} is null; the real API leaves it out")
        for key in {k for r in samples for k, v in r.items() if v is None} - set(ours):
            problems.append(f"{path}.{key} is missing; the real API sends it (as null)")
        for key in set(ours) & known:
            problems += field_differences(ours[key], [r[key] for r in samples if key in r], f"{path}.{key}")
    elif isinstance(ours, list):
        elements = [e for r in reals if isinstance(r, list) for e in r]
        for i, item in enumerate(ours):
            alike = [e for e in elements if not isinstance(item, dict) or "type" not in item or (isinstance(e, dict) and e.get("type") == item["type"])]
            problems += field_differences(item, alike, f"{path}[{i}]")
    return problems


def events(raw: bytes) -> list[Any]:
    lines = [line[6:] for line in raw.decode().splitlines() if line.startswith("data: ") and line != "data: [DONE]"]
    return [json.loads(line) for line in lines]


def assert_like(ours: Any, reference: str) -> None:
    samples = real(reference)
    # A stream is a list of events, matched to the real ones by their type like any list.
    problems = field_differences(ours, [samples] if reference.endswith(".jsonl") else samples)
    assert not problems, "\n".join(problems)


ANSWER = ChatResponse("msg_1", "m", Message("assistant", [TextPart("Let me check.")], [ToolCall("call_1", "lookup_order", '{"order_no": "A-118"}')]),
                      "tool_calls", Usage(10, 5))
STREAM = [StreamEvent("start", id="x"), StreamEvent("text", text="Hel"), StreamEvent("text", text="lo"),
          StreamEvent("tool_call", index=0, id="call_1", name="lookup_order", arguments='{"order_no": '),
          StreamEvent("tool_call", index=0, arguments='"A-118"}'), StreamEvent("finish", finish_reason="tool_calls", usage=Usage(9, 2))]


def encoded_stream(encoder: Any) -> list[Any]:
    return events(b"".join(encoder.encode(e) for e in STREAM) + encoder.close())


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayThread]:
    settings = Settings(log_calls=False, keys_path=str(tmp_path_factory.mktemp("k") / "g.db"), max_tokens=4)
    with GatewayThread(settings) as gw:
        yield gw


def post(gw: GatewayThread, path: str, body: dict[str, Any]) -> httpx.Response:
    response = httpx.post(gw.url + path, json=body, timeout=120)
    assert response.status_code == 200, response.text
    return response


HI = [{"role": "user", "content": "Say hi"}]


def test_openai_door_fields(gateway: GatewayThread) -> None:
    assert_like(post(gateway, "/v1/chat/completions", {"model": "local/smollm2", "messages": HI}).json(), "openai_chat.json")
    streamed = post(gateway, "/v1/chat/completions", {"model": "local/smollm2", "messages": HI, "stream": True, "stream_options": {"include_usage": True}})
    assert_like(events(streamed.content), "openai_stream.jsonl")
    assert_like(O.encode_response(ANSWER, "m"), "openai_chat.json")
    assert_like(encoded_stream(O.StreamEncoder("m", include_usage=True)), "openai_stream.jsonl")


def test_anthropic_door_fields(gateway: GatewayThread) -> None:
    body = {"model": "local/smollm2", "max_tokens": 4, "messages": HI}
    answer = post(gateway, "/v1/messages", body).json()
    assert answer["content"] and "citations" not in answer["content"][0]
    assert_like(answer, "anthropic_message.json")
    assert_like(events(post(gateway, "/v1/messages", {**body, "stream": True}).content), "anthropic_stream.jsonl")
    assert_like(A.encode_response(ANSWER, "m"), "anthropic_message.json")
    assert_like(encoded_stream(A.StreamEncoder("m")), "anthropic_stream.jsonl")


def test_gemini_door_fields(gateway: GatewayThread) -> None:
    body = {"contents": [{"role": "user", "parts": [{"text": "Say hi"}]}]}
    assert_like(post(gateway, "/v1beta/models/local/smollm2:generateContent", body).json(), "gemini_response.json")
    streamed = post(gateway, "/v1beta/models/local/smollm2:streamGenerateContent?alt=sse", body)
    assert_like(events(streamed.content), "gemini_stream.jsonl")
    assert_like(G.encode_response(ANSWER, "m"), "gemini_response.json")
    assert_like(encoded_stream(G.StreamEncoder("m")), "gemini_stream.jsonl")


def test_the_comparison_catches_a_null_the_real_api_omits() -> None:
    reference = real("anthropic_message.json")
    assert field_differences({"stop_sequence": None, "content": [{"type": "text", "text": "x", "citations": None}]}, reference) == [
        "$.content[0].citations is null; the real API leaves it out"]
    assert field_differences({"stop_reason": "end_turn"}, reference) == ["$.stop_sequence is missing; the real API sends it (as null)"]
