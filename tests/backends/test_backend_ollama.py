"""The ollama provider on Ollama's native API, against a fake Ollama server written from the
spec: every option arrives where Ollama reads it (num_ctx above all, which the /v1 layer
silently ignores), NDJSON streams decode, and Ollama's errors map onto modelport's."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest

from modelport import errors
from modelport.client import AsyncClient, Client
from modelport.providers import PROVIDERS, provider_table
from modelport.types import ImagePart, Message, TextPart
from tests.fakes.ollama_upstream import OllamaAnswer, OllamaUpstream, fake_vector
from tests.fakes.server import http_error

WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}


@pytest.fixture(scope="module")
def upstream():
    with OllamaUpstream() as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(upstream):
    upstream.clear()


@pytest.fixture()
def client(upstream):
    with Client(base_urls={"ollama": upstream.url}, max_retries=0) as c:
        yield c


def test_the_ollama_row_speaks_the_native_api_and_the_openai_layer_stays_selectable():
    assert (PROVIDERS["ollama"].dialect, PROVIDERS["ollama"].base_url) == ("ollama", "http://localhost:11434")
    row = provider_table({"providers": {"ollama": {"dialect": "openai"}}})["ollama"]
    assert (row.dialect, row.base_url) == ("openai", "http://localhost:11434/v1")
    row = provider_table({"providers": {"ollama": {"dialect": "openai", "base_url": "http://box:11434/v1"}}})["ollama"]
    assert row.base_url == "http://box:11434/v1"


def test_config_extra_must_be_a_table():
    with pytest.raises(errors.ConfigError, match="extra must be a table"):
        provider_table({"providers": {"ollama": {"extra": "num_ctx=8192"}}})
    # a dialect the row has no URL for keeps the row's URL
    assert provider_table({"providers": {"lmstudio": {"dialect": "anthropic"}}})["lmstudio"].base_url == "http://localhost:1234/v1"


def test_every_option_arrives_where_ollama_reads_it(client, upstream):
    answer = client.chat(
        "ollama/llama3.2", "hello there", system="be brief", temperature=0.2, top_p=0.9, top_k=40, seed=1, max_tokens=64,
        stop=["\n\n"], presence_penalty=0.5, frequency_penalty=0.25,
        extra={"num_ctx": 8192, "keep_alive": "5m", "repeat_penalty": 1.1, "min_p": 0.05},
    )
    assert answer.text == "echo: hello there"
    body = upstream.last_request.body
    assert upstream.last_request.path == "/api/chat"
    assert body["options"] == {"temperature": 0.2, "top_p": 0.9, "top_k": 40, "seed": 1, "num_predict": 64, "stop": ["\n\n"],
                               "presence_penalty": 0.5, "frequency_penalty": 0.25, "num_ctx": 8192, "repeat_penalty": 1.1, "min_p": 0.05}
    assert body["keep_alive"] == "5m" and body["stream"] is False
    assert body["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}]
    assert (answer.usage.input_tokens, answer.usage.output_tokens) == (4, 3)
    assert answer.finish_reason == "stop"


def test_num_ctx_from_the_config_and_the_request_wins(upstream):
    config = {"providers": {"ollama": {"base_url": upstream.url, "extra": {"num_ctx": 4096, "keep_alive": "10m"}}}}
    with Client(config=config, max_retries=0) as client:
        client.chat("ollama/llama3.2", "hi")
        assert upstream.last_request.body["options"] == {"num_ctx": 4096}
        assert upstream.last_request.body["keep_alive"] == "10m"
        client.chat("ollama/llama3.2", "hi", extra={"num_ctx": 8192})
        assert upstream.last_request.body["options"] == {"num_ctx": 8192}


def test_ndjson_stream_decodes_into_the_same_answer(client, upstream):
    stream = client.stream("ollama/llama3.2", "one two three", extra={"num_ctx": 2048})
    pieces = [e.text for e in stream if e.kind == "text"]
    assert pieces == ["echo:", " one", " two", " three"]
    assert stream.response.text == "echo: one two three"
    assert (stream.response.usage.input_tokens, stream.response.usage.output_tokens) == (3, 4)
    body = upstream.last_request.body
    assert body["stream"] is True and body["options"] == {"num_ctx": 2048}


def test_length_finish_and_thinking(client, upstream):
    upstream.script(OllamaAnswer(text="a b c d e", thinking="hmm"))
    answer = client.chat("ollama/qwen3:8b", "go", max_tokens=2, reasoning_effort="high")
    assert answer.finish_reason == "length" and answer.text == "a b" and answer.message.reasoning == "hmm"
    assert upstream.last_request.body["think"] == "high"
    upstream.script(OllamaAnswer(text="x y", thinking="deep"))
    stream = client.stream("ollama/qwen3:8b", "go", reasoning_effort="none")
    assert stream.until_done().message.reasoning == "deep"
    assert upstream.last_request.body["think"] is False


def test_tool_calls_with_object_arguments_and_the_result_going_back(client, upstream):
    first = client.chat("ollama/llama3.2", "Paris", tools=[WEATHER])
    call = first.tool_calls[0]
    assert first.finish_reason == "tool_calls" and call.name == "get_weather" and call.args == {"echo": "Paris"}
    assert upstream.last_request.body["tools"] == [WEATHER]
    history = [Message.user("Paris"), first.message, Message.tool(call.id, "sunny"), Message.user("thanks")]
    final = client.chat("ollama/llama3.2", history, tools=[WEATHER])
    assert final.tool_calls[0].args == {"echo": "thanks"}  # the fake calls a tool after every user turn
    sent = upstream.last_request.body["messages"]
    assert sent[1] == {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "get_weather", "arguments": {"echo": "Paris"}}}]}
    assert sent[2] == {"role": "tool", "content": "sunny", "tool_name": "get_weather"}
    # streamed: the whole call arrives in one line
    events = [e for e in client.stream("ollama/llama3.2", "Oslo", tools=[WEATHER]) if e.kind == "tool_call"]
    assert len(events) == 1 and events[0].name == "get_weather" and events[0].arguments == '{"echo":"Oslo"}'


def test_structured_output_and_json_mode_use_format(client, upstream):
    upstream.script('{"n": 7}')
    answer = client.chat("ollama/llama3.2", "a number", response_format=SCHEMA)
    assert answer.parsed == {"n": 7}
    assert upstream.last_request.body["format"] == SCHEMA
    upstream.script('{"ok": true}')
    client.chat("ollama/llama3.2", "json please", response_format={"type": "json_object"})
    assert upstream.last_request.body["format"] == "json"


def test_images_travel_as_raw_base64(client, upstream):
    png = base64.b64encode(b"\x89PNG\r\n\x1a\nrest").decode()
    client.chat("ollama/llama3.2", [Message("user", [TextPart("what is it?"), ImagePart.from_url(f"data:image/png;base64,{png}")])])
    assert upstream.last_request.body["messages"][0] == {"role": "user", "content": "what is it?", "images": [png]}
    with pytest.raises(errors.BadRequestError, match="inline"):
        client.chat("ollama/llama3.2", [Message("user", [ImagePart(url="https://example.com/cat.png")])])


def test_embeddings_use_api_embed(client, upstream):
    result = client.embed("ollama/nomic-embed-text", ["a b", "c"])
    assert upstream.last_request.path == "/api/embed"
    assert [e.vector for e in result.data] == [fake_vector("a b"), fake_vector("c")]
    assert result.usage.input_tokens == 3


def test_ollama_errors_map_onto_the_hierarchy(client, upstream):
    with pytest.raises(errors.NotFoundError, match="model 'llama9' not found") as caught:
        client.chat("ollama/llama9", "hi")
    assert "ollama pull" in caught.value.hint
    upstream.inject(http_error(429, {"error": "too many requests"}, {"retry-after": "3"}))
    with pytest.raises(errors.RateLimitError) as caught:
        client.chat("ollama/llama3.2", "hi")
    assert caught.value.retry_after == 3
    upstream.inject(http_error(500, {"error": "llama runner process has terminated"}))
    with pytest.raises(errors.ServerError, match="llama runner"):
        client.chat("ollama/llama3.2", "hi")
    upstream.inject(http_error(400, {"error": "registry.ollama.ai/library/llama3.2:latest does not support thinking"}))
    with pytest.raises(errors.BadRequestError, match="does not support thinking"):
        client.chat("ollama/llama3.2", "hi", reasoning_effort="low")


def test_a_mid_stream_error_line_breaks_the_stream_after_its_text(client, upstream):
    upstream.script(OllamaAnswer(text="partial answer", error="an error was encountered while running the model"))
    seen = []
    with pytest.raises(errors.StreamError, match="while running the model"):
        for event in client.stream("ollama/llama3.2", "go"):
            seen.append(event)
    assert "".join(e.text for e in seen if e.kind == "text") == "partial"


def test_async_stream_and_chat(upstream):
    async def go():
        async with AsyncClient(base_urls={"ollama": upstream.url}, max_retries=0) as client:
            text = "".join([e.text async for e in client.stream("ollama/llama3.2", "x y", extra={"num_ctx": 1024}) if e.kind == "text"])
            whole = await client.chat("ollama/llama3.2", "x y")
            return text, whole.text

    assert asyncio.run(go()) == ("echo: x y", "echo: x y")


def test_cli_ask_sends_num_ctx(upstream, tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.update(MODELPORT_CONFIG_DIR=str(tmp_path / "config"), MODELPORT_LOG_PATH=str(tmp_path / "logs.db"),
               MODELPORT_OLLAMA_BASE_URL=upstream.url)
    result = subprocess.run([sys.executable, "-m", "modelport", "ask", "-m", "ollama/llama3.2", "-o", "num_ctx=8192",
                             "-o", "keep_alive=10m", "-o", "temperature=0.1", "hello"],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "echo: hello\n"
    body = upstream.last_request.body
    assert body["options"] == {"temperature": 0.1, "num_ctx": 8192} and body["keep_alive"] == "10m"
