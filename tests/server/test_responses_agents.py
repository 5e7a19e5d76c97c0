"""The OpenAI Agents SDK (which speaks the Responses API by default) running an agent with
one function tool against the gateway: the tool is called, and a final answer arrives.

The first turn forces the tool (``tool_choice="required"``). On the embedded model the tool
itself switches the agent to ``tool_choice="none"`` for the next turn, so the tiny model
must answer in words, whatever it would choose; the fake Anthropic upstream answers in words
as soon as the SDK resets the choice to its default.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

agents = pytest.importorskip("agents", reason="the OpenAI Agents SDK (openai-agents, in the test extra) is not installed")

from openai import AsyncOpenAI  # noqa: E402

from modelport.server.testing import GatewayThread  # noqa: E402
from tests.fakes.anthropic_upstream import Answer  # noqa: E402
from tests.server.test_responses_gateway import LOCAL, Upstreams, _fresh_upstreams, gateway, upstreams  # noqa: E402,F401

agents.set_tracing_disabled(True)


def weather_agent(gw: GatewayThread, model: str, calls: list[str], answer_after_the_tool: bool = False) -> Any:
    holder: dict[str, Any] = {}

    @agents.function_tool
    def get_weather(city: str) -> str:
        """Current weather in a city."""
        calls.append(city)
        if answer_after_the_tool:
            holder["agent"].model_settings = agents.ModelSettings(tool_choice="none", max_tokens=160, temperature=0)
        return "sunny"

    client = AsyncOpenAI(base_url=gw.url + "/v1", api_key="anything", max_retries=0)
    holder["agent"] = agents.Agent(
        name="weather", instructions="Use the tool, then answer in one short sentence.",
        model=agents.OpenAIResponsesModel(model=model, openai_client=client), tools=[get_weather],
        model_settings=agents.ModelSettings(tool_choice="required", max_tokens=48), reset_tool_choice=not answer_after_the_tool,
    )
    return holder["agent"]


def test_agent_calls_its_tool_and_answers_on_the_embedded_model(gateway: GatewayThread) -> None:
    calls: list[str] = []
    result = asyncio.run(agents.Runner.run(weather_agent(gateway, LOCAL, calls, True), "Weather in Paris?", max_turns=3))
    assert len(calls) == 1 and isinstance(calls[0], str)
    assert isinstance(result.final_output, str) and result.final_output.strip()
    kinds = [item.type for item in result.new_items]
    assert kinds[:2] == ["tool_call_item", "tool_call_output_item"] and kinds[-1] == "message_output_item"


def test_streamed_agent_run_through_an_anthropic_upstream(gateway: GatewayThread, upstreams: Upstreams) -> None:
    calls: list[str] = []
    upstreams.anthropic.script(Answer(tool_calls=[("toolu_rome", "get_weather", '{"city": "Rome"}')]), Answer(text="It is sunny in Rome."))

    async def run() -> Any:
        streamed = agents.Runner.run_streamed(weather_agent(gateway, "claude-fake", calls), "Weather in Rome?", max_turns=3)
        kinds = [event.type async for event in streamed.stream_events()]
        return streamed, kinds

    streamed, kinds = asyncio.run(run())
    assert calls == ["Rome"]
    assert streamed.final_output == "It is sunny in Rome."
    assert "raw_response_event" in kinds
    # The second turn carried the call and its result back upstream.
    sent = upstreams.anthropic.last_request.body["messages"]
    assert [block["type"] for block in sent[-1]["content"]] == ["tool_result"] and sent[-1]["content"][0]["tool_use_id"] == "toolu_rome"
