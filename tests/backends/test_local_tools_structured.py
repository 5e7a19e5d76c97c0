"""Tool calling and structured output on the embedded model, through the public Client.

``local/smollm2`` is a real 135M model on llama.cpp. Its chat template knows nothing of
tools, so the local backend describes the tools in the system prompt and constrains the
reply with a JSON schema (a call of one tool, or an answer); see backends/local.py. What
the caller sees must not depend on that: a forced tool gives a ToolCall whose arguments
satisfy the tool's schema, ``run_tools=True`` runs a Python function and feeds its result
back until the model answers, ``response_format=<pydantic model>`` gives ``.parsed`` as that
model, and a streamed tool call is the non-streamed one.

Few, short calls (temperature 0, a fixed seed, small max_tokens), one client for the file so
the model loads once. Assertions are about shape and protocol, never about the model's
(often wrong) facts.
"""

from __future__ import annotations

import json

import jsonschema
import pytest
from pydantic import BaseModel

from modelport import Client
from modelport.tools import ToolLoopResponse
from modelport.types import Message, ToolCall

MODEL = "local/smollm2"
GREEDY = {"temperature": 0, "seed": 1}


def get_weather(city: str) -> str:
    """Get the current weather for a city.

    Args:
        city: The city name, e.g. Paris.
    """
    WEATHER_CALLS.append(city)
    return f"Sunny, 24 degrees Celsius in {city}"


def get_time(timezone: str) -> str:
    """Get the current time in a timezone.

    Args:
        timezone: An IANA timezone name, e.g. Europe/Paris.
    """
    return "12:00"


WEATHER_CALLS: list[str] = []


class City(BaseModel):
    name: str
    country: str
    population: int


@pytest.fixture(scope="module")
def client():
    # No call log or cache: the module outlives each test's isolated home.
    with Client(log=False, cache=False) as client:
        yield client


def schema_of(client: Client, tool) -> dict:
    """The JSON schema modelport declares for this tool, as every provider would get it."""
    return client.request(MODEL, "-", tools=[tool]).tools[0].parameters


def assert_valid_call(client: Client, call: ToolCall, tool) -> None:
    assert call.name == tool.__name__
    assert call.id  # a tool result must be able to answer it
    jsonschema.validate(call.args, schema_of(client, tool))


def test_required_tool_choice_returns_a_valid_call_and_the_stream_returns_the_same(client):
    """tool_choice="required" with two tools: one call, to one of them, with valid arguments.
    The same request streamed (same seed, temperature 0) makes the same call; only the id,
    which the local backend draws at random for each call, differs. The stream carries the
    arguments as they decode (several fragments of one call), not in one piece at the end."""
    params = dict(tools=[get_weather, get_time], tool_choice="required", max_tokens=40, **GREEDY)
    whole = client.chat(MODEL, "What's the weather in Paris?", **params)
    stream = client.stream(MODEL, "What's the weather in Paris?", **params)
    events = list(stream)
    kinds = [event.kind for event in events]
    streamed = stream.response

    assert whole.finish_reason == streamed.finish_reason == "tool_calls"
    assert whole.text == streamed.text == ""
    (call,) = whole.tool_calls
    assert_valid_call(client, call, get_weather if call.name == "get_weather" else get_time)
    assert [(c.name, c.args) for c in streamed.tool_calls] == [(call.name, call.args)]
    fragments = [event for event in events if event.kind == "tool_call"]
    assert len(fragments) > 2 and "finish" in kinds[-2:]  # the engine reports usage after the finish, as OpenAI does
    assert fragments[0].name == call.name and fragments[0].id and all(f.index == 0 for f in fragments)
    assert "".join(f.arguments for f in fragments) == streamed.tool_calls[0].arguments
    assert streamed.tool_calls[0].id and streamed.tool_calls[0].id != call.id


def test_a_named_tool_is_the_one_called(client):
    """Naming the tool forces that one, even when the question is about the other."""
    response = client.chat(MODEL, "What's the weather in Paris?", tools=[get_weather, get_time], tool_choice="get_time", max_tokens=40, **GREEDY)
    (call,) = response.tool_calls
    assert response.finish_reason == "tool_calls"
    assert_valid_call(client, call, get_time)


def test_run_tools_executes_the_function_and_feeds_the_result_back_until_the_model_answers(client):
    WEATHER_CALLS.clear()
    response = client.chat(
        MODEL, "What's the weather in Paris?", tools=[get_weather], tool_choice="required", run_tools=True,
        max_turns=3, max_tokens=60, **GREEDY,
    )
    assert isinstance(response, ToolLoopResponse)
    assert WEATHER_CALLS and all(isinstance(city, str) and city for city in WEATHER_CALLS)
    assert not response.max_turns_reached and response.turns == len(WEATHER_CALLS) + 1
    assert response.text.strip() and response.tool_calls == [] and response.finish_reason == "stop"
    # The conversation shows the call, the function's own result answering it, then the answer.
    roles = [m.role for m in response.messages]
    assert roles[:2] == ["user", "assistant"] and roles[-1] == "assistant"
    first_call = response.messages[1].tool_calls[0]
    result = response.messages[2]
    assert result.role == "tool" and result.tool_call_id == first_call.id and not result.is_error
    assert result.text == f"Sunny, 24 degrees Celsius in {WEATHER_CALLS[0]}"
    assert response.usage.input_tokens > 0 and response.usage.output_tokens > 0  # summed over the turns


