"""LocalBackend against the real embedded model (SmolLM2-135M on xllamacpp).

Every generation is short (a few dozen tokens at most) because CI has two cores and the
engine uses both; the weights are fetched once per machine by the session fixture.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from dataclasses import replace

import pytest

pytest.importorskip("xllamacpp")

from modelport import local_model  # noqa: E402
from modelport.backends.local import LocalBackend, _plain_history  # noqa: E402
from modelport.errors import BadRequestError, ConfigError, ContextLengthError  # noqa: E402
from modelport.types import (  # noqa: E402
    ChatRequest,
    ImagePart,
    Message,
    ResponseFormat,
    StreamAccumulator,
    Tool,
    ToolCall,
    ToolChoice,
)

MODEL = "smollm2"
WEATHER = Tool(
    "get_weather",
    "Get the current weather for a city.",
    {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}}, "required": ["city"]},
)
TIME = Tool(
    "get_time",
    "Get the local time in a time zone.",
    {"type": "object", "properties": {"zone": {"type": "string", "maxLength": 20}}, "required": ["zone"]},
)


@pytest.fixture(scope="session")
def backend():
    # A fresh CI machine has no weights: fetch them once, exactly as first use would.
    local_model.pull(progress=False)
    return LocalBackend()


def ask(text: str, **params) -> ChatRequest:
    return ChatRequest("local/smollm2", [Message.user(text)], **params)


def test_chat_answers_and_reports_engine_timings(backend):
    response = backend.chat(ask("What is the capital of France?", max_tokens=24, seed=1), MODEL)
    assert response.text.strip()
    assert response.provider == "local" and response.model == MODEL
    assert response.finish_reason in ("stop", "length")
    assert 0 < response.usage.output_tokens <= 24 and response.usage.input_tokens > 0
    assert response.raw["timings"]["predicted_per_second"] > 0


def test_stream_assembles_to_the_non_streamed_answer(backend):
    request = ask("Name three colours.", max_tokens=24, temperature=0, seed=7)
    whole = backend.chat(request, MODEL)
    accumulator = StreamAccumulator()
    kinds = []
    for event in backend.stream(request, MODEL):
        kinds.append(event.kind)
        accumulator.add(event)
    streamed = accumulator.response()
    assert streamed.text == whole.text
    assert streamed.finish_reason == whole.finish_reason
    assert streamed.usage.output_tokens == whole.usage.output_tokens
    assert kinds[0] == "start" and "finish" in kinds and kinds.count("text") > 1


def test_same_seed_at_temperature_zero_repeats(backend):
    request = ask("Say something about the sea.", max_tokens=16, temperature=0, seed=3)
    assert backend.chat(request, MODEL).text == backend.chat(request, MODEL).text


def test_max_tokens_gives_length_and_stop_is_honoured(backend):
    cut = backend.chat(ask("Write a long story about a dragon.", max_tokens=5, seed=1), MODEL)
    assert cut.finish_reason == "length" and cut.usage.output_tokens == 5
    counting = ask("Count from 1 to 10, separated by commas.", max_tokens=40, temperature=0, seed=1)
    full = backend.chat(counting, MODEL).text
    assert "4" in full
    counting.stop = ["4"]
    stopped = backend.chat(counting, MODEL)
    assert stopped.finish_reason == "stop" and "4" not in stopped.text
    assert full.startswith(stopped.text)


def test_concurrent_requests_each_get_their_own_answer(backend):
    # Batched greedy decoding may change a token here and there (float sums in another
    # order) and a 135M model rarely repeats a word reliably, so each answer is recognised by
    # what it must carry: its own prompt (distinct lengths), its own forced length, and no
    # word of another request's prompt.
    phrases = ("apple", "a red river", "an old wooden guitar", "the tall and snowy blue mountain")
    requests = [
        ask(f"Repeat exactly: {p}", max_tokens=6 + 2 * i, temperature=0, seed=5, extra={"ignore_eos": True})
        for i, p in enumerate(phrases)
    ]
    prompt_tokens = [backend.chat(replace(r, max_tokens=1), MODEL).usage.input_tokens for r in requests]
    assert len(set(prompt_tokens)) == len(phrases)
    answers: list = [None] * len(requests)
    barrier = threading.Barrier(len(requests))

    def run(i: int) -> None:
        barrier.wait()  # all four share the engine's slots at once
        answers[i] = backend.chat(requests[i], MODEL)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(requests))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, answer in enumerate(answers):
        assert answer.finish_reason == "length" and answer.text
        assert (answer.usage.input_tokens, answer.usage.output_tokens) == (prompt_tokens[i], 6 + 2 * i)
        others = {w for j, p in enumerate(phrases) if j != i for w in p.split() if len(w) > 3} - set(phrases[i].split())
        assert not any(w in answer.text.lower() for w in others), [a.text for a in answers]


def test_async_chat_runs_concurrently(backend):
    async def main():
        return await asyncio.gather(*(backend.achat(ask(f"What is {i} plus {i}?", max_tokens=12, seed=i), MODEL) for i in range(4)))

    responses = asyncio.run(main())
    assert len(responses) == 4 and all(r.text for r in responses)


# 4,000 forced tokens take 30 s or more even on a quiet machine; a stream closed after a few
# tokens must stop the engine within about one token, however loaded the machine is.
LONG = ask("Tell me a story.", max_tokens=4000, extra={"ignore_eos": True}, seed=1)


def test_closing_an_async_stream_early_stops_generation(backend):
    async def main():
        texts = []
        async with contextlib.aclosing(backend.astream(LONG, MODEL)) as events:
            async for event in events:
                if event.kind == "text":
                    texts.append(event.text)
                if len(texts) == 3:
                    break
            closing = time.perf_counter()
        return texts, time.perf_counter() - closing

    texts, close_time = asyncio.run(main())
    assert len(texts) == 3
    assert close_time < 10  # closing waits until the engine has released the slot
    assert backend.chat(ask("Hi", max_tokens=4), MODEL).usage.output_tokens > 0


def test_closing_a_sync_stream_early_stops_generation(backend):
    events = backend.stream(LONG, MODEL)
    texts = []
    for event in events:
        if event.kind == "text":
            texts.append(event.text)
        if len(texts) == 3:
            break
    closing = time.perf_counter()
    events.close()
    assert len(texts) == 3 and time.perf_counter() - closing < 10


def test_async_stream_matches_sync_stream(backend):
    request = ask("What is rain?", max_tokens=16, temperature=0, seed=2)

    async def collect():
        accumulator = StreamAccumulator()
        async for event in backend.astream(request, MODEL):
            accumulator.add(event)
        return accumulator.response()

    assert asyncio.run(collect()).text == backend.chat(request, MODEL).text


def test_structured_output_follows_the_schema(backend):
    jsonschema = pytest.importorskip("jsonschema")
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 20}, "age": {"type": "integer", "minimum": 0, "maximum": 120}},
        "required": ["name", "age"],
        "additionalProperties": False,
    }
    request = ask("Describe a person as JSON with name and age.", max_tokens=40, temperature=0, seed=1,
                  response_format=ResponseFormat("json_schema", schema, "person"))
    response = backend.chat(request, MODEL)
    assert response.finish_reason == "stop"
    jsonschema.validate(json.loads(response.text), schema)
    # Cut short, the JSON is unfinished and the answer says so instead of pretending.
    request.max_tokens = 3
    cut = backend.chat(request, MODEL)
    assert cut.finish_reason == "length"
    with pytest.raises(ValueError):
        json.loads(cut.text)


@pytest.mark.parametrize("choice", [ToolChoice("required"), ToolChoice("required", "get_time")])
def test_forced_tool_choice_returns_a_tool_call(backend, choice):
    request = ask("What's the weather in Paris?", tools=[WEATHER, TIME], tool_choice=choice, max_tokens=40, temperature=0, seed=1)
    response = backend.chat(request, MODEL)
    assert response.finish_reason == "tool_calls" and response.text == ""
    (call,) = response.tool_calls
    assert call.id.startswith("call_") and len(call.id) > 10
    assert call.name in ("get_weather", "get_time") if choice.name is None else call.name == choice.name
    args = call.args
    assert set(args) == set(WEATHER.parameters["required"] if call.name == "get_weather" else TIME.parameters["required"])
    assert all(isinstance(v, str) for v in args.values())


def test_streamed_tool_call_matches_the_non_streamed_one(backend):
    request = ask("Weather in Rome?", tools=[WEATHER], tool_choice=ToolChoice("required", "get_weather"), max_tokens=40,
                  temperature=0, seed=1)
    whole = backend.chat(request, MODEL)
    accumulator = StreamAccumulator()
    for event in backend.stream(request, MODEL):
        accumulator.add(event)
    streamed = accumulator.response()
    assert streamed.finish_reason == whole.finish_reason == "tool_calls"
    assert [(c.name, c.args) for c in streamed.tool_calls] == [(c.name, c.args) for c in whole.tool_calls]


def test_tool_choice_none_answers_in_text(backend):
    response = backend.chat(ask("Hello!", tools=[WEATHER], tool_choice=ToolChoice("none"), max_tokens=12, seed=1), MODEL)
    assert response.tool_calls == [] and response.text


def test_tool_results_in_history_reach_the_model(backend):
    call = ToolCall("call_1", "get_weather", '{"city":"Paris"}')
    history = [
        Message.user("What's the weather in Paris?"),
        Message.assistant(tool_calls=[call]),
        Message.tool("call_1", "Sunny, 24 degrees"),
    ]
    rendered = _plain_history([{"role": "user", "content": "q"},
                               {"role": "assistant", "content": None, "tool_calls": [
                                   {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]},
                               {"role": "tool", "tool_call_id": "call_1", "content": "Sunny, 24 degrees"}])
    assert rendered[1] == {"role": "assistant", "content": '{"tool":"get_weather","arguments":{"city":"Paris"}}'}
    assert rendered[2] == {"role": "user", "content": "Result of get_weather:\nSunny, 24 degrees\nAnswer my question with this result."}
    response = backend.chat(ChatRequest("local/smollm2", history, tools=[WEATHER], max_tokens=40, temperature=0, seed=1), MODEL)
    assert response.finish_reason in ("stop", "tool_calls", "length")
    assert response.text or response.tool_calls


def test_unknown_named_tool_is_a_bad_request(backend):
    with pytest.raises(BadRequestError, match="not among the tools"):
        backend.chat(ask("Hi", tools=[WEATHER], tool_choice=ToolChoice("required", "nope")), MODEL)


def test_images_are_rejected_with_a_clear_message(backend):
    request = ChatRequest("local/smollm2", [Message.user("What is this?", ImagePart(data="iVBORw0KGgo=", media_type="image/png"))])
    with pytest.raises(BadRequestError, match="text-only") as info:
        backend.chat(request, MODEL)
    assert info.value.status == 400 and "vision model" in str(info.value)


def test_prompt_longer_than_the_context_is_a_context_length_error(backend):
    with pytest.raises(ContextLengthError):
        backend.chat(ask("word " * 9000, max_tokens=1), MODEL)


def test_embeddings_have_the_model_dimension(backend):
    response = backend.embed(["hello world", "a second text"], MODEL)
    assert [e.index for e in response.data] == [0, 1]
    assert all(len(e.vector) == 576 for e in response.data)
    assert response.data[0].vector != response.data[1].vector
    assert response.provider == "local"
    assert len(asyncio.run(backend.aembed("one", MODEL)).data) == 1
    with pytest.raises(ContextLengthError):
        backend.embed(["word " * 3000], MODEL)


def test_list_models_names_the_embedded_model(backend):
    assert "smollm2" in [m.id for m in backend.list_models()]


def test_missing_gguf_path_is_a_config_error(backend, tmp_path):
    with pytest.raises(ConfigError, match="no GGUF model file"):
        backend.chat(ask("Hi"), str(tmp_path / "missing.gguf"))


def test_a_file_that_is_not_gguf_is_a_bad_request(backend, tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"NOT A GGUF FILE")
    with pytest.raises(BadRequestError, match="could not load") as info:
        backend.chat(ask("Hi", max_tokens=2), str(bad))
    assert "valid GGUF" in str(info.value)
