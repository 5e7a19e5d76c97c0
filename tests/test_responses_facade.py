"""``modelport.OpenAI().responses`` and ``AsyncOpenAI().responses``: the Responses API of the
official SDK, for any ``provider/model``, answered through the openai-responses dialect."""

from __future__ import annotations

import asyncio
import json
from typing import Literal

import pydantic
import pytest

from modelport import AsyncOpenAI, OpenAI
from modelport.errors import BadRequestError
from tests.fakes.anthropic_upstream import Answer, AnthropicUpstream

LOCAL = "local/smollm2"
WEATHER = {"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


class YesNo(pydantic.BaseModel):
    answer: Literal["yes", "no"]


@pytest.fixture
def anthropic(monkeypatch: pytest.MonkeyPatch):
    with AnthropicUpstream(api_key="sk-ant-test") as upstream:
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
        yield upstream


def facade(upstream: AnthropicUpstream) -> OpenAI:
    return OpenAI(config={"providers": {"anthropic": {"base_url": upstream.base_url}}})


def test_create_stream_and_parse_on_the_embedded_model() -> None:
    client = OpenAI()
    response = client.responses.create(model=LOCAL, input="Say hi", max_output_tokens=12)
    assert response.output_text and response.output[0].type == "message" and response.usage.output_tokens <= 12
    assert response.id.startswith("resp_") and response.status in ("completed", "incomplete")
    with client.responses.stream(model=LOCAL, input="Weather in Oslo?", tools=[WEATHER], tool_choice="required", max_output_tokens=40) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert final.output[-1].type == "function_call" and isinstance(json.loads(final.output[-1].arguments), dict)
    parsed = client.responses.parse(model=LOCAL, input="Is the sky blue?", text_format=YesNo, max_output_tokens=30)
    assert parsed.output_parsed.answer in ("yes", "no")


def test_any_provider_and_tool_round_trip(anthropic: AnthropicUpstream) -> None:
    client = facade(anthropic)
    assert client.responses.create(model="anthropic/claude-fake", input="hello", instructions="be brief").output_text == "echo: hello"
    assert anthropic.last_request.body["system"] in ("be brief", [{"type": "text", "text": "be brief"}])
    first = client.responses.create(model="anthropic/claude-fake", input="Paris", tools=[WEATHER], tool_choice="required")
    call = first.output[-1]
    assert call.type == "function_call" and json.loads(call.arguments) == {"echo": "Paris"}
    history = [{"role": "user", "content": "Paris"}, *[item.model_dump() for item in first.output],
               {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}, {"role": "user", "content": "thanks"}]
    assert client.responses.create(model="anthropic/claude-fake", input=history, tools=[WEATHER]).output_text == "echo: thanks"
    events = list(client.responses.create(model="anthropic/claude-fake", input="a b", stream=True))
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "echo: a b"
    anthropic.script(Answer(text='{"answer": "yes"}'))
    assert client.responses.parse(model="anthropic/claude-fake", input="sky blue?", text_format=YesNo).output_parsed == YesNo(answer="yes")


def test_stateful_fields_are_refused_without_a_store(anthropic: AnthropicUpstream) -> None:
    with pytest.raises(BadRequestError, match="previous_response_id"):
        facade(anthropic).responses.create(model="anthropic/claude-fake", input="x", previous_response_id="resp_1")


def test_async_create_stream_and_parse(anthropic: AnthropicUpstream) -> None:
    async def run() -> None:
        client = AsyncOpenAI(config={"providers": {"anthropic": {"base_url": anthropic.base_url}}})
        try:
            assert (await client.responses.create(model="anthropic/claude-fake", input="hi there")).output_text == "echo: hi there"
            async with client.responses.stream(model="anthropic/claude-fake", input="x y") as stream:
                deltas = [e.delta async for e in stream if e.type == "response.output_text.delta"]
                assert (await stream.get_final_response()).output_text == "".join(deltas) == "echo: x y"
            anthropic.script(Answer(text='{"answer": "no"}'))
            parsed = await client.responses.parse(model="anthropic/claude-fake", input="q", text_format=YesNo)
            assert parsed.output_parsed == YesNo(answer="no")
        finally:
            await client.close()

    asyncio.run(run())