def test_response_format_pydantic_model_gives_parsed_as_that_model(client):
    response = client.chat(MODEL, "Describe the city of Paris as JSON.", response_format=City, max_tokens=60, **GREEDY)
    assert response.finish_reason == "stop"  # the JSON closed before max_tokens
    assert isinstance(response.parsed, City)
    assert response.parsed == City.model_validate_json(response.text)
    assert response.parsed.name


class Place(BaseModel):
    name: str
    country: str


def is_compact(text: str) -> bool:
    return text == json.dumps(json.loads(text), separators=(",", ":"), ensure_ascii=False)


@pytest.mark.parametrize("seed", range(5))
def test_a_two_field_structured_answer_fits_in_60_tokens_as_compact_json(client, seed):
    """No whitespace for the model to spend its tokens on: the grammar allows compact JSON
    only, so a short answer closes well within max_tokens, whatever the seed."""
    response = client.chat(MODEL, "Describe the city of Paris as JSON.", response_format=Place, max_tokens=60, seed=seed)
    assert response.finish_reason == "stop"
    assert isinstance(response.parsed, Place) and is_compact(response.text), response.text


def test_the_answer_after_a_tool_result_is_never_the_protocols_placeholder(client):
    """The tool protocol's instructions hold no placeholder (such as "<your reply>") for the
    model to copy: after the tool result, each seed answers in words."""
    for seed in range(5):
        response = client.chat(
            MODEL, "What's the weather in Paris?", tools=[get_weather], tool_choice="required", run_tools=True,
            max_turns=3, max_tokens=60, seed=seed,
        )
        assert response.finish_reason == "stop" and response.text.strip(), (seed, response.text)
        assert "<your reply>" not in response.text and not response.text.lstrip().startswith("{"), (seed, response.text)


def test_a_reply_cut_by_max_tokens_leaks_no_protocol_json(client):
    """A forced call cut short is no call and no text; a cut answer is its words so far."""
    params = dict(tools=[get_weather], max_tokens=4, **GREEDY)
    forced = client.chat(MODEL, "What's the weather in Paris?", tool_choice="required", **params)
    assert forced.finish_reason == "length" and forced.text == "" and forced.tool_calls == []
    stream = client.stream(MODEL, "What's the weather in Paris?", tool_choice="required", **params)
    texts = [event.text for event in stream if event.kind == "text"]
    assert stream.response.finish_reason == "length" and texts == []
    answered = client.chat(MODEL, "Say hello to me in a long friendly sentence.", tool_choice="auto", **{**params, "max_tokens": 8})
    assert answered.finish_reason in ("length", "tool_calls", "stop")
    assert '{"' not in answered.text and '"answer"' not in answered.text, answered.text


def test_a_call_whose_result_is_in_the_conversation_is_never_made_again(client):
    """The agent-loop bug (simonw/llm's chain on local/smollm2 repeated get_weather(Paris) until
    its client timed out): the grammar leaves no room for a call identical to one that was
    answered. Forced to call again, the model must pick other arguments; left to choose, the
    loop ends with words, and no call in it repeats another."""
    answered = [Message.user("What's the weather in Paris?"),
                Message.assistant(tool_calls=[ToolCall(id="call_1", name="get_weather", arguments='{"city":"Paris"}')]),
                Message.tool("call_1", "Sunny, 24 degrees Celsius in Paris")]
    forced = client.chat(MODEL, answered, tools=[get_weather], tool_choice="required", max_tokens=40, **GREEDY)
    assert [c.name for c in forced.tool_calls] == ["get_weather"] and forced.tool_calls[0].args != {"city": "Paris"}
    for seed in (1, 2, 3):
        response = client.chat(MODEL, "What's the weather in Paris?", tools=[get_weather], run_tools=True,
                               max_turns=6, max_tokens=60, seed=seed)
        calls = [(c.name, c.arguments) for m in response.messages for c in m.tool_calls]
        assert not response.max_turns_reached and response.finish_reason == "stop" and response.text.strip(), (seed, calls)
        assert len(calls) == len(set(calls)), (seed, calls)


def test_the_grammar_leaves_out_exactly_the_answered_arguments():
    """What the exclusion allows, checked without the model (jsonschema for the schema part;
    the engine's llguidance reads the same pattern): every earlier set of arguments is
    refused, and a call that differs in one property it can name is allowed."""
    from modelport.backends.local_grammar import excluding_repeats

    schema = {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]},
                                               "alerts": {"type": "boolean"}}, "required": ["city"], "additionalProperties": False}
    earlier = [{"city": "Paris", "unit": "c"}, {"city": "Pa", "alerts": True}]
    narrowed = excluding_repeats(schema, earlier)

    def allowed(args: dict) -> bool:
        return jsonschema.Draft202012Validator(narrowed).is_valid(args)

    assert not any(allowed(args) for args in earlier)
    assert allowed({"city": "London"}) and allowed({"city": "Paris,"}) and allowed({"city": "Paris", "unit": "f"})
    assert allowed({"city": "Paris", "alerts": False})
    # A tool without arguments has nothing new to be called with: it is not offered again.
    assert excluding_repeats({"type": "object"}, [{}]) is None
